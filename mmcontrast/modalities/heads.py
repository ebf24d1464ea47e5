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

HeadKind = Literal["linear", "mlp"]


class LinearHead(nn.Linear):
    """``z = W h (+ b)``: a linear projection from ``in_dim`` to ``out_dim``."""

    def __init__(self, in_dim: int, out_dim: int, bias: bool = True) -> None:
        super().__init__(in_dim, out_dim, bias=bias)


class MLPHead(nn.Sequential):
    """SimCLR's 2-layer projection head: ``Linear(in, hidden) [-BN] - ReLU - Linear(hidden, out)``.

    Args:
        in_dim: size of the encoder features ``h``.
        out_dim: size of the projection ``z`` the loss sees (SimCLR: 128).
        hidden_dim: width of the hidden layer (SimCLR: ``in_dim``).
        batch_norm: batch norm after the first layer (the hidden layer then has no bias).
    """

    def __init__(self, in_dim: int, out_dim: int, hidden_dim: int | None = None, batch_norm: bool = False) -> None:
        hidden = hidden_dim or in_dim
        layers: list[nn.Module] = [nn.Linear(in_dim, hidden, bias=not batch_norm)]
        if batch_norm:
            layers.append(nn.BatchNorm1d(hidden))
        layers += [nn.ReLU(), nn.Linear(hidden, out_dim)]
        super().__init__(*layers)


def projection_head(
    kind: HeadKind, in_dim: int, out_dim: int, *, hidden_dim: int | None = None, batch_norm: bool = False
) -> nn.Module:
    """A ``linear`` or ``mlp`` projection head from ``in_dim`` to ``out_dim``."""
    if in_dim < 1 or out_dim < 1:
        raise ValueError(f"projection head: in_dim and out_dim must be positive, got {in_dim} and {out_dim}")
    if kind == "linear":
        return LinearHead(in_dim, out_dim)
    if kind == "mlp":
        return MLPHead(in_dim, out_dim, hidden_dim, batch_norm)
    raise ValueError(f"projection head kind must be 'linear' or 'mlp', got {kind!r}")
