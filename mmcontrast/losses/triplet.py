r"""Triplet margin loss with online mining inside the batch.

For a distance :math:`D` (euclidean or :math:`1 - \cos`) and margin :math:`m`, a triplet
:math:`(a, p, n)` of batch indices with :math:`y_a = y_p`, :math:`a \ne p` and :math:`y_n \ne y_a`
costs

.. math::

    \ell(a, p, n) = \max\left(0,\; D(a, p) - D(a, n) + m\right)

The ``mining`` option decides which triplets enter the loss:

* ``"batch_all"``: every valid triplet; the sum is divided by the number of triplets with
  :math:`\ell > 0` (easy triplets would otherwise dilute the mean).
* ``"batch_hard"``: per anchor, the farthest positive and the closest negative,
  :math:`\max(0, \max_p D(a, p) - \min_n D(a, n) + m)`, averaged over anchors (Hermans et al.).
* ``"semi_hard"``: per (anchor, positive) pair, the closest negative farther than the positive,
  :math:`\min\{D(a, n) : D(a, n) > D(a, p)\}`, or, if every negative is closer than the positive,
  the farthest negative; averaged over all (anchor, positive) pairs (Schroff et al.; the formulation
  of TensorFlow Addons' ``triplet_semihard_loss``).

**Explicit masks.** Instead of ``labels``, ``positive_mask`` and ``negative_mask`` (``[B, W B]``
bools, e.g. from :func:`~mmcontrast.losses.time_masks.time_masks` for Time-Contrastive Networks)
say which columns are positives and negatives of each anchor; a column that is neither is ignored
(it is no positive, no negative and never mined). With labels, the positives are the other rows of
the same label and the negatives the rows of other labels, i.e. the masks of
:func:`~mmcontrast.losses.time_masks.label_masks`, which give the same loss. The anchor's own
column is never a positive nor a negative, whatever the masks say.

Only anchors with at least one positive and one negative in the batch take part. These match
sentence-transformers' ``BatchAllTripletLoss``, ``BatchHardTripletLoss`` and
``BatchSemiHardTripletLoss`` on batches where every label occurs at least twice and there are at
least two labels (the sentence-transformers versions also score anchors without a positive, against
a zero "self" distance).

References:
    Schroff, Kalenichenko, Philbin. "FaceNet: A Unified Embedding for Face Recognition and
    Clustering", CVPR 2015. https://arxiv.org/abs/1503.03832

    Hermans, Beyer, Leibe. "In Defense of the Triplet Loss for Person Re-Identification", 2017.
    https://arxiv.org/abs/1703.07737

    Sermanet et al. "Time-Contrastive Networks: Self-Supervised Learning from Video", ICRA 2018.
    https://arxiv.org/abs/1704.06888
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from mmcontrast.losses.distributed import all_reduce_sum, rank_and_world_size
from mmcontrast.losses.similarity import (
    check_choice,
    check_embeddings,
    distance_matrix,
    full_precision,
)
from mmcontrast.losses.time_masks import pair_masks

MINING = ("batch_all", "batch_hard", "semi_hard")
DISTANCES = ("euclidean", "cosine")


# Each miner takes the [B, N] distances and the disjoint negative and positive masks (a column in
# neither is ignored) and returns the sum of its per-anchor (or per-pair) losses and the count that
# the sum is divided by, so that the distributed form can normalise by the count over all ranks.


def _batch_all(distances: Tensor, negative: Tensor, positive: Tensor, margin: float) -> tuple[Tensor, Tensor]:
    # Only anchor-positive pairs are expanded against the batch: [P, B] rather than [B, B, B].
    anchor, pos = positive.nonzero(as_tuple=True)
    losses = (distances[anchor, pos, None] - distances[anchor] + margin).relu()
    losses = losses.masked_fill(~negative[anchor], 0.0)
    return losses.sum(), (losses > 0).sum()


def _batch_hard(distances: Tensor, negative: Tensor, positive: Tensor, margin: float) -> tuple[Tensor, Tensor]:
    hardest_positive = distances.masked_fill(~positive, -math.inf).max(dim=1).values
    hardest_negative = distances.masked_fill(~negative, math.inf).min(dim=1).values
    valid = positive.any(dim=1) & negative.any(dim=1)
    losses = (hardest_positive - hardest_negative + margin).relu()
    return torch.where(valid, losses, 0.0).sum(), valid.sum()


def _semi_hard(distances: Tensor, negative: Tensor, positive: Tensor, margin: float) -> tuple[Tensor, Tensor]:
    positive = positive & negative.any(dim=1, keepdim=True)
    anchor, pos = positive.nonzero(as_tuple=True)
    positive_distance = distances[anchor, pos]
    rows = distances[anchor]
    negative = negative[anchor]
    farther = negative & (rows > positive_distance[:, None])
    closest_farther = rows.masked_fill(~farther, math.inf).min(dim=1).values
    farthest = rows.masked_fill(~negative, -math.inf).max(dim=1).values
    chosen = torch.where(farther.any(dim=1), closest_farther, farthest)
    losses = (positive_distance - chosen + margin).relu()
    return losses.sum(), torch.tensor(len(losses), device=distances.device)


_MINERS = {"batch_all": _batch_all, "batch_hard": _batch_hard, "semi_hard": _semi_hard}


def triplet_margin_loss(
    embeddings: Tensor,
    labels: Tensor | None = None,
    *,
    positive_mask: Tensor | None = None,
    negative_mask: Tensor | None = None,
    margin: float = 5.0,
    mining: str = "batch_hard",
    distance: str = "euclidean",
    gather: bool = False,
) -> Tensor:
    """Triplet margin loss over the triplets that ``mining`` selects from a labelled or masked batch.

    Args:
        embeddings: ``[B, d]`` embeddings.
        labels: ``[B]`` integer class labels; same label = positive, different label = negative.
            Pass either ``labels`` or both masks.
        positive_mask: ``[B, W * B]`` bool (``[B, B]`` on one process or without ``gather``):
            ``positive_mask[i, j]`` makes column ``j`` (row ``j`` of the concatenated batch of all
            ranks, in rank order) a positive of anchor ``i``. The anchor's own column is dropped.
            Build it with :func:`~mmcontrast.losses.time_masks.time_masks` (frames close in time)
            or :func:`~mmcontrast.losses.time_masks.label_masks` (same as ``labels``).
        negative_mask: ``[B, W * B]`` bool, the negatives of each anchor, disjoint from
            ``positive_mask``; columns in neither mask are ignored.
        margin: the margin ``m`` (5.0, as in sentence-transformers, suits unnormalised euclidean
            distances; use a smaller one, e.g. 0.2-0.5, with ``distance="cosine"``).
        mining: ``"batch_all"``, ``"batch_hard"`` or ``"semi_hard"`` (see the module docstring).
        distance: ``"euclidean"`` or ``"cosine"`` (``1 - cos``).
        gather: with an initialised process group of several ranks, mine the positives and
            negatives of the local anchors among the embeddings of all ranks (gathered with
            gradient; labels too; masks must then have ``W * B`` columns). The normaliser (number
            of active triplets, anchors or pairs) is summed over the ranks and each rank returns
            ``W * (its sum) / (global count)``, so that the mean over ranks is the single-process
            loss of the concatenated batch and DDP gets its gradient
            (:mod:`mmcontrast.losses.distributed`). A no-op on one process.

    Returns:
        The loss, a float32 scalar; 0 (still attached to the graph) when the batch has no valid
        triplet.
    """
    fn = "triplet_margin_loss"
    check_embeddings(fn, "embeddings", embeddings)
    check_choice(fn, "mining", mining, MINING)
    check_choice(fn, "distance", distance, DISTANCES)
    _, world_size = rank_and_world_size(gather)
    pairs = pair_masks(fn, embeddings, labels, positive_mask, negative_mask, gather=gather)
    with full_precision(embeddings):
        distances = distance_matrix(embeddings, pairs.columns, distance, pairs.self_columns)
        positive, negative = pairs.positive, pairs.negative
        total, count = _MINERS[mining](distances, negative, positive, margin)
        if world_size > 1:
            return world_size * total / all_reduce_sum(count).clamp_min(1)
        return total / count.clamp_min(1)


class TripletMarginLoss(nn.Module):
    """Module form of :func:`triplet_margin_loss`.

    Args:
        margin: the margin ``m``.
        mining: ``"batch_all"``, ``"batch_hard"`` or ``"semi_hard"``.
        distance: ``"euclidean"`` or ``"cosine"``.
        gather: mine among the embeddings of all ranks (see :func:`triplet_margin_loss`).
    """

    def __init__(
        self, margin: float = 5.0, mining: str = "batch_hard", distance: str = "euclidean", gather: bool = False
    ) -> None:
        super().__init__()
        check_choice("TripletMarginLoss", "mining", mining, MINING)
        check_choice("TripletMarginLoss", "distance", distance, DISTANCES)
        self.margin = margin
        self.mining = mining
        self.distance = distance
        self.gather = gather

    def forward(
        self,
        embeddings: Tensor,
        labels: Tensor | None = None,
        *,
        positive_mask: Tensor | None = None,
        negative_mask: Tensor | None = None,
    ) -> Tensor:
        """Return :func:`triplet_margin_loss` of the labelled (or masked) batch with this module's options."""
        return triplet_margin_loss(
            embeddings,
            labels,
            positive_mask=positive_mask,
            negative_mask=negative_mask,
            margin=self.margin,
            mining=self.mining,
            distance=self.distance,
            gather=self.gather,
        )

    def extra_repr(self) -> str:
        return f"margin={self.margin}, mining={self.mining!r}, distance={self.distance!r}, gather={self.gather}"
