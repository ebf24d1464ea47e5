r"""InfoNCE with several positives per query, over explicit positive / negative masks.

For queries :math:`q_i`, keys :math:`k_j`, similarity :math:`s_{ij} = t \cos(q_i, k_j)` (or
:math:`t\, q_i \cdot k_j` with ``normalize=False``; :math:`t` is the scale, ``1 / temperature``) and,
for each query, disjoint sets of positive columns :math:`P(i)` and negative columns :math:`N(i)`:

.. math::

    \ell_i = -\frac{1}{\lvert P(i) \rvert} \sum_{p \in P(i)}
        \log \frac{\exp(s_{ip})}{\sum_{k \in P(i) \cup N(i)} \exp(s_{ik})},
    \qquad
    \mathcal{L} = \frac{1}{\lvert \{i : P(i) \ne \emptyset\} \rvert} \sum_{i : P(i) \ne \emptyset} \ell_i

This is the :math:`\mathcal{L}^{sup}_{out}` form of Supervised Contrastive Learning (Khosla et al.)
with the positives and negatives given as masks rather than derived from labels: a column in
neither mask is left out of the numerator and the denominator (e.g. frames between the positive and
the negative radius of :func:`~mmcontrast.losses.time_masks.time_masks`, Time-Contrastive Networks),
and queries without a positive are skipped. With ``keys=None`` the keys are the queries themselves
and each query's own column is dropped from both masks. Special cases: ``positive_mask = eye`` and
``negative_mask = labels differ`` is :func:`~mmcontrast.losses.info_nce.info_nce` with ``labels``;
the queries ``cat([z1, z2])`` with ``keys=None``, the other view as the only positive and the views
of other labels as negatives is :func:`~mmcontrast.losses.nt_xent.nt_xent` with ``labels``.

References:
    Khosla et al. "Supervised Contrastive Learning", NeurIPS 2020. https://arxiv.org/abs/2004.11362

    Sermanet et al. "Time-Contrastive Networks: Self-Supervised Learning from Video", ICRA 2018.
    https://arxiv.org/abs/1704.06888
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from mmcontrast.losses.distributed import all_reduce_sum, gather_rows, rank_and_world_size
from mmcontrast.losses.similarity import Scale, check_embeddings, check_positive, full_precision, prepare
from mmcontrast.losses.time_masks import check_masks

DEFAULT_SCALE = 20.0


def multi_positive_info_nce(
    queries: Tensor,
    keys: Tensor | None = None,
    *,
    positive_mask: Tensor,
    negative_mask: Tensor,
    scale: Scale = DEFAULT_SCALE,
    normalize: bool = True,
    gather: bool = False,
) -> Tensor:
    """Multi-positive InfoNCE (SupCon's ``L_out``) of each query over its masked key columns.

    Args:
        queries: ``[B, d]`` query embeddings.
        keys: ``[K, d]`` key embeddings, or ``None`` to use the queries as keys (self-similarity;
            each query's own column is then dropped from both masks).
        positive_mask: ``[B, W * K]`` bool (``[B, K]`` on one process or without ``gather``):
            ``positive_mask[i, j]`` makes key column ``j`` (row ``j`` of the keys of all ranks in
            rank order) a positive of query ``i``. Build it with
            :func:`~mmcontrast.losses.time_masks.time_masks` or
            :func:`~mmcontrast.losses.time_masks.label_masks`.
        negative_mask: ``[B, W * K]`` bool, the negatives, disjoint from ``positive_mask``;
            columns in neither mask are ignored (out of the numerator and the denominator).
        scale: multiplier of the similarities, ``1 / temperature``; a tensor (e.g. a
            :class:`~mmcontrast.losses.info_nce.LogitScale` output) keeps its gradient.
        normalize: cosine similarity if true, plain dot product if false.
        gather: with an initialised process group of several ranks, score the local queries
            against the keys of all ranks (gathered with gradient; every rank needs the same
            shapes). The number of queries with a positive is summed over the ranks and each rank
            returns ``W * (its sum) / (global count)``, so that the mean over ranks is the
            single-process loss of the concatenated batch and DDP gets its gradient
            (:mod:`mmcontrast.losses.distributed`). A no-op on one process.

    Returns:
        The mean over the queries that have at least one positive, a float32 scalar (computed in
        float32 even under autocast); 0 (still attached to the graph) when no query has one.
    """
    fn = "multi_positive_info_nce"
    check_embeddings(fn, "queries", queries)
    if keys is not None:
        check_embeddings(fn, "keys", keys)
        if keys.shape[1] != queries.shape[1]:
            raise ValueError(
                f"{fn}: keys has shape {tuple(keys.shape)} but queries has shape {tuple(queries.shape)}; "
                "keys must be [K, d] with the queries' embedding size d"
            )
    check_positive(fn, "scale", scale)
    rank, world_size = rank_and_world_size(gather)
    local_keys = queries if keys is None else keys
    num_keys = local_keys.shape[0]
    layout = "[B, W*B]" if keys is None else "[B, W*K]"
    all_keys = local_keys
    if world_size > 1:
        (all_keys,) = gather_rows(fn, ("queries" if keys is None else "keys",), (local_keys,), world_size)
    check_masks(fn, positive_mask, negative_mask, queries.shape[0], all_keys.shape[0], layout)
    with full_precision(queries):
        positive = positive_mask.to(queries.device)
        negative = negative_mask.to(queries.device)
        if keys is None:
            columns = torch.arange(all_keys.shape[0], device=queries.device)
            self_columns = torch.arange(queries.shape[0], device=queries.device) + rank * num_keys
            not_self = columns[None, :] != self_columns[:, None]
            positive, negative = positive & not_self, negative & not_self
        logits = (prepare(queries, normalize) @ prepare(all_keys, normalize).T) * scale
        num_positives = positive.sum(dim=1)
        has_positive = num_positives > 0
        # Excluded columns are -inf in the log-sum-exp; a row without a positive (possibly without
        # any column at all) is zeroed instead, so that its log-sum-exp and gradient stay finite.
        kept = (positive | negative) | ~has_positive[:, None]
        log_normaliser = torch.logsumexp(logits.masked_fill(~kept, -math.inf), dim=1)
        terms = torch.where(positive, log_normaliser[:, None] - logits, 0.0).sum(dim=1)
        total = (terms / num_positives.clamp_min(1)).sum()
        count = has_positive.sum()
        if world_size > 1:
            return world_size * total / all_reduce_sum(count).clamp_min(1)
        return total / count.clamp_min(1)


class MultiPositiveInfoNCELoss(nn.Module):
    """Module form of :func:`multi_positive_info_nce`.

    Args:
        scale: fixed ``1 / temperature`` (20.0, as :class:`~mmcontrast.losses.info_nce.InfoNCELoss`).
        normalize: cosine similarity if true, dot product if false.
        gather: score local queries against the keys of all ranks (see :func:`multi_positive_info_nce`).
    """

    def __init__(self, scale: float = DEFAULT_SCALE, normalize: bool = True, gather: bool = False) -> None:
        super().__init__()
        check_positive("MultiPositiveInfoNCELoss", "scale", scale)
        self.scale = scale
        self.normalize = normalize
        self.gather = gather

    def forward(
        self, queries: Tensor, keys: Tensor | None = None, *, positive_mask: Tensor, negative_mask: Tensor
    ) -> Tensor:
        """Return :func:`multi_positive_info_nce` of the given embeddings and masks with this module's options."""
        return multi_positive_info_nce(
            queries,
            keys,
            positive_mask=positive_mask,
            negative_mask=negative_mask,
            scale=self.scale,
            normalize=self.normalize,
            gather=self.gather,
        )

    def extra_repr(self) -> str:
        return f"scale={self.scale}, normalize={self.normalize}, gather={self.gather}"
