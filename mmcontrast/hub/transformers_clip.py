"""transformers image-text dual-encoder folders: save a trained CLIP method as one the
zero-shot-image-classification pipeline loads, and load such a folder (ours or anyone's) for zero-shot use.

- Both towers CLIP-shaped (``CLIPVisionModel`` + ``CLIPTextModel`` with its end-of-text pooling): a
  ``CLIPModel`` + ``CLIPProcessor``.
- Any other transformers vision model + transformers text model pooled by its ``pooler_output``: a
  ``VisionTextDualEncoderModel`` + ``VisionTextDualEncoderProcessor``.

Both keep the towers, the bias-free projections and the logit scale as trained, so the folder gives the same
embeddings as mmcontrast's own model. :class:`TransformersDualEncoder` loads any such folder (``CLIPModel``,
``VisionTextDualEncoderModel``, SigLIP...) through ``AutoModel`` + ``AutoProcessor`` as a
:class:`~mmcontrast.evaluation.zero_shot.DualEncoder`. (An audio-text ``ClapModel`` folder gets its own module.)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from transformers import (
    CLIPConfig,
    CLIPImageProcessor,
    CLIPModel,
    CLIPProcessor,
    CLIPTextModel,
    CLIPVisionModel,
    VisionTextDualEncoderConfig,
    VisionTextDualEncoderModel,
    VisionTextDualEncoderProcessor,
)

from mmcontrast.methods.clip import CLIP
from mmcontrast.modalities.image import ImageEncoder


def transformers_export_kind(method: CLIP) -> str | None:
    """``clip``, ``dual_encoder`` or None (the towers have no transformers dual-encoder home)."""
    image, text = method.image_encoder, method.text_encoder
    if image.kind != "transformers" or text.pooling != "pooler":
        return None
    if isinstance(image.backbone, CLIPVisionModel) and isinstance(text.transformer, CLIPTextModel):
        return "clip"
    return "dual_encoder"


def clip_image_processor(encoder: ImageEncoder) -> CLIPImageProcessor:
    """The transformers image processor doing what ``encoder.preprocess`` does (resize, crop, normalise)."""
    size = encoder.image_size
    return CLIPImageProcessor(
        size={"shortest_edge": size},
        crop_size={"height": size, "width": size},
        image_mean=list(encoder.mean),
        image_std=list(encoder.std),
        do_convert_rgb=True,
    )


def export_transformers_clip(method: CLIP, directory: str | Path) -> Path:
    """Write the transformers folder (model + processor) for ``method``; raises if the towers cannot be."""
    kind = transformers_export_kind(method)
    if kind is None:
        raise ValueError(
            "the CLIP towers have no transformers dual-encoder form: it needs a transformers vision model and a "
            "transformers text model with pooling 'pooler' (the towers' own pooled outputs)"
        )
    directory = Path(directory)
    image_backbone = method.image_encoder.backbone
    text_model = method.text_encoder.transformer
    embed_dim = method.visual_projection.out_features
    log_scale = min(max(float(method.logit_scale.log_scale.detach()), 0.0), math.log(method.logit_scale.max_scale))
    if kind == "clip":
        config = CLIPConfig(
            text_config=text_model.config.to_dict(),
            vision_config=image_backbone.config.to_dict(),
            projection_dim=embed_dim,
        )
        model = CLIPModel(config)
        model.vision_model.load_state_dict(image_backbone.state_dict())
        model.text_model.load_state_dict(text_model.state_dict())
        processor = CLIPProcessor(
            image_processor=clip_image_processor(method.image_encoder), tokenizer=method.text_encoder.tokenizer
        )
    else:
        config = VisionTextDualEncoderConfig.from_vision_text_configs(
            image_backbone.config, text_model.config, projection_dim=embed_dim
        )
        model = VisionTextDualEncoderModel(config=config, vision_model=image_backbone, text_model=text_model)
        processor = VisionTextDualEncoderProcessor(
            image_processor=clip_image_processor(method.image_encoder), tokenizer=method.text_encoder.tokenizer
        )
    with torch.no_grad():
        model.visual_projection.weight.copy_(method.visual_projection.weight)
        model.text_projection.weight.copy_(method.text_projection.weight)
        model.logit_scale.fill_(log_scale)
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    return directory


class TransformersDualEncoder:
    """A saved transformers dual encoder (``CLIPModel``, ``VisionTextDualEncoderModel``) with its processor."""

    def __init__(self, folder: str | Path, batch_size: int = 128) -> None:
        from transformers import AutoModel, AutoProcessor

        folder = Path(folder)
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(f"'{folder}' is not a transformers model folder (no config.json)")
        self.model = AutoModel.from_pretrained(str(folder)).eval()
        self.processor = AutoProcessor.from_pretrained(str(folder))
        self.batch_size = batch_size

    @staticmethod
    def _pooled(output) -> torch.Tensor:
        return output.pooler_output if hasattr(output, "pooler_output") else output

    @torch.no_grad()
    def encode_images(self, images: Sequence[Image.Image]) -> torch.Tensor:
        chunks = []
        for start in range(0, len(images), self.batch_size):
            inputs = self.processor(images=list(images[start : start + self.batch_size]), return_tensors="pt")
            chunks.append(self._pooled(self.model.get_image_features(pixel_values=inputs["pixel_values"])))
        return F.normalize(torch.cat(chunks).float(), dim=-1)

    @torch.no_grad()
    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        chunks = []
        for start in range(0, len(texts), self.batch_size):
            inputs = self.processor(
                text=list(texts[start : start + self.batch_size]), padding=True, truncation=True, return_tensors="pt"
            )
            chunks.append(self._pooled(self.model.get_text_features(**inputs)))
        return F.normalize(torch.cat(chunks).float(), dim=-1)
