r"""MoCHi: hard negative mixing for MoCo-style InfoNCE (Kalantidis et al. 2020).

A query :math:`q` (``[B, d]``), its positive key :math:`k^+` and a queue of negatives :math:`Q = \{n_m\}_{m=1}^M`
(:class:`~mmcontrast.losses.MemoryQueue`), all L2-normalised by the loss. For each query, the :math:`N`
hardest negatives :math:`\tilde Q^N` are the queue entries of highest :math:`q \cdot n` (sorted, hardest first;
the whole queue when it holds fewer than :math:`N`). From them the query gets :math:`s` mixed negatives and
:math:`s'` query-mixed negatives,

.. math::

    h_k = \frac{\alpha_k n_{i_k} + (1 - \alpha_k) n_{j_k}}{\lVert \alpha_k n_{i_k} + (1 - \alpha_k) n_{j_k} \rVert},
    \quad \alpha_k \sim U(0, 1), \qquad
    h'_k = \frac{\beta_k q + (1 - \beta_k) n_{j'_k}}{\lVert \beta_k q + (1 - \beta_k) n_{j'_k} \rVert},
    \quad \beta_k \sim U(0, \tfrac12),

with :math:`n_{i_k}, n_{j_k}, n_{j'_k}` drawn uniformly (independently, with replacement) from
:math:`\tilde Q^N`. The synthetic negatives are detached (no gradient reaches :math:`q` or the queue through
them). The loss is InfoNCE of :math:`q` against :math:`[k^+, Q, h, h']` at temperature :math:`\tau`:

.. math::

    \ell_q = -\log \frac{e^{q \cdot k^+ / \tau}}{e^{q \cdot k^+ / \tau} + \sum_{n \in Q} e^{q \cdot n / \tau}
        + \sum_{k=1}^{s} e^{q \cdot h_k / \tau} + \sum_{k=1}^{s'} e^{q \cdot h'_k / \tau}},
    \qquad \mathcal{L} = \frac{1}{B} \sum_q \ell_q,

computed as a log-sum-exp of the logits minus the positive's (cross-entropy at index 0, as MoCo's
``CrossEntropyLoss`` on ``cat([l_pos, l_neg])``). With :math:`s = s' = 0` it is MoCo's loss. The random
choices (:class:`MochiMixing`) come from a ``torch.Generator`` or are passed explicitly.

**Reference mapping.** The authors released no code; this follows Section 4 of the paper: "hardest"
ranks the queue by :math:`q \cdot n` (logits ``l_neg`` of MoCo), pairs come from the top :math:`N`,
:math:`\alpha \in (0, 1)`, :math:`\beta \in (0, 0.5)`, mixed points are L2-normalised and added to the
logits of that query only. The paper's configurations are written MoCHi(:math:`N`, :math:`s`, :math:`s'`),
e.g. (1024, 512, 256).

The queue is scored with one ``[B, M]`` matmul (not copied per query), which is why the final InfoNCE is not
:func:`~mmcontrast.losses.candidate_info_nce` (it would need the queue expanded to ``[B, M, d]``); the two
agree, as the tests check.

Reference:
    Kalantidis, Sariyildiz, Pion, Weinzaepfel, Larlus. "Hard Negative Mixing for Contrastive Learning",
    NeurIPS 2020. https://arxiv.org/abs/2010.01028
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmcontrast.losses.similarity import (
    Scale,
    check_embeddings,
    check_positive,
    check_same_shape,
    full_precision,
    prepare,
)


class MochiMixing(NamedTuple):
    """The random choices of MoCHi for a batch of ``B`` queries; indices point into the hardest-``N`` list.

    Attributes:
        pair_indices: ``[B, s, 2]`` int64 in ``[0, N)``: ``(i, j)`` of each mixed negative ``h``.
        alphas: ``[B, s]`` coefficients ``alpha`` of ``n_i`` (``1 - alpha`` of ``n_j``).
        query_indices: ``[B, s']`` int64 in ``[0, N)``: ``j`` of each query-mixed negative ``h'``.
        betas: ``[B, s']`` coefficients ``beta`` of the query (``1 - beta`` of ``n_j``).
    """

    pair_indices: Tensor
    alphas: Tensor
    query_indices: Tensor
    betas: Tensor


def _check_count(fn: str, name: str, value: int, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{fn}: {name} must be an int >= {minimum}, got {value!r}")


def sample_mochi_mixing(
    batch_size: int,
    num_hard: int,
    num_mixed: int,
    num_query_mixed: int,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> MochiMixing:
    """Draw MoCHi's random choices: pairs and ``alpha ~ U(0, 1)``, then indices and ``beta ~ U(0, 0.5)``.

    Args:
        batch_size: ``B``.
        num_hard: ``N``, the size of the hardest-negative list the indices point into.
        num_mixed: ``s``, mixed negatives per query.
        num_query_mixed: ``s'``, query-mixed negatives per query.
        generator: a seeded ``torch.Generator`` for reproducible draws (the global RNG otherwise).
        device: device of the result (the generator's device by default).
    """
    fn = "sample_mochi_mixing"
    _check_count(fn, "batch_size", batch_size, 1)
    _check_count(fn, "num_hard", num_hard, 1)
    _check_count(fn, "num_mixed", num_mixed, 0)
    _check_count(fn, "num_query_mixed", num_query_mixed, 0)
    draw_device = generator.device if generator is not None else (device or "cpu")
    pairs = torch.randint(0, num_hard, (batch_size, num_mixed, 2), generator=generator, device=draw_device)
    alphas = torch.rand(batch_size, num_mixed, generator=generator, device=draw_device)
    query = torch.randint(0, num_hard, (batch_size, num_query_mixed), generator=generator, device=draw_device)
    betas = 0.5 * torch.rand(batch_size, num_query_mixed, generator=generator, device=draw_device)
    if device is not None:
        pairs, alphas, query, betas = (x.to(device) for x in (pairs, alphas, query, betas))
    return MochiMixing(pairs, alphas, query, betas)


def _check_mixing(fn: str, mixing: MochiMixing, batch_size: int, num_hard: int) -> None:
    if not isinstance(mixing, MochiMixing):
        raise TypeError(f"{fn}: mixing must be a MochiMixing, got {type(mixing).__name__}")
    pairs, alphas, query, betas = mixing
    for name, tensor, ndim in (
        ("mixing.pair_indices", pairs, 3),
        ("mixing.alphas", alphas, 2),
        ("mixing.query_indices", query, 2),
        ("mixing.betas", betas, 2),
    ):
        if not isinstance(tensor, Tensor):
            raise TypeError(f"{fn}: {name} must be a torch.Tensor, got {type(tensor).__name__}")
        if tensor.ndim != ndim or tensor.shape[0] != batch_size:
            raise ValueError(f"{fn}: {name} has shape {tuple(tensor.shape)}; it needs {ndim} dims and B={batch_size}")
    if pairs.shape[2] != 2 or alphas.shape != pairs.shape[:2]:
        raise ValueError(
            f"{fn}: mixing.pair_indices has shape {tuple(pairs.shape)} and mixing.alphas {tuple(alphas.shape)}; "
            "they must be [B, s, 2] and [B, s]"
        )
    if betas.shape != query.shape:
        raise ValueError(
            f"{fn}: mixing.query_indices has shape {tuple(query.shape)} but mixing.betas {tuple(betas.shape)}"
        )
    for name, indices in (("mixing.pair_indices", pairs), ("mixing.query_indices", query)):
        if indices.is_floating_point() or indices.dtype == torch.bool:
            raise TypeError(f"{fn}: {name} must be an integer tensor, got dtype {indices.dtype}")
        if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= num_hard):
            raise ValueError(f"{fn}: {name} must lie in [0, {num_hard}) (the hardest negatives used)")


def mochi_negatives(queries: Tensor, queue: Tensor, num_hard: int, mixing: MochiMixing) -> Tensor:
    """The synthetic negatives ``[B, s + s', d]`` (``h`` then ``h'``), float32, detached and normalised.

    ``queries`` and ``queue`` must already be L2-normalised float32; ``num_hard`` is the effective ``N``
    (at most the queue size) and ``mixing`` indexes the hardest-``N`` list of each query.
    """
    with torch.no_grad():
        queries, queue = queries.detach(), queue.detach()
        hardest = (queries @ queue.T).topk(num_hard, dim=1).indices  # [B, N], hardest first
        pairs, alphas, query_indices, betas = (x.to(queries.device) for x in mixing)
        first = queue[hardest.gather(1, pairs[..., 0])]  # [B, s, d]
        second = queue[hardest.gather(1, pairs[..., 1])]
        alphas = alphas.float().unsqueeze(-1)
        mixed = F.normalize(alphas * first + (1.0 - alphas) * second, dim=-1)
        partners = queue[hardest.gather(1, query_indices)]  # [B, s', d]
        betas = betas.float().unsqueeze(-1)
        query_mixed = F.normalize(betas * queries.unsqueeze(1) + (1.0 - betas) * partners, dim=-1)
        return torch.cat([mixed, query_mixed], dim=1)


def mochi_info_nce(
    queries: Tensor,
    positives: Tensor,
    queue: Tensor,
    *,
    num_hard: int = 1024,
    num_mixed: int = 512,
    num_query_mixed: int = 256,
    temperature: Scale = 0.2,
    generator: torch.Generator | None = None,
    mixing: MochiMixing | None = None,
) -> Tensor:
    """InfoNCE of each query against ``[k+, queue, h, h']`` with MoCHi's synthetic hard negatives.

    Args:
        queries: ``[B, d]`` queries ``q`` (L2-normalised by the loss).
        positives: ``[B, d]`` keys ``k+``; ``positives[i]`` is the positive of ``queries[i]``.
        queue: ``[M, d]`` negatives shared by all queries (``MemoryQueue.negatives()``), normalised by the loss.
        num_hard: ``N``, how many of the hardest queue entries are mixed (the whole queue if ``M < N``).
        num_mixed: ``s``, mixed negatives ``h`` per query (0 for none).
        num_query_mixed: ``s'``, query-mixed negatives ``h'`` per query (0 for none).
        temperature: ``tau`` (a positive float or a scalar tensor, which keeps its gradient).
        generator: a seeded ``torch.Generator`` for the random choices (:func:`sample_mochi_mixing`).
        mixing: explicit random choices instead (then ``num_mixed``, ``num_query_mixed`` and ``generator``
            are ignored; the indices point into the hardest-``min(N, M)`` list).

    Returns:
        The loss averaged over the queries, a float32 scalar (float32 under autocast too).
    """
    fn = "mochi_info_nce"
    check_embeddings(fn, "queries", queries)
    check_embeddings(fn, "positives", positives)
    check_same_shape(fn, "queries", queries, "positives", positives, "every query needs exactly one positive")
    check_embeddings(fn, "queue", queue, ("[M, d]",))
    if queue.shape[1] != queries.shape[1]:
        raise ValueError(
            f"{fn}: queue has shape {tuple(queue.shape)} but queries has shape {tuple(queries.shape)}; "
            "the queue must hold d-dimensional keys"
        )
    _check_count(fn, "num_hard", num_hard, 1)
    _check_count(fn, "num_mixed", num_mixed, 0)
    _check_count(fn, "num_query_mixed", num_query_mixed, 0)
    check_positive(fn, "temperature", temperature)
    batch_size = queries.shape[0]
    effective_hard = min(num_hard, queue.shape[0])
    if mixing is None:
        mixing = sample_mochi_mixing(
            batch_size, effective_hard, num_mixed, num_query_mixed, generator=generator, device=queries.device
        )
    else:
        _check_mixing(fn, mixing, batch_size, effective_hard)
    with full_precision(queries):
        q, k, negatives = prepare(queries, True), prepare(positives, True), prepare(queue, True)
        logits = [(q * k).sum(dim=1, keepdim=True), q @ negatives.T]
        if mixing.alphas.shape[1] + mixing.betas.shape[1] > 0:
            synthetic = mochi_negatives(q, negatives, effective_hard, mixing)
            logits.append(torch.matmul(synthetic, q.unsqueeze(-1)).squeeze(-1))
        logits = torch.cat(logits, dim=1) / temperature
        losses = torch.logsumexp(logits, dim=1) - logits[:, 0]
    return losses.mean()


class MochiInfoNCELoss(nn.Module):
    """Module form of :func:`mochi_info_nce`: MoCHi(``num_hard``, ``num_mixed``, ``num_query_mixed``).

    Args:
        num_hard: ``N``, hardest queue entries mixed.
        num_mixed: ``s``, mixed negatives per query.
        num_query_mixed: ``s'``, query-mixed negatives per query.
        temperature: ``tau``.
    """

    def __init__(
        self, num_hard: int = 1024, num_mixed: int = 512, num_query_mixed: int = 256, temperature: float = 0.2
    ) -> None:
        super().__init__()
        fn = "MochiInfoNCELoss"
        _check_count(fn, "num_hard", num_hard, 1)
        _check_count(fn, "num_mixed", num_mixed, 0)
        _check_count(fn, "num_query_mixed", num_query_mixed, 0)
        check_positive(fn, "temperature", temperature)
        self.num_hard = num_hard
        self.num_mixed = num_mixed
        self.num_query_mixed = num_query_mixed
        self.temperature = temperature

    def forward(
        self,
        queries: Tensor,
        positives: Tensor,
        queue: Tensor,
        generator: torch.Generator | None = None,
        mixing: MochiMixing | None = None,
    ) -> Tensor:
        """Return :func:`mochi_info_nce` of the given embeddings with this module's options."""
        return mochi_info_nce(
            queries,
            positives,
            queue,
            num_hard=self.num_hard,
            num_mixed=self.num_mixed,
            num_query_mixed=self.num_query_mixed,
            temperature=self.temperature,
            generator=generator,
            mixing=mixing,
        )

    def extra_repr(self) -> str:
        return (
            f"num_hard={self.num_hard}, num_mixed={self.num_mixed}, num_query_mixed={self.num_query_mixed}, "
            f"temperature={self.temperature}"
        )
