"""The `model.audio` section shared by audio recipes (CPC, CLAP) and the encoder it builds."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from mmcontrast.modalities.audio import AudioEncoder
from mmcontrast.typed_config import PositiveFloat, PositiveInt


@dataclass
class AudioContextConfig:
    """A causal context network over the encoder's frames (`model.audio.context:` section; CPC's `g_ar`).

    Attributes:
        type: `gru` or `lstm`; null: no context network.
        dim: size of the context vector.
        layers: recurrent layers.
    """

    type: Literal["gru", "lstm"] | None = None
    dim: PositiveInt = 256
    layers: PositiveInt = 1


@dataclass
class AudioTowerConfig:
    """The audio tower (`model.audio:` section): an audio adapter (mmcontrast.modalities.audio) + pooling.

    Attributes:
        kind: `transformers` (with `config`: `model_type: clap_audio_model` is the CLAP audio tower, HTSAT), `cpc`
            or `mel`.
        config: the transformers audio config of a randomly initialised `transformers` tower.
        path: instead, a local transformers audio model folder.
        options: options of a `cpc` / `mel` encoder (`width`, `norm`, `n_mels`...).
        feature_extractor: options of the `ClapFeatureExtractor` of a CLAP audio tower (`sampling_rate`,
            `hop_length`, `max_length_s`, `fft_window_size`, `frequency_min`, `frequency_max`; `feature_size`
            defaults to the config's `num_mel_bins`); null: LAION-CLAP's (48 kHz, 10 s).
        sample_rate: rate of a `cpc` / `mel` encoder (Hz); data is resampled to the tower's rate.
        max_seconds: longest clip fed to the tower (longer clips are cropped: randomly in training, centred at
            evaluation); null: the feature extractor's `max_length_s`, else whole clips.
        pooling: `mean` or `last` over the encoder's frames (the CLAP audio tower's pooler is the mean).
        context: a causal context network after the encoder, whose outputs become the frames (CPC's `g_ar`).
        normalize: scale every waveform to zero mean and unit variance before a `cpc` / `mel` encoder (quiet
            recordings otherwise give nearly identical frames).
    """

    kind: Literal["transformers", "cpc", "mel"] = "transformers"
    config: dict[str, Any] | None = None
    path: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    feature_extractor: dict[str, Any] | None = None
    sample_rate: PositiveInt | None = None
    max_seconds: PositiveFloat | None = None
    pooling: Literal["mean", "last"] = "mean"
    context: AudioContextConfig = field(default_factory=AudioContextConfig)
    normalize: bool = False


def build_audio_tower(config: AudioTowerConfig) -> AudioEncoder:
    """The audio encoder a `model.audio` section describes (random init)."""
    options: dict[str, Any] = dict(config.options)
    if config.kind == "transformers":
        if (config.config is None) == (config.path is None):
            raise ValueError("model.audio (kind transformers) needs exactly one of config (a dict) or path (a folder)")
        options = {"config": config.config} if config.config is not None else {"path": config.path}
    context = None
    if config.context.type is not None:
        context = {"type": config.context.type, "dim": config.context.dim, "layers": config.context.layers}
    return AudioEncoder(
        config.kind,
        sample_rate=config.sample_rate,
        pooling=config.pooling,
        context=context,
        normalize=config.normalize,
        **options,
    )
