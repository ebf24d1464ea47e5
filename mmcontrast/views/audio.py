"""Audio views: random crop, gain, additive noise at an SNR, time shift, speed change and SpecAugment, seeded per row.

Every step is a small picklable callable on a mono waveform ``[T]`` (SpecAugment on a log-mel ``[n_mels, F]``)
that draws its randomness from torch's default CPU generator. :class:`AudioViewsDataset` (a
:class:`mmcontrast.views.ViewsDataset`) seeds that generator from ``(seed, epoch, row)`` around each row
(:func:`mmcontrast.views.simclr.view_seed`), exactly as the SimCLR image views are made: the same triple gives the
same views in any DataLoader worker or process, a resumed run sees the same views, another epoch new ones.

The steps:

- :class:`RandomCrop`: a random window of ``length`` samples (shorter clips are zero padded at the end);
- :class:`Gain`: multiply by ``10 ** (g / 20)``, ``g`` uniform in ``[min_db, max_db]``;
- :class:`AddNoise`: white Gaussian noise scaled so that ``10 log10(P_signal / P_noise)`` equals an SNR drawn
  uniformly in ``[min_snr_db, max_snr_db]`` (powers measured on this clip and this noise draw, so the SNR is exact);
- :class:`TimeShift`: delay or advance by up to ``max_shift`` samples (zero fill, or circular);
- :class:`SpeedChange`: play ``factor`` times faster (pitch moves with it), by resampling
  (:func:`torchaudio.functional.resample` from ``round(100 factor)`` to 100), then crop / pad back to the length;
- :class:`LogMel` then :class:`SpecAugment`: time and frequency masks (:class:`torchaudio.transforms.TimeMasking`,
  :class:`torchaudio.transforms.FrequencyMasking`, Park et al. 2019, https://arxiv.org/abs/1904.08779) on the
  log-mel features that the ``mel`` audio encoder accepts;
- :class:`RandomApply` applies a step with probability ``p``;
- :class:`PadTo` pads clips shorter than an encoder's shortest input; :class:`Standardize` scales a waveform to zero
  mean and unit variance (what an encoder with ``normalize`` does to waveforms, done in the views before log-mel).

:func:`audio_views` composes the usual pipeline; :func:`collate_audio_views` batches the views of equal length
(:class:`mmcontrast.methods.simclr.SimCLR` also pads whole clips of different lengths, with an attention mask).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from mmcontrast.modalities.audio import crop_or_pad, normalize_waveforms
from mmcontrast.views.simclr import SeededRows, ViewsDataset, forked_cpu_rng

AudioStep = Callable[[torch.Tensor], torch.Tensor]


def _uniform(low: float, high: float) -> float:
    """A float uniform in ``[low, high]`` from torch's default generator."""
    return low + (high - low) * float(torch.rand(()))


def _check_range(name: str, low: float, high: float) -> None:
    if not low <= high:
        raise ValueError(f"audio views: {name} must be (min, max) with min <= max, got ({low}, {high})")


def signal_power(x: torch.Tensor) -> torch.Tensor:
    """Mean square of ``x`` over its last axis."""
    return x.double().pow(2).mean(dim=-1)


def snr_db(signal: torch.Tensor, noise: torch.Tensor) -> float:
    """``10 log10(P_signal / P_noise)`` in dB."""
    return float(10 * torch.log10(signal_power(signal) / signal_power(noise)))


class RandomCrop:
    """A random window of ``length`` samples; clips shorter than ``length`` are zero padded at the end."""

    def __init__(self, length: int) -> None:
        if length < 1:
            raise ValueError(f"audio views: crop length must be positive, got {length}")
        self.length = int(length)

    def __call__(self, waveform: torch.Tensor) -> torch.Tensor:
        return crop_or_pad(waveform, self.length, train=True, min_length=self.length)


class Gain:
    """Multiply by ``10 ** (g / 20)`` with ``g`` uniform in ``[min_db, max_db]`` dB."""

    def __init__(self, min_db: float = -6.0, max_db: float = 6.0) -> None:
        _check_range("gain (dB)", min_db, max_db)
        self.min_db, self.max_db = float(min_db), float(max_db)

    def __call__(self, waveform: torch.Tensor) -> torch.Tensor:
        return waveform * 10 ** (_uniform(self.min_db, self.max_db) / 20)


class AddNoise:
    """Add white Gaussian noise at an SNR uniform in ``[min_snr_db, max_snr_db]`` dB (exact on each clip).

    A silent clip (zero power) is returned unchanged: no SNR is defined for it.
    """

    def __init__(self, min_snr_db: float = 10.0, max_snr_db: float = 40.0) -> None:
        _check_range("SNR (dB)", min_snr_db, max_snr_db)
        self.min_snr_db, self.max_snr_db = float(min_snr_db), float(max_snr_db)

    def __call__(self, waveform: torch.Tensor) -> torch.Tensor:
        snr = _uniform(self.min_snr_db, self.max_snr_db)
        noise = torch.randn(waveform.shape, dtype=torch.float64)
        power, noise_power = signal_power(waveform), signal_power(noise)
        if float(power) == 0 or float(noise_power) == 0:
            return waveform
        scale = torch.sqrt(power / (noise_power * 10 ** (snr / 10)))
        return (waveform.double() + noise * scale).to(waveform.dtype)


class TimeShift:
    """Shift by an integer uniform in ``[-max_shift, max_shift]`` samples: zero fill, or wrap round (``circular``)."""

    def __init__(self, max_shift: int, circular: bool = False) -> None:
        if max_shift < 0:
            raise ValueError(f"audio views: max_shift must be >= 0, got {max_shift}")
        self.max_shift, self.circular = int(max_shift), bool(circular)

    def __call__(self, waveform: torch.Tensor) -> torch.Tensor:
        shift = int(torch.randint(-self.max_shift, self.max_shift + 1, ()))
        if shift == 0:
            return waveform
        if self.circular:
            return torch.roll(waveform, shift, dims=-1)
        out = torch.zeros_like(waveform)
        if abs(shift) >= waveform.shape[-1]:
            return out
        if shift > 0:
            out[..., shift:] = waveform[..., :-shift]
        else:
            out[..., :shift] = waveform[..., -shift:]
        return out


class SpeedChange:
    """Play ``factor`` times faster, ``factor`` uniform in ``[min_factor, max_factor]`` (rounded to 0.01).

    Resampling from ``round(100 factor)`` Hz to 100 Hz shortens the clip by ``factor``; with ``keep_length`` the
    result is centre cropped or zero padded back to the input length.
    """

    def __init__(self, min_factor: float = 0.9, max_factor: float = 1.1, keep_length: bool = True) -> None:
        _check_range("speed factor", min_factor, max_factor)
        if min_factor <= 0:
            raise ValueError(f"audio views: speed factors must be positive, got {min_factor}")
        self.min_factor, self.max_factor, self.keep_length = float(min_factor), float(max_factor), bool(keep_length)

    def __call__(self, waveform: torch.Tensor) -> torch.Tensor:
        import torchaudio.functional

        orig = max(1, round(100 * _uniform(self.min_factor, self.max_factor)))
        if orig == 100:
            return waveform
        changed = torchaudio.functional.resample(waveform, orig, 100)
        if self.keep_length:
            changed = crop_or_pad(changed, waveform.shape[-1], min_length=waveform.shape[-1])
        return changed


class PadTo:
    """Zero pad clips shorter than ``length`` samples at the end (longer clips pass unchanged)."""

    def __init__(self, length: int) -> None:
        if length < 0:
            raise ValueError(f"audio views: pad length must be >= 0, got {length}")
        self.length = int(length)

    def __call__(self, waveform: torch.Tensor) -> torch.Tensor:
        return crop_or_pad(waveform, None, min_length=self.length)


class Standardize:
    """Scale a waveform ``[T]`` to zero mean and unit variance (:func:`mmcontrast.modalities.audio.normalize_waveforms`,
    as an audio encoder with ``normalize`` does before its front end)."""

    def __call__(self, waveform: torch.Tensor) -> torch.Tensor:
        return normalize_waveforms(waveform[None])[0]


class LogMel:
    """Waveform ``[T]`` -> log-mel ``[n_mels, F]``, the front end of the ``mel`` audio encoder (``center=False``)."""

    def __init__(self, sample_rate: int = 16000, n_mels: int = 64, n_fft: int = 400, hop_length: int = 160) -> None:
        import torchaudio.transforms

        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=sample_rate, n_fft=n_fft, hop_length=hop_length, n_mels=n_mels, center=False
        )

    @classmethod
    def from_encoder(cls, encoder: Any) -> LogMel:
        """The front end of a ``mel`` :class:`mmcontrast.modalities.audio.AudioEncoder`."""
        if getattr(encoder, "kind", None) != "mel":
            raise ValueError("LogMel.from_encoder: the audio encoder is not of kind 'mel'")
        b = encoder.backbone
        return cls(encoder.sample_rate, b.n_mels, b.n_fft, b.hop_length)

    def __call__(self, waveform: torch.Tensor) -> torch.Tensor:
        return torch.log(self.mel(waveform) + 1e-6)


class SpecAugment:
    """SpecAugment masks on a log-mel ``[n_mels, F]``: ``freq_masks`` bands of up to ``freq_mask`` bins and
    ``time_masks`` spans of up to ``time_mask`` frames, filled with the spectrogram's mean."""

    def __init__(self, freq_mask: int = 8, time_mask: int = 10, freq_masks: int = 1, time_masks: int = 1) -> None:
        import torchaudio.transforms

        if min(freq_mask, time_mask, freq_masks, time_masks) < 0:
            raise ValueError("audio views: SpecAugment sizes and counts must be >= 0")
        self.freq = torchaudio.transforms.FrequencyMasking(freq_mask)
        self.time = torchaudio.transforms.TimeMasking(time_mask)
        self.freq_masks, self.time_masks = int(freq_masks), int(time_masks)

    def __call__(self, features: torch.Tensor) -> torch.Tensor:
        fill = float(features.mean())
        for _ in range(self.freq_masks):
            features = self.freq(features, fill)
        for _ in range(self.time_masks):
            features = self.time(features, fill)
        return features


class RandomApply:
    """Apply ``step`` with probability ``p`` (one draw per call)."""

    def __init__(self, step: AudioStep, p: float = 0.5) -> None:
        if not 0 <= p <= 1:
            raise ValueError(f"audio views: p must be in [0, 1], got {p}")
        self.step, self.p = step, float(p)

    def __call__(self, waveform: torch.Tensor) -> torch.Tensor:
        return self.step(waveform) if float(torch.rand(())) < self.p else waveform


class AudioViews:
    """Steps applied in order to a float32 waveform ``[T]`` (any ``[..., T]`` tensor or array is accepted)."""

    def __init__(self, steps: Sequence[AudioStep]) -> None:
        self.steps = list(steps)

    def __call__(self, waveform: Any) -> torch.Tensor:
        x = torch.as_tensor(waveform, dtype=torch.float32)
        for step in self.steps:
            x = step(x)
        return x


def audio_views(
    sample_rate: int,
    seconds: float | None,
    *,
    gain_db: tuple[float, float] | None = (-6.0, 6.0),
    snr_db: tuple[float, float] | None = (10.0, 40.0),
    noise_p: float = 0.5,
    shift_seconds: float = 0.05,
    speed: tuple[float, float] | None = (0.9, 1.1),
    speed_p: float = 0.5,
    min_samples: int = 0,
    standardize: bool = False,
    log_mel: LogMel | None = None,
    spec_augment: SpecAugment | None = None,
) -> AudioViews:
    """The usual audio view pipeline: random crop of ``seconds`` (None: the whole clip), speed change
    (p = ``speed_p``), time shift, gain, noise (p = ``noise_p``), padding to ``min_samples``, then optionally
    :class:`Standardize` (``standardize``), log-mel + SpecAugment. A range of None (or 0 s shift) drops a step.

    Give ``standardize`` with ``log_mel`` when the encoder normalises its waveforms (``normalize``): log-mel views
    bypass that normalisation, so the views must do it for training to match what the encoder sees at inference.
    """
    steps: list[AudioStep] = []
    if seconds is not None:
        steps.append(RandomCrop(max(1, round(seconds * sample_rate))))
    if speed is not None:
        steps.append(RandomApply(SpeedChange(*speed), speed_p))
    if shift_seconds > 0:
        steps.append(TimeShift(round(shift_seconds * sample_rate)))
    if gain_db is not None:
        steps.append(Gain(*gain_db))
    if snr_db is not None:
        steps.append(RandomApply(AddNoise(*snr_db), noise_p))
    if min_samples > 0:
        steps.append(PadTo(min_samples))
    if standardize:
        steps.append(Standardize())
    if log_mel is not None:
        steps.append(log_mel)
        if spec_augment is not None:
            steps.append(spec_augment)
    elif spec_augment is not None:
        raise ValueError("audio_views: SpecAugment needs log-mel features; give log_mel too")
    return AudioViews(steps)


class AudioViewsDataset(ViewsDataset):
    """Rows with an ``audio`` waveform -> rows with ``views``, seeded by ``(seed, epoch, row)`` as
    :class:`mmcontrast.views.ViewsDataset` (whose arguments it takes); ``key`` names the waveform's column."""

    def __init__(
        self,
        rows: Sequence[dict[str, Any]],
        views: AudioStep | Sequence[AudioStep],
        seed: int = 0,
        num_views: int = 2,
        key: str = "audio",
    ) -> None:
        super().__init__(rows, views, seed=seed, num_views=num_views)
        self.key = key

    def __getitem__(self, index: int) -> dict[str, Any]:
        row = dict(self.rows[index])
        if self.key not in row:
            raise KeyError(f"audio views: row {index} has no '{self.key}' (keys: {sorted(row)})")
        waveform = row.pop(self.key)
        with forked_cpu_rng(self.row_seed(index)):
            row["views"] = [transform(waveform) for transform in self.transforms]
        row["index"] = index
        return row


class CroppedAudio(SeededRows):
    """Rows with an ``audio`` waveform -> the same rows with clips longer than ``length`` cut to a random window of
    ``length`` samples: row ``index`` of epoch ``epoch`` is cut at an offset drawn from a generator seeded by
    ``view_seed(seed, epoch, index)``, so the crops depend on that triple only (not on the DataLoader worker, the
    process or a resume). Shorter clips are left as they are. The two-tower recipes' training crop.

    Args:
        rows: indexable rows, each a dict with a ``key`` waveform ``[T]``.
        length: the longest clip kept, in samples.
        seed: base seed of the crops.
        key: the waveform's column.
    """

    def __init__(self, rows: Sequence[dict[str, Any]], length: int, *, seed: int = 0, key: str = "audio") -> None:
        if length < 1:
            raise ValueError(f"CroppedAudio: length must be at least 1 sample, got {length}")
        super().__init__(rows, seed, key)
        self.length = int(length)

    def __getitem__(self, index: int) -> dict[str, Any]:
        row = dict(self.rows[index])
        generator = torch.Generator().manual_seed(self.row_seed(index))
        row[self.key] = crop_or_pad(torch.as_tensor(row[self.key]), self.length, train=True, generator=generator)
        return row


def collate_audio_views(rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """Rows of :class:`AudioViewsDataset` -> ``input_values`` ``[B, V, ...]`` (views of one shape) and ``labels``.

    Raises:
        ValueError: the views differ in shape (crop them to one length: :class:`RandomCrop`).
    """
    shapes = {tuple(view.shape) for row in rows for view in row["views"]}
    if len(shapes) != 1:
        raise ValueError(f"collate_audio_views: views of different shapes {sorted(shapes)}; crop them to one length")
    batch = {"input_values": torch.stack([torch.stack(row["views"]) for row in rows])}
    if all("label" in row for row in rows):
        batch["labels"] = torch.tensor([row["label"] for row in rows], dtype=torch.long)
    return batch


def measured_gain_db(before: torch.Tensor, after: torch.Tensor) -> float:
    """The gain from ``before`` to ``after`` in dB (``10 log10`` of the power ratio)."""
    return float(10 * torch.log10(signal_power(after) / signal_power(before)))


__all__ = [
    "AddNoise",
    "AudioViews",
    "AudioViewsDataset",
    "Gain",
    "LogMel",
    "PadTo",
    "RandomApply",
    "RandomCrop",
    "SpecAugment",
    "SpeedChange",
    "Standardize",
    "TimeShift",
    "audio_views",
    "collate_audio_views",
    "measured_gain_db",
    "snr_db",
]
