"""CLIP: an image tower and a text tower trained so that matching (image, caption) pairs align.

Each tower's features go through a linear projection (no bias) to a shared space and are L2-normalised (towers
that already end in a projection, as open_clip's do, are used as they are: ``project=False``); the loss is the
symmetric InfoNCE of the shared core over the batch (every other caption is a negative for an image and vice
versa):

    L = 1/2 [ CE(s * I T^T, diag) + CE(s * T I^T, diag) ],   s = exp(t) clamped to [1, 100], t learnable,

with ``t`` initialised at log(1 / 0.07). Pairs known to match (same class label, or the same caption) are
masked out of each other's negatives. With ``lock_text`` (LiT) the text tower is frozen (a pretrained text
encoder, in eval mode) and only the image side and the projections learn.

References:
    Radford et al., "Learning Transferable Visual Models From Natural Language Supervision", ICML 2021.
    Zhai et al., "LiT: Zero-Shot Transfer with Locked-image text Tuning", CVPR 2022 (here the text side is locked).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from mmcontrast.losses import LogitScale, info_nce
from mmcontrast.methods.base import LossOutput, Method
from mmcontrast.modalities.image import ImageEncoder
from mmcontrast.modalities.open_clip_towers import OpenClipTextEncoder
from mmcontrast.modalities.text import TextEncoder


def _stable_hash(text: str) -> int:
    """A hash of a text, the same in every process (Python's ``hash`` is salted per process), kept apart from
    small class labels."""
    return (int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little") >> 2) + 2**32


class CLIP(Method):
    """Image tower + text tower + projections + learnable logit scale.

    Args:
        image_encoder: the image tower.
        text_encoder: the text tower.
        embed_dim: size of the shared embedding space.
        logit_scale_init: initial scale (1 / temperature).
        lock_text: freeze the text tower (LiT).
        gather: use every process's pairs as negatives (exact cross-device InfoNCE).
        project: add the linear projections; False when both towers already project to ``embed_dim``.
        mask_positives: rows known to match (the same class label, or the same caption) are not negatives of
            each other; False makes every other row of the batch a negative, as CLIP and open_clip do.
    """

    def __init__(
        self,
        image_encoder: ImageEncoder,
        text_encoder: TextEncoder | OpenClipTextEncoder,
        embed_dim: int = 512,
        *,
        logit_scale_init: float = 1 / 0.07,
        lock_text: bool = False,
        gather: bool = True,
        project: bool = True,
        mask_positives: bool = True,
    ) -> None:
        super().__init__()
        self.image_encoder = image_encoder
        self.text_encoder = text_encoder
        if project:
            self.visual_projection = nn.Linear(image_encoder.embedding_dim, embed_dim, bias=False)
            self.text_projection = nn.Linear(text_encoder.embedding_dim, embed_dim, bias=False)
        else:
            dims = {"image": image_encoder.embedding_dim, "text": text_encoder.embedding_dim}
            if set(dims.values()) != {embed_dim}:
                raise ValueError(f"CLIP(project=False) needs both towers to output embed_dim={embed_dim}, got {dims}")
            self.visual_projection, self.text_projection = nn.Identity(), nn.Identity()
        self.logit_scale = LogitScale(logit_scale_init, learnable=True, max_scale=100.0)
        self.lock_text = lock_text
        self.gather = gather
        self.mask_positives = mask_positives
        if lock_text:
            text_encoder.requires_grad_(False)
            text_encoder.eval()

    def train(self, mode: bool = True) -> CLIP:
        super().train(mode)
        if self.lock_text:
            self.text_encoder.eval()
        return self

    def collate(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        captions = [row["caption"] for row in rows]
        batch = {
            "pixel_values": self.image_encoder.preprocess([row["image"] for row in rows]),
            "text": self.text_encoder.preprocess(captions),
        }
        if self.mask_positives:  # rows of one class, or sharing a caption, are not negatives of each other
            batch["positive_ids"] = torch.tensor(
                [row["label"] if "label" in row else _stable_hash(row["caption"]) for row in rows], dtype=torch.long
            )
        return batch

    def embed_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Normalised image embeddings ``[B, embed_dim]``."""
        return F.normalize(self.visual_projection(self.image_encoder(pixel_values)), dim=-1)

    def embed_texts(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """Normalised text embeddings ``[B, embed_dim]``."""
        if self.lock_text:
            with torch.no_grad():
                hidden = self.text_encoder(features)
        else:
            hidden = self.text_encoder(features)
        return F.normalize(self.text_projection(hidden), dim=-1)

    def embed(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        return {"image": self.embed_images(batch["pixel_values"]), "text": self.embed_texts(batch["text"])}

    def loss(self, embeddings: dict[str, torch.Tensor], batch: dict[str, Any]) -> LossOutput:
        scale = self.logit_scale()
        value = info_nce(
            embeddings["image"],
            embeddings["text"],
            scale=scale,
            symmetric=True,
            normalize=False,
            labels=batch.get("positive_ids"),
            gather=self.gather,
        )
        return LossOutput(value, {"logit_scale": float(scale.detach())})

    @torch.no_grad()
    def encode_images(self, images: Sequence[Image.Image], batch_size: int = 128) -> torch.Tensor:
        """Embed images for evaluation (eval mode, no gradient, fp32 on the CPU)."""
        return self._encode(images, batch_size, self.image_encoder.preprocess, self.embed_images)

    @torch.no_grad()
    def encode_texts(self, texts: Sequence[str], batch_size: int = 256) -> torch.Tensor:
        """Embed texts for evaluation (eval mode, no gradient, fp32 on the CPU)."""
        return self._encode(texts, batch_size, self.text_encoder.preprocess, self.embed_texts)

    def _encode(self, items, batch_size, preprocess, embed) -> torch.Tensor:
        was_training = self.training
        self.eval()
        device = self.logit_scale.log_scale.device
        chunks = []
        for start in range(0, len(items), batch_size):
            inputs = preprocess(items[start : start + batch_size])
            inputs = (
                inputs.to(device) if isinstance(inputs, torch.Tensor) else {k: v.to(device) for k, v in inputs.items()}
            )
            chunks.append(embed(inputs).float().cpu())
        self.train(was_training)
        return torch.cat(chunks)
