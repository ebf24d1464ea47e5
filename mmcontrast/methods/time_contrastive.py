r"""Time-contrastive learning of frame embeddings: single-view and multi-view TCN.

Time-Contrastive Networks (Sermanet et al. 2018) learn a frame embedding :math:`f(x_t)` in which frames close in
time are close and frames far apart in time are far apart, without labels. A training item is a set of frames
sampled from one video (:class:`mmcontrast.views.video.FrameWindows`), seen by one camera (single-view) or by
:math:`V \ge 2` synchronised cameras (multi-view). Every frame :math:`i` of the batch has a video :math:`g_i`, a
time :math:`t_i` and a view; the loss core's time masks (:func:`mmcontrast.losses.time_masks`) decide the pairs:

.. math::

    P(i) = \{ j \ne i : g_j = g_i,\ |t_j - t_i| \le r_+ \},
    \qquad
    N(i) = \{ j : g_j \ne g_i \text{ or } |t_j - t_i| > r_- \}

Frames with :math:`r_+ < |t_j - t_i| \le r_-` are ignored. Single-view TCN takes :math:`r_+ > 0` (neighbouring
frames are positives); multi-view TCN takes :math:`r_+ = r_- = 0`: a frame's positives are the *same moment seen by
the other cameras*, every other moment is a negative, which forces the embedding to ignore viewpoint and keep what
changes over time. Three losses, all through the shared core:

- ``triplet``: the triplet margin loss with semi-hard mining over the masks, on L2-normalised embeddings with the
  euclidean distance and margin 0.2 (TCN's default; :func:`mmcontrast.losses.triplet_margin_loss`);
- ``infonce``: the multi-positive InfoNCE over the masks, :math:`\ell_i = -\frac{1}{|P(i)|} \sum_{p \in P(i)}
  \log \frac{e^{s_{ip}/\tau}}{\sum_{k \in P(i) \cup N(i)} e^{s_{ik}/\tau}}` with cosine :math:`s`
  (:func:`mmcontrast.losses.multi_positive_info_nce`);
- ``npairs`` (multi-view): Sohn's n-pairs loss as TCN uses it, InfoNCE between the frames of two views on
  *unnormalised* dot products (each anchor's positive is the same moment in the other view; the same moment of
  the same video is never a negative), averaged over ordered pairs of views, plus ``l2_penalty`` times the mean
  squared norm of the embeddings.

**Position.** A frame embedding that can see the frame's position in the window solves the task by counting
instead of by looking (the "counting" trap that TCC points out). The method therefore embeds every frame with
the encoder's per-frame path (:meth:`VideoEncoder.encode_frames`: the image tower alone, before any temporal
pooling) and refuses an encoder whose frame embeddings see position (``frames_see_position`` True: transformers
video models such as VideoMAE mix frames with positional embeddings).

References:
    Sermanet et al. "Time-Contrastive Networks: Self-Supervised Learning from Video", ICRA 2018.
    https://arxiv.org/abs/1704.06888

    Sohn. "Improved Deep Metric Learning with Multi-class N-pair Loss Objective", NeurIPS 2016.

    Dwibedi et al. "Temporal Cycle-Consistency Learning", CVPR 2019. https://arxiv.org/abs/1904.07846
"""

from __future__ import annotations

from itertools import permutations
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mmcontrast.losses import info_nce, multi_positive_info_nce, time_masks, triplet_margin_loss
from mmcontrast.losses.distributed import rank_and_world_size
from mmcontrast.methods.base import LossOutput, Method

LOSSES = ("triplet", "infonce", "npairs")


def moment_ids(videos: torch.Tensor, times: torch.Tensor) -> torch.Tensor:
    """An integer id per (video, time) pair, the same in every process: frames with one id are one moment."""
    return videos.long() * 10_000_000 + torch.round(times.double() * 1000).long()


class TimeContrastive(Method):
    """Single-view or multi-view time-contrastive training of a frame encoder (see the module docstring).

    Rows come from :class:`mmcontrast.views.video.FrameWindows`: ``frames`` ``[T, H, W, 3]`` (one view) or
    ``views`` ``[V, T, H, W, 3]`` (synchronised views), ``times`` ``[T]`` and ``video`` (the video's id).

    Args:
        encoder: a video encoder with ``preprocess`` and ``encode_frames`` whose frame embeddings cannot see
            position (:class:`mmcontrast.modalities.video.VideoEncoder`).
        head: an optional projection of the frame embeddings for the loss (dropped at export).
        loss: ``triplet``, ``infonce`` or ``npairs`` (multi-view only).
        pos_radius: frames within this time of each other (same video) are positives (``r_+``).
        neg_radius: frames farther apart than this (same video) are negatives (``r_-`` >= ``r_+``); frames of
            other videos are always negatives.
        margin: triplet margin (on unit vectors).
        temperature: InfoNCE temperature (``infonce``).
        l2_penalty: weight of the mean squared embedding norm (``npairs``).
        gather: take positives and negatives from every process's frames (exact cross-device loss).
    """

    def __init__(
        self,
        encoder: nn.Module,
        head: nn.Module | None = None,
        *,
        loss: str = "triplet",
        pos_radius: float = 0.0,
        neg_radius: float = 0.0,
        margin: float = 0.2,
        temperature: float = 0.1,
        l2_penalty: float = 0.0,
        gather: bool = True,
    ) -> None:
        super().__init__()
        if loss not in LOSSES:
            raise ValueError(f"TimeContrastive: loss must be one of {LOSSES}, got {loss!r}")
        if not 0 <= pos_radius <= neg_radius:
            raise ValueError(
                f"TimeContrastive: need 0 <= pos_radius <= neg_radius, got pos_radius={pos_radius}, "
                f"neg_radius={neg_radius}"
            )
        if temperature <= 0 or margin < 0 or l2_penalty < 0:
            raise ValueError(
                f"TimeContrastive: temperature must be > 0, margin and l2_penalty >= 0; got {temperature}, "
                f"{margin}, {l2_penalty}"
            )
        if not hasattr(encoder, "encode_frames") or not hasattr(encoder, "frames_see_position"):
            raise TypeError(
                f"TimeContrastive: the encoder ({type(encoder).__name__}) is not a video encoder (it needs "
                "encode_frames and frames_see_position, as mmcontrast.modalities.video.VideoEncoder has)"
            )
        if encoder.frames_see_position:
            raise ValueError(
                f"TimeContrastive: the frame embeddings of {type(encoder).__name__} can see each frame's position "
                "in the clip, so a time-contrastive loss can be solved by counting frames instead of looking at "
                "them; use a VideoEncoder (an image tower per frame) for frame-level losses"
            )
        self.video_encoder = encoder
        self.head = head
        self.loss_name = loss
        self.pos_radius = float(pos_radius)
        self.neg_radius = float(neg_radius)
        self.margin = float(margin)
        self.temperature = float(temperature)
        self.l2_penalty = float(l2_penalty)
        self.gather = gather

    @property
    def encoder(self) -> nn.Module:
        """The video encoder (kept after training)."""
        return self.video_encoder

    def collate(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        """Rows -> ``pixel_values`` ``[B, V, T, 3, S, S]``, ``times`` ``[B, T]`` and ``videos`` ``[B]``."""
        if not rows:
            raise ValueError("TimeContrastive.collate: empty batch")
        clips: list[torch.Tensor] = []
        for row in rows:
            if "views" in row:
                clips.extend(torch.as_tensor(view) for view in row["views"])
            elif "frames" in row:
                clips.append(torch.as_tensor(row["frames"]))
            else:
                raise ValueError(
                    f"TimeContrastive.collate: rows need 'frames' or 'views' (got keys {sorted(row)}); wrap the "
                    "data in mmcontrast.views.video.FrameWindows"
                )
        num_views = len(clips) // len(rows)
        if num_views * len(rows) != len(clips):
            raise ValueError("TimeContrastive.collate: every row needs the same number of views")
        inputs = self.encoder.preprocess(clips)
        if not bool(inputs["frame_mask"].all()):
            raise ValueError(
                "TimeContrastive.collate: windows of different lengths; FrameWindows gives every item the same "
                "number of frames (num_frames no longer than the shortest video)"
            )
        pixel_values = inputs["pixel_values"]
        batch: dict[str, Any] = {
            "pixel_values": pixel_values.reshape(len(rows), num_views, *pixel_values.shape[1:]),
            "times": torch.stack([torch.as_tensor(row["times"], dtype=torch.float64) for row in rows]),
            "videos": torch.tensor([int(row["video"]) for row in rows], dtype=torch.long),
        }
        if all("label" in row for row in rows):
            batch["labels"] = torch.tensor([int(row["label"]) for row in rows], dtype=torch.long)
        return batch

    def embed(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """``{"frames": [B, V, T, d]}``: every frame through the per-frame path (then the head, if any); unit
        vectors except for ``npairs``, which scores raw dot products."""
        pixel_values = batch["pixel_values"]
        if pixel_values.ndim != 6:
            raise ValueError(
                f"TimeContrastive: pixel_values must be [B, V, T, 3, S, S], got {list(pixel_values.shape)}"
            )
        rows, views, frames = pixel_values.shape[:3]
        embeddings = self.encoder.encode_frames(pixel_values.flatten(0, 1))
        if self.head is not None:
            embeddings = self.head(embeddings)
        if self.loss_name != "npairs":
            embeddings = F.normalize(embeddings, dim=-1)
        return {"frames": embeddings.reshape(rows, views, frames, -1)}

    def loss(self, embeddings: dict[str, torch.Tensor], batch: dict[str, Any]) -> LossOutput:
        frames = embeddings["frames"]
        rows, views, steps, dim = frames.shape
        times = batch["times"].to(frames.device)[:, None, :].expand(rows, views, steps).reshape(-1)
        videos = batch["videos"].to(frames.device)[:, None, None].expand(rows, views, steps).reshape(-1)
        flat = frames.reshape(-1, dim)
        if self.loss_name == "npairs":
            if views < 2:
                raise ValueError(
                    "TimeContrastive: the npairs loss needs synchronised views (rows with 'views', V >= 2)"
                )
            per_row = batch["videos"].to(frames.device)[:, None].expand(rows, steps)
            ids = moment_ids(per_row, batch["times"].to(frames.device)).reshape(-1)  # order of frames[:, a]
            pairs = list(permutations(range(views), 2))
            value = sum(
                info_nce(
                    frames[:, a].reshape(-1, dim),
                    frames[:, b].reshape(-1, dim),
                    scale=1.0,
                    normalize=False,
                    labels=ids,
                    gather=self.gather,
                )
                for a, b in pairs
            ) / len(pairs)
            if self.l2_penalty:
                value = value + self.l2_penalty * flat.float().pow(2).sum(-1).mean()
            return LossOutput(value, {"embedding_norm": flat.detach().norm(dim=-1).mean()})
        positive, negative = time_masks(
            times, videos, pos_radius=self.pos_radius, neg_radius=self.neg_radius, gather=self.gather
        )
        if self.loss_name == "triplet":
            value = triplet_margin_loss(
                flat,
                positive_mask=positive,
                negative_mask=negative,
                margin=self.margin,
                mining="semi_hard",
                distance="euclidean",
                gather=self.gather,
            )
        else:
            value = multi_positive_info_nce(
                flat,
                positive_mask=positive,
                negative_mask=negative,
                scale=1.0 / self.temperature,
                gather=self.gather,
            )
        with torch.no_grad():  # this process's frames only: how close positives and negatives are
            local = flat.detach().float()
            cosine = F.normalize(local, dim=-1) @ F.normalize(local, dim=-1).T
            start = rank_and_world_size(self.gather)[0] * len(local)  # this process's columns of the masks
            own, others = positive[:, start : start + len(local)], negative[:, start : start + len(local)]
            metrics = {  # masked means (NaN where a mask is empty), without reading the masks on the host
                "positive_cosine": (cosine * own).sum() / own.sum(),
                "negative_cosine": (cosine * others).sum() / others.sum(),
            }
        return LossOutput(value, metrics)
