"""transformers ``ClapModel`` folders: save a CLAP-shaped two-tower method as one the
``zero-shot-audio-classification`` pipeline loads, and load such a folder (ours or anyone's) for zero-shot use.

CLAP-shaped (:func:`clap_shape_problem` returns None): the audio tower is a transformers ``ClapAudioModel`` inside an
:class:`~mmcontrast.modalities.audio_tower.AudioTower` with a ``ClapFeatureExtractor``, the text tower a
``ClapTextModel`` pooled by its own pooler, each followed by a ``ClapProjectionLayer`` held in the tower
(:class:`~mmcontrast.modalities.audio_tower.ProjectedTower`, method built with ``project=False``). The export copies
every weight by name: ``audio_model``, ``text_model``, ``audio_projection``, ``text_projection``, and the trained log
logit scale into both ``logit_scale_a`` and ``logit_scale_t``; the folder also holds the feature extractor and the
tokenizer (``ClapProcessor``), so

    transformers.pipeline("zero-shot-audio-classification", model=DIR)

runs offline with the same embeddings (hence the same top-1) as mmcontrast's own model (tests/test_clap.py).
:class:`TransformersClapEncoder` loads any ``ClapModel`` folder as an
:class:`~mmcontrast.evaluation.zero_shot.AudioTextEncoder`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from mmcontrast.methods.two_tower import TwoTower
from mmcontrast.modalities.audio_tower import AudioTower, ProjectedTower
from mmcontrast.modalities.text import TextEncoder


def clap_shape_problem(method: TwoTower) -> str | None:
    """Why ``method`` cannot be exported as a transformers ``ClapModel`` (None: it can)."""
    from transformers import ClapAudioModel, ClapFeatureExtractor, ClapTextModel
    from transformers.models.clap.modeling_clap import ClapProjectionLayer

    if set(method.modalities) != {"audio", "text"}:
        return f"its towers are {list(method.modalities)}, not audio and text"
    audio, text = method.tower("audio"), method.tower("text")
    if not (isinstance(audio, ProjectedTower) and isinstance(audio.head, ClapProjectionLayer)):
        return "the audio tower does not end in a ClapProjectionLayer"
    if not (isinstance(text, ProjectedTower) and isinstance(text.head, ClapProjectionLayer)):
        return "the text tower does not end in a ClapProjectionLayer"
    if not (isinstance(audio.tower, AudioTower) and isinstance(audio.tower.encoder.backbone, ClapAudioModel)):
        return "the audio encoder is not a transformers ClapAudioModel"
    if not isinstance(audio.tower.encoder.feature_extractor, ClapFeatureExtractor):
        return "the audio encoder has no ClapFeatureExtractor"
    if not (isinstance(text.tower, TextEncoder) and isinstance(text.tower.transformer, ClapTextModel)):
        return "the text encoder is not a transformers ClapTextModel"
    if text.tower.pooling != "pooler":
        return f"the text tower pools with '{text.tower.pooling}', not the ClapTextModel's own pooler"
    dims = {audio.head.linear2.out_features, text.head.linear2.out_features}
    if len(dims) != 1:
        return f"the projections have different output sizes {sorted(dims)}"
    acts = {type(audio.head.activation), type(text.head.activation)}
    if len(acts) != 1:
        return "the two projection layers use different activations"
    return None


def export_transformers_clap(method: TwoTower, directory: str | Path) -> Path:
    """Write a transformers ``ClapModel`` folder (model + ``ClapProcessor``) holding ``method`` exactly.

    Raises:
        ValueError: the towers are not CLAP-shaped (the message says why).
    """
    from transformers import ClapConfig, ClapModel, ClapProcessor

    problem = clap_shape_problem(method)
    if problem is not None:
        raise ValueError(f"cannot export a transformers ClapModel: {problem}")
    audio, text = method.tower("audio"), method.tower("text")
    encoder, text_encoder = audio.tower.encoder, text.tower
    audio_config = encoder.backbone.config.to_dict()
    text_config = text_encoder.transformer.config.to_dict()
    act = audio_config.get("projection_hidden_act", "relu")
    config = ClapConfig(
        text_config=text_config,
        audio_config=audio_config,
        projection_dim=audio.head.linear2.out_features,
        projection_hidden_act=act,
    )
    model = ClapModel(config).eval()
    log_scale = min(max(float(method.logit_scale.log_scale.detach()), 0.0), math.log(method.logit_scale.max_scale))
    model.audio_model.load_state_dict(encoder.backbone.state_dict())
    model.text_model.load_state_dict(text_encoder.transformer.state_dict())
    model.audio_projection.load_state_dict(audio.head.state_dict())
    model.text_projection.load_state_dict(text.head.state_dict())
    with torch.no_grad():
        model.logit_scale_a.fill_(log_scale)
        model.logit_scale_t.fill_(log_scale)
    directory = Path(directory)
    model.save_pretrained(directory)
    ClapProcessor(feature_extractor=encoder.feature_extractor, tokenizer=text_encoder.tokenizer).save_pretrained(
        directory
    )
    return directory


def _pooled(output: Any) -> torch.Tensor:
    return output.pooler_output if hasattr(output, "pooler_output") else output


class TransformersClapEncoder:
    """A saved transformers ``ClapModel`` folder with its feature extractor and tokenizer, for zero-shot use.

    Args:
        folder: the folder (``config.json`` with ``model_type: clap``, weights, processor files).
        batch_size: clips or texts per forward pass.
    """

    def __init__(self, folder: str | Path, batch_size: int = 64) -> None:
        from transformers import AutoFeatureExtractor, AutoTokenizer, ClapModel

        folder = Path(folder)
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(f"'{folder}' is not a transformers model folder (no config.json)")
        self.model = ClapModel.from_pretrained(str(folder)).eval()
        self.feature_extractor = AutoFeatureExtractor.from_pretrained(str(folder))
        self.tokenizer = AutoTokenizer.from_pretrained(str(folder))
        self.batch_size = batch_size

    @property
    def sample_rate(self) -> int:
        """The rate (Hz) the feature extractor expects; callers resample clips to it."""
        return int(self.feature_extractor.sampling_rate)

    @torch.no_grad()
    def encode_audio(self, waveforms: Sequence[torch.Tensor | np.ndarray]) -> torch.Tensor:
        """Normalised audio embeddings of mono waveforms at :attr:`sample_rate`."""
        chunks = []
        for start in range(0, len(waveforms), self.batch_size):
            clips = [np.asarray(w, dtype=np.float32).reshape(-1) for w in waveforms[start : start + self.batch_size]]
            inputs = self.feature_extractor(clips, sampling_rate=self.sample_rate, return_tensors="pt")
            chunks.append(_pooled(self.model.get_audio_features(**inputs)))
        return F.normalize(torch.cat(chunks).float(), dim=-1)

    @torch.no_grad()
    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """Normalised text embeddings."""
        chunks = []
        for start in range(0, len(texts), self.batch_size):
            inputs = self.tokenizer(list(texts[start : start + self.batch_size]), padding=True, return_tensors="pt")
            chunks.append(_pooled(self.model.get_text_features(**inputs)))
        return F.normalize(torch.cat(chunks).float(), dim=-1)
