r"""Tiled (chunked) evaluation of the softmax and sigmoid losses: exact, linear memory.

The InfoNCE terms only need, per query, the log-sum-exp of its row of logits
:math:`l_{ij} = s\, q_i \cdot k_j` (and, for the symmetric loss, per key the log-sum-exp of its
column) plus the positive logit:

.. math::

    \ell_i = \operatorname{LSE}_j(l_{ij}) - l_{i t_i},
    \qquad
    \frac{\partial \operatorname{LSE}_j(l_{ij})}{\partial l_{ij}} = \operatorname{softmax}_j(l_{ij}).

The forward pass walks over ``chunk_size x chunk_size`` tiles of the logits, merging each tile's
row and column log-sum-exps into running vectors (:func:`torch.logaddexp`); the backward pass
recomputes each tile from the saved inputs and the two LSE vectors, forms the gradient of the
logits :math:`G_{ij} = g_i\, e^{l_{ij} - r_i} + h_j\, e^{l_{ij} - c_j}` (row and column softmax weighted
by the incoming gradients) and accumulates :math:`s\,G K`, :math:`s\,G^\top Q` and
:math:`\sum_{ij} G_{ij}\, q_i \cdot k_j` (the gradient of the scale). Only the inputs and ``O(Q + K)``
vectors are saved: memory is :math:`O((Q + K)\,d + \text{chunk}^2)` instead of :math:`O(QK)`, for
one extra matmul (the recomputation) per tile. The positive logits are computed outside the tiled
function with ordinary autograd.

The sigmoid loss is handled the same way with :math:`-\log\sigma(z\,l) = \operatorname{softplus}(l) - [z = 1]\, l`:
the tiles only accumulate :math:`\sum_{ij} \operatorname{softplus}(l_{ij} + b)`, whose gradient is
:math:`\sigma(l_{ij} + b)`.

This is the blockwise log-sum-exp of memory-efficient attention, applied to a contrastive loss:

    Rabe, Staats. "Self-attention Does Not Need O(n^2) Memory", 2021. https://arxiv.org/abs/2112.05682

    Dao et al. "FlashAttention: Fast and Memory-Efficient Exact Attention with IO-Awareness", 2022.
    https://arxiv.org/abs/2205.14135
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import FunctionCtx, once_differentiable

from mmcontrast.losses.similarity import Scale, contrastive_logits, false_negative_mask, full_precision


def _tiles(length: int, chunk_size: int) -> list[tuple[int, int]]:
    return [(start, min(start + chunk_size, length)) for start in range(0, length, chunk_size)]


def _as_scalar(value: Scale | float, like: Tensor) -> Tensor:
    """``value`` as a 0-d float32 tensor on ``like``'s device; a tensor keeps its gradient."""
    if isinstance(value, Tensor):
        return value.float().reshape(())
    return torch.tensor(float(value), device=like.device)


class _BlockwiseLogSumExp(torch.autograd.Function):
    """Row (and optionally column) log-sum-exps of ``scale * queries @ keys.T``, tile by tile.

    Masked entries (false negatives) are left out. The column LSEs cover the first ``Q`` keys only.
    """

    @staticmethod
    def forward(
        ctx: FunctionCtx,
        queries: Tensor,
        keys: Tensor,
        scale: Tensor,
        labels: tuple[Tensor, Tensor, Tensor] | None,
        chunk_size: int,
        transpose: bool,
    ) -> tuple[Tensor, Tensor]:
        num_queries, num_keys = queries.shape[0], keys.shape[0]
        rows = queries.new_full((num_queries,), -math.inf)
        columns = queries.new_full((num_queries if transpose else 0,), -math.inf)
        scaled = queries * scale
        for q0, q1 in _tiles(num_queries, chunk_size):
            for k0, k1 in _tiles(num_keys, chunk_size):
                logits = _tile_logits(scaled, keys, labels, q0, q1, k0, k1)
                torch.logaddexp(rows[q0:q1], logits.logsumexp(dim=1), out=rows[q0:q1])
                paired = min(k1, num_queries) - k0
                if transpose and paired > 0:
                    lse = logits[:, :paired].logsumexp(dim=0)
                    torch.logaddexp(columns[k0 : k0 + paired], lse, out=columns[k0 : k0 + paired])
        ctx.save_for_backward(queries, keys, scale, rows, columns)
        ctx.labels, ctx.chunk_size, ctx.transpose = labels, chunk_size, transpose
        return rows, columns

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_rows: Tensor, grad_columns: Tensor) -> tuple[Tensor | None, ...]:
        queries, keys, scale, rows, columns = ctx.saved_tensors
        num_queries, num_keys = queries.shape[0], keys.shape[0]
        grad_queries, grad_keys = torch.zeros_like(queries), torch.zeros_like(keys)
        grad_scale = torch.zeros((), device=queries.device)
        with full_precision(queries):
            row_shift, row_sign = _log_weights(rows, grad_rows)
            column_shift, column_sign = _log_weights(columns, grad_columns)
            scaled = queries * scale
            for q0, q1 in _tiles(num_queries, ctx.chunk_size):
                # sum_j G_ij k_j for this row tile; scaled by `scale` once at the end.
                weighted_keys = torch.zeros_like(queries[q0:q1])
                for k0, k1 in _tiles(num_keys, ctx.chunk_size):
                    logits = _tile_logits(scaled, keys, ctx.labels, q0, q1, k0, k1)
                    paired = min(k1, num_queries) - k0 if ctx.transpose else 0
                    if paired > 0:
                        window = slice(k0, k0 + paired)
                        sign = None if column_sign is None else column_sign[None, window]
                        column_part = _weighted_exp(logits[:, :paired], column_shift[None, window], sign)
                    sign = None if row_sign is None else row_sign[q0:q1, None]
                    grad_logits = _weighted_exp(logits, row_shift[q0:q1, None], sign, out=logits)
                    if paired > 0:
                        grad_logits[:, :paired].add_(column_part)
                    weighted_keys.addmm_(grad_logits, keys[k0:k1])
                    grad_keys[k0:k1].addmm_(grad_logits.T, scaled[q0:q1])
                grad_scale += (weighted_keys * queries[q0:q1]).sum()
                grad_queries[q0:q1] = weighted_keys.mul_(scale)
        needs = ctx.needs_input_grad
        return (
            grad_queries if needs[0] else None,
            grad_keys if needs[1] else None,
            grad_scale if needs[2] else None,
            None,
            None,
            None,
        )


def _log_weights(lse: Tensor, grad: Tensor) -> tuple[Tensor, Tensor | None]:
    """``shift`` and ``sign`` with ``grad * exp(x - lse) == sign * exp(x - shift)``.

    Folding the incoming gradient into the exponent saves a full pass over every tile; ``sign`` is
    ``None`` when no gradient is negative (the usual case: the loss is a mean), and a zero gradient
    gives an infinite shift, hence exactly zero.
    """
    shift = lse - grad.abs().log()
    return shift, grad.sign() if bool((grad < 0).any()) else None


def _weighted_exp(logits: Tensor, shift: Tensor, sign: Tensor | None, out: Tensor | None = None) -> Tensor:
    """``sign * exp(logits - shift)``, ``shift`` and ``sign`` broadcast against ``logits``."""
    result = torch.sub(logits, shift, out=out).exp_()
    return result if sign is None else result.mul_(sign)


def _tile_logits(
    scaled: Tensor, keys: Tensor, labels: tuple[Tensor, Tensor, Tensor] | None, q0: int, q1: int, k0: int, k1: int
) -> Tensor:
    """The tile ``[q0:q1, k0:k1]`` of the (already scaled) logits, false negatives set to ``-inf``."""
    logits = scaled[q0:q1] @ keys[k0:k1].T
    if labels is not None:
        query_labels, key_labels, targets = labels
        mask = false_negative_mask(query_labels[q0:q1], key_labels, targets[q0:q1], k1 - k0, first_key=k0)
        logits.masked_fill_(mask, -math.inf)
    return logits


def cross_entropy_terms(
    queries: Tensor,
    keys: Tensor,
    targets: Tensor,
    scale: Scale,
    query_labels: Tensor | None = None,
    key_labels: Tensor | None = None,
    *,
    chunk_size: int | None = None,
    transpose: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """Per-query InfoNCE terms and, with ``transpose``, per-key terms of the reverse direction.

    Row terms are ``-log softmax_j(scale * q_i . k_j)[targets[i]]`` over
    :func:`~mmcontrast.losses.similarity.contrastive_logits`, shape ``[Q]``. With ``transpose=True`` (which
    needs ``targets == arange(Q)``: key ``i`` is query ``i``'s positive) the second result holds, for
    each of the first ``Q`` keys, ``-log softmax_i(scale * q_i . k_j)[j]``: the key as the query
    against all queries, from the same logits (CLIP's text -> image direction). False negatives
    are masked in both directions.

    With ``chunk_size=None`` the ``[Q, K]`` logits are materialised; otherwise they are evaluated
    tile by tile (``chunk_size`` rows x ``chunk_size`` columns) and recomputed in the backward pass,
    with the same value and gradients. Call inside :func:`~mmcontrast.losses.similarity.full_precision`
    with float32 inputs.
    """
    if chunk_size is None:
        logits = contrastive_logits(queries, keys, targets, scale, query_labels, key_labels)
        rows = F.cross_entropy(logits, targets, reduction="none")
        if not transpose:
            return rows, None
        return rows, F.cross_entropy(logits[:, : queries.shape[0]].T, targets, reduction="none")
    labels = None if query_labels is None or key_labels is None else (query_labels, key_labels, targets)
    scale_tensor = _as_scalar(scale, queries)
    row_lse, column_lse = _BlockwiseLogSumExp.apply(queries, keys, scale_tensor, labels, chunk_size, transpose)
    positive_logits = scale_tensor * (queries * keys[targets]).sum(dim=-1)
    return row_lse - positive_logits, (column_lse - positive_logits) if transpose else None


class _BlockwiseSoftplusSum(torch.autograd.Function):
    """``sum_ij softplus(scale * q_i . k_j + bias)``, tile by tile."""

    @staticmethod
    def forward(
        ctx: FunctionCtx, queries: Tensor, keys: Tensor, scale: Tensor, bias: Tensor, chunk_size: int
    ) -> Tensor:
        total = torch.zeros((), device=queries.device)
        scaled = queries * scale
        for q0, q1 in _tiles(queries.shape[0], chunk_size):
            for k0, k1 in _tiles(keys.shape[0], chunk_size):
                logits = torch.addmm(bias, scaled[q0:q1], keys[k0:k1].T)
                total += F.softplus(logits).sum()
        ctx.save_for_backward(queries, keys, scale, bias)
        ctx.chunk_size = chunk_size
        return total

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_total: Tensor) -> tuple[Tensor | None, ...]:
        queries, keys, scale, bias = ctx.saved_tensors
        grad_queries, grad_keys = torch.zeros_like(queries), torch.zeros_like(keys)
        grad_scale, grad_bias = torch.zeros((), device=queries.device), torch.zeros((), device=queries.device)
        with full_precision(queries):
            scaled = queries * scale
            # The scalar incoming gradient multiplies the [Q, d] factors, not every [chunk, chunk] tile.
            weighted_queries = scaled * grad_total
            for q0, q1 in _tiles(queries.shape[0], ctx.chunk_size):
                weighted_keys = torch.zeros_like(queries[q0:q1])
                for k0, k1 in _tiles(keys.shape[0], ctx.chunk_size):
                    probabilities = torch.addmm(bias, scaled[q0:q1], keys[k0:k1].T).sigmoid_()
                    grad_bias += probabilities.sum()
                    weighted_keys.addmm_(probabilities, keys[k0:k1])
                    grad_keys[k0:k1].addmm_(probabilities.T, weighted_queries[q0:q1])
                grad_scale += (weighted_keys * queries[q0:q1]).sum()
                grad_queries[q0:q1] = weighted_keys.mul_(scale * grad_total)
            grad_scale *= grad_total
            grad_bias *= grad_total
        needs = ctx.needs_input_grad
        return (
            grad_queries if needs[0] else None,
            grad_keys if needs[1] else None,
            grad_scale if needs[2] else None,
            grad_bias if needs[3] else None,
            None,
        )


def sigmoid_terms_sum(
    queries: Tensor, keys: Tensor, targets: Tensor, scale: Scale, bias: Scale, *, chunk_size: int | None = None
) -> Tensor:
    r"""``sum_ij -log sigmoid(z_ij (scale * q_i . k_j + bias))``, ``z_ij = 1`` iff ``j == targets[i]``, else -1.

    With ``chunk_size=None`` the ``[Q, K]`` logits are materialised; otherwise the sum is taken tile
    by tile as :math:`\sum_{ij} \operatorname{softplus}(l_{ij}) - \sum_i l_{i t_i}` and recomputed in
    the backward pass. Call inside :func:`~mmcontrast.losses.similarity.full_precision` with float32
    inputs.
    """
    if chunk_size is None:
        logits = (queries @ keys.T) * scale + bias
        columns = torch.arange(keys.shape[0], device=keys.device)
        signs = torch.where(columns[None, :] == targets[:, None], 1.0, -1.0)
        return -F.logsigmoid(signs * logits).sum()
    scale_tensor, bias_tensor = _as_scalar(scale, queries), _as_scalar(bias, queries)
    softplus_sum = _BlockwiseSoftplusSum.apply(queries, keys, scale_tensor, bias_tensor, chunk_size)
    positive_logits = scale_tensor * (queries * keys[targets]).sum(dim=-1) + bias_tensor
    return softplus_sum - positive_logits.sum()
