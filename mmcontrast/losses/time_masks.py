r"""Positive / negative masks built from time (Time-Contrastive Networks) or from class labels.

A video (or any sequence) gives frames with times :math:`t_i` (frame index or seconds) and a group
:math:`g_i` (the video id). Time-Contrastive Networks treat frames close in time as the same state
and frames far apart as different ones, so that, for a positive radius :math:`r_+` and a negative
radius :math:`r_-` (:math:`0 \le r_+ \le r_-`),

.. math::

    P_{ij} = [g_i = g_j] \wedge [\,|t_i - t_j| \le r_+\,] \wedge [i \ne j], \qquad
    N_{ij} = [g_i = g_j] \wedge [\,|t_i - t_j| > r_-\,] \;\vee\; [g_i \ne g_j]

Frames with :math:`r_+ < |t_i - t_j| \le r_-` are neither positive nor negative (the margin in time
that keeps near-duplicates out of the negatives); with ``other_groups="ignore"`` frames of other
videos are neither as well. :func:`label_masks` gives the class-label form (:math:`P_{ij} = [y_i =
y_j] \wedge [i \ne j]`, :math:`N_{ij} = [y_i \ne y_j]`), so that labels can be passed to the
mask-based losses too.

The masks are ``[B, W B]`` booleans: the ``B`` local rows against the columns of all ``W`` ranks in
rank order (``gather=True`` under an initialised process group; ``[B, B]`` otherwise), the layout
that :func:`~mmcontrast.losses.triplet.triplet_margin_loss` and
:func:`~mmcontrast.losses.multi_positive.multi_positive_info_nce` expect with ``gather=True``. The
times, groups and labels of the other ranks are gathered without gradient
(:mod:`mmcontrast.losses.distributed`).

References:
    Sermanet, Lynch, Chebotar, Hsu, Jang, Schaal, Levine. "Time-Contrastive Networks:
    Self-Supervised Learning from Video", ICRA 2018. https://arxiv.org/abs/1704.06888

    Khosla et al. "Supervised Contrastive Learning", NeurIPS 2020. https://arxiv.org/abs/2004.11362
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from mmcontrast.losses.distributed import gather_rows, rank_and_world_size
from mmcontrast.losses.similarity import check_choice, check_finite, check_labels

OTHER_GROUPS = ("negative", "ignore")


def _check_radius(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise ValueError(f"time_masks: {name} must be a finite number >= 0, got {value!r}")


def _check_times(times: Tensor) -> None:
    if not isinstance(times, Tensor):
        raise TypeError(f"time_masks: times must be a torch.Tensor, got {type(times).__name__}")
    if times.ndim != 1 or times.numel() == 0:
        raise ValueError(
            f"time_masks: times must be a non-empty 1-D tensor with one time per row, got shape {tuple(times.shape)}"
        )
    if times.dtype == torch.bool or times.is_complex():
        raise TypeError(f"time_masks: times must hold integer or float times, got dtype {times.dtype}")
    if times.is_floating_point():
        check_finite("time_masks", "times", times)


def _self_columns(batch_size: int, rank: int, device: torch.device) -> Tensor:
    return torch.arange(batch_size, device=device) + rank * batch_size


def time_masks(
    times: Tensor,
    groups: Tensor | None = None,
    *,
    pos_radius: float,
    neg_radius: float,
    other_groups: str = "negative",
    gather: bool = False,
) -> tuple[Tensor, Tensor]:
    """``(positive, negative)`` masks of a batch of frames from their times (and videos).

    Args:
        times: ``[B]`` times of the frames, integer (frame index) or float (seconds).
        groups: optional ``[B]`` integer group ids (the video of each frame); ``None`` puts every
            frame in the same video.
        pos_radius: frames of the same video at most ``pos_radius`` apart are positives (a frame
            is never its own positive).
        neg_radius: frames of the same video more than ``neg_radius`` apart are negatives; the ones
            in between are ignored. Needs ``0 <= pos_radius <= neg_radius``.
        other_groups: ``"negative"`` (frames of other videos are negatives) or ``"ignore"`` (they
            are neither positives nor negatives).
        gather: with an initialised process group of several ranks, the columns are the frames of
            all ranks in rank order (times and groups gathered; every rank needs the same ``B``).
            A no-op on one process.

    Returns:
        ``(positive, negative)``, two bool tensors of shape ``[B, W * B]`` (``[B, B]`` on one
        process), disjoint, on the device of ``times``.
    """
    _check_times(times)
    if groups is not None:
        check_labels("time_masks", "groups", groups, times.shape[0])
        groups = groups.to(times.device)
    _check_radius("pos_radius", pos_radius)
    _check_radius("neg_radius", neg_radius)
    if pos_radius > neg_radius:
        raise ValueError(
            f"time_masks: pos_radius ({pos_radius!r}) must not exceed neg_radius ({neg_radius!r}); frames closer "
            "than pos_radius are positives, farther than neg_radius negatives, so use pos_radius <= neg_radius"
        )
    check_choice("time_masks", "other_groups", other_groups, OTHER_GROUPS)
    times = times.detach()
    rank, world_size = rank_and_world_size(gather)
    all_times, all_groups = times, groups
    if world_size > 1:
        all_times, all_groups = gather_rows("time_masks", ("times", "groups"), (times, groups), world_size)
    if times.is_floating_point():
        # float64 so that |t_i - t_j| is compared with the radii without float32 rounding.
        dtype = torch.float32 if times.device.type == "mps" else torch.float64
        gap = (times.to(dtype)[:, None] - all_times.to(dtype)[None, :]).abs()
        within, beyond = gap <= pos_radius, gap > neg_radius
    else:
        # Integer gaps compared with the integer part of the radii: exact for any frame index.
        gap = (times.long()[:, None] - all_times.long()[None, :]).abs()
        within, beyond = gap <= math.floor(pos_radius), gap > math.floor(neg_radius)
    columns = torch.arange(all_times.shape[0], device=times.device)
    not_self = columns[None, :] != _self_columns(times.shape[0], rank, times.device)[:, None]
    if groups is None:
        return within & not_self, beyond
    same_group = groups[:, None] == all_groups[None, :]
    positive = same_group & within & not_self
    negative = same_group & beyond
    if other_groups == "negative":
        negative = negative | ~same_group
    return positive, negative


def label_masks(labels: Tensor, *, gather: bool = False) -> tuple[Tensor, Tensor]:
    """``(positive, negative)`` masks from class labels: same label (not self) / different label.

    Args:
        labels: ``[B]`` integer class labels.
        gather: with an initialised process group of several ranks, the columns are the rows of
            all ranks in rank order (labels gathered). A no-op on one process.

    Returns:
        ``(positive, negative)``, two bool tensors of shape ``[B, W * B]`` (``[B, B]`` on one
        process). Passing them to :func:`~mmcontrast.losses.triplet.triplet_margin_loss` gives
        exactly the loss with ``labels``.
    """
    if not isinstance(labels, Tensor):
        raise TypeError(f"label_masks: labels must be a torch.Tensor, got {type(labels).__name__}")
    if labels.ndim != 1 or labels.numel() == 0:
        raise ValueError(
            "label_masks: labels must be a non-empty 1-D tensor with one label per row, "
            f"got shape {tuple(labels.shape)}"
        )
    check_labels("label_masks", "labels", labels, labels.shape[0])
    rank, world_size = rank_and_world_size(gather)
    all_labels = labels
    if world_size > 1:
        (all_labels,) = gather_rows("label_masks", ("labels",), (labels,), world_size)
    same = labels[:, None] == all_labels[None, :]
    columns = torch.arange(all_labels.shape[0], device=labels.device)
    not_self = columns[None, :] != _self_columns(labels.shape[0], rank, labels.device)[:, None]
    return same & not_self, ~same


def check_masks(
    fn: str, positive_mask: Tensor, negative_mask: Tensor, rows: int, columns: int, layout: str = "[B, W*B]"
) -> None:
    """Check a ``(positive_mask, negative_mask)`` pair: bool tensors of shape ``(rows, columns)``, disjoint.

    ``layout`` spells the expected shape in the error message.
    """
    for name, mask in (("positive_mask", positive_mask), ("negative_mask", negative_mask)):
        if not isinstance(mask, Tensor):
            raise TypeError(f"{fn}: {name} must be a torch.Tensor, got {type(mask).__name__}")
        if mask.dtype != torch.bool:
            raise TypeError(
                f"{fn}: {name} must be a bool tensor, got dtype {mask.dtype}; build the masks with "
                "time_masks or label_masks, or convert with mask.bool()"
            )
        if tuple(mask.shape) != (rows, columns):
            raise ValueError(
                f"{fn}: {name} has shape {tuple(mask.shape)} but must be {layout} = ({rows}, {columns}) "
                "(local rows x the columns of all ranks in rank order; with gather=True build it with "
                "time_masks(..., gather=True) or label_masks(..., gather=True))"
            )
    both = positive_mask & negative_mask.to(positive_mask.device)
    if both.any():
        row, column = (int(index) for index in both.nonzero()[0])
        raise ValueError(
            f"{fn}: positive_mask and negative_mask are both true at row {row}, column {column}; "
            "a column is a positive, a negative or neither, never both"
        )


class PairMasks(NamedTuple):
    """A batch's columns and pair masks, from :func:`pair_masks`.

    Attributes:
        columns: the embeddings of all ranks, ``[W*B, d]`` (gathered with gradient; the local ones on one process).
        positive: ``[B, W*B]``: positives of each local row, never the row itself.
        negative: ``[B, W*B]``: negatives of each local row, never the row itself.
        self_columns: ``[B]``: the column of each local row.
    """

    columns: Tensor
    positive: Tensor
    negative: Tensor
    self_columns: Tensor


def pair_masks(
    fn: str,
    embeddings: Tensor,
    labels: Tensor | None,
    positive_mask: Tensor | None,
    negative_mask: Tensor | None,
    *,
    gather: bool,
) -> PairMasks:
    """The columns and positive / negative masks of a pair loss that takes ``labels`` or explicit masks.

    Exactly one of ``labels`` (same label: positive, other label: negative) or both masks (``[B, W*B]``, from
    :func:`time_masks` or :func:`label_masks`) must be given; errors name ``fn`` and what is missing. With
    ``gather`` and a process group of ``W`` ranks the embeddings (and labels) of all ranks are gathered with
    gradient.
    """
    use_masks = positive_mask is not None or negative_mask is not None
    if labels is not None and use_masks:
        raise ValueError(
            f"{fn}: pass either labels or positive_mask and negative_mask, not both "
            "(label_masks(labels) turns labels into masks)"
        )
    if labels is None and (positive_mask is None or negative_mask is None):
        missing = "labels" if not use_masks else ("negative_mask" if negative_mask is None else "positive_mask")
        raise ValueError(
            f"{fn}: {missing} is missing; pass labels, or both positive_mask and negative_mask "
            "(e.g. from time_masks or label_masks)"
        )
    batch_size = embeddings.shape[0]
    rank, world_size = rank_and_world_size(gather)
    if labels is None:
        columns = embeddings
        if world_size > 1:
            (columns,) = gather_rows(fn, ("embeddings",), (embeddings,), world_size)
        check_masks(fn, positive_mask, negative_mask, batch_size, columns.shape[0])
    else:
        check_labels(fn, "labels", labels, batch_size)
        labels = labels.to(embeddings.device)
        columns, all_labels = embeddings, labels
        if world_size > 1:
            columns, all_labels = gather_rows(fn, ("embeddings", "labels"), (embeddings, labels), world_size)
    self_columns = _self_columns(batch_size, rank, embeddings.device)
    not_self = torch.arange(columns.shape[0], device=embeddings.device)[None, :] != self_columns[:, None]
    if labels is None:
        positive = positive_mask.to(embeddings.device) & not_self
        negative = negative_mask.to(embeddings.device) & not_self
    else:
        same = labels[:, None] == all_labels[None, :]
        positive, negative = same & not_self, ~same
    return PairMasks(columns, positive, negative, self_columns)
