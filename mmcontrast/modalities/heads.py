"""Projection heads: the small networks between an encoder's features and the contrastive loss.

- ``linear``: ``z = W h`` (CLIP's projections; SimCLR's "linear" ablation).
- ``mlp``: SimCLR's non-linear head ``z = W2 ReLU(W1 h)`` (Linear-ReLU-Linear, the formula of SimCLR v1,
  Chen et al. 2020, Sec. 2.1), or ``Linear-BN-ReLU-Linear`` with ``batch_norm=True`` (SimCLR's reference code).
  The module's default is the paper's formula (a row's projection does not depend on the other rows of its
  batch); the SimCLR recipe turns batch norm on (``model.head.batch_norm``), which trains markedly better on
  the digits recipe (docs/simclr.md). Under a cached large batch the batch-norm statistics are per chunk.

SimCLR trains through the head but keeps the representation *before* it (the head is dropped at export).
"""

from __future__ import annotations

from typing import Literal

from torch import nn

HeadKind = Literal["linear", "mlp", "none"]


class LinearHead(nn.Linear):
    """``z = W h (+ b)``: a linear projection from ``in_dim`` to ``out_dim``."""

    def __init__(self, in_dim: int, out_dim: int, bias: bool = True) -> None:
        super().__init__(in_dim, out_dim, bias=bias)


class MLPHead(nn.Sequential):
    """An MLP head: ``num_layers`` linear layers, ``[BN -] ReLU`` between them, optionally a final affine-free BN.

    The heads of the papers, as this class builds them:

    - SimCLR: ``MLPHead(d, 128, batch_norm=True)``: Linear-BN-ReLU-Linear (the reference code; the paper's formula
      has no BN).
    - MoCo v2, SupCon: ``MLPHead(d, 128)``: Linear-ReLU-Linear.
    - BYOL projector and predictor: ``MLPHead(d, 256, 4096, batch_norm=True)``.
    - SimSiam projector: ``MLPHead(d, 2048, 2048, num_layers=3, batch_norm=True, output_batch_norm=True)``;
      its predictor ``MLPHead(2048, 2048, 512, batch_norm=True)`` (a bottleneck).
    - MoCo v3 projector: ``MLPHead(d, 256, 4096, num_layers=3, batch_norm=True, output_batch_norm=True)``; its
      predictor ``MLPHead(256, 256, 4096, batch_norm=True, output_batch_norm=True)``.
    - Barlow Twins projector, VICReg expander: ``MLPHead(d, 8192, 8192, num_layers=3, batch_norm=True)``.

    Args:
        in_dim: size of the input (the encoder features ``h``, or the projection for a predictor).
        out_dim: size of the output the loss sees.
        hidden_dim: width of the hidden layers (default: ``in_dim``).
        batch_norm: batch norm after each hidden linear layer (which then has no bias).
        num_layers: number of linear layers (>= 2).
        output_batch_norm: a batch norm without affine parameters after the last layer (SimSiam, MoCo v3; the
            last linear layer then has no bias).
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        hidden_dim: int | None = None,
        batch_norm: bool = False,
        *,
        num_layers: int = 2,
        output_batch_norm: bool = False,
    ) -> None:
        if num_layers < 2:
            raise ValueError(f"MLPHead: num_layers must be >= 2 (a single layer is a LinearHead), got {num_layers}")
        hidden = hidden_dim or in_dim
        layers: list[nn.Module] = []
        width = in_dim
        for _ in range(num_layers - 1):
            layers.append(nn.Linear(width, hidden, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm1d(hidden))
            layers.append(nn.ReLU())
            width = hidden
        layers.append(nn.Linear(width, out_dim, bias=not output_batch_norm))
        if output_batch_norm:
            layers.append(nn.BatchNorm1d(out_dim, affine=False))
        super().__init__(*layers)


def projection_head(
    kind: HeadKind,
    in_dim: int,
    out_dim: int,
    *,
    hidden_dim: int | None = None,
    batch_norm: bool = False,
    num_layers: int = 2,
    output_batch_norm: bool = False,
) -> nn.Module:
    """A ``linear`` or ``mlp`` (:class:`MLPHead`) projection head from ``in_dim`` to ``out_dim``, or ``none``: the
    features themselves (``nn.Identity``; SimCSE trains without a head)."""
    if in_dim < 1 or out_dim < 1:
        raise ValueError(f"projection head: in_dim and out_dim must be positive, got {in_dim} and {out_dim}")
    if kind == "none":
        return nn.Identity()
    if kind == "linear":
        return LinearHead(in_dim, out_dim)
    if kind == "mlp":
        return MLPHead(
            in_dim, out_dim, hidden_dim, batch_norm, num_layers=num_layers, output_batch_norm=output_batch_norm
        )
    raise ValueError(f"projection head kind must be 'linear', 'mlp' or 'none', got {kind!r}")
