r"""Soft nearest neighbour loss of Frosst et al. 2019.

For squared euclidean distances :math:`D_{ij} = \|x_i - x_j\|^2` (embeddings used as given) and a
temperature :math:`T`, each row :math:`i` costs

.. math::

    \ell_i = -\log \frac{\sum_{j \ne i,\, y_j = y_i} e^{-D_{ij} / T}}{\sum_{k \ne i} e^{-D_{ik} / T}}
           = \operatorname{LSE}_{k \ne i}(-D_{ik} / T) - \operatorname{LSE}_{j \ne i,\, y_j = y_i}(-D_{ij} / T)

(both log-sum-exps, so no exponential over- or underflows), and the loss is the mean of
:math:`\ell_i` over the rows with at least one other row of their label.

**Peer.** ``pytorch_metric_learning.losses.NCALoss(softmax_scale=1 / T,
distance=LpDistance(power=2, normalize_embeddings=False))`` gives the same value on the same
labelled batch: NCA is the soft nearest neighbour loss with scale :math:`1/T`; PML's default
distance normalises the embeddings first, and PML drops a row whose softmax mass on its positives
underflows to 0 (here such a row keeps its large finite loss).

Reference:
    Frosst, Papernot, Hinton. "Analyzing and Improving Representations with the Soft Nearest
    Neighbor Loss", ICML 2019. https://arxiv.org/abs/1902.01889
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from mmcontrast.losses.distributed import all_reduce_sum, gather_rows, rank_and_world_size
from mmcontrast.losses.similarity import Scale, check_embeddings, check_labels, check_positive, full_precision


def soft_nearest_neighbour_loss(
    embeddings: Tensor, labels: Tensor, *, temperature: Scale = 1.0, gather: bool = False
) -> Tensor:
    """Soft nearest neighbour loss of a labelled batch (squared euclidean distances).

    Args:
        embeddings: ``[B, d]`` embeddings (not normalised by the loss).
        labels: ``[B]`` integer class labels.
        temperature: the temperature ``T`` (a positive float or a scalar tensor, which keeps its
            gradient); logits are ``-D / T``.
        gather: with an initialised process group of several ranks, score the local rows against
            the rows of all ranks (gathered with gradient; labels too). The number of rows with a
            positive is summed over the ranks and each rank returns ``W * (its sum) / (global
            count)``, so that the mean over ranks is the single-process loss
            (:mod:`mmcontrast.losses.distributed`). A no-op on one process.

    Returns:
        The loss, a float32 scalar (float32 under autocast too); 0, still attached to the graph,
        when no row has a positive.
    """
    fn = "soft_nearest_neighbour_loss"
    check_embeddings(fn, "embeddings", embeddings)
    check_labels(fn, "labels", labels, embeddings.shape[0])
    check_positive(fn, "temperature", temperature)
    batch_size = embeddings.shape[0]
    labels = labels.to(embeddings.device)
    rank, world_size = rank_and_world_size(gather)
    all_embeddings, all_labels = embeddings, labels
    if world_size > 1:
        all_embeddings, all_labels = gather_rows(fn, ("embeddings", "labels"), (embeddings, labels), world_size)
    with full_precision(embeddings):
        x, keys = embeddings.float(), all_embeddings.float()
        squared = (x * x).sum(dim=-1)[:, None] + (keys * keys).sum(dim=-1)[None, :] - 2.0 * (x @ keys.T)
        logits = -squared.clamp_min(0.0) / temperature
        columns = torch.arange(keys.shape[0], device=embeddings.device)
        not_self = columns[None, :] != (columns[:batch_size] + rank * batch_size)[:, None]
        positive = (labels[:, None] == all_labels[None, :]) & not_self
        has_positive = positive.any(dim=1)
        # Rows without a positive are filled with zeros before the log-sum-exp (no -inf - -inf).
        positive = positive | ~has_positive[:, None]
        log_positive = logits.masked_fill(~positive, -math.inf).logsumexp(dim=1)
        log_all = logits.masked_fill(~not_self, -math.inf).logsumexp(dim=1)
        total = torch.where(has_positive, log_all - log_positive, 0.0).sum()
        count = has_positive.sum()
        if world_size > 1:
            return world_size * total / all_reduce_sum(count).clamp_min(1)
        return total / count.clamp_min(1)


class SoftNearestNeighbourLoss(nn.Module):
    """Module form of :func:`soft_nearest_neighbour_loss`.

    Args:
        temperature: the temperature ``T``.
        gather: score the local rows against the rows of all ranks (see
            :func:`soft_nearest_neighbour_loss`).
    """

    def __init__(self, temperature: float = 1.0, gather: bool = False) -> None:
        super().__init__()
        check_positive("SoftNearestNeighbourLoss", "temperature", temperature)
        self.temperature = temperature
        self.gather = gather

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        """Return :func:`soft_nearest_neighbour_loss` of the labelled batch with this module's options."""
        return soft_nearest_neighbour_loss(embeddings, labels, temperature=self.temperature, gather=self.gather)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, gather={self.gather}"
