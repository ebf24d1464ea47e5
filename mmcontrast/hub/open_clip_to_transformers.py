"""Convert open_clip towers of the standard CLIP form (ViT image tower, causal text transformer) to a
transformers ``CLIPModel`` + ``CLIPProcessor``, so that an open_clip model trained here also runs in
``transformers.pipeline("zero-shot-image-classification")``.

The two implementations compute the same function; only the parameter layout differs: open_clip keeps the
query/key/value projections in one ``in_proj`` matrix (transformers: three), its position embeddings as a
parameter (transformers: an ``nn.Embedding``), and its output projections as ``x @ proj`` (transformers: a
bias-free ``nn.Linear``, the transpose). Models with options transformers' CLIP lacks (layer scale, attentional
pooling, timm or transformers towers, other pooling...) are not converted: :func:`convertible` says why.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import CLIPConfig, CLIPModel, CLIPProcessor

from mmcontrast.hub.transformers_clip import clip_image_processor
from mmcontrast.modalities.clip_tokenizer import clip_tokenizer
from mmcontrast.modalities.image import ImageEncoder
from mmcontrast.modalities.open_clip_towers import OpenClipTextEncoder

_VISION_KEYS = {"layers", "width", "head_width", "mlp_ratio", "patch_size", "image_size"}
_TEXT_KEYS = {"context_length", "vocab_size", "width", "heads", "layers", "mlp_ratio"}
_MODEL_KEYS = {"embed_dim", "vision_cfg", "text_cfg", "quick_gelu"}
START_OF_TEXT, END_OF_TEXT = 49406, 49407


def convertible(model_cfg: dict[str, Any]) -> str | None:
    """None when ``model_cfg`` has the standard CLIP form; otherwise what keeps it from converting."""
    vision, text = model_cfg.get("vision_cfg", {}), model_cfg.get("text_cfg", {})
    extra = (set(model_cfg) - _MODEL_KEYS) | {f"vision_cfg.{k}" for k in set(vision) - _VISION_KEYS}
    extra |= {f"text_cfg.{k}" for k in set(text) - _TEXT_KEYS}
    if extra:
        return f"options transformers' CLIPModel does not have: {sorted(extra)}"
    if not isinstance(vision.get("layers", 12), int) or not isinstance(vision.get("image_size", 224), int):
        return "a ResNet image tower or a non-square image size"
    return None


def _config(model_cfg: dict[str, Any], log_scale: float) -> CLIPConfig:
    vision, text = model_cfg["vision_cfg"], model_cfg["text_cfg"]
    act = "quick_gelu" if model_cfg.get("quick_gelu") else "gelu"
    vision_width, text_width = vision.get("width", 768), text.get("width", 512)
    return CLIPConfig(
        vision_config={
            "hidden_size": vision_width,
            "intermediate_size": int(vision_width * vision.get("mlp_ratio", 4.0)),
            "num_hidden_layers": vision.get("layers", 12),
            "num_attention_heads": vision_width // vision.get("head_width", 64),
            "image_size": vision.get("image_size", 224),
            "patch_size": vision.get("patch_size", 16),
            "hidden_act": act,
            "layer_norm_eps": 1e-5,
        },
        text_config={
            "vocab_size": text.get("vocab_size", 49408),
            "hidden_size": text_width,
            "intermediate_size": int(text_width * text.get("mlp_ratio", 4.0)),
            "num_hidden_layers": text.get("layers", 12),
            "num_attention_heads": text.get("heads", 8),
            "max_position_embeddings": text.get("context_length", 77),
            "hidden_act": act,
            "layer_norm_eps": 1e-5,
            # open_clip pools at the highest token id, the end-of-text token: its first occurrence
            "bos_token_id": START_OF_TEXT,
            "eos_token_id": END_OF_TEXT,
            "pad_token_id": END_OF_TEXT,
        },
        projection_dim=model_cfg["embed_dim"],
        logit_scale_init_value=log_scale,
    )


def _blocks(resblocks: torch.nn.Module, prefix: str) -> dict[str, torch.Tensor]:
    state = {}
    for i, block in enumerate(resblocks):
        layer = f"{prefix}.encoder.layers.{i}"
        q, k, v = block.attn.in_proj_weight.chunk(3)
        q_bias, k_bias, v_bias = block.attn.in_proj_bias.chunk(3)
        state |= {
            f"{layer}.self_attn.q_proj.weight": q,
            f"{layer}.self_attn.k_proj.weight": k,
            f"{layer}.self_attn.v_proj.weight": v,
            f"{layer}.self_attn.q_proj.bias": q_bias,
            f"{layer}.self_attn.k_proj.bias": k_bias,
            f"{layer}.self_attn.v_proj.bias": v_bias,
            f"{layer}.self_attn.out_proj.weight": block.attn.out_proj.weight,
            f"{layer}.self_attn.out_proj.bias": block.attn.out_proj.bias,
            f"{layer}.layer_norm1.weight": block.ln_1.weight,
            f"{layer}.layer_norm1.bias": block.ln_1.bias,
            f"{layer}.layer_norm2.weight": block.ln_2.weight,
            f"{layer}.layer_norm2.bias": block.ln_2.bias,
            f"{layer}.mlp.fc1.weight": block.mlp.c_fc.weight,
            f"{layer}.mlp.fc1.bias": block.mlp.c_fc.bias,
            f"{layer}.mlp.fc2.weight": block.mlp.c_proj.weight,
            f"{layer}.mlp.fc2.bias": block.mlp.c_proj.bias,
        }
    return state


def open_clip_to_transformers(
    image: ImageEncoder, text: OpenClipTextEncoder, log_scale: torch.Tensor, model_cfg: dict[str, Any]
) -> CLIPModel:
    """A ``CLIPModel`` computing what the open_clip towers compute (raises if :func:`convertible` objects)."""
    reason = convertible(model_cfg)
    if reason is not None:
        raise ValueError(f"this open_clip model has no transformers CLIPModel form: {reason}")
    visual, tower = image.backbone, text.tower
    state = {
        "vision_model.embeddings.patch_embedding.weight": visual.conv1.weight,
        "vision_model.embeddings.class_embedding": visual.class_embedding,
        "vision_model.embeddings.position_embedding.weight": visual.positional_embedding,
        "vision_model.pre_layrnorm.weight": visual.ln_pre.weight,
        "vision_model.pre_layrnorm.bias": visual.ln_pre.bias,
        "vision_model.post_layernorm.weight": visual.ln_post.weight,
        "vision_model.post_layernorm.bias": visual.ln_post.bias,
        "visual_projection.weight": visual.proj.T,
        "text_model.embeddings.token_embedding.weight": tower.token_embedding.weight,
        "text_model.embeddings.position_embedding.weight": tower.positional_embedding,
        "text_model.final_layer_norm.weight": tower.ln_final.weight,
        "text_model.final_layer_norm.bias": tower.ln_final.bias,
        "text_projection.weight": tower.text_projection.T,
        "logit_scale": log_scale.reshape(()),
    }
    state |= _blocks(visual.transformer.resblocks, "vision_model")
    state |= _blocks(tower.transformer.resblocks, "text_model")
    model = CLIPModel(_config(model_cfg, float(log_scale.detach())))
    missing, unexpected = model.load_state_dict({k: v.detach().clone() for k, v in state.items()}, strict=False)
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing or unexpected:
        raise ValueError(f"open_clip -> CLIPModel: missing {missing[:5]}, unexpected {unexpected[:5]}")
    return model.eval()


def save_open_clip_as_transformers(
    image: ImageEncoder,
    text: OpenClipTextEncoder,
    log_scale: torch.Tensor,
    model_cfg: dict[str, Any],
    directory: str | Path,
) -> Path:
    """Write the ``CLIPModel`` + ``CLIPProcessor`` (OpenAI CLIP's tokenizer, the towers' preprocessing)."""
    directory = Path(directory)
    open_clip_to_transformers(image, text, log_scale, model_cfg).save_pretrained(directory)
    tokenizer = clip_tokenizer(model_cfg["text_cfg"].get("context_length", 77))
    CLIPProcessor(image_processor=clip_image_processor(image), tokenizer=tokenizer).save_pretrained(directory)
    return directory
