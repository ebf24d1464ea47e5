"""Audio adapter: waveforms -> frame embeddings ``[B, T, d]`` and utterance embeddings ``[B, d]``.

:class:`AudioEncoder` holds one of three encoders, chosen by ``kind``:

- ``cpc``: the strided convolution encoder of Contrastive Predictive Coding (van den Oord, Li, Vinyals 2018,
  https://arxiv.org/abs/1807.03748; as in Rivière et al. 2020, facebookresearch/CPC_audio ``CPCEncoder``): five
  ``Conv1d`` (kernels 10, 8, 4, 4, 4; strides 5, 4, 2, 2, 2; paddings 3, 2, 1, 1, 1), each followed by a
  normalisation and a ReLU; one frame per 160 samples (10 ms at 16 kHz). ``norm="channel"`` normalises every time
  step over its channels with a learned affine (CPC_audio's ``ChannelNorm``, unbiased variance, eps 1e-5),
  ``norm="batch"`` is the 2018 paper's batch norm, ``norm="none"`` none. A waveform of ``T`` samples gives exactly
  ``floor((T + 1) / 160)`` frames (each layer gives ``floor((L + 2p - k) / s) + 1``).
- ``mel``: a log-mel front end (:class:`torchaudio.transforms.MelSpectrogram`, ``center=False``, so a frame only
  sees its own window: ``1 + floor((T - n_fft) / hop_length)`` frames) and a small stack of ``Conv1d`` (kernel 3,
  stride 1) + channel norm + ReLU. It also accepts precomputed log-mel features ``[B, n_mels, F]`` (SpecAugment views).
- ``transformers``: a transformers audio model from a local folder (``path``) or a config dict (``config``, random
  init, offline): wav2vec2, HuBERT, WavLM, data2vec-audio (waveform input), and models that take features through
  their own feature extractor built from the config (Whisper's encoder, AST, the CLAP audio tower). Frames are its
  ``last_hidden_state``.

Context network: with ``context={"type": "gru" | "lstm", "dim": 256, "layers": 1}`` the encoder ends in a causal
recurrent network over its frames (CPC's autoregressive model ``g_ar``), and its frames are the contexts ``c_t``
(the features CPC exports and probes); :meth:`AudioEncoder.encode_frames` gives the frames ``z_t`` before it. The
network is causal, so padding after a row's end does not change its valid contexts.

Padded rows: the attention mask marks real samples. For ``cpc`` and ``mel`` the activations beyond each row's
valid length are zeroed after every layer, which is exactly what the layer's own zero padding would be, so a padded
row's valid frames (and its pooled embedding) equal those of the unpadded row. Batch-norm statistics in training do
include padded frames (CPC trains on equal-length windows).

:meth:`AudioEncoder.save_pretrained` writes ``model.safetensors`` + ``config.json`` (the constructor options; for a
transformers model its config); :meth:`AudioEncoder.from_pretrained` rebuilds and loads it without unpickling.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mmcontrast.modalities.saved_encoder import read_saved_encoder

CPC_LAYERS = ((10, 5, 3), (8, 4, 2), (4, 2, 1), (4, 2, 1), (4, 2, 1))
"""(kernel, stride, padding) of the five CPC convolutions; their strides multiply to 160."""
KINDS = ("cpc", "mel", "transformers")
POOLINGS = ("mean", "last")
_WAVEFORM_MODELS = ("wav2vec2", "hubert", "wavlm", "data2vec-audio", "unispeech", "unispeech-sat", "sew", "sew-d")
_CONFIG_FORMAT = "mmcontrast-audio-encoder"


class ChannelNorm(nn.Module):
    """Normalise each time step of ``[B, C, T]`` over its ``C`` channels, then a learned per-channel affine.

    As CPC_audio's ``ChannelNorm``: unbiased variance over channels, ``eps`` added inside the square root.
    """

    def __init__(self, channels: int, eps: float = 1e-5, affine: bool = True) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(1, channels, 1)) if affine else None
        self.bias = nn.Parameter(torch.zeros(1, channels, 1)) if affine else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=1, keepdim=True)
        var = x.var(dim=1, keepdim=True)
        x = (x - mean) * torch.rsqrt(var + self.eps)
        return x * self.weight + self.bias if self.weight is not None else x


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "channel":
        return ChannelNorm(channels)
    if kind == "batch":
        return nn.BatchNorm1d(channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"audio encoder: norm must be 'channel', 'batch' or 'none', got {kind!r}")


def _mask_time(x: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
    """Zero ``[B, C, T]`` beyond each row's length."""
    if lengths is None:
        return x
    keep = torch.arange(x.shape[-1], device=x.device)[None, :] < lengths.to(x.device)[:, None]
    return x * keep[:, None, :].to(x.dtype)


def conv_output_length(lengths: torch.Tensor, kernel: int, stride: int, padding: int) -> torch.Tensor:
    """``floor((L + 2 padding - kernel) / stride) + 1`` (at least 0), as ``Conv1d`` computes it."""
    return torch.clamp(torch.div(lengths + 2 * padding - kernel, stride, rounding_mode="floor") + 1, min=0)


class CPCConvEncoder(nn.Module):
    """CPC's five-layer strided convolution encoder: ``[B, T]`` samples -> ``[B, C, floor((T + 1) / 160)]``."""

    def __init__(self, width: int = 256, norm: str = "channel") -> None:
        super().__init__()
        self.convs = nn.ModuleList()
        self.norms = nn.ModuleList()
        channels = 1
        for kernel, stride, padding in CPC_LAYERS:
            self.convs.append(nn.Conv1d(channels, width, kernel, stride=stride, padding=padding))
            self.norms.append(_norm(norm, width))
            channels = width

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """Frames of each row of ``lengths`` samples: ``floor((L + 1) / 160)``, computed layer by layer."""
        for kernel, stride, padding in CPC_LAYERS:
            lengths = conv_output_length(lengths, kernel, stride, padding)
        return lengths

    def forward(self, waveforms: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        x = waveforms[:, None, :]
        for conv, norm in zip(self.convs, self.norms, strict=True):
            lengths = None if lengths is None else conv_output_length(lengths, *_conv_args(conv))
            x = _mask_time(torch.relu(norm(conv(x))), lengths)
        return x


def _conv_args(conv: nn.Conv1d) -> tuple[int, int, int]:
    return conv.kernel_size[0], conv.stride[0], conv.padding[0]  # type: ignore[return-value]


class MelConvEncoder(nn.Module):
    """Log-mel spectrogram (``center=False``) + ``layers`` x (Conv1d k3 + channel norm + ReLU)."""

    def __init__(
        self,
        sample_rate: int,
        n_mels: int = 64,
        n_fft: int = 400,
        hop_length: int = 160,
        width: int = 256,
        layers: int = 3,
    ) -> None:
        super().__init__()
        import torchaudio.transforms

        self.n_fft, self.hop_length, self.n_mels = n_fft, hop_length, n_mels
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=sample_rate, n_fft=n_fft, hop_length=hop_length, n_mels=n_mels, center=False
        )
        for module in self.mel.modules():  # window and filter bank follow from the options: not saved
            for name, buffer in list(module.named_buffers(recurse=False)):
                module.register_buffer(name, buffer.clone(), persistent=False)
        self.convs = nn.ModuleList()
        self.norms = nn.ModuleList()
        channels = n_mels
        for _ in range(layers):
            self.convs.append(nn.Conv1d(channels, width, 3, padding=1))
            self.norms.append(ChannelNorm(width))
            channels = width

    def features(self, waveforms: torch.Tensor) -> torch.Tensor:
        """``[B, T]`` -> log-mel ``[B, n_mels, F]`` (``log(mel + 1e-6)``)."""
        return torch.log(self.mel(waveforms) + 1e-6)

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """Frames of ``lengths`` samples: ``1 + floor((L - n_fft) / hop_length)`` (0 below ``n_fft``)."""
        return conv_output_length(lengths, self.n_fft, self.hop_length, 0)

    def forward(self, inputs: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Waveforms ``[B, T]`` with sample ``lengths``, or log-mel ``[B, n_mels, F]`` with frame ``lengths``."""
        if inputs.ndim == 2:
            lengths = None if lengths is None else self.output_lengths(lengths)
            inputs = self.features(inputs)
        x = _mask_time(inputs, lengths)
        for conv, norm in zip(self.convs, self.norms, strict=True):
            x = _mask_time(torch.relu(norm(conv(x))), lengths)
        return x


def crop_or_pad(
    waveform: torch.Tensor,
    length: int | None,
    *,
    train: bool = False,
    generator: torch.Generator | None = None,
    min_length: int = 0,
) -> torch.Tensor:
    """Cut ``waveform`` ``[T]`` to at most ``length`` samples and pad it with zeros to at least ``min_length``.

    A crop is random in training (its offset drawn from ``generator``, or torch's default generator, so the caller
    seeds it) and centred at evaluation. ``length=None`` keeps the whole clip.
    """
    if length is not None and waveform.shape[-1] > length:
        spare = waveform.shape[-1] - length
        start = int(torch.randint(0, spare + 1, (1,), generator=generator)) if train else spare // 2
        waveform = waveform[..., start : start + length]
    if waveform.shape[-1] < min_length:
        waveform = torch.nn.functional.pad(waveform, (0, min_length - waveform.shape[-1]))
    return waveform


def windows(waveform: torch.Tensor, length: int, hop: int | None = None) -> torch.Tensor:
    """Every window of ``length`` samples of ``waveform`` ``[T]``, ``hop`` apart (default ``length``): ``[N, length]``.

    The last window is zero padded when it runs past the end; a clip shorter than ``length`` gives one padded window.
    Used at evaluation to embed a long clip whole (embed the windows, then average).
    """
    if length < 1 or (hop is not None and hop < 1):
        raise ValueError(f"windows: length and hop must be positive, got {length} and {hop}")
    hop = hop or length
    count = max(1, -(-max(waveform.shape[-1] - length, 0) // hop) + 1)
    padded = torch.nn.functional.pad(waveform, (0, max(0, (count - 1) * hop + length - waveform.shape[-1])))
    return padded.unfold(-1, length, hop)[:count]


def pad_batch(items: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
    """Right-pad tensors along their last axis into one batch.

    Returns:
        ``input_values`` ``[B, ..., T_max]``, ``attention_mask`` ``[B, T_max]`` (1 on real samples, long) and
        ``lengths`` ``[B]``.
    """
    if not items:
        raise ValueError("pad_batch: no items to batch")
    lengths = torch.tensor([item.shape[-1] for item in items], dtype=torch.long)
    longest = int(lengths.max())
    values = torch.stack([torch.nn.functional.pad(item.float(), (0, longest - item.shape[-1])) for item in items])
    mask = (torch.arange(longest)[None, :] < lengths[:, None]).long()
    return {"input_values": values, "attention_mask": mask, "lengths": lengths}


def pool_frames(frames: torch.Tensor, frame_mask: torch.Tensor | None = None, mode: str = "mean") -> torch.Tensor:
    """``[B, F, d]`` -> ``[B, d]``: the mean over valid frames, or the last valid frame (``mode="last"``)."""
    if mode not in POOLINGS:
        raise ValueError(f"audio pooling must be one of {POOLINGS}, got {mode!r}")
    if frame_mask is None:
        frame_mask = torch.ones(frames.shape[:2], dtype=torch.bool, device=frames.device)
    frame_mask = frame_mask.to(frames.device).bool()
    counts = frame_mask.sum(dim=1)
    if (counts == 0).any():
        row = int((counts == 0).nonzero()[0])
        raise ValueError(
            f"audio pooling: row {row} has no valid frame (its clip is shorter than the encoder's window); pad clips "
            "to the encoder's min_samples (AudioEncoder.preprocess does)"
        )
    if mode == "mean":
        weights = frame_mask.to(frames.dtype)[..., None]
        return (frames * weights).sum(dim=1) / counts[:, None].to(frames.dtype)
    return frames[torch.arange(frames.shape[0], device=frames.device), counts - 1]


def normalize_waveforms(waveforms: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Each row of ``[B, T]`` to zero mean and unit variance over its valid samples (padding stays 0)."""
    mask = torch.ones_like(waveforms) if attention_mask is None else attention_mask.to(waveforms.dtype)
    count = mask.sum(dim=1, keepdim=True).clamp_min(1)
    mean = (waveforms * mask).sum(dim=1, keepdim=True) / count
    variance = (((waveforms - mean) * mask) ** 2).sum(dim=1, keepdim=True) / count
    return (waveforms - mean) / torch.sqrt(variance + 1e-7) * mask


class AudioEncoder(nn.Module):
    """An audio encoder mapping waveforms ``[B, T]`` to frame embeddings ``[B, F, d]`` (and pooled ``[B, d]``).

    Args:
        kind: ``cpc``, ``mel`` or ``transformers`` (see the module docstring).
        sample_rate: the rate the encoder expects (Hz); data is resampled to it. Default 16000, or the transformers
            feature extractor's rate.
        pooling: ``mean`` (over valid frames) or ``last`` (the last valid frame) for :meth:`pool`.
        context: a causal context network over the frames: ``{"type": "gru" | "lstm", "dim": 256, "layers": 1}``
            (CPC's autoregressive model); None: the frames are the encoder's own.
        normalize: scale every waveform to zero mean and unit variance over its valid samples before a ``cpc`` or
            ``mel`` encoder (as wav2vec2's feature extractor does). Quiet recordings otherwise give frames that
            barely differ: the spoken digits (RMS 0.01) give CPC frames with cosine 0.97 to their mean at init.
        options: the encoder's own options. ``cpc``: ``width`` (256), ``norm`` (``channel`` | ``batch`` | ``none``).
            ``mel``: ``n_mels`` (64), ``n_fft`` (400), ``hop_length`` (160), ``width`` (256), ``layers`` (3).
            ``transformers``: ``path`` (a local model folder) or ``config`` (a config dict with ``model_type``).
    """

    def __init__(
        self,
        kind: str = "cpc",
        *,
        sample_rate: int | None = None,
        pooling: str = "mean",
        context: dict[str, Any] | None = None,
        normalize: bool = False,
        **options: Any,
    ) -> None:
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"audio encoder kind must be one of {KINDS}, got {kind!r}")
        if pooling not in POOLINGS:
            raise ValueError(f"audio encoder pooling must be one of {POOLINGS}, got {pooling!r}")
        self.kind, self.pooling, self.normalize = kind, pooling, normalize
        self.options = dict(options)
        self.feature_extractor = None
        if kind == "cpc":
            unknown = set(options) - {"width", "norm"}
            if unknown:
                raise ValueError(f"audio encoder 'cpc': unknown options {sorted(unknown)} (known: width, norm)")
            self.sample_rate = int(sample_rate or 16000)
            self.backbone: nn.Module = CPCConvEncoder(
                int(options.get("width", 256)), str(options.get("norm", "channel"))
            )
            self.embedding_dim = int(options.get("width", 256))
            self.hop = 160
        elif kind == "mel":
            known = {"n_mels", "n_fft", "hop_length", "width", "layers"}
            if set(options) - known:
                raise ValueError(
                    f"audio encoder 'mel': unknown options {sorted(set(options) - known)} (known: {known})"
                )
            self.sample_rate = int(sample_rate or 16000)
            self.backbone = MelConvEncoder(self.sample_rate, **{k: int(v) for k, v in options.items()})
            self.embedding_dim = int(options.get("width", 256))
            self.hop = int(options.get("hop_length", 160))
        else:
            self.backbone, self.sample_rate = self._transformers_backbone(options, sample_rate)
            config = self.backbone.config
            self.embedding_dim = int(getattr(config, "hidden_size", 0) or config.d_model)
            strides = getattr(config, "conv_stride", None)
            self.hop = int(torch.tensor(strides).prod()) if strides else 0
            if self._is_whisper:  # log-mel frames of hop_length samples, then a stride-2 convolution
                self.hop = 2 * int(self.feature_extractor.hop_length)  # type: ignore[union-attr]
        self.frame_dim = self.embedding_dim  # the size of z_t; embedding_dim becomes that of c_t with a context
        self.context = dict(context) if context is not None else None
        self.context_net: nn.Module | None = None
        if context is not None:
            unknown = set(context) - {"type", "dim", "layers"}
            if unknown or context.get("type", "gru") not in ("gru", "lstm"):
                raise ValueError(
                    f"audio encoder context must be {{type: gru | lstm, dim: int, layers: int}}, got {context}"
                )
            recurrent = nn.GRU if context.get("type", "gru") == "gru" else nn.LSTM
            dim, layers = int(context.get("dim", 256)), int(context.get("layers", 1))
            self.context_net = recurrent(self.frame_dim, dim, num_layers=layers, batch_first=True)
            self.embedding_dim = dim

    def _transformers_backbone(self, options: dict[str, Any], sample_rate: int | None) -> tuple[nn.Module, int]:
        from transformers import CONFIG_MAPPING, AutoModel

        if set(options) - {"path", "config"} or len(options) != 1:
            raise ValueError(
                "audio encoder 'transformers': give exactly one of path=<local model folder> or config=<config dict>, "
                f"got {sorted(options)}"
            )
        if "path" in options:
            path = Path(options["path"])
            if not (path / "config.json").is_file():
                raise FileNotFoundError(f"audio encoder: '{path}' is not a transformers model folder (no config.json)")
            model = AutoModel.from_pretrained(str(path))
        else:
            config = dict(options["config"])
            model_type = config.get("model_type")
            if model_type not in CONFIG_MAPPING:
                raise ValueError(f"audio encoder: unknown transformers model_type {model_type!r} in the config")
            built = CONFIG_MAPPING[model_type].from_dict(config)
            if model_type == "whisper":  # the encoder only: no decoder is built
                from transformers.models.whisper.modeling_whisper import WhisperEncoder

                model = WhisperEncoder(built)
            elif model_type == "clap_audio_model":  # the CLAP audio tower (HTSAT) alone
                from transformers import ClapAudioModel

                model = ClapAudioModel(built)
            else:
                model = AutoModel.from_config(built)
        model_type = model.config.model_type
        if model_type == "whisper" and not hasattr(model, "conv1"):
            model = model.get_encoder()
        elif model_type == "clap":
            model = model.audio_model
        if model.config.model_type not in _WAVEFORM_MODELS:
            self.feature_extractor = _feature_extractor(model.config, options.get("path"))
            rate = int(sample_rate or self.feature_extractor.sampling_rate)
        else:
            rate = int(sample_rate or 16000)
        return model, rate

    @property
    def _is_whisper(self) -> bool:
        return self.kind == "transformers" and self.backbone.config.model_type == "whisper"

    @property
    def frame_rate(self) -> float:
        """Frames per second (``sample_rate / hop``); 0 when the model's hop is not known."""
        return self.sample_rate / self.hop if self.hop else 0.0

    @property
    def min_samples(self) -> int:
        """The shortest input that gives one frame; :meth:`preprocess` pads shorter clips to it."""
        if self.kind == "cpc":
            return 159
        if self.kind == "mel":
            return self.backbone.n_fft  # type: ignore[return-value]
        if self.feature_extractor is None:
            lengths = torch.arange(1, 4096)
            frames = self.backbone._get_feat_extract_output_lengths(lengths)  # type: ignore[operator]
            return int(lengths[frames >= 1][0])
        return 1

    def frame_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """Valid frames of rows of ``lengths`` samples."""
        lengths = lengths.long()
        if self.kind in ("cpc", "mel"):
            return self.backbone.output_lengths(lengths)  # type: ignore[operator]
        if self.feature_extractor is None:
            return self.backbone._get_feat_extract_output_lengths(lengths).long()  # type: ignore[operator]
        if self._is_whisper:  # the frames that cover the clip (Whisper pads every input to 30 s)
            frames = (torch.div(lengths, self.hop // 2, rounding_mode="floor") + 1) // 2
            return frames.clamp(1, int(self.backbone.config.max_source_positions))
        raise NotImplementedError(
            "frame_lengths: AST and the CLAP audio tower take fixed-size inputs; all their frames count as valid"
        )

    def preprocess(
        self,
        waveforms: Sequence[torch.Tensor],
        *,
        max_samples: int | None = None,
        train: bool = False,
        generator: torch.Generator | None = None,
    ) -> dict[str, torch.Tensor]:
        """Mono waveforms ``[T_i]`` at :attr:`sample_rate` -> a padded batch (see :func:`pad_batch`).

        Clips longer than ``max_samples`` are cropped (randomly when ``train``, from ``generator``; centred
        otherwise); clips shorter than :attr:`min_samples` are padded with zeros (that padding counts as signal).
        """
        clips = [torch.as_tensor(w, dtype=torch.float32).reshape(-1) for w in waveforms]
        options = dict(train=train, generator=generator, min_length=self.min_samples)
        items = [crop_or_pad(clip, max_samples, **options) for clip in clips]  # type: ignore[arg-type]
        return pad_batch(items)

    def frame_mask(self, attention_mask: torch.Tensor | None, num_frames: int) -> torch.Tensor | None:
        """``[B, T]`` sample mask -> ``[B, num_frames]`` boolean frame mask.

        None (every frame counts) when no mask is given, and for AST and the CLAP audio tower, whose inputs have a
        fixed size. For Whisper the mask keeps the frames that cover the clip, not the padding to 30 s (its encoder
        attends over all frames, so a padded row is not exactly the unpadded one there). For wav2vec2-style models
        with a group-norm feature encoder (``feat_extract_norm="group"``) the padding changes the valid frames too;
        with ``"layer"`` it does not.
        """
        if attention_mask is None or (self.feature_extractor is not None and not self._is_whisper):
            return None
        frames = self.frame_lengths(attention_mask.sum(dim=-1))
        return (
            torch.arange(num_frames, device=attention_mask.device)[None, :] < frames.to(attention_mask.device)[:, None]
        )

    def forward(self, input_values: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Waveforms ``[B, T]`` (zero padded; ``attention_mask`` 1 on real samples) -> frames ``[B, F, d]``: the
        contexts ``c_t`` when the encoder has a context network, else the frames ``z_t`` of :meth:`encode_frames`."""
        frames = self.encode_frames(input_values, attention_mask)
        return frames if self.context_net is None else self.contextualize(frames)

    def contextualize(self, frames: torch.Tensor) -> torch.Tensor:
        """Frames ``z`` ``[B, F, frame_dim]`` -> contexts ``c`` ``[B, F, embedding_dim]`` (the context network)."""
        if self.context_net is None:
            raise ValueError("this audio encoder has no context network (give context={type: gru, dim: ...})")
        return self.context_net(frames)[0]

    def encode_frames(self, input_values: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Waveforms ``[B, T]`` -> the encoder's frames ``z`` ``[B, F, frame_dim]`` (before any context network).

        For ``mel``, log-mel features ``[B, n_mels, F]`` are accepted too, with a frame-level ``attention_mask``.
        """
        if self.kind in ("cpc", "mel"):
            lengths = None if attention_mask is None else attention_mask.sum(dim=-1).long()
            if self.normalize and input_values.ndim == 2:
                input_values = normalize_waveforms(input_values, attention_mask)
            return self.backbone(input_values, lengths).transpose(1, 2)
        if self.feature_extractor is None:
            return self.backbone(input_values, attention_mask=attention_mask).last_hidden_state
        return self.encode_features(self.features(input_values, attention_mask))

    def encode_features(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """A feature-extractor model's inputs (:meth:`extract`) -> its frames ``[B, F, frame_dim]``."""
        frames = self.backbone(**features).last_hidden_state
        if frames.ndim == 4:  # the CLAP audio tower's final patch grid [B, d, H, W] -> [B, H W, d]
            frames = frames.flatten(2).transpose(1, 2)
        return frames

    def embed_features(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """Utterance embeddings ``[B, d]`` from a feature-extractor model's inputs (:meth:`extract`), as
        :meth:`embed` gives from the waveforms (every frame of a fixed-size input counts)."""
        frames = self.encode_features(features)
        return self.pool(frames if self.context_net is None else self.contextualize(frames))

    def extract(self, clips: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
        """Unpadded mono clips ``[T_i]`` -> the inputs of a feature-extractor model (AST, Whisper, CLAP), through its
        extractor (CPU tensors). Data-side work: a two-tower collate calls it in the DataLoader."""
        arrays = [torch.as_tensor(clip).detach().cpu().float().numpy() for clip in clips]
        out = self.feature_extractor(arrays, sampling_rate=self.sample_rate, return_tensors="pt")  # type: ignore[misc]
        name = "input_values" if "input_values" in out else "input_features"
        values = out[name]
        if self.backbone.config.model_type == "clap_audio_model" and values.ndim == 3:
            values = values[:, None]
        return {name: values}

    def features(self, input_values: torch.Tensor, attention_mask: torch.Tensor | None = None) -> dict[str, Any]:
        """:meth:`extract` on a padded waveform batch (each row cut to its ``attention_mask`` length)."""
        lengths = (
            attention_mask.sum(-1).tolist()
            if attention_mask is not None
            else [input_values.shape[-1]] * len(input_values)
        )
        clips = [row[: int(n)] for row, n in zip(input_values, lengths, strict=True)]
        return {name: values.to(input_values.device) for name, values in self.extract(clips).items()}

    def pool(
        self, frames: torch.Tensor, frame_mask: torch.Tensor | None = None, mode: str | None = None
    ) -> torch.Tensor:
        """``[B, F, d]`` -> ``[B, d]`` (:func:`pool_frames`, ``mode`` defaulting to :attr:`pooling`)."""
        return pool_frames(frames, frame_mask, mode or self.pooling)

    def embed(self, input_values: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Utterance embeddings ``[B, d]``: :meth:`forward` then :meth:`pool` over the valid frames."""
        frames = self(input_values, attention_mask)
        return self.pool(frames, self.frame_mask(attention_mask, frames.shape[1]))

    def config_dict(self) -> dict[str, Any]:
        """What rebuilds this encoder: the format, kind, rate, pooling and constructor options (JSON)."""
        options = dict(self.options)
        if self.kind == "transformers":
            full = self.backbone.config.to_dict()
            full.pop("auto_map", None)
            options = {"config": full}
        return {
            "format": _CONFIG_FORMAT,
            "kind": self.kind,
            "sample_rate": self.sample_rate,
            "pooling": self.pooling,
            "context": self.context,
            "normalize": self.normalize,
            "options": options,
            "embedding_dim": self.embedding_dim,
            "hop": self.hop,
        }

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write ``model.safetensors`` + ``config.json`` (:meth:`config_dict`); nothing is pickled."""
        from safetensors.torch import save_model

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_model(self, str(directory / "model.safetensors"), metadata={"format": "pt"})
        (directory / "config.json").write_text(json.dumps(self.config_dict(), indent=2) + "\n")
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> AudioEncoder:
        """Load a folder written by :meth:`save_pretrained`, or a Hub repo id of one (in eval mode).

        The encoder is rebuilt from the config's options (transformers models from a built-in config class) and the
        weights are read from safetensors: no code from the folder runs and no pickle is read.
        """
        from safetensors.torch import load_model

        config, config_path, weights_path = read_saved_encoder(
            directory,
            owner="AudioEncoder.from_pretrained",
            what="audio encoder",
            format_name=_CONFIG_FORMAT,
            hint="a transformers model folder loads with AudioEncoder('transformers', path=folder)",
        )
        encoder = cls(
            config["kind"],
            sample_rate=config["sample_rate"],
            pooling=config.get("pooling", "mean"),
            context=config.get("context"),
            normalize=config.get("normalize", False),
            **config["options"],
        )
        try:
            load_model(encoder, str(weights_path), strict=True)
        except RuntimeError as error:
            raise ValueError(f"'{weights_path}' does not fit the encoder of '{config_path}': {error}") from error
        return encoder.eval()


def _feature_extractor(config: Any, path: str | None) -> Any:
    """The feature extractor of a feature-input model: the folder's own, else the default one sized by the config."""
    if path and (Path(path) / "preprocessor_config.json").is_file():
        from transformers import AutoFeatureExtractor

        return AutoFeatureExtractor.from_pretrained(str(path))
    model_type = config.model_type
    if model_type == "whisper":
        from transformers import WhisperFeatureExtractor

        return WhisperFeatureExtractor(feature_size=config.num_mel_bins)
    if model_type == "audio-spectrogram-transformer":
        from transformers import ASTFeatureExtractor

        return ASTFeatureExtractor(num_mel_bins=config.num_mel_bins, max_length=config.max_length)
    if model_type == "clap_audio_model":
        from transformers import ClapFeatureExtractor

        truncation = "fusion" if config.enable_fusion else "rand_trunc"
        return ClapFeatureExtractor(feature_size=config.num_mel_bins, truncation=truncation)
    raise ValueError(
        f"audio encoder: transformers model_type {model_type!r} is not a supported audio model (waveform models: "
        f"{', '.join(_WAVEFORM_MODELS)}; feature models: whisper, audio-spectrogram-transformer, clap)"
    )
