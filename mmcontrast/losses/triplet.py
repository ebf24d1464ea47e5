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
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from mmcontrast.losses.distributed import all_reduce_sum, gather_rows, rank_and_world_size
from mmcontrast.losses.similarity import (
    check_choice,
    check_embeddings,
    check_labels,
    distance_matrix,
    full_precision,
)

MINING = ("batch_all", "batch_hard", "semi_hard")
DISTANCES = ("euclidean", "cosine")


# Each miner returns the sum of its per-anchor (or per-pair) losses and the count that the sum is
# divided by, so that the distributed form can normalise by the count over all ranks.


def _batch_all(distances: Tensor, same: Tensor, positive: Tensor, margin: float) -> tuple[Tensor, Tensor]:
    # Only anchor-positive pairs are expanded against the batch: [P, B] rather than [B, B, B].
    anchor, pos = positive.nonzero(as_tuple=True)
    losses = (distances[anchor, pos, None] - distances[anchor] + margin).relu()
    losses = losses.masked_fill(same[anchor], 0.0)
    return losses.sum(), (losses > 0).sum()


def _batch_hard(distances: Tensor, same: Tensor, positive: Tensor, margin: float) -> tuple[Tensor, Tensor]:
    hardest_positive = distances.masked_fill(~positive, -math.inf).max(dim=1).values
    hardest_negative = distances.masked_fill(same, math.inf).min(dim=1).values
    valid = positive.any(dim=1) & ~same.all(dim=1)
    losses = (hardest_positive - hardest_negative + margin).relu()
    return torch.where(valid, losses, 0.0).sum(), valid.sum()


def _semi_hard(distances: Tensor, same: Tensor, positive: Tensor, margin: float) -> tuple[Tensor, Tensor]:
    positive = positive & ~same.all(dim=1, keepdim=True)
    anchor, pos = positive.nonzero(as_tuple=True)
    positive_distance = distances[anchor, pos]
    rows = distances[anchor]
    negative = ~same[anchor]
    farther = negative & (rows > positive_distance[:, None])
    closest_farther = rows.masked_fill(~farther, math.inf).min(dim=1).values
    farthest = rows.masked_fill(~negative, -math.inf).max(dim=1).values
    chosen = torch.where(farther.any(dim=1), closest_farther, farthest)
    losses = (positive_distance - chosen + margin).relu()
    return losses.sum(), torch.tensor(len(losses), device=distances.device)


_MINERS = {"batch_all": _batch_all, "batch_hard": _batch_hard, "semi_hard": _semi_hard}


def triplet_margin_loss(
    embeddings: Tensor,
    labels: Tensor,
    *,
    margin: float = 5.0,
    mining: str = "batch_hard",
    distance: str = "euclidean",
    gather: bool = False,
) -> Tensor:
    """Triplet margin loss over the triplets that ``mining`` selects from a labelled batch.

    Args:
        embeddings: ``[B, d]`` embeddings.
        labels: ``[B]`` integer class labels; same label = positive, different label = negative.
        margin: the margin ``m`` (5.0, as in sentence-transformers, suits unnormalised euclidean
            distances; use a smaller one, e.g. 0.2-0.5, with ``distance="cosine"``).
        mining: ``"batch_all"``, ``"batch_hard"`` or ``"semi_hard"`` (see the module docstring).
        distance: ``"euclidean"`` or ``"cosine"`` (``1 - cos``).
        gather: with an initialised process group of several ranks, mine the positives and
            negatives of the local anchors among the embeddings of all ranks (gathered with
            gradient; labels too). The normaliser (number of active triplets, anchors or pairs) is
            summed over the ranks and each rank returns ``W * (its sum) / (global count)``, so that
            the mean over ranks is the single-process loss of the concatenated batch and DDP gets
            its gradient (:mod:`mmcontrast.losses.distributed`). A no-op on one process.

    Returns:
        The loss, a float32 scalar; 0 (still attached to the graph) when the batch has no valid
        triplet.
    """
    check_embeddings("triplet_margin_loss", "embeddings", embeddings)
    check_labels("triplet_margin_loss", "labels", labels, embeddings.shape[0])
    check_choice("triplet_margin_loss", "mining", mining, MINING)
    check_choice("triplet_margin_loss", "distance", distance, DISTANCES)
    labels = labels.to(embeddings.device)
    rank, world_size = rank_and_world_size(gather)
    all_embeddings, all_labels = embeddings, labels
    if world_size > 1:
        all_embeddings, all_labels = gather_rows(
            "triplet_margin_loss", ("embeddings", "labels"), (embeddings, labels), world_size
        )
    with full_precision(embeddings):
        columns = torch.arange(all_labels.shape[0], device=labels.device)
        self_columns = columns[: labels.shape[0]] + rank * labels.shape[0]
        distances = distance_matrix(embeddings, all_embeddings, distance, self_columns)
        same = labels[:, None] == all_labels[None, :]
        positive = same & (columns[None, :] != self_columns[:, None])
        total, count = _MINERS[mining](distances, same, positive, margin)
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

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        """Return :func:`triplet_margin_loss` of the labelled batch with this module's options."""
        return triplet_margin_loss(
            embeddings, labels, margin=self.margin, mining=self.mining, distance=self.distance, gather=self.gather
        )

    def extra_repr(self) -> str:
        return f"margin={self.margin}, mining={self.mining!r}, distance={self.distance!r}, gather={self.gather}"
