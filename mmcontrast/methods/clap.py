"""CLAP: an audio tower and a text tower trained so that matching (audio clip, caption) pairs align.

CLAP is the audio-text configuration of the two-tower method (:class:`~mmcontrast.methods.two_tower.TwoTower`,
which holds the formula and the loss): with ``A`` the normalised audio embeddings and ``T`` the normalised text
embeddings of a batch of ``N`` pairs,

    L = 1/2 [ CE(s * A T^T, diag) + CE(s * T A^T, diag) ],   s = exp(t) clamped to [1, 100], t learnable,

the symmetric InfoNCE of the shared core (audio -> text and text -> audio), ``t`` initialised at log(1 / 0.07);
clips of the same class (or sharing a caption) are masked out of each other's negatives. ``loss="siglip"`` trains
with SigLIP's sigmoid loss instead (learnable scale and bias; see the two-tower method).

Note on transformers: ``ClapModel(return_loss=True)`` computes
``(contrastive_loss(logits_per_text) + contrastive_loss(logits_per_audio.t())) / 2``; since
``logits_per_audio = logits_per_text.t()`` (with equal scales) both terms are the *text -> audio* cross entropy, so the
audio -> text direction is never trained. mmcontrast uses the core's symmetric loss (tests/test_clap.py computes
both on the same logits; docs/audio.md shows the difference).

The towers follow CLAP's design when built CLAP-shaped (``mmcontrast.recipes.clap``): a transformers
``ClapAudioModel`` (HTSAT) and ``ClapTextModel`` (RoBERTa), each followed by a two-layer ``ClapProjectionLayer`` held
in the tower (``project=False``), so a trained model exports as a transformers ``ClapModel`` weight for weight
(:mod:`mmcontrast.hub.transformers_clap`). Any other audio tower (CPC, log-mel) and text tower also work, with the
two-tower method's bias-free linear projections.

References:
    Elizalde, Deshmukh, Al Ismail, Wang, "CLAP: Learning Audio Concepts From Natural Language Supervision",
    ICASSP 2023.
    Wu, Chen, Zhang, Hui, Berg-Kirkpatrick, Dubnov, "Large-scale Contrastive Language-Audio Pretraining with
    Feature Fusion and Keyword-to-Caption Augmentation" (LAION-CLAP), ICASSP 2023.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from mmcontrast.methods.two_tower import SIGLIP_BIAS_INIT, TwoTower, TwoTowerLoss


class CLAP(TwoTower):
    """Audio tower + text tower + projections + learnable logit scale (rows: ``audio``, ``caption``, ``label``).

    Args:
        audio_encoder: the audio tower (:class:`~mmcontrast.modalities.audio_tower.AudioTower`, or one with a head).
        text_encoder: the text tower.
        embed_dim: size of the shared embedding space.
        logit_scale_init: initial scale (1 / temperature); None: the loss's own (1 / 0.07, or 10 for ``siglip``).
        lock_text: freeze the text tower.
        gather: use every process's pairs as negatives (exact cross-device InfoNCE).
        project: add bias-free linear projections; False when both towers already end in ``embed_dim`` (CLAP's
            projection layers held in the towers).
        mask_positives: rows of the same class (or caption) are not negatives of each other (``info_nce`` only).
        loss: ``info_nce`` (symmetric InfoNCE) or ``siglip`` (SigLIP's sigmoid loss, learnable bias).
        logit_bias_init: initial logit bias of ``siglip`` (-10).
    """

    def __init__(
        self,
        audio_encoder: nn.Module,
        text_encoder: nn.Module,
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
            {"audio": audio_encoder, "text": text_encoder},
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
    def sample_rate(self) -> int:
        """The rate (Hz) the audio tower expects; callers resample clips to it."""
        tower = self.tower("audio")
        while not hasattr(tower, "sample_rate") and hasattr(tower, "tower"):
            tower = tower.tower
        return int(tower.sample_rate)

    @torch.no_grad()
    def encode_audio(self, waveforms: Sequence[torch.Tensor], batch_size: int = 64) -> torch.Tensor:
        """Normalised embeddings of mono waveforms at :attr:`sample_rate` (eval mode, no gradient, fp32, CPU)."""
        return self.encode("audio", waveforms, batch_size)
