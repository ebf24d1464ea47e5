"""An open_clip model as two mmcontrast towers.

open_clip builds image and text towers that already end in their projection to the shared space. Here the
model is built with its text tower as one module (open_clip's ``CustomTextCLIP`` layout: ``visual.*``,
``text.*``, ``logit_scale``), so that the image side becomes an :class:`~mmcontrast.modalities.image.ImageEncoder`
and the text side an :class:`OpenClipTextEncoder` of the CLIP (two-tower) method, trained by the shared loss core.
:func:`mmcontrast.hub.open_clip_folder.save_open_clip` writes them as the folder
``open_clip.create_model_and_transforms("local-dir:DIR")`` loads.

Models come from open_clip's own registry by name (``ViT-B-32``, random init) or from a ``model_cfg`` dict
(``embed_dim``, ``vision_cfg``, ``text_cfg``); ``weights`` loads a local open_clip checkpoint, ``pretrained`` the
weights of one of open_clip's pretrained tags (``laion2b_s34b_b79k``), read from open_clip's cache and downloaded
when missing (:mod:`mmcontrast.modalities.pretrained_weights`), with the tag's preprocessing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mmcontrast.modalities import pretrained_weights
from mmcontrast.modalities.image import ImageEncoder


class OpenClipTextEncoder(nn.Module):
    """open_clip's text tower (token embedding, causal transformer, end-of-text pooling, projection).

    Args:
        tower: ``CustomTextCLIP.text`` (a ``TextTransformer``).
        tokenizer: open_clip tokenizer (texts -> ``[B, context_length]`` token ids).
    """

    pooling = "open_clip"  # pooled and projected by the tower itself

    def __init__(self, tower: nn.Module, tokenizer: Any) -> None:
        super().__init__()
        self.tower = tower
        self.tokenizer = tokenizer

    @property
    def embedding_dim(self) -> int:
        return self.tower.output_dim

    def preprocess(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Texts -> ``{"input_ids": [B, context_length]}``."""
        return {"input_ids": self.tokenizer(list(texts))}

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """``{"input_ids"}`` -> ``[B, d]`` projected text features."""
        return self.tower(features["input_ids"])


@dataclass
class OpenClipTowers:
    """The two towers of one open_clip model and what rebuilds it.

    Attributes:
        image: the visual tower.
        text: the text tower.
        model_cfg: open_clip's model config (``embed_dim``, ``vision_cfg``, ``text_cfg``...).
        logit_scale: the model's logit scale (not its log).
    """

    image: ImageEncoder
    text: OpenClipTextEncoder
    model_cfg: dict[str, Any]
    logit_scale: float


def open_clip_towers(
    name: str | None = None,
    model_cfg: dict[str, Any] | None = None,
    weights: str | None = None,
    pretrained: str | None = None,
) -> OpenClipTowers:
    """Build an open_clip model from its registry ``name`` or a ``model_cfg`` dict and split it into towers.

    Args:
        name: a model of open_clip's registry (``ViT-B-32``).
        model_cfg: instead of ``name``, an open_clip model config.
        weights: a local open_clip checkpoint to load.
        pretrained: instead of ``weights``, a pretrained tag of model ``name`` (``laion2b_s34b_b79k``).
    """
    import open_clip
    from open_clip.model import CustomTextCLIP
    from open_clip.transform import PreprocessCfg, merge_preprocess_dict

    if (name is None) == (model_cfg is None):
        raise ValueError("model.open_clip needs exactly one of `name` (e.g. ViT-B-32) or `model_cfg`")
    if pretrained is not None and weights:
        raise ValueError("model.open_clip: give `pretrained` (a tag) or `weights` (a local checkpoint), not both")
    if pretrained is not None and name is None:
        raise ValueError("model.open_clip.pretrained is a tag of a registry model: give `name`, not `model_cfg`")
    if name is not None:
        model_cfg = open_clip.get_model_config(name)
        if model_cfg is None:
            raise ValueError(
                f"model.open_clip.name '{name}' is not an open_clip model; see open_clip.list_models() "
                f"(e.g. {', '.join(open_clip.list_models()[:4])})"
            )
    model_cfg = {key: value for key, value in dict(model_cfg).items() if key != "custom_text"}
    if "hf_model_name" in model_cfg.get("text_cfg", {}):
        raise ValueError("model.open_clip: text towers from transformers (hf_model_name) are not supported here")
    tag_config: dict[str, Any] = {}
    if pretrained is not None:  # checked, then fetched, before the model is built
        setting = "model.open_clip.pretrained"
        tag_config = pretrained_weights.open_clip_pretrained_cfg(name, pretrained, setting)
        weights = pretrained_weights.fetch_open_clip(name, pretrained, tag_config, setting)
        if tag_config.get("quick_gelu"):
            model_cfg["quick_gelu"] = True  # the activation the weights were trained with (open_clip's -quickgelu)
    model = CustomTextCLIP(**model_cfg)
    if weights:
        if not Path(weights).is_file():
            raise FileNotFoundError(f"model.open_clip.weights '{weights}' does not exist")
        open_clip.load_checkpoint(model, weights)
    visual = model.visual
    size = visual.image_size[0] if isinstance(visual.image_size, tuple) else visual.image_size
    preprocess = merge_preprocess_dict(PreprocessCfg(size=size), tag_config)  # a tag's own mean and std
    mean, std = preprocess["mean"], preprocess["std"]
    image = ImageEncoder(visual, "open_clip", visual.output_dim, size, mean, std, name or "")
    context_length = model_cfg.get("text_cfg", {}).get("context_length", 77)
    tokenizer = open_clip.SimpleTokenizer(context_length=context_length)
    text = OpenClipTextEncoder(model.text, tokenizer)
    return OpenClipTowers(image, text, model_cfg, float(model.logit_scale.detach().exp()))
