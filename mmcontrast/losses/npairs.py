r"""Multi-class N-pair loss (Sohn 2016) with its L2 penalty on the embeddings.

For :math:`N` pairs :math:`(a_i, p_i)` of different classes, each anchor's positive is its own
:math:`p_i` and the positives of the other pairs are its negatives, scored by raw dot products (no
normalisation, no temperature):

.. math::

    \mathcal{L} = \frac{1}{N} \sum_{i=1}^{N} -\log \frac{\exp(a_i \cdot p_i)}{\sum_{j=1}^{N} \exp(a_i \cdot p_j)}
        \;+\; \lambda\, \frac{1}{2N} \sum_{i=1}^{N} \left(\lVert a_i \rVert_2^2 + \lVert p_i \rVert_2^2\right)

i.e. the cross entropy of ``anchors @ positives.T`` with the diagonal as targets, plus
``l2_penalty`` (:math:`\lambda`) times the mean over all :math:`2N` embeddings of their squared
Euclidean norm. Without the penalty the loss rewards ever larger norms, which is why the paper adds it.

This equals ``pytorch_metric_learning.losses.NPairsLoss(distance=DotProductSimilarity(
normalize_embeddings=False))`` on ``cat([anchors, positives])`` with labels ``cat([arange(N),
arange(N)])`` (PML keeps one pair per label: for label ``k`` the first anchor, row ``k``, with its
first positive, row ``N + k``), and with ``l2_penalty > 0`` adding
``embedding_regularizer=LpRegularizer(p=2, power=2), embedding_reg_weight=l2_penalty``. PML's
default distance, ``DotProductSimilarity()``, L2-normalises the embeddings first (cosine logits
with no temperature), which is not Sohn's loss; for that form pass L2-normalised inputs here.
TensorFlow's ``npairs_loss(..., reg_lambda)`` writes the penalty as
``0.25 * reg_lambda * (mean |a|^2 + mean |p|^2)``, i.e. ``reg_lambda = 2 * l2_penalty``.

Reference:
    Sohn. "Improved Deep Metric Learning with Multi-class N-pair Loss Objective", NeurIPS 2016.
    https://papers.nips.cc/paper/6200-improved-deep-metric-learning-with-multi-class-n-pair-loss-objective
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmcontrast.losses.distributed import gather_rows, rank_and_world_size
from mmcontrast.losses.similarity import check_embeddings, check_same_shape, full_precision


def _check_penalty(fn: str, l2_penalty: float) -> None:
    if (
        isinstance(l2_penalty, bool)
        or not isinstance(l2_penalty, int | float)
        or not math.isfinite(l2_penalty)
        or l2_penalty < 0
    ):
        raise ValueError(f"{fn}: l2_penalty must be a finite number >= 0, got {l2_penalty!r}")


def npairs(anchors: Tensor, positives: Tensor, *, l2_penalty: float = 0.0, gather: bool = False) -> Tensor:
    """Multi-class N-pair loss of ``anchors`` against ``positives`` (raw dot products) plus the L2 penalty.

    Args:
        anchors: ``[N, d]`` anchor embeddings, one per class.
        positives: ``[N, d]`` positive embeddings; ``positives[i]`` is the positive of ``anchors[i]``
            and a negative of every other anchor.
        l2_penalty: weight of the mean squared L2 norm of the ``2N`` embeddings (0 leaves it out).
        gather: with an initialised process group of several ranks, score the local anchors against
            the positives of all ranks (gathered with gradient), i.e. the loss of the concatenated
            batch; each rank returns the mean over its local pairs (see
            :mod:`mmcontrast.losses.distributed`). A no-op on one process.

    Returns:
        The mean loss, a float32 scalar (computed in float32 even under autocast).
    """
    fn = "npairs"
    check_embeddings(fn, "anchors", anchors)
    check_embeddings(fn, "positives", positives)
    check_same_shape(fn, "anchors", anchors, "positives", positives, "positives[i] must be the positive of anchors[i]")
    _check_penalty(fn, l2_penalty)
    num_pairs = anchors.shape[0]
    rank, world_size = rank_and_world_size(gather)
    all_positives = positives
    if world_size > 1:
        (all_positives,) = gather_rows(fn, ("positives",), (positives,), world_size)
    with full_precision(anchors):
        a, all_p = anchors.float(), all_positives.float()
        targets = torch.arange(num_pairs, device=anchors.device) + rank * num_pairs
        loss = F.cross_entropy(a @ all_p.T, targets)
        if l2_penalty:
            p = positives.float()
            squared_norms = torch.cat([(a * a).sum(dim=1), (p * p).sum(dim=1)])
            loss = loss + l2_penalty * squared_norms.mean()
        return loss


class NPairsLoss(nn.Module):
    """Module form of :func:`npairs`.

    Args:
        l2_penalty: weight of the mean squared L2 norm of the embeddings (see :func:`npairs`).
        gather: score local anchors against the positives of all ranks (see :func:`npairs`).
    """

    def __init__(self, l2_penalty: float = 0.0, gather: bool = False) -> None:
        super().__init__()
        _check_penalty("NPairsLoss", l2_penalty)
        self.l2_penalty = l2_penalty
        self.gather = gather

    def forward(self, anchors: Tensor, positives: Tensor) -> Tensor:
        """Return :func:`npairs` of the pairs with this module's options."""
        return npairs(anchors, positives, l2_penalty=self.l2_penalty, gather=self.gather)

    def extra_repr(self) -> str:
        return f"l2_penalty={self.l2_penalty}, gather={self.gather}"
