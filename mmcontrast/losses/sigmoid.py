r"""Sigmoid (pairwise binary) contrastive loss of SigLIP.

For pairs :math:`(a_i, b_i)`, :math:`i = 1..B`, a logit scale :math:`t` and bias :math:`\beta`,
every pair :math:`(i, j)` is an independent binary classification, positive on the diagonal:

.. math::

    \mathcal{L} = -\frac{1}{B} \sum_{i=1}^{B} \sum_{j=1}^{B}
        \log \sigma\big(z_{ij}\, (t\, \cos(a_i, b_j) + \beta)\big),
    \qquad z_{ij} = \begin{cases} +1 & i = j \\ -1 & i \ne j \end{cases}

(:math:`a_i \cdot b_j` with ``normalize=False``). The sum runs over all :math:`B^2` pairs but is
divided by :math:`B`, as in the paper and in open_clip's ``SigLipLoss``. SigLIP initialises
:math:`t = 10` (learned as :math:`\log t`) and :math:`\beta = -10`, so that the many negatives do
not dominate the first steps. No softmax couples the rows, so there is no global normaliser to
compute across processes; with ``gather=True`` each rank scores its local :math:`a` rows against the
:math:`b` of all ranks.

Reference:
    Zhai, Mustafa, Kolesnikov, Beyer. "Sigmoid Loss for Language Image Pre-Training", ICCV 2023.
    https://arxiv.org/abs/2303.15343
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from mmcontrast.losses.distributed import gather_rows, rank_and_world_size
from mmcontrast.losses.info_nce import LogitScale
from mmcontrast.losses.similarity import (
    Scale,
    check_chunk_size,
    check_embeddings,
    check_finite_scalar,
    check_positive,
    check_same_shape,
    full_precision,
    prepare,
)
from mmcontrast.losses.tiled import sigmoid_terms_sum

DEFAULT_SCALE = 10.0
DEFAULT_BIAS = -10.0


def sigmoid_loss(
    a: Tensor,
    b: Tensor,
    *,
    scale: Scale = DEFAULT_SCALE,
    bias: Scale = DEFAULT_BIAS,
    normalize: bool = True,
    gather: bool = False,
    chunk_size: int | None = None,
) -> Tensor:
    """SigLIP's sigmoid loss over a batch of pairs; ``(a[i], b[i])`` are positives, all other pairs negatives.

    Args:
        a: ``[B, d]`` embeddings (e.g. images).
        b: ``[B, d]`` embeddings (e.g. texts); ``b[i]`` is the positive of ``a[i]``.
        scale: the logit scale ``t`` (a float or a scalar tensor that keeps its gradient, e.g.
            the output of :class:`~mmcontrast.losses.LogitScale`).
        bias: the logit bias (a float or a scalar tensor that keeps its gradient).
        normalize: cosine similarity if true, plain dot product if false.
        gather: with an initialised process group of several ranks, score the local ``a`` against
            the ``b`` of all ranks (gathered with gradient). Each rank divides by its local batch
            size, so the mean over ranks is the single-process loss of the concatenated batch; see
            :mod:`mmcontrast.losses.distributed`. A no-op on one process.
        chunk_size: evaluate the logits in ``chunk_size x chunk_size`` tiles, recomputed in the
            backward pass (:mod:`mmcontrast.losses.tiled`); ``None`` materialises them.

    Returns:
        The loss, a float32 scalar (computed in float32 even under autocast).
    """
    check_embeddings("sigmoid_loss", "a", a)
    check_embeddings("sigmoid_loss", "b", b)
    check_same_shape("sigmoid_loss", "a", a, "b", b, "every a needs exactly one positive b")
    check_positive("sigmoid_loss", "scale", scale)
    check_finite_scalar("sigmoid_loss", "bias", bias)
    check_chunk_size("sigmoid_loss", chunk_size)
    batch_size = a.shape[0]
    rank, world_size = rank_and_world_size(gather)
    all_b = b
    if world_size > 1:
        (all_b,) = gather_rows("sigmoid_loss", ("b",), (b,), world_size)
    with full_precision(a):
        targets = torch.arange(batch_size, device=a.device) + rank * batch_size
        total = sigmoid_terms_sum(
            prepare(a, normalize), prepare(all_b, normalize), targets, scale, bias, chunk_size=chunk_size
        )
    return total / batch_size


class SigmoidLoss(nn.Module):
    """Module form of :func:`sigmoid_loss` with SigLIP's learnable scale and bias.

    Args:
        scale_init: initial logit scale ``t``; stored as a :class:`~mmcontrast.losses.LogitScale`
            (``log t``, clamped to ``[1, max_scale]``). SigLIP uses 10.
        bias_init: initial bias; SigLIP uses -10.
        learnable: train the scale and the bias (parameters) or keep them fixed (saved buffers).
        max_scale: upper bound of the scale.
        normalize: cosine similarity if true, dot product if false.
        gather: score local rows against the batches of all ranks (see :func:`sigmoid_loss`).
        chunk_size: tile size of the logits, ``None`` to materialise them.
    """

    def __init__(
        self,
        scale_init: float = DEFAULT_SCALE,
        bias_init: float = DEFAULT_BIAS,
        learnable: bool = True,
        max_scale: float = 100.0,
        normalize: bool = True,
        gather: bool = False,
        chunk_size: int | None = None,
    ) -> None:
        super().__init__()
        if not math.isfinite(bias_init):
            raise ValueError(f"SigmoidLoss: bias_init must be a finite number, got {bias_init!r}")
        check_chunk_size("SigmoidLoss", chunk_size)
        self.logit_scale = LogitScale(init=scale_init, learnable=learnable, max_scale=max_scale)
        bias = torch.tensor(float(bias_init))
        if learnable:
            self.bias = nn.Parameter(bias)
        else:
            self.register_buffer("bias", bias)
        self.normalize = normalize
        self.gather = gather
        self.chunk_size = chunk_size

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        """Return :func:`sigmoid_loss` of the pairs with the current scale and bias."""
        return sigmoid_loss(
            a,
            b,
            scale=self.logit_scale(),
            bias=self.bias,
            normalize=self.normalize,
            gather=self.gather,
            chunk_size=self.chunk_size,
        )

    def extra_repr(self) -> str:
        return f"normalize={self.normalize}, gather={self.gather}, chunk_size={self.chunk_size}"
