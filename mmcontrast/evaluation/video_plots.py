"""Plots of frame embeddings over time: the similarity matrix between two views with its nearest-neighbour path, and
the embedding trajectories of several videos in the plane of their first two principal components.

Both take embeddings (``[T, d]`` per view or video, torch tensors or numpy arrays) and write a PNG with matplotlib's
Agg backend, like :mod:`mmcontrast.evaluation.plots`. The metrics behind them are in
:mod:`mmcontrast.evaluation.video_alignment`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch

from mmcontrast.evaluation.plots import _save
from mmcontrast.evaluation.video_alignment import (
    Embeddings,
    _embeddings,
    alignment_error,
    cosine_similarity_matrix,
    kendall_tau,
    nearest_neighbours,
)


def plot_alignment_matrix(
    a: Embeddings,
    b: Embeddings,
    path: str | Path,
    *,
    title: str = "frame alignment",
    labels: tuple[str, str] = ("view a", "view b"),
) -> Path:
    """Save the cosine-similarity matrix between the frames of ``a`` (rows) and ``b`` (columns) as a PNG.

    Each row's nearest neighbour in ``b`` is marked (the path a perfect alignment draws along the diagonal), and the
    title carries the alignment error and Kendall's tau of ``a`` against ``b``.
    """
    similarity = cosine_similarity_matrix(a, b).numpy()
    nn = nearest_neighbours(a, b).numpy()
    error, tau = alignment_error(a, b), kendall_tau(a, b)
    rows, columns = similarity.shape
    side = min(9.0, max(4.0, 3.0 + 0.04 * max(rows, columns)))
    figure, axis = plt.subplots(figsize=(side + 1.0, side))
    image = axis.imshow(similarity, cmap="viridis", vmin=-1, vmax=1, aspect="auto", interpolation="nearest")
    axis.plot(nn, np.arange(rows), color="red", marker="o", markersize=3, linewidth=1, label="nearest neighbour")
    axis.plot([0, columns - 1], [0, rows - 1], color="white", linestyle=":", linewidth=1, label="same relative time")
    axis.set_xlabel(f"{labels[1]} frame")
    axis.set_ylabel(f"{labels[0]} frame")
    axis.set_title(f"{title}\nalignment error {error:.3f}, Kendall's tau {tau:.3f}", fontsize=10)
    axis.legend(fontsize=7, loc="lower left")
    figure.colorbar(image, fraction=0.046, label="cosine similarity")
    return _save(figure, path)


def plot_embedding_trajectories(
    videos: Sequence[Embeddings],
    path: str | Path,
    labels: Sequence[str] | None = None,
    *,
    title: str = "embedding trajectories (PCA)",
) -> Path:
    """Save the frames of each video as a line in the plane of the first two principal components, fitted on all
    frames of all videos together. Point colour is the relative time in the video (dark: start, light: end); the first
    frame is a star, the last a cross.

    Raises:
        ValueError: no video, embedding sizes differ, or ``labels`` does not have one entry per video.
    """
    videos = [_embeddings(video, f"videos[{i}]") for i, video in enumerate(videos)]
    if not videos:
        raise ValueError("videos is empty: give at least one [T, d] embedding matrix")
    for i, video in enumerate(videos[1:], 1):
        if video.shape[1] != videos[0].shape[1]:
            raise ValueError(f"videos[{i}] has embedding size {video.shape[1]} but videos[0] has {videos[0].shape[1]}")
    if labels is not None and len(labels) != len(videos):
        raise ValueError(f"labels must name every video: {len(labels)} labels for {len(videos)} videos")
    labels = list(labels) if labels is not None else [f"video {i}" for i in range(len(videos))]
    frames = torch.cat(videos)
    centred = frames - frames.mean(dim=0)
    if len(frames) > 1 and frames.shape[1] > 1:
        _, _, components = torch.linalg.svd(centred, full_matrices=False)
        basis = components[:2].T
    else:
        basis = torch.eye(frames.shape[1], dtype=frames.dtype)[:, :2]
    projected = (centred @ basis).numpy()
    if projected.shape[1] == 1:  # one-dimensional embeddings: draw them on a line
        projected = np.concatenate([projected, np.zeros_like(projected)], axis=1)
    figure, axis = plt.subplots(figsize=(7, 6))
    colours = plt.get_cmap("tab10")
    start = 0
    scatter = None
    for index, (video, label) in enumerate(zip(videos, labels, strict=True)):
        points = projected[start : start + len(video)]
        start += len(video)
        colour = colours(index % 10)
        axis.plot(points[:, 0], points[:, 1], color=colour, linewidth=1, alpha=0.7, label=label)
        time = np.linspace(0.0, 1.0, len(points)) if len(points) > 1 else np.zeros(1)
        scatter = axis.scatter(points[:, 0], points[:, 1], c=time, cmap="viridis", vmin=0, vmax=1, s=14, zorder=3)
        axis.scatter(*points[0], marker="*", s=180, color=colour, edgecolors="black", zorder=4)
        axis.scatter(*points[-1], marker="X", s=80, color=colour, edgecolors="black", zorder=4)
    axis.set_xlabel("PC 1")
    axis.set_ylabel("PC 2")
    axis.set_title(f"{title}\n(star: first frame, cross: last frame)", fontsize=10)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7)
    if scatter is not None:
        figure.colorbar(scatter, fraction=0.046, label="relative time in the video")
    return _save(figure, path)
