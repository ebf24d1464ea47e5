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
        pretrained: instead of `weights`, the library's own pretrained weights by name: `true` for its default
            weights (timm's default tag, torchvision's `DEFAULT`), or a timm tag (`a1_in1k`:
            `timm.list_pretrained('resnet18.*')`), a member of the torchvision model's weights enum
            (`IMAGENET1K_V1` or `ResNet18_Weights.IMAGENET1K_V1`), an open_clip tag (`laion2b_s34b_b79k`).
            Read from the library's cache (Hugging Face cache; torchvision: `$TORCH_HOME/hub/checkpoints`),
            downloaded there when missing (not with `HF_HUB_OFFLINE=1`); mean, std and the default
            `image_size` follow the weights.
        image_size: input side (default: the backbone's own).
    """

    backbone: str | None = None
    config: dict[str, Any] | None = None
    weights: str | None = None
    pretrained: bool | str = False
    image_size: PositiveInt | None = None


def build_image_tower(config: ImageTowerConfig, key: str = "model.image") -> ImageEncoder:
    """The image encoder a `model.image` section describes (random init unless `weights` or `pretrained` is
    given); ``key`` is where the section sits in the recipe, for the messages."""
    if config.config is not None:
        from transformers import AutoModel

        for name, value in (("weights", config.weights), ("pretrained", config.pretrained)):
            if value:
                raise ValueError(f"{key}.{name} is for `backbone` models; a `config` backbone starts from scratch")
        backbone = AutoModel.from_config(transformers_config(config.config, f"{key}.config"))
        return ImageEncoder.from_transformers(backbone)
    if config.backbone:
        return ImageEncoder.create(
            config.backbone,
            image_size=config.image_size,
            weights=config.weights,
            pretrained=config.pretrained,
            pretrained_key=f"{key}.pretrained",
        )
    raise ValueError(f"{key} needs a backbone (timm/..., torchvision/..., open_clip/..., a folder) or a config")
