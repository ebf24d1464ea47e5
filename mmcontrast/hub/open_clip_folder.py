"""open_clip's folder layout: save two open_clip towers as the folder ``open_clip.create_model_and_transforms(
"local-dir:DIR")`` loads (and, pushed, ``"hf-hub:REPO"``), and load such a folder for zero-shot use.

The folder holds ``open_clip_config.json`` (``model_cfg`` + ``preprocess_cfg``) and
``open_clip_model.safetensors`` (open_clip's ``CustomTextCLIP`` layout: ``visual.*``, ``text.*``,
``logit_scale``); no pickle. The towers come from :mod:`mmcontrast.modalities.open_clip_towers`; the same
towers, when of the standard CLIP form, also convert to a transformers ``CLIPModel``
(:mod:`mmcontrast.hub.open_clip_to_transformers`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from safetensors.torch import save_file

from mmcontrast.modalities.image import ImageEncoder
from mmcontrast.modalities.open_clip_towers import OpenClipTextEncoder

CONFIG_FILE = "open_clip_config.json"
WEIGHTS_FILE = "open_clip_model.safetensors"


def save_open_clip(
    image: ImageEncoder,
    text: OpenClipTextEncoder,
    log_scale: torch.Tensor,
    model_cfg: dict[str, Any],
    directory: str | Path,
) -> Path:
    """Write the towers as an open_clip folder (``local-dir:``): config + safetensors weights, no pickle."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {f"visual.{k}": v for k, v in image.backbone.state_dict().items()}
    state |= {f"text.{k}": v for k, v in text.tower.state_dict().items()}
    state["logit_scale"] = log_scale.detach().reshape(())
    save_file({k: v.detach().cpu().contiguous() for k, v in state.items()}, directory / WEIGHTS_FILE)
    preprocess_cfg = {
        "size": image.image_size,
        "mode": "RGB",
        "mean": list(image.mean),
        "std": list(image.std),
        "interpolation": "bicubic",
        "resize_mode": "shortest",
    }
    config = {"model_cfg": {**model_cfg, "custom_text": True}, "preprocess_cfg": preprocess_cfg}
    (directory / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    return directory


class OpenClipDualEncoder:
    """A saved open_clip folder (``open_clip_config.json`` + weights), loaded through ``local-dir:``."""

    def __init__(self, folder: str | Path, batch_size: int = 128) -> None:
        import open_clip

        folder = Path(folder)
        if not (folder / CONFIG_FILE).is_file():
            raise FileNotFoundError(f"'{folder}' is not an open_clip model folder (no {CONFIG_FILE})")
        self.model, _, self.preprocess = open_clip.create_model_and_transforms(f"local-dir:{folder}")
        self.model.eval()
        self.tokenizer = open_clip.get_tokenizer(f"local-dir:{folder}")
        self.batch_size = batch_size

    @torch.no_grad()
    def encode_images(self, images: Sequence[Image.Image]) -> torch.Tensor:
        chunks = []
        for start in range(0, len(images), self.batch_size):
            pixels = torch.stack([self.preprocess(image) for image in images[start : start + self.batch_size]])
            chunks.append(self.model.encode_image(pixels, normalize=True))
        return torch.cat(chunks).float()

    @torch.no_grad()
    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        chunks = []
        for start in range(0, len(texts), self.batch_size):
            tokens = self.tokenizer(list(texts[start : start + self.batch_size]))
            chunks.append(self.model.encode_text(tokens, normalize=True))
        return torch.cat(chunks).float()
