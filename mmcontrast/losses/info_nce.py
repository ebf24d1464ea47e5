r"""InfoNCE with in-batch negatives, optional hard negatives and the symmetric (CLIP) form.

For anchors :math:`a_i` and positives :math:`p_i` (:math:`i = 1..B`), optional hard negatives
:math:`n_1..n_M` shared by all rows, similarity :math:`s(x, y) = \cos(x, y)` (or :math:`x \cdot y` with
``normalize=False``) and scale :math:`\tau^{-1}`:

.. math::

    \ell_i^{a \to p} = -\log \frac{\exp(s(a_i, p_i) / \tau)}
        {\sum_{j} \exp(s(a_i, p_j) / \tau) + \sum_{m} \exp(s(a_i, n_m) / \tau)}

    \mathcal{L} = \frac{1}{B} \sum_i \ell_i^{a \to p}
    \qquad\text{or, symmetric,}\qquad
    \mathcal{L} = \frac{1}{2B} \sum_i \left(\ell_i^{a \to p} + \ell_i^{p \to a}\right)

where :math:`\ell_i^{p \to a}` uses :math:`p_i` as the query against the anchors only. With
``labels``, every column :math:`p_j` (:math:`j \ne i`) whose label equals the label of row
:math:`i` is dropped from row :math:`i`'s denominator (a false negative), in both directions.

The one-directional form is sentence-transformers' ``MultipleNegativesRankingLoss``; the symmetric
form is CLIP's loss (``open_clip.loss.ClipLoss`` on one process).

References:
    van den Oord, Li, Vinyals. "Representation Learning with Contrastive Predictive Coding", 2018.
    https://arxiv.org/abs/1807.03748

    Henderson et al. "Efficient Natural Language Response Suggestion for Smart Reply", 2017.
    https://arxiv.org/abs/1705.00652

    Radford et al. "Learning Transferable Visual Models From Natural Language Supervision", 2021.
    https://arxiv.org/abs/2103.00020
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from mmcontrast.losses.distributed import gather_rows, rank_and_world_size
from mmcontrast.losses.similarity import (
    Scale,
    check_chunk_size,
    check_embeddings,
    check_labels,
    check_positive,
    check_same_shape,
    full_precision,
    prepare,
)
from mmcontrast.losses.tiled import cross_entropy_terms

DEFAULT_SCALE = 20.0


class LogitScale(nn.Module):
    """A logit scale (inverse temperature) stored in log space, as in CLIP.

    The parameter is ``log(init)``. :meth:`forward` first clamps the stored value into
    ``[0, log(max_scale)]`` in place (CLIP clamps the parameter after each optimizer step; doing it
    before each use is the same thing and needs no hook in the training loop), then returns its
    ``exp``, so the scale stays in ``[1, max_scale]`` and always keeps its gradient: a scale pushed
    to the bound can come back down.

    Args:
        init: initial scale; CLIP's ``1 / 0.07`` by default. Must lie in ``[1, max_scale]``.
        learnable: a trained ``nn.Parameter`` if true, otherwise a fixed (saved) buffer.
        max_scale: upper bound of the scale, at least 1.
    """

    def __init__(self, init: float = 1 / 0.07, learnable: bool = True, max_scale: float = 100.0) -> None:
        super().__init__()
        if not (math.isfinite(max_scale) and max_scale >= 1.0):
            raise ValueError(f"LogitScale: max_scale must be a finite number >= 1, got {max_scale!r}")
        if not 1.0 <= init <= max_scale:
            raise ValueError(f"LogitScale: init must lie in [1, max_scale={max_scale}], got {init!r}")
        self.max_scale = max_scale
        log_init = torch.tensor(math.log(init))
        if learnable:
            self.log_scale = nn.Parameter(log_init)
        else:
            self.register_buffer("log_scale", log_init)

    def forward(self) -> Tensor:
        """The current scale, a scalar tensor that carries the gradient to ``log_scale``."""
        with torch.no_grad():
            self.log_scale.clamp_(0.0, math.log(self.max_scale))
        return self.log_scale.exp()

    def extra_repr(self) -> str:
        return f"learnable={isinstance(self.log_scale, nn.Parameter)}, max_scale={self.max_scale}"


def _check_inputs(
    anchors: Tensor,
    positives: Tensor,
    negatives: Tensor | None,
    shared_negatives: Tensor | None,
    scale: Scale,
    labels: Tensor | None,
    chunk_size: int | None,
) -> None:
    check_embeddings("info_nce", "anchors", anchors)
    check_embeddings("info_nce", "positives", positives)
    check_same_shape("info_nce", "anchors", anchors, "positives", positives, "every anchor needs exactly one positive")
    batch_size, dim = anchors.shape
    if negatives is not None:
        check_embeddings("info_nce", "negatives", negatives, ("[B, d]", "[B, K, d]"))
        if negatives.shape[0] != batch_size or negatives.shape[-1] != dim:
            raise ValueError(
                f"info_nce: negatives has shape {tuple(negatives.shape)} but anchors has shape "
                f"{tuple(anchors.shape)}; negatives must be [B, d] or [B, K, d] with B={batch_size}, d={dim}"
            )
    if shared_negatives is not None:
        check_embeddings("info_nce", "shared_negatives", shared_negatives, ("[M, d]",))
        if shared_negatives.shape[1] != dim:
            raise ValueError(
                f"info_nce: shared_negatives has shape {tuple(shared_negatives.shape)} but anchors has shape "
                f"{tuple(anchors.shape)}; shared_negatives must be [M, d] with d={dim}"
            )
    check_positive("info_nce", "scale", scale)
    if labels is not None:
        check_labels("info_nce", "labels", labels, batch_size)
    check_chunk_size("info_nce", chunk_size)


def info_nce(
    anchors: Tensor,
    positives: Tensor,
    negatives: Tensor | None = None,
    *,
    scale: Scale = DEFAULT_SCALE,
    symmetric: bool = False,
    normalize: bool = True,
    labels: Tensor | None = None,
    shared_negatives: Tensor | None = None,
    gather: bool = False,
    chunk_size: int | None = None,
) -> Tensor:
    """InfoNCE over a batch of (anchor, positive) pairs; row ``i``'s target is column ``i``.

    Args:
        anchors: ``[B, d]`` query embeddings.
        positives: ``[B, d]``; ``positives[i]`` is the positive of ``anchors[i]`` and a negative of
            every other anchor.
        negatives: optional hard negatives, ``[B, d]`` (one per anchor) or ``[B, K, d]`` (``K`` per
            anchor). All ``B * K`` of them are extra columns shared by every anchor, as in
            sentence-transformers' ``MultipleNegativesRankingLoss`` with ``K`` negative columns.
        scale: multiplier of the similarities, ``1 / temperature``. A tensor (e.g. the output of
            :class:`LogitScale`) keeps its gradient.
        symmetric: also add the positives -> anchors direction (against the anchors only) and
            average the two directions, as CLIP does.
        normalize: cosine similarity if true, plain dot product if false.
        labels: optional ``[B]`` integer labels. Positive columns ``j != i`` with
            ``labels[j] == labels[i]`` are masked out of row ``i``'s denominator. Hard-negative
            columns are never masked.
        shared_negatives: optional ``[M, d]`` extra negative columns that are the same on every
            rank and are never gathered, e.g. :meth:`MemoryQueue.negatives` (MoCo). Used in the
            anchors -> positives direction only and never masked.
        gather: with an initialised process group of several ranks, score the local anchors
            against the positives and hard negatives of all ranks (gathered with gradient; labels
            too). Each rank returns the mean over its local rows; see
            :mod:`mmcontrast.losses.distributed` for why that gives DDP the single-process
            gradient. A no-op on one process.
        chunk_size: evaluate the logits in ``chunk_size x chunk_size`` tiles and recompute them in
            the backward pass (:mod:`mmcontrast.losses.tiled`): same value and gradients, memory
            linear in the batch size instead of quadratic. ``None`` materialises the logits.

    Returns:
        The mean loss, a float32 scalar (computed in float32 even under autocast).
    """
    _check_inputs(anchors, positives, negatives, shared_negatives, scale, labels, chunk_size)
    if labels is not None:
        labels = labels.to(anchors.device)
    batch_size = anchors.shape[0]
    rank, world_size = rank_and_world_size(gather)
    all_anchors, all_positives, all_negatives, all_labels = anchors, positives, negatives, labels
    if world_size > 1:
        all_anchors, all_positives, all_negatives, all_labels = gather_rows(
            "info_nce",
            ("anchors", "positives", "negatives", "labels"),
            (anchors if symmetric else None, positives, negatives, labels),
            world_size,
        )
    with full_precision(anchors):
        columns = [prepare(all_positives, normalize)]
        if all_negatives is not None:
            columns.append(prepare(all_negatives, normalize).flatten(0, -2))
        if shared_negatives is not None:
            columns.append(prepare(shared_negatives, normalize))
        keys = torch.cat(columns) if len(columns) > 1 else columns[0]
        targets = torch.arange(batch_size, device=anchors.device) + rank * batch_size
        # On one process the reverse direction reads the same logits, transposed.
        fused = symmetric and world_size == 1
        options = {"chunk_size": chunk_size}
        forward, backward = cross_entropy_terms(
            prepare(anchors, normalize), keys, targets, scale, labels, all_labels, transpose=fused, **options
        )
        if symmetric and not fused:
            queries, anchor_keys = prepare(positives, normalize), prepare(all_anchors, normalize)
            backward, _ = cross_entropy_terms(queries, anchor_keys, targets, scale, labels, all_labels, **options)
        loss = forward.mean() if backward is None else (forward.mean() + backward.mean()) / 2
    return loss


class InfoNCELoss(nn.Module):
    """Module form of :func:`info_nce`, with a fixed scale or a learnable :class:`LogitScale`.

    Args:
        scale: fixed ``1 / temperature``; 20.0 when neither ``scale`` nor ``logit_scale`` is given.
        logit_scale: a :class:`LogitScale` whose output is used as the scale (and trained, being a
            submodule). Mutually exclusive with ``scale``.
        symmetric: average both directions, as CLIP does.
        normalize: cosine similarity if true, dot product if false.
        gather: score local rows against the batches of all ranks (see :func:`info_nce`).
        chunk_size: tile size of the logits, ``None`` to materialise them (see :func:`info_nce`).
    """

    def __init__(
        self,
        scale: float | None = None,
        logit_scale: LogitScale | None = None,
        symmetric: bool = False,
        normalize: bool = True,
        gather: bool = False,
        chunk_size: int | None = None,
    ) -> None:
        super().__init__()
        if scale is not None and logit_scale is not None:
            raise ValueError("InfoNCELoss: pass either scale or logit_scale, not both")
        if scale is not None:
            check_positive("InfoNCELoss", "scale", scale)
        check_chunk_size("InfoNCELoss", chunk_size)
        self.scale = DEFAULT_SCALE if scale is None else scale
        self.logit_scale = logit_scale
        self.symmetric = symmetric
        self.normalize = normalize
        self.gather = gather
        self.chunk_size = chunk_size

    def forward(
        self,
        anchors: Tensor,
        positives: Tensor,
        negatives: Tensor | None = None,
        labels: Tensor | None = None,
        shared_negatives: Tensor | None = None,
    ) -> Tensor:
        """Return :func:`info_nce` of the given embeddings with this module's options."""
        scale = self.scale if self.logit_scale is None else self.logit_scale()
        return info_nce(
            anchors,
            positives,
            negatives,
            scale=scale,
            symmetric=self.symmetric,
            normalize=self.normalize,
            labels=labels,
            shared_negatives=shared_negatives,
            gather=self.gather,
            chunk_size=self.chunk_size,
        )

    def extra_repr(self) -> str:
        scale = "" if self.logit_scale is not None else f"scale={self.scale}, "
        return (
            f"{scale}symmetric={self.symmetric}, normalize={self.normalize}, "
            f"gather={self.gather}, chunk_size={self.chunk_size}"
        )
