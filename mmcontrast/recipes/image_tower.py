"""The `model.image` section shared by image recipes (CLIP, SimCLR) and the backbone it builds."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mmcontrast.modalities.image import ImageEncoder
from mmcontrast.recipes.base import transformers_config
from mmcontrast.typed_config import PositiveInt


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
    image_size: PositiveInt | None = None


def build_image_tower(config: ImageTowerConfig) -> ImageEncoder:
    """The image encoder a `model.image` section describes (random init unless `weights` is given)."""
    if config.config is not None:
        from transformers import AutoModel

        if config.weights:
            raise ValueError("model.image.weights is for `backbone` models; a `config` backbone starts from scratch")
        backbone = AutoModel.from_config(transformers_config(config.config, "model.image.config"))
        return ImageEncoder.from_transformers(backbone)
    if config.backbone:
        return ImageEncoder.create(config.backbone, image_size=config.image_size, weights=config.weights)
    raise ValueError("model.image needs a backbone (timm/..., torchvision/..., a folder) or a config")
