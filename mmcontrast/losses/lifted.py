r"""Lifted structured loss (smooth form) of Song et al. 2016.

For euclidean distances :math:`D_{ij} = \|x_i - x_j\|` (embeddings used as given, not normalised),
a margin :math:`m`, the positive pairs :math:`P` and the negatives :math:`N(i)` of each row,

.. math::

    J_{ij} = \log\Big(\sum_{k \in N(i)} e^{m - D_{ik}} + \sum_{l \in N(j)} e^{m - D_{jl}}\Big) + D_{ij},
    \qquad
    \mathcal{L} = \frac{1}{2|P|} \sum_{(i, j) \in P} \max(0, J_{ij})^2

with :math:`P` the unordered positive pairs. Here the sum runs over the *ordered* pairs
:math:`(i, j)` with ``positive[i, j]`` and is divided by twice their number, which is the same
thing for symmetric positives (labels): :math:`J_{ij} = J_{ji}` and every unordered pair is counted
twice. The log-sum-exp is evaluated as ``logaddexp`` of two per-row log-sum-exps, so it never
overflows. A pair whose two rows have no negative at all has :math:`J = -\infty` and costs 0 (it
still counts in :math:`|P|`).

**Labels or masks.** As :func:`~mmcontrast.losses.triplet.triplet_margin_loss`: ``labels`` (same
label = positive, other label = negative), or explicit ``positive_mask`` / ``negative_mask``
(``[B, W B]`` bools, e.g. from :func:`~mmcontrast.losses.time_masks.time_masks`); a column in
neither is ignored and a row's own column is never used. ``label_masks(labels)`` gives exactly
the labels result.

**Peer.** ``pytorch_metric_learning.losses.LiftedStructureLoss(neg_margin=m, pos_margin=0,
distance=LpDistance(normalize_embeddings=False))`` on the same labelled batch gives the same value:
PML's per-ordered-pair term is :math:`\max(0, \mathrm{LSE}(m - D) + D_{ij} - \text{pos\_margin})^2 / 2`
averaged over the ordered positive pairs. (PML differs only when both rows of a positive pair have
no negative: it then uses :math:`\mathrm{LSE} = 0` where this loss has :math:`-\infty`.)

Reference:
    Song, Xiang, Jegelka, Savarese. "Deep Metric Learning via Lifted Structured Feature
    Embedding", CVPR 2016. https://arxiv.org/abs/1511.06452
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from mmcontrast.losses.distributed import all_reduce_sum, gather_rows, rank_and_world_size
from mmcontrast.losses.similarity import check_embeddings, distance_matrix, full_precision
from mmcontrast.losses.time_masks import pair_masks


def _check_margin(fn: str, margin: float) -> None:
    if isinstance(margin, bool) or not isinstance(margin, int | float) or not math.isfinite(margin):
        raise ValueError(f"{fn}: margin must be a finite number, got {margin!r}")


def lifted_structure_loss(
    embeddings: Tensor,
    labels: Tensor | None = None,
    *,
    positive_mask: Tensor | None = None,
    negative_mask: Tensor | None = None,
    margin: float = 1.0,
    gather: bool = False,
) -> Tensor:
    """Smooth lifted structured loss of a labelled (or masked) batch, euclidean distances.

    Args:
        embeddings: ``[B, d]`` embeddings (not normalised by the loss).
        labels: ``[B]`` integer class labels; pass either ``labels`` or both masks.
        positive_mask: ``[B, W * B]`` bool (``[B, B]`` without ``gather``): the positives of each
            row; its own column is dropped.
        negative_mask: ``[B, W * B]`` bool, the negatives of each row, disjoint from
            ``positive_mask``; columns in neither are ignored.
        margin: the margin ``m`` on the negatives' distances.
        gather: with an initialised process group of several ranks, pair the local rows with the
            rows of all ranks (gathered with gradient; labels too; masks must then have ``W * B``
            columns). The negatives' log-sum-exp of every row is gathered with gradient so that
            :math:`J_{ij}` needs no full distance matrix. The number of positive pairs is summed
            over the ranks and each rank returns ``W * (its sum) / (2 * global count)``, so that
            the mean over ranks is the single-process loss (:mod:`mmcontrast.losses.distributed`).

    Returns:
        The loss, a float32 scalar (float32 under autocast too); 0, still attached to the graph,
        when the batch has no positive pair.
    """
    fn = "lifted_structure_loss"
    check_embeddings(fn, "embeddings", embeddings)
    _check_margin(fn, margin)
    _, world_size = rank_and_world_size(gather)
    pairs = pair_masks(fn, embeddings, labels, positive_mask, negative_mask, gather=gather)
    with full_precision(embeddings):
        distances = distance_matrix(embeddings, pairs.columns, "euclidean", pairs.self_columns)
        positive, negative = pairs.positive, pairs.negative
        # Per row: log sum_{k in N(i)} exp(m - D_ik), -inf for a row without negatives.
        has_negative = negative.any(dim=1)
        logits = (margin - distances).masked_fill(~negative, -math.inf)
        row_lse = logits.masked_fill(~has_negative[:, None], 0.0).logsumexp(dim=1)
        row_lse = torch.where(has_negative, row_lse, -math.inf)
        all_lse = row_lse
        if world_size > 1:
            (all_lse,) = gather_rows(fn, ("negatives' log-sum-exp",), (row_lse,), world_size)
        anchor, other = positive.nonzero(as_tuple=True)
        first, second = row_lse[anchor], all_lse[other]
        valid = torch.isfinite(first) | torch.isfinite(second)
        # Double where: logaddexp(-inf, -inf) has a NaN gradient.
        joint = torch.logaddexp(torch.where(valid, first, 0.0), torch.where(valid, second, 0.0))
        losses = torch.where(valid, (joint + distances[anchor, other]).relu().square(), 0.0)
        total = losses.sum() + 0.0 * distances.sum()
        count = torch.tensor(float(len(losses)), device=embeddings.device)
        if world_size > 1:
            return world_size * total / (2.0 * all_reduce_sum(count).clamp_min(1))
        return total / (2.0 * count.clamp_min(1))


class LiftedStructureLoss(nn.Module):
    """Module form of :func:`lifted_structure_loss`.

    Args:
        margin: the margin ``m`` on the negatives' distances.
        gather: pair the local rows with the rows of all ranks (see :func:`lifted_structure_loss`).
    """

    def __init__(self, margin: float = 1.0, gather: bool = False) -> None:
        super().__init__()
        _check_margin("LiftedStructureLoss", margin)
        self.margin = margin
        self.gather = gather

    def forward(
        self,
        embeddings: Tensor,
        labels: Tensor | None = None,
        *,
        positive_mask: Tensor | None = None,
        negative_mask: Tensor | None = None,
    ) -> Tensor:
        """Return :func:`lifted_structure_loss` of the labelled (or masked) batch with this module's options."""
        return lifted_structure_loss(
            embeddings,
            labels,
            positive_mask=positive_mask,
            negative_mask=negative_mask,
            margin=self.margin,
            gather=self.gather,
        )

    def extra_repr(self) -> str:
        return f"margin={self.margin}, gather={self.gather}"
