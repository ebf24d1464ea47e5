"""Temporal alignment and clip retrieval between views of the same video, from per-frame embeddings.

Model-agnostic: every function takes embeddings (``[T, d]`` per view, torch tensors or numpy arrays), so the same
numbers can be computed for any encoder and for raw pixels (:func:`pixel_features`). "Views" are synchronised
recordings of one event (several cameras, or augmented copies of one clip); a good frame embedding maps the frame at
time ``t`` of one view next to the frame at time ``t`` of the other.

Nearest neighbours: frame ``t`` of view ``a`` is matched to the frame of view ``b`` with the highest cosine similarity
(``metric="cosine"``) or the smallest Euclidean distance (``metric="euclidean"``); ties go to the earliest frame of
``b``. Cosine similarity of a zero vector is 0.

* **Alignment error** (TCN, Sermanet et al. 2018, "Time-Contrastive Networks", https://arxiv.org/abs/1704.06888):
  the mean over the frames ``t`` of ``a`` of ``|t / T_a - nn(t) / T_b|``, where ``nn(t)`` is the nearest-neighbour
  frame in ``b``. Each frame index is divided by its view's length (relative positions in ``[0, 1)``), so for views of
  equal length ``T`` it is the paper's ``|t - nn(t)| / T`` exactly; 0 is perfect alignment. This one normalisation is
  used everywhere in this module.
* **Kendall's tau** (TCC, Dwibedi et al. 2019, "Temporal Cycle-Consistency Learning",
  https://arxiv.org/abs/1904.07846): Kendall's rank correlation (``scipy.stats.kendalltau``, the tau-b variant)
  between the frame order ``0 .. T_a - 1`` of ``a`` and the nearest-neighbour indices ``nn(t)`` in ``b``; 1 when the
  neighbours keep the order, -1 when they reverse it. Degenerate cases, where the correlation is undefined (every
  frame has the same neighbour, or ``a`` has a single frame), give **0.0**, not NaN.
* **Clip retrieval** (:func:`clip_retrieval`): query ``i`` (a clip embedding of one view) must find key ``i`` (the
  same clip seen by another view) among all keys by cosine similarity; the other videos' clips are the distractors.
  recall@k is the fraction of queries whose match is within the top ``k``; MRR is the mean of ``1 / rank``. Ties are
  broken **pessimistically**: a distractor with exactly the match's similarity ranks ahead of it.

:func:`pairwise_alignment` averages the two alignment metrics over the ordered pairs of views of one video,
:func:`video_alignment_report` over videos.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

Metric = Literal["cosine", "euclidean"]
Embeddings = torch.Tensor | np.ndarray
METRICS = ("cosine", "euclidean")


def _embeddings(x: Embeddings, name: str) -> torch.Tensor:
    """``x`` as a float64 ``[T, d]`` tensor; errors name the input ``name``."""
    if not isinstance(x, torch.Tensor | np.ndarray):
        raise TypeError(f"{name} must be a torch.Tensor or numpy array of shape [T, d], got {type(x).__name__}")
    tensor = torch.as_tensor(np.asarray(x) if isinstance(x, np.ndarray) else x.detach().cpu())
    if tensor.ndim != 2:
        raise ValueError(f"{name} must be 2-D embeddings [T, d] (one row per frame), got shape {tuple(tensor.shape)}")
    if tensor.shape[0] == 0 or tensor.shape[1] == 0:
        raise ValueError(f"{name} must hold at least one frame and one dimension, got shape {tuple(tensor.shape)}")
    tensor = tensor.to(torch.float64)
    if not torch.isfinite(tensor).all():
        raise ValueError(f"{name} holds NaN or infinite values")
    return tensor


def _pair(a: Embeddings, b: Embeddings, names: tuple[str, str] = ("a", "b")) -> tuple[torch.Tensor, torch.Tensor]:
    a_, b_ = _embeddings(a, names[0]), _embeddings(b, names[1])
    if a_.shape[1] != b_.shape[1]:
        raise ValueError(
            f"{names[0]} and {names[1]} must have the same embedding size, got {a_.shape[1]} and {b_.shape[1]}"
        )
    return a_, b_


def _check_metric(metric: str) -> None:
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")


def cosine_similarity_matrix(a: Embeddings, b: Embeddings) -> torch.Tensor:
    """``[T_a, T_b]`` cosine similarities between the frames of ``a`` and of ``b`` (float64)."""
    a_, b_ = _pair(a, b)
    return F.normalize(a_, dim=-1) @ F.normalize(b_, dim=-1).T


def nearest_neighbours(a: Embeddings, b: Embeddings, *, metric: Metric = "cosine") -> torch.Tensor:
    """For every frame of ``a``, the index of its nearest frame in ``b`` (``[T_a]`` int64; ties: earliest frame)."""
    _check_metric(metric)
    a_, b_ = _pair(a, b)
    cosine = metric == "cosine"
    scores = F.normalize(a_, dim=-1) @ F.normalize(b_, dim=-1).T if cosine else -torch.cdist(a_, b_)
    # argmax returns the first maximum on CPU for float64 ties; made explicit so it does not depend on the backend
    best = scores.max(dim=1, keepdim=True).values
    return (scores == best).to(torch.int8).argmax(dim=1)


def alignment_error(a: Embeddings, b: Embeddings, *, metric: Metric = "cosine") -> float:
    """TCN alignment error: mean over frames ``t`` of ``a`` of ``|t / T_a - nn(t) / T_b|`` (0 is perfect)."""
    nn = nearest_neighbours(a, b, metric=metric).to(torch.float64)
    length_a, length_b = len(nn), _embeddings(b, "b").shape[0]
    positions = torch.arange(length_a, dtype=torch.float64) / length_a
    return float((positions - nn / length_b).abs().mean())


def kendall_tau(a: Embeddings, b: Embeddings, *, metric: Metric = "cosine") -> float:
    """TCC Kendall's tau between the frame order of ``a`` and its nearest-neighbour indices in ``b``.

    0.0 where it is undefined (``a`` has one frame, or every frame of ``a`` has the same neighbour).
    """
    from scipy.stats import kendalltau

    nn = nearest_neighbours(a, b, metric=metric).numpy()
    if len(nn) < 2 or np.all(nn == nn[0]):
        return 0.0
    tau = float(kendalltau(np.arange(len(nn)), nn).statistic)
    return 0.0 if math.isnan(tau) else tau


def pairwise_alignment(views: Sequence[Embeddings], *, metric: Metric = "cosine") -> dict[str, float]:
    """Both metrics averaged over the ordered pairs ``(i, j), i != j`` of the views of one video.

    Returns ``{"alignment_error", "kendall_tau", "pairs"}``.

    Raises:
        ValueError: fewer than two views, or views with different embedding sizes (the message names the view).
    """
    views = list(views)
    if len(views) < 2:
        raise ValueError(f"views must hold at least two views of the video, got {len(views)}")
    checked = [_embeddings(view, f"views[{i}]") for i, view in enumerate(views)]
    for i, view in enumerate(checked[1:], 1):
        if view.shape[1] != checked[0].shape[1]:
            raise ValueError(f"views[{i}] has embedding size {view.shape[1]} but views[0] has {checked[0].shape[1]}")
    errors, taus = [], []
    for i, a in enumerate(checked):
        for j, b in enumerate(checked):
            if i != j:
                errors.append(alignment_error(a, b, metric=metric))
                taus.append(kendall_tau(a, b, metric=metric))
    return {
        "alignment_error": float(np.mean(errors)),
        "kendall_tau": float(np.mean(taus)),
        "pairs": len(errors),
    }


def video_alignment_report(
    per_video_views: Sequence[Sequence[Embeddings]], *, metric: Metric = "cosine"
) -> dict[str, float | int | list[float]]:
    """:func:`pairwise_alignment` of every video, and its mean over videos.

    Returns ``{"alignment_error", "kendall_tau"}`` (means over videos, each video weighted equally),
    ``{"alignment_error_per_video", "kendall_tau_per_video"}`` (lists, in input order) and ``"videos"``.

    Raises:
        ValueError: no video, or a video with fewer than two views (the message names its index).
    """
    per_video_views = list(per_video_views)
    if not per_video_views:
        raise ValueError("per_video_views is empty: give at least one video's list of views")
    results = []
    for index, views in enumerate(per_video_views):
        try:
            results.append(pairwise_alignment(views, metric=metric))
        except (ValueError, TypeError) as error:
            raise type(error)(f"per_video_views[{index}]: {error}") from None
    errors = [r["alignment_error"] for r in results]
    taus = [r["kendall_tau"] for r in results]
    return {
        "alignment_error": float(np.mean(errors)),
        "kendall_tau": float(np.mean(taus)),
        "alignment_error_per_video": errors,
        "kendall_tau_per_video": taus,
        "videos": len(results),
    }


def clip_retrieval(queries: Embeddings, keys: Embeddings, ks: Sequence[int] = (1, 5)) -> dict[str, float]:
    """Retrieve key ``i`` for query ``i`` among all ``N`` keys by cosine similarity.

    The rank of query ``i``'s match is ``1 +`` the number of other keys whose similarity to the query is **greater
    than or equal to** the match's (pessimistic ties). Returns ``recall@k`` for each ``k`` in ``ks`` (the fraction of
    queries whose match ranks ``<= k``) and ``mrr`` (mean ``1 / rank``).

    Raises:
        ValueError: shapes differ (queries and keys must both be ``[N, d]``), or a ``k`` is not positive.
    """
    q, k_ = _pair(queries, keys, ("queries", "keys"))
    if q.shape[0] != k_.shape[0]:
        raise ValueError(
            f"queries and keys must pair up row by row (query i matches key i), got {q.shape[0]} queries and "
            f"{k_.shape[0]} keys"
        )
    if any(int(k) <= 0 for k in ks):
        raise ValueError(f"ks must be positive ranks, got {list(ks)}")
    similarity = F.normalize(q, dim=-1) @ F.normalize(k_, dim=-1).T
    match = similarity.diagonal().unsqueeze(1)
    ahead = (similarity >= match).sum(dim=1) - 1  # the match itself is always >= itself
    ranks = (ahead + 1).to(torch.float64)
    result = {f"recall@{int(k)}": float((ranks <= int(k)).to(torch.float64).mean()) for k in ks}
    result["mrr"] = float((1.0 / ranks).mean())
    return result


def pixel_features(frames: torch.Tensor | np.ndarray, size: int = 16) -> torch.Tensor:
    """Raw-pixel baseline embeddings: uint8 frames ``[T, H, W, 3]`` -> float32 ``[T, size * size * 3]``.

    Each frame is downsampled to ``size x size`` (area averaging; the aspect ratio is not kept), flattened, and
    standardised on its own (zero mean, unit standard deviation over its values; a constant frame becomes zeros), so
    the metrics above can be computed on pixels with the same code as on a model's embeddings.

    Raises:
        ValueError: ``frames`` is not ``[T, H, W, 3]`` with ``T >= 1``, or ``size`` is not positive.
    """
    tensor = torch.as_tensor(np.asarray(frames) if isinstance(frames, np.ndarray) else frames)
    if tensor.ndim != 4 or tensor.shape[-1] != 3 or min(tensor.shape) == 0:
        raise ValueError(f"frames must be uint8 video frames [T, H, W, 3], got shape {tuple(tensor.shape)}")
    if size <= 0:
        raise ValueError(f"size must be a positive number of pixels, got {size}")
    images = tensor.permute(0, 3, 1, 2).to(torch.float32) / 255.0
    small = F.adaptive_avg_pool2d(images, (size, size))
    flat = small.permute(0, 2, 3, 1).reshape(len(small), -1)
    centred = flat - flat.mean(dim=1, keepdim=True)
    scale = centred.std(dim=1, unbiased=False, keepdim=True)
    return torch.where(scale > 1e-8, centred / scale.clamp_min(1e-8), torch.zeros_like(centred))
