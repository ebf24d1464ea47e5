"""CLIP: an image tower and a text tower trained so that matching (image, caption) pairs align.

CLIP is the image-text configuration of the two-tower method (:class:`~mmcontrast.methods.two_tower.TwoTower`,
which holds the formula): each tower's features go through a linear projection (no bias) to a shared space and
are L2-normalised (towers that already end in a projection, as open_clip's do, are used as they are:
``project=False``); the loss is the symmetric InfoNCE of the shared core over the batch (every other caption is
a negative for an image and vice versa):

    L = 1/2 [ CE(s * I T^T, diag) + CE(s * T I^T, diag) ],   s = exp(t) clamped to [1, 100], t learnable,

with ``t`` initialised at log(1 / 0.07). Pairs known to match (same class label, or the same caption) are
masked out of each other's negatives. With ``lock_text`` (LiT) the text tower is frozen (a pretrained text
encoder, in eval mode) and only the image side and the projections learn. With ``loss="siglip"`` the loss is
SigLIP's sigmoid loss with a learnable scale and bias (``logit_bias``), see the two-tower method.

The attributes and state-dict keys are CLIPModel's (``image_encoder``, ``text_encoder``, ``visual_projection``,
``text_projection``, ``logit_scale``), so checkpoints and exports of earlier versions load unchanged.

References:
    Radford et al., "Learning Transferable Visual Models From Natural Language Supervision", ICML 2021.
    Zhai et al., "LiT: Zero-Shot Transfer with Locked-image text Tuning", CVPR 2022 (here the text side is locked).
    Zhai et al., "Sigmoid Loss for Language Image Pre-Training" (SigLIP), ICCV 2023.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from PIL import Image

from mmcontrast.methods.two_tower import SIGLIP_BIAS_INIT, TwoTower, TwoTowerLoss
from mmcontrast.modalities.image import ImageEncoder
from mmcontrast.modalities.open_clip_towers import OpenClipTextEncoder
from mmcontrast.modalities.text import TextEncoder


class CLIP(TwoTower):
    """Image tower + text tower + projections + learnable logit scale (rows: ``image``, ``caption``, ``label``).

    Args:
        image_encoder: the image tower.
        text_encoder: the text tower.
        embed_dim: size of the shared embedding space.
        logit_scale_init: initial scale (1 / temperature); None: the loss's own (1 / 0.07, or 10 for ``siglip``).
        lock_text: freeze the text tower (LiT).
        gather: use every process's pairs as negatives (exact cross-device InfoNCE).
        project: add the linear projections; False when both towers already project to ``embed_dim``.
        mask_positives: rows known to match (the same class label, or the same caption) are not negatives of
            each other; False makes every other row of the batch a negative, as CLIP and open_clip do
            (``info_nce`` only).
        loss: ``info_nce`` (CLIP's symmetric InfoNCE) or ``siglip`` (SigLIP's sigmoid loss, learnable bias).
        logit_bias_init: initial logit bias of ``siglip`` (-10).
    """

    image_encoder: ImageEncoder
    text_encoder: TextEncoder | OpenClipTextEncoder

    def __init__(
        self,
        image_encoder: ImageEncoder,
        text_encoder: TextEncoder | OpenClipTextEncoder,
        embed_dim: int = 512,
        *,
        logit_scale_init: float | None = None,
        lock_text: bool = False,
        gather: bool = True,
        project: bool = True,
        mask_positives: bool = True,
        loss: TwoTowerLoss = "info_nce",
        logit_bias_init: float = SIGLIP_BIAS_INIT,
    ) -> None:
        super().__init__(
            {"image": image_encoder, "text": text_encoder},
            embed_dim,
            logit_scale_init=logit_scale_init,
            locked=("text",) if lock_text else (),
            gather=gather,
            project=project,
            mask_positives=mask_positives,
            loss=loss,
            logit_bias_init=logit_bias_init,
        )

    @property
    def lock_text(self) -> bool:
        """Whether the text tower is frozen (LiT)."""
        return "text" in self.locked

    def embed_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Normalised image embeddings ``[B, embed_dim]``."""
        return self.embed_tower("image", pixel_values)

    def embed_texts(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """Normalised text embeddings ``[B, embed_dim]``."""
        return self.embed_tower("text", features)

    @torch.no_grad()
    def encode_images(self, images: Sequence[Image.Image], batch_size: int = 128) -> torch.Tensor:
        """Embed images for evaluation (eval mode, no gradient, fp32 on the CPU)."""
        return self.encode("image", images, batch_size)
