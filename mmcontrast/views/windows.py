"""Fixed-length windows of audio cut from each speaker's clips played end to end (the CPC training view).

CPC predicts frames up to K steps ahead inside one window (20480 samples, 1.28 s, in Rivière et al.), so a
window must be longer than a short clip: the Free Spoken Digit clips last about 0.5 s at 8 kHz. As in
CPC_audio, every speaker's clips are concatenated (in a fixed order) into one signal and windows are cut from
it; a window never mixes two speakers, though it may join two clips of one speaker. Each epoch the cut points
move by an offset in ``[0, window / 2)`` drawn from ``(seed, epoch, speaker)``, so the windows differ between
epochs while their number stays the same (the engine's steps per epoch do not change) and a resumed run cuts
the same windows.

Reference:
    Rivière, Joulin, Mazaré, Dupoux. "Unsupervised pretraining transfers well across languages", ICASSP 2020
    (facebookresearch/CPC_audio: speakers' audio concatenated, windows at a random offset per epoch).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

import torch
from torch.utils.data import Dataset

from mmcontrast.views.simclr import view_seed


class SpeakerWindows(Dataset):
    """Windows of ``window`` samples cut from each speaker's concatenated audio; ``set_epoch`` moves the cuts.

    Args:
        waveforms: mono waveforms (1-d tensors at one sample rate), e.g. decoded clips.
        speakers: the speaker of each waveform (any hashable value); None puts every clip with itself only
            (windows are cut within each clip, clips shorter than a window give none).
        window: samples per window.
        seed: base seed of the per-epoch offsets.

    A row is ``{"waveform": FloatTensor[window], "speaker": int}``, the speaker as an index into
    :attr:`speaker_names`. :attr:`speakers` gives the speaker index of every row (for a batch sampler).
    """

    def __init__(
        self,
        waveforms: Sequence[torch.Tensor],
        speakers: Sequence[Hashable] | None,
        window: int,
        *,
        seed: int = 0,
    ) -> None:
        if window < 2:
            raise ValueError(f"window must be at least 2 samples, got {window}")
        if speakers is not None and len(speakers) != len(waveforms):
            raise ValueError(f"{len(waveforms)} waveforms but {len(speakers)} speakers: give one speaker per clip")
        groups = list(range(len(waveforms))) if speakers is None else list(speakers)
        self.speaker_names: list[Hashable] = sorted(set(groups), key=repr)
        index = {name: i for i, name in enumerate(self.speaker_names)}
        clips: list[list[torch.Tensor]] = [[] for _ in self.speaker_names]
        for waveform, group in zip(waveforms, groups, strict=True):
            if waveform.ndim != 1:
                raise ValueError(f"waveforms must be mono 1-d tensors, got shape {tuple(waveform.shape)}")
            clips[index[group]].append(waveform.float())
        self.signals = [torch.cat(parts) for parts in clips]
        self.window, self.seed, self.epoch = window, int(seed), 0
        # windows per speaker whatever the offset: the last half window is kept free for the largest offset
        counts = [max(0, (len(signal) - window // 2) // window) for signal in self.signals]
        self.speakers = [s for s, count in enumerate(counts) for _ in range(count)]
        self._first = [0] * len(counts)
        for s in range(1, len(counts)):
            self._first[s] = self._first[s - 1] + counts[s - 1]
        if not self.speakers:
            longest = max((len(s) for s in self.signals), default=0)
            raise ValueError(
                f"no window of {window} samples fits the audio (the longest speaker has {longest} samples): "
                "use a shorter window or more audio"
            )

    def set_epoch(self, epoch: int) -> None:
        """Cut this epoch's windows (the offsets are a function of ``(seed, epoch, speaker)``)."""
        self.epoch = epoch

    def offset(self, speaker: int) -> int:
        """Where this epoch's first window of ``speaker`` starts, in ``[0, window / 2)``."""
        if self.window // 2 == 0:
            return 0
        generator = torch.Generator().manual_seed(view_seed(self.seed, self.epoch, speaker))
        return int(torch.randint(self.window // 2, (1,), generator=generator))

    def __len__(self) -> int:
        return len(self.speakers)

    def __getitem__(self, index: int) -> dict[str, Any]:
        speaker = self.speakers[index]
        start = self.offset(speaker) + (index - self._first[speaker]) * self.window
        return {"waveform": self.signals[speaker][start : start + self.window], "speaker": speaker}
