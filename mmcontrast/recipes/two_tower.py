"""Schema shared by the two-tower recipes (CLIP, CLAP, video-text): the loss between the towers (`model.loss:`),
and the model-card sentence on SigLIP's bias that their exports share.

The two-tower method is one class for every pair of modalities (:class:`~mmcontrast.methods.two_tower.TwoTower`),
so its loss is configured by one section that every two-tower recipe holds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mmcontrast.methods.two_tower import SIGLIP_BIAS_INIT, TwoTower, TwoTowerLoss
from mmcontrast.typed_config import FiniteFloat


@dataclass
class TwoTowerLossConfig:
    """The loss between the two towers (`model.loss:` section).

    Attributes:
        name: `info_nce` (symmetric InfoNCE over the batch with a learnable temperature, as CLIP and CLAP) or
            `siglip` (SigLIP's sigmoid loss: every pair is its own binary classification, with a learnable scale,
            starting at 10 unless `model.logit_scale_init` is set, and a learnable bias). `siglip` makes every
            other row a negative (`model.mask_positives` applies to `info_nce` only).
        bias_init: initial logit bias of `siglip` (default -10, as in the paper); `info_nce` has no bias.
    """

    name: TwoTowerLoss = "info_nce"
    bias_init: FiniteFloat | None = None

    def method_options(self, key: str = "model.loss") -> dict[str, Any]:
        """The two-tower method's ``loss`` and ``logit_bias_init`` arguments; a bias for ``info_nce`` is refused."""
        if self.bias_init is not None and self.name != "siglip":
            raise ValueError(
                f"{key}.bias_init is a setting of the siglip loss, not of {self.name}: set {key}.name=siglip or "
                f"remove {key}.bias_init"
            )
        bias = SIGLIP_BIAS_INIT if self.bias_init is None else self.bias_init
        return {"loss": self.name, "logit_bias_init": bias}


def siglip_bias_note(method: TwoTower, *, keeps_bias: bool) -> str:
    """A model-card sentence on SigLIP's learned logit bias (empty for an InfoNCE model); ``keeps_bias``: the
    exported format holds it (mmcontrast's own), unlike transformers' CLIPModel / ClapModel and open_clip folders."""
    if method.loss_name != "siglip":
        return ""
    bias = method.logit_bias.item()
    if keeps_bias:
        return f" Trained with SigLIP's sigmoid loss; the learned logit bias ({bias:.4f}) is saved with the weights."
    return (
        f" Trained with SigLIP's sigmoid loss: its learned logit bias ({bias:.4f}) is not part of this format; add it "
        "to `logit_scale * cosine` for SigLIP's pair probabilities. Zero-shot rankings and the softmax over candidate "
        "labels do not depend on it."
    )
