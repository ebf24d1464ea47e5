"""The `model.image` section shared by image recipes (CLIP, SimCLR) and the backbone it builds."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mmcontrast.modalities.image import ImageEncoder


@dataclass
class ImageTowerConfig:
    """The image tower / backbone (`model.image:` section).

    Attributes:
        backbone: `timm/<model>`, `torchvision/<model>`, `open_clip/<model>` or a local transformers folder.
        config: instead of `backbone`, a transformers vision config to build a randomly initialised tower
            (`model_type` plus sizes, e.g. `{model_type: clip_vision_model, image_size: 32, patch_size: 4}`).
        weights: a local safetensors / PyTorch file with backbone weights (for `backbone` models).
        image_size: input side (default: the backbone's own).
    """

    backbone: str | None = None
    config: dict[str, Any] | None = None
    weights: str | None = None
    image_size: int | None = None


def build_image_tower(config: ImageTowerConfig) -> ImageEncoder:
    """The image encoder a `model.image` section describes (random init unless `weights` is given)."""
    if config.config is not None:
        from transformers import AutoConfig, AutoModel

        options = dict(config.config)
        model_type = options.pop("model_type", None)
        if model_type is None:
            raise ValueError("model.image.config needs a model_type (e.g. clip_vision_model, vit)")
        if config.weights:
            raise ValueError("model.image.weights is for `backbone` models; a `config` backbone starts from scratch")
        return ImageEncoder.from_transformers(AutoModel.from_config(AutoConfig.for_model(model_type, **options)))
    if config.backbone:
        return ImageEncoder.create(config.backbone, image_size=config.image_size, weights=config.weights)
    raise ValueError("model.image needs a backbone (timm/..., torchvision/..., a folder) or a config")
