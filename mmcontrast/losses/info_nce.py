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

from mmcontrast.losses.similarity import (
    Scale,
    check_embeddings,
    check_labels,
    check_positive,
    check_same_shape,
    contrastive_cross_entropy,
    full_precision,
    prepare,
)

DEFAULT_SCALE = 20.0


class LogitScale(nn.Module):
    """A logit scale (inverse temperature) stored in log space, as in CLIP.

    The parameter is ``log(init)``; :meth:`forward` returns ``exp(clamp(param, 0, log(max_scale)))``,
    so the scale stays in ``[1, max_scale]`` (CLIP clamps at 100). While the parameter sits outside
    that range its gradient is zero.

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
        return self.log_scale.clamp(0.0, math.log(self.max_scale)).exp()

    def extra_repr(self) -> str:
        return f"learnable={isinstance(self.log_scale, nn.Parameter)}, max_scale={self.max_scale}"


def _check_inputs(
    anchors: Tensor, positives: Tensor, negatives: Tensor | None, scale: Scale, labels: Tensor | None
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
    check_positive("info_nce", "scale", scale)
    if labels is not None:
        check_labels("info_nce", "labels", labels, batch_size)


def info_nce(
    anchors: Tensor,
    positives: Tensor,
    negatives: Tensor | None = None,
    *,
    scale: Scale = DEFAULT_SCALE,
    symmetric: bool = False,
    normalize: bool = True,
    labels: Tensor | None = None,
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

    Returns:
        The mean loss, a float32 scalar (computed in float32 even under autocast).
    """
    _check_inputs(anchors, positives, negatives, scale, labels)
    if labels is not None:
        labels = labels.to(anchors.device)
    with full_precision(anchors):
        queries = prepare(anchors, normalize)
        keys = prepare(positives, normalize)
        targets = torch.arange(anchors.shape[0], device=anchors.device)
        columns = keys if negatives is None else torch.cat([keys, prepare(negatives, normalize).flatten(0, -2)])
        loss = contrastive_cross_entropy(queries, columns, targets, scale, labels, labels).mean()
        if symmetric:
            backward = contrastive_cross_entropy(keys, queries, targets, scale, labels, labels).mean()
            loss = (loss + backward) / 2
    return loss


class InfoNCELoss(nn.Module):
    """Module form of :func:`info_nce`, with a fixed scale or a learnable :class:`LogitScale`.

    Args:
        scale: fixed ``1 / temperature``; 20.0 when neither ``scale`` nor ``logit_scale`` is given.
        logit_scale: a :class:`LogitScale` whose output is used as the scale (and trained, being a
            submodule). Mutually exclusive with ``scale``.
        symmetric: average both directions, as CLIP does.
        normalize: cosine similarity if true, dot product if false.
    """

    def __init__(
        self,
        scale: float | None = None,
        logit_scale: LogitScale | None = None,
        symmetric: bool = False,
        normalize: bool = True,
    ) -> None:
        super().__init__()
        if scale is not None and logit_scale is not None:
            raise ValueError("InfoNCELoss: pass either scale or logit_scale, not both")
        if scale is not None:
            check_positive("InfoNCELoss", "scale", scale)
        self.scale = DEFAULT_SCALE if scale is None else scale
        self.logit_scale = logit_scale
        self.symmetric = symmetric
        self.normalize = normalize

    def forward(
        self,
        anchors: Tensor,
        positives: Tensor,
        negatives: Tensor | None = None,
        labels: Tensor | None = None,
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
        )

    def extra_repr(self) -> str:
        scale = "" if self.logit_scale is not None else f"scale={self.scale}, "
        return f"{scale}symmetric={self.symmetric}, normalize={self.normalize}"
