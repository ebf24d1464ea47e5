"""Evaluate a video encoder on several views of every video: frame alignment between views, clip retrieval.

Every video comes as ``V >= 2`` views of the same moments: synchronised cameras (a table's ``sync`` column, the
generated moving digits' cameras) or differently augmented copies of one decoding (built by
:func:`mmcontrast.views.video.views_from_rows`, which the callers pass in). For each
video and each ordered pair of views, the frame embeddings (:meth:`encode_frames`, one per frame) give the TCN
alignment error and TCC's Kendall's tau (:mod:`mmcontrast.evaluation.video_alignment`); the clip embeddings (the
encoder's pooled output) of view 0 retrieve those of view 1 among all videos (recall@1/5, MRR). The same numbers are
computed, in the same run, for raw pixels (:func:`~mmcontrast.evaluation.video_alignment.pixel_features`; a clip is
the mean of its frames' pixel features) and for the same encoder at random initialisation (:func:`random_init`), the
two baselines a trained encoder must beat.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from mmcontrast.evaluation.video_alignment import clip_retrieval, pixel_features, video_alignment_report
from mmcontrast.evaluation.video_plots import plot_alignment_matrix, plot_embedding_trajectories

Clip = torch.Tensor
"""uint8 ``[T, H, W, 3]``."""


@torch.no_grad()
def embed_views(
    encoder: nn.Module, videos: Sequence[Sequence[Clip]], batch_size: int = 16
) -> tuple[list, torch.Tensor]:
    """Frame embeddings ``videos[i][v] -> [T, d]`` and clip embeddings ``[N, V, d]`` of every view (eval mode)."""
    was_training = encoder.training
    encoder.eval()
    clips = [clip for views in videos for clip in views]
    frames, pooled = [], []
    for start in tqdm(range(0, len(clips), batch_size), desc="embedding views", leave=False):
        batch = encoder.preprocess(clips[start : start + batch_size])
        per_frame = encoder.encode_frames(batch["pixel_values"], batch["frame_mask"])
        if hasattr(encoder, "pool"):  # a VideoEncoder's clip embedding pools these frames: no second tower pass
            pooled.append(encoder.pool(per_frame, batch["frame_mask"]).float())
        else:  # a transformers video model's clip embedding is not a pooling of its frame slots
            pooled.append(encoder(batch["pixel_values"], batch["frame_mask"]).float())
        per_frame = per_frame.float()
        mask = batch["frame_mask"]
        if per_frame.shape[1] == mask.shape[1]:  # one embedding per frame: drop the padding
            frames += [f[: int(n)] for f, n in zip(per_frame, mask.sum(dim=1).tolist(), strict=True)]
        else:  # a transformers video model has its own number of time slots
            frames += list(per_frame)
    encoder.train(was_training)
    num_views = len(videos[0])
    per_video = [frames[i * num_views : (i + 1) * num_views] for i in range(len(videos))]
    return per_video, torch.cat(pooled).reshape(len(videos), num_views, -1)


def pixel_views(videos: Sequence[Sequence[Clip]]) -> tuple[list, torch.Tensor]:
    """The raw-pixel baseline in the shape :func:`embed_views` returns."""
    frames = [[pixel_features(clip) for clip in views] for views in videos]
    pooled = torch.stack([torch.stack([f.mean(dim=0) for f in views]) for views in frames])
    return frames, pooled


def view_metrics(frames: Sequence[Sequence[torch.Tensor]], clips: torch.Tensor) -> dict[str, float]:
    """Alignment error and Kendall's tau over views, and clip retrieval of view 0 -> view 1 across videos."""
    report = video_alignment_report(frames)
    metrics = {"alignment_error": float(report["alignment_error"]), "kendall_tau": float(report["kendall_tau"])}
    if clips.shape[0] >= 2:
        retrieval = clip_retrieval(clips[:, 0], clips[:, 1])
        metrics.update({f"retrieval/{key}": float(value) for key, value in retrieval.items()})
    return metrics


def random_init(encoder: nn.Module, seed: int = 0) -> nn.Module:
    """A copy of ``encoder`` with every weight drawn afresh: each module's own ``reset_parameters`` (linear,
    convolution, normalisation, attention layers) and, for parameters no module resets (position embeddings, class
    tokens, learned queries), a truncated normal with std 0.02. No trained value is kept."""
    fresh = copy.deepcopy(encoder)
    torch.manual_seed(seed)
    reset: set[int] = set()
    for module in fresh.modules():
        if callable(getattr(module, "reset_parameters", None)):
            module.reset_parameters()
            reset |= {id(p) for p in module.parameters()}
    with torch.no_grad():
        for parameter in fresh.parameters():
            if id(parameter) not in reset:
                nn.init.trunc_normal_(parameter, std=0.02)
    return fresh


def compare_on_views(
    encoder: nn.Module, videos: Sequence[Sequence[Clip]], *, baseline: nn.Module | None = None, seed: int = 0
) -> dict[str, dict[str, float]]:
    """:func:`view_metrics` of the encoder, of ``baseline`` (default: :func:`random_init` of the encoder) and of
    raw pixels, on the same views."""
    if not videos or len(videos[0]) < 2:
        raise ValueError("compare_on_views: give at least one video with two or more views")
    untrained = baseline if baseline is not None else random_init(encoder, seed)
    return {
        "model": view_metrics(*embed_views(encoder, videos)),
        "random_init": view_metrics(*embed_views(untrained, videos)),
        "pixels": view_metrics(*pixel_views(videos)),
    }


def plot_views(encoder: nn.Module, videos: Sequence[Sequence[Clip]], folder: str | Path, count: int = 6) -> list[Path]:
    """The alignment matrix between the two views of the first video, and the embedding trajectories (PCA) of the
    first ``count`` videos' view 0."""
    folder = Path(folder)
    frames, _ = embed_views(encoder, videos[:count])
    return [
        plot_alignment_matrix(frames[0][0], frames[0][1], folder / "alignment_matrix.png"),
        plot_embedding_trajectories([views[0] for views in frames], folder / "trajectories.png"),
    ]


def summary_table(results: dict[str, dict[str, float]]) -> str:
    """A markdown table of :func:`compare_on_views` results (one row per encoder)."""
    keys = list(next(iter(results.values())))
    lines = ["| features | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    for name, metrics in results.items():
        lines.append(f"| {name} | " + " | ".join(f"{metrics[key]:.3f}" for key in keys) + " |")
    return "\n".join(lines)
