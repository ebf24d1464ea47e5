"""The `model.video` section of video recipes and the video tower it builds (mmcontrast.modalities.video)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from mmcontrast.modalities.transformers_video import TransformersVideoEncoder
from mmcontrast.modalities.video import VideoEncoder
from mmcontrast.recipes.base import transformers_config
from mmcontrast.recipes.image_tower import ImageTowerConfig, build_image_tower
from mmcontrast.typed_config import PositiveInt, UnitFloat


@dataclass
class VideoTowerConfig:
    """The video tower (`model.video:` section): an image tower per frame + pooling, or a transformers video model.

    Attributes:
        kind: `frames` (the `image` tower on every frame, then `pooling` over time) or `transformers` (a VideoMAE
            or X-CLIP video model from `config` or `path`; clips are padded or subsampled to its `num_frames`).
        image: the per-frame image tower of a `frames` tower (`backbone` / `config`, `weights`, `image_size`).
        pooling: how a `frames` tower pools its frame embeddings: `mean`, `attention` (one learned query) or
            `transformer` (a small temporal transformer with positional embeddings; the clip embedding then
            depends on frame order).
        layers: temporal transformer layers (`transformer` pooling).
        heads: attention heads (`attention` and `transformer` pooling); must divide the image tower's width.
        max_frames: longest clip a `transformer` pooling takes (its positional embeddings).
        dropout: dropout inside the temporal transformer.
        config: the transformers config of a randomly initialised `transformers` tower: `model_type: videomae`,
            `xclip` or `xclip_vision_model` plus sizes (e.g. `{model_type: videomae, image_size: 32, patch_size: 8,
            num_frames: 4, tubelet_size: 2, hidden_size: 32, num_hidden_layers: 1, num_attention_heads: 2}`).
        path: instead, a local transformers video model folder (VideoMAE or X-CLIP; safetensors weights).
    """

    kind: Literal["frames", "transformers"] = "frames"
    image: ImageTowerConfig = field(default_factory=ImageTowerConfig)
    pooling: Literal["mean", "attention", "transformer"] = "mean"
    layers: PositiveInt = 2
    heads: PositiveInt = 4
    max_frames: PositiveInt = 64
    dropout: UnitFloat = 0.0
    config: dict[str, Any] | None = None
    path: str | None = None


def build_video_tower(config: VideoTowerConfig) -> VideoEncoder | TransformersVideoEncoder:
    """The video encoder a `model.video` section describes (random init unless weights or a folder are given)."""
    if config.kind == "transformers":
        if (config.config is None) == (config.path is None):
            raise ValueError("model.video (kind transformers) needs exactly one of config (a dict) or path (a folder)")
        if config.image != ImageTowerConfig():
            raise ValueError("model.video.image is the frame tower of kind frames; remove it for kind transformers")
        if config.path is not None:
            return TransformersVideoEncoder.from_pretrained(config.path)
        return TransformersVideoEncoder.from_config(transformers_config(config.config, "model.video.config"))
    if config.config is not None or config.path is not None:
        raise ValueError(
            "model.video.config / model.video.path are for kind transformers; a frames tower's image model goes in "
            "model.video.image (backbone or config)"
        )
    if config.image.backbone is None and config.image.config is None:
        raise ValueError("model.video (kind frames) needs an image tower: model.video.image.backbone or .config")
    image = build_image_tower(config.image, "model.video.image")
    return VideoEncoder(
        image,
        config.pooling,
        layers=config.layers,
        heads=config.heads,
        max_frames=config.max_frames,
        dropout=config.dropout,
    )
