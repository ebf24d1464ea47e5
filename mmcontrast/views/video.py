"""Video views: clips and frame windows cut from videos in time, temporally consistent augmentation, seeded per row.

**Sources.** A row holds one of:

- ``video``: a file path, decoded with :func:`mmcontrast.data.video.decode_clip` (or sliced out of an optional
  :class:`mmcontrast.data.video.FrameCache`) on the grid of times ``k / fps`` (``fps`` from :class:`ClipSampling`
  or the dataset); times are reported in seconds. A row's ``info`` (from :func:`mmcontrast.data.video.check_video_rows`)
  saves probing the file again;
- ``frames``: an in-memory uint8 ``[T, H, W, 3]`` tensor (e.g. one view of :func:`mmcontrast.data.moving_digits`);
  its frames are the grid and times are frame indices;
- ``views``: in-memory synchronised views uint8 ``[V, T, H, W, 3]`` (moving digits' cameras); times are frame
  indices, shared by all views.

All positions below are in *grid frames* (frames at ``fps`` for files, the frames themselves in memory). A window
that runs past the end of a video repeats its last frame (never an error) and the row records how many frames were
repeated in ``padded``.

**Datasets.**

- :class:`VideoClipViews`: ``num_views`` clips per video. Mode ``"cvrl"`` (Qian et al., "Spatiotemporal Contrastive
  Video Representation Learning", CVPR 2021, https://arxiv.org/abs/2008.03800): the clips start a gap apart drawn
  from a decreasing density (:func:`cvrl_gap`), the first start uniform in the range where all clips fit; mode
  ``"same"``: one window, augmented differently per view. Each clip is augmented on its own.
- :class:`FrameWindows`: the time-contrastive (TCN) view: ``num_frames`` distinct frame times drawn uniformly over
  a whole video, sorted, with their times; rows with synchronised ``views`` give the same times in every view.
- :func:`collate_video_rows` stacks frames, views and times of a batch.
- :func:`views_from_rows` gives the evaluation views of every video: synchronised cameras, or seeded augmented
  copies (:func:`augmented_views`).

**Augmentation.** :func:`consistent_augment` builds :mod:`torchvision.transforms.v2` steps applied to a whole clip
as one :class:`torchvision.tv_tensors.Video`, so crop, flip and colour jitter are drawn once per clip and applied to
every frame (a clip is augmented consistently in time). Input and output are uint8 ``[T, H, W, 3]``; the video
encoder (:meth:`mmcontrast.modalities.video.VideoEncoder.preprocess`) normalises.

**Seeding.** Item ``index`` of epoch ``epoch`` draws its times from ``numpy.random.default_rng(view_seed(seed,
epoch, index))`` and its augmentations from torch's CPU generator seeded with the same value and restored afterwards
(a fork, as :class:`mmcontrast.views.ViewsDataset` does): items depend on that triple only, not on the DataLoader
worker or the process; :meth:`set_epoch` moves to another epoch's items.

**Bad files.** The datasets expect rows already checked by :func:`mmcontrast.data.video.check_video_rows` (which
drops and reports unusable files). A file that still fails to decode is not skipped silently: the dataset raises
:class:`~mmcontrast.data.video.VideoDecodeError` (``FileNotFoundError`` for a missing file) naming the file and the
row, so the run stops with the cause instead of training on a different set of videos.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from mmcontrast.data.video import (
    FrameCache,
    Size,
    VideoDecodeError,
    decode_clip,
    decode_video,
    grid_length,
    probe_video,
)
from mmcontrast.views.simclr import SeededRows, forked_cpu_rng, view_seed

ClipAugment = Callable[[torch.Tensor], torch.Tensor]
MODES = ("cvrl", "same")
_SOURCES = ("video", "frames", "views")


@dataclass(frozen=True)
class ClipSampling:
    """How clips are cut from a video.

    Attributes:
        num_frames: frames per clip.
        fps: frames per second of a clip, for files (the decoding grid); in-memory frames are used as they are.
        stride: grid frames between the starts of consecutive windows when a video is cut into windows
            (:meth:`window_starts`); None: ``num_frames`` (windows side by side).
    """

    num_frames: int = 8
    fps: float = 4.0
    stride: int | None = None

    def __post_init__(self) -> None:
        if self.num_frames < 1:
            raise ValueError(f"ClipSampling: num_frames must be >= 1, got {self.num_frames}")
        if not self.fps > 0:
            raise ValueError(f"ClipSampling: fps must be positive, got {self.fps}")
        if self.stride is not None and self.stride < 1:
            raise ValueError(f"ClipSampling: stride must be >= 1 grid frame (or None), got {self.stride}")

    @property
    def step(self) -> int:
        """The stride in grid frames (``num_frames`` when ``stride`` is None)."""
        return self.num_frames if self.stride is None else int(self.stride)

    def window_starts(self, duration_or_length: float | int) -> list[float] | list[int]:
        """The starts of the dense (evaluation) windows of a video, every :attr:`step` grid frames while a whole
        window fits (one window at 0 when the video is shorter than a window; frames after the last whole window
        are not covered).

        Args:
            duration_or_length: an int is a length in frames (in-memory frames, or grid frames); the starts are
                frame indices. A float is a duration in seconds (a file, sampled at ``fps``); the starts are seconds.
        """
        if isinstance(duration_or_length, bool) or not isinstance(duration_or_length, (int, float, np.number)):
            raise TypeError(
                f"window_starts: give a length (int frames) or a duration (float seconds), got {duration_or_length!r}"
            )
        seconds = isinstance(duration_or_length, (float, np.floating))
        length = math.ceil(duration_or_length * self.fps - 1e-6) if seconds else int(duration_or_length)
        if length < 0 or (seconds and not math.isfinite(duration_or_length)):
            raise ValueError(f"window_starts: the length or duration must be >= 0, got {duration_or_length}")
        starts = list(range(0, max(1, length - self.num_frames + 1), self.step))
        return [start / self.fps for start in starts] if seconds else starts


def cvrl_gap(max_gap: float, rng: np.random.Generator, *, power: float = 1.0) -> float:
    """A gap in ``[0, max_gap]`` from the decreasing density ``p(t) ∝ (1 - t / max_gap) ** power`` (CVRL).

    ``power = 1`` is CVRL's linear density ``P(t) ∝ -t + c`` reaching 0 at ``max_gap`` (mean ``max_gap / 3``);
    ``power > 1`` decreases faster (mean ``max_gap / (power + 2)``), so the clips are more often close. Inverse-CDF
    sampling: ``t = max_gap * (1 - (1 - u) ** (1 / (power + 1)))`` with ``u`` uniform in ``[0, 1)``.
    """
    if max_gap < 0 or not math.isfinite(max_gap):
        raise ValueError(f"cvrl_gap: max_gap must be finite and >= 0, got {max_gap}")
    if not power > 0:
        raise ValueError(f"cvrl_gap: power must be positive, got {power}")
    u = float(rng.random())
    return max_gap * (1.0 - (1.0 - u) ** (1.0 / (power + 1.0)))


class ConsistentAugment:
    """A :mod:`torchvision.transforms.v2` pipeline applied to a whole clip as one video (:func:`consistent_augment`)."""

    def __init__(self, transform: v2.Transform) -> None:
        self.transform = transform

    def __call__(self, clip: torch.Tensor) -> torch.Tensor:
        clip = torch.as_tensor(clip)
        if clip.ndim != 4 or clip.shape[-1] != 3 or clip.dtype != torch.uint8:
            raise ValueError(
                f"consistent_augment: clips must be uint8 [T, H, W, 3], got {clip.dtype} {list(clip.shape)}"
            )
        video = tv_tensors.Video(clip.permute(0, 3, 1, 2))
        out = self.transform(video)
        return out.as_subclass(torch.Tensor).permute(0, 2, 3, 1).contiguous()


def consistent_augment(
    size: int,
    *,
    crop_scale: Sequence[float] = (0.3, 1.0),
    flip: bool = True,
    color_jitter: float = 0.4,
    grayscale: float = 0.2,
) -> ConsistentAugment:
    """A temporally consistent augmentation of a clip: uint8 ``[T, H, W, 3]`` -> uint8 ``[T, size, size, 3]``.

    Random resized crop (area fraction in ``crop_scale``, bilinear, antialiased), horizontal flip (p = 0.5), colour
    jitter (brightness, contrast and saturation ``color_jitter``, hue ``color_jitter / 4``, p = 0.8) and grayscale
    (p = ``grayscale``), each drawn once per clip from torch's default generator and applied to every frame.
    ``color_jitter = 0`` or ``grayscale = 0`` drops that step.
    """
    if size < 1:
        raise ValueError(f"consistent_augment: size must be positive, got {size}")
    low, high = (float(v) for v in crop_scale)
    if not 0 < low <= high <= 1:
        raise ValueError(
            f"consistent_augment: crop_scale must be (min, max) with 0 < min <= max <= 1, got {list(crop_scale)}"
        )
    if color_jitter < 0 or not 0 <= grayscale <= 1:
        raise ValueError(
            f"consistent_augment: color_jitter must be >= 0 and grayscale a probability in [0, 1], "
            f"got {color_jitter} and {grayscale}"
        )
    steps: list[v2.Transform] = [v2.RandomResizedCrop(size, scale=(low, high), antialias=True)]
    if flip:
        steps.append(v2.RandomHorizontalFlip(p=0.5))
    if color_jitter > 0:
        jitter = v2.ColorJitter(color_jitter, color_jitter, color_jitter, min(color_jitter / 4, 0.5))
        steps.append(v2.RandomApply([jitter], p=0.8))
    if grayscale > 0:
        steps.append(v2.RandomGrayscale(p=grayscale))
    return ConsistentAugment(v2.Compose(steps))


class _FrameSource:
    """The frames of one row on its grid: a file at ``fps`` (times in seconds) or in-memory frames (times = index)."""

    def __init__(
        self, row: dict[str, Any], index: int, fps: float, size: Size, cache: FrameCache | None, owner: str
    ) -> None:
        present = [key for key in _SOURCES if key in row]
        if len(present) != 1:
            raise KeyError(
                f"{owner}: row {index} must hold exactly one of 'video' (a path), 'frames' ([T, H, W, 3]) or "
                f"'views' ([V, T, H, W, 3]); it has {present or 'none'} (keys: {sorted(row)})"
            )
        self.kind = present[0]
        self.index, self.fps, self.size, self.cache, self.owner = index, fps, size, cache, owner
        if self.kind == "video":
            self.path = Path(row["video"])
            info = row.get("info")
            if info is None:
                info = self._guard(lambda: probe_video(self.path))
            self.length = grid_length(info, fps)
            self.array = None
        else:
            array = torch.as_tensor(row[self.kind])
            ndim = 4 if self.kind == "frames" else 5
            if array.ndim != ndim or array.shape[-1] != 3 or array.dtype != torch.uint8 or array.shape[-4] == 0:
                shape = "[T, H, W, 3]" if ndim == 4 else "[V, T, H, W, 3]"
                raise ValueError(
                    f"{owner}: row {index}: '{self.kind}' must be a non-empty uint8 {shape} tensor, "
                    f"got {array.dtype} {list(array.shape)}"
                )
            self.array = array
            self.length = array.shape[-4]

    @property
    def multiview(self) -> bool:
        return self.kind == "views"

    @property
    def num_views(self) -> int:
        return self.array.shape[0] if self.multiview else 1

    def _guard(self, decode: Callable[[], Any]) -> Any:
        try:
            return decode()
        except FileNotFoundError as error:
            raise FileNotFoundError(
                f"{self.owner}: row {self.index}: {error}; check the rows with check_video_rows before training"
            ) from error
        except (VideoDecodeError, ValueError) as error:
            raise VideoDecodeError(
                f"{self.owner}: row {self.index}: could not decode '{self.path}': {error}; check the rows with "
                "check_video_rows (it drops unusable files) or remove the file"
            ) from error

    def times(self, indices: np.ndarray) -> torch.Tensor:
        """The times of grid frames ``indices``: seconds for a file, frame indices in memory."""
        values = torch.as_tensor(indices, dtype=torch.float32)
        return values / self.fps if self.kind == "video" else values

    def frames(self, indices: np.ndarray) -> torch.Tensor:
        """uint8 ``[n, H, W, 3]`` (``[V, n, H, W, 3]`` for views) at grid frames ``indices`` (ascending), each
        clamped to the last frame."""
        clamped = np.minimum(np.asarray(indices, dtype=np.int64), self.length - 1)
        if self.array is not None:
            return self.array[..., torch.from_numpy(clamped), :, :, :]
        if self.cache is not None:
            video = self._guard(lambda: self.cache.video(self.path, self.fps, self.size))
            return video[torch.from_numpy(np.minimum(clamped, len(video) - 1))]
        first, last = int(clamped[0]), int(clamped[-1])
        if last - first + 1 <= 2 * len(clamped):  # close together: one clip over the span
            span = self._guard(lambda: decode_clip(self.path, first / self.fps, last - first + 1, self.fps, self.size))
            return span[torch.from_numpy(clamped - first)]
        frames = [
            self._guard(lambda k=k: decode_clip(self.path, k / self.fps, 1, self.fps, self.size)) for k in clamped
        ]
        return torch.cat(frames)


class _SeededItems(SeededRows):
    """Shared seeding: ``_make(index, rng)`` runs under the CPU generator forked and seeded by (seed, epoch, index)."""

    def __init__(self, rows: Sequence[dict[str, Any]], seed: int, size: Size, cache: FrameCache | None) -> None:
        super().__init__(rows, seed, key="video")
        self.size, self.cache = size, cache

    def _seeded(self, index: int) -> dict[str, Any]:
        if not 0 <= index < len(self):
            raise IndexError(f"{type(self).__name__}: index {index} out of range for {len(self)} items")
        item_seed = self.row_seed(index)
        with forked_cpu_rng(item_seed):
            return self._make(index, np.random.default_rng(item_seed))

    def _make(self, index: int, rng: np.random.Generator) -> dict[str, Any]:
        raise NotImplementedError

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self._seeded(index)


def _kept(row: dict[str, Any]) -> dict[str, Any]:
    """The row without its raw source and decoding info."""
    return {key: value for key, value in row.items() if key not in (*_SOURCES, "info")}


class VideoClipViews(_SeededItems):
    """Rows (a ``video``, ``frames`` or ``views`` source) -> rows with ``views``: ``num_views`` uint8 clips
    ``[num_frames, H, W, 3]`` (``[num_frames, size, size, 3]`` after ``augment``).

    Mode ``"cvrl"``: clip ``k >= 1`` starts ``cvrl_gap(max_gap)`` grid frames (rounded) after clip 0, whose start is
    uniform over the starts where every clip fits; mode ``"same"``: every view is the same window (start uniform),
    augmented differently. ``augment`` (e.g. :func:`consistent_augment`) is applied to each clip on its own; None
    keeps the raw frames. A video shorter than the clips repeats its last frame; the row's ``padded`` counts the
    repeated frames (over all views). The row also gets ``starts`` (each clip's start: seconds for files, frame
    index in memory) and ``index``; its other keys (``label``, ``caption``) are kept, the source is dropped.

    Args:
        rows: indexable rows (dicts); files are best checked first with ``check_video_rows``.
        sampling: clip length and, for files, fps.
        augment: the per-clip augmentation, or None.
        num_views: clips per video (>= 2 for a views method; 1: one clip per video, for a two-tower method).
        mode: ``"cvrl"`` or ``"same"``.
        max_gap: the largest start gap in grid frames (cvrl); None: the whole video (``length - num_frames``).
        power: the gap density's decay (:func:`cvrl_gap`).
        camera: for rows with synchronised ``views``: the camera every clip is cut from, or None for clip ``k``
            from camera ``k % V`` (positives seen by different cameras).
        seed: base seed of the clips.
        size: decoding size of files (:func:`~mmcontrast.data.video.decode_clip`'s ``size``).
        cache: an optional frame cache for files.
    """

    def __init__(
        self,
        rows: Sequence[dict[str, Any]],
        sampling: ClipSampling,
        augment: ClipAugment | None = None,
        *,
        num_views: int = 2,
        mode: str = "cvrl",
        max_gap: int | None = None,
        power: float = 1.0,
        camera: int | None = 0,
        seed: int = 0,
        size: Size = None,
        cache: FrameCache | None = None,
    ) -> None:
        if num_views < 1:
            raise ValueError(f"VideoClipViews: num_views must be >= 1 (2 or more for positives), got {num_views}")
        if mode not in MODES:
            raise ValueError(f"VideoClipViews: mode must be one of {MODES}, got {mode!r}")
        if max_gap is not None and max_gap < 0:
            raise ValueError(f"VideoClipViews: max_gap must be >= 0 grid frames (or None), got {max_gap}")
        if not power > 0:
            raise ValueError(f"VideoClipViews: power must be positive, got {power}")
        super().__init__(rows, seed, size, cache)
        self.sampling, self.augment, self.num_views, self.mode = sampling, augment, int(num_views), mode
        self.max_gap, self.power, self.camera = max_gap, float(power), camera

    def _starts(self, length: int, rng: np.random.Generator) -> list[int]:
        free = max(0, length - self.sampling.num_frames)  # the last start where a whole clip fits
        if self.mode == "same":
            return [int(rng.integers(0, free + 1))] * self.num_views
        limit = free if self.max_gap is None else min(free, int(self.max_gap))
        gaps = [round(cvrl_gap(limit, rng, power=self.power)) for _ in range(self.num_views - 1)]
        first = int(rng.integers(0, free - max(gaps) + 1))
        return [first] + [first + gap for gap in gaps]

    def _camera(self, source: _FrameSource, k: int) -> int:
        if self.camera is None:
            return k % source.num_views
        if not 0 <= self.camera < source.num_views:
            raise ValueError(
                f"VideoClipViews: row {source.index} has {source.num_views} views, camera {self.camera} is not one "
                "of them; give a camera index below that, or None to cycle through the views"
            )
        return self.camera

    def _make(self, index: int, rng: np.random.Generator) -> dict[str, Any]:
        row = self.rows[index]
        source = _FrameSource(row, index, self.sampling.fps, self.size, self.cache, "VideoClipViews")
        starts = self._starts(source.length, rng)
        clips, padded = [], 0
        for k, start in enumerate(starts):
            indices = np.arange(start, start + self.sampling.num_frames)
            padded += int((indices >= source.length).sum())
            clip = source.frames(indices)
            if source.multiview:
                clip = clip[self._camera(source, k)]
            clips.append(self.augment(clip) if self.augment is not None else clip)
        out = _kept(row)
        out.update(views=clips, starts=source.times(np.array(starts)).tolist(), padded=padded, index=index)
        return out


class FrameWindows(_SeededItems):
    """Frame sets for time-contrastive (TCN) training: ``num_frames`` distinct frame times of one video.

    Item ``index`` takes video ``index // items_per_video`` and draws ``num_frames`` distinct grid frames uniformly
    over the whole video (sorted). It returns ``frames`` (uint8 ``[num_frames, H, W, 3]``, with one consistent
    augmentation per item when ``augment`` is given), ``times`` (float ``[num_frames]``: seconds for files, frame
    indices in memory), ``video`` (the row index: the group id of frames from one video), ``padded`` and ``index``,
    plus the row's other keys. A row with synchronised ``views`` gives ``views`` (uint8 ``[V, num_frames, H, W, 3]``,
    the same times in every view, each view augmented on its own) instead of ``frames``; so does a single-view row
    with ``augmented_views`` >= 2: that many copies of its frames, each augmented on its own (positives across
    augmentations teach invariance to them, as synchronised cameras do). A video with fewer frames
    than ``num_frames`` gives all its frames then repeats the last (``padded`` counts them; those times repeat).

    Args:
        rows: indexable rows with a ``video``, ``frames`` or ``views`` source.
        num_frames: frames per item.
        fps: the decoding grid of files (frames per second).
        augment: a clip augmentation (:func:`consistent_augment`), or None.
        augmented_views: for single-view rows, differently augmented copies per item (1: ``frames``, no copies).
        items_per_video: items per row and epoch (the dataset has ``len(rows) * items_per_video`` items).
        seed: base seed of the times and augmentations.
        size: decoding size of files.
        cache: an optional frame cache for files.
    """

    def __init__(
        self,
        rows: Sequence[dict[str, Any]],
        num_frames: int,
        *,
        fps: float = 4.0,
        augment: ClipAugment | None = None,
        augmented_views: int = 1,
        items_per_video: int = 1,
        seed: int = 0,
        size: Size = None,
        cache: FrameCache | None = None,
    ) -> None:
        if num_frames < 1:
            raise ValueError(f"FrameWindows: num_frames must be >= 1, got {num_frames}")
        if augmented_views < 1 or (augmented_views > 1 and augment is None):
            raise ValueError(
                f"FrameWindows: augmented_views must be >= 1, and copies need an augment; got {augmented_views}"
            )
        if not fps > 0:
            raise ValueError(f"FrameWindows: fps must be positive, got {fps}")
        if items_per_video < 1:
            raise ValueError(f"FrameWindows: items_per_video must be >= 1, got {items_per_video}")
        super().__init__(rows, seed, size, cache)
        self.num_frames, self.fps, self.augment, self.items_per_video = (
            int(num_frames),
            float(fps),
            augment,
            int(items_per_video),
        )
        self.augmented_views = int(augmented_views)

    def __len__(self) -> int:
        return len(self.rows) * self.items_per_video

    def _make(self, index: int, rng: np.random.Generator) -> dict[str, Any]:
        video = index // self.items_per_video
        row = self.rows[video]
        source = _FrameSource(row, video, self.fps, self.size, self.cache, "FrameWindows")
        count = min(self.num_frames, source.length)
        indices = np.sort(rng.choice(source.length, size=count, replace=False))
        indices = np.concatenate([indices, np.full(self.num_frames - count, indices[-1])])
        frames = source.frames(indices)
        out = _kept(row)
        if source.multiview:
            views = [self.augment(view) if self.augment is not None else view for view in frames]
            out["views"] = torch.stack(views)
        elif self.augmented_views > 1:
            out["views"] = torch.stack([self.augment(frames) for _ in range(self.augmented_views)])  # type: ignore[misc]
        else:
            out["frames"] = self.augment(frames) if self.augment is not None else frames
        out.update(times=source.times(indices), video=video, padded=self.num_frames - count, index=index)
        return out


def _collate(key: str, values: list[Any]) -> Any:
    first = values[0]
    if isinstance(first, (list, tuple)) and first and all(isinstance(v, torch.Tensor) for v in first):
        values = [torch.stack(list(v)) for v in values]  # a list of clips -> [V, ...]
        first = values[0]
    if isinstance(first, (torch.Tensor, np.ndarray)):
        tensors = [torch.as_tensor(v) for v in values]
        shapes = {tuple(t.shape) for t in tensors}
        if len(shapes) != 1:
            raise ValueError(
                f"collate_video_rows: '{key}' has different shapes in one batch {sorted(shapes)}; "
                "give every clip the same size and frame count (an augment with a fixed size)"
            )
        return torch.stack(tensors)
    if all(isinstance(v, (bool, int, np.integer)) for v in values):
        return torch.tensor([int(v) for v in values], dtype=torch.long)
    if all(isinstance(v, (float, np.floating)) for v in values):
        return torch.tensor(values, dtype=torch.float32)
    return list(values)


def collate_video_rows(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Rows of :class:`VideoClipViews` / :class:`FrameWindows` -> one batch.

    Tensors (and arrays) of one shape are stacked: ``frames`` ``[B, T, H, W, 3]``, ``views`` ``[B, V, T, H, W, 3]``
    (from a list of clips or a ``[V, ...]`` tensor), ``times`` ``[B, T]``; integers (``label``, ``video``,
    ``index``, ``padded``) become a long tensor, floats a float tensor; everything else (``caption``,
    ``direction``, ``starts``) a list.

    Raises:
        ValueError: empty batch, or a tensor key with different shapes across the batch.
        KeyError: a row lacks a key that the first row has.
    """
    if not rows:
        raise ValueError("collate_video_rows: empty batch")
    batch = {}
    for key in rows[0]:
        missing = [i for i, row in enumerate(rows) if key not in row]
        if missing:
            raise KeyError(f"collate_video_rows: rows {missing[:5]} lack '{key}', which row 0 has")
        batch[key] = _collate(key, [row[key] for row in rows])
    return batch


__all__ = [
    "ClipSampling",
    "ConsistentAugment",
    "FrameWindows",
    "VideoClipViews",
    "collate_video_rows",
    "consistent_augment",
    "cvrl_gap",
]


def augmented_views(
    frames: torch.Tensor, num_views: int, augment: ClipAugment, *, seed: int = 0, index: int = 0
) -> list[torch.Tensor]:
    """``num_views`` differently augmented copies of one video (each view's augmentation drawn once for all of its
    frames, seeded by ``(seed, index, view)``)."""
    views = []
    for view in range(num_views):
        with forked_cpu_rng(view_seed(seed, index, view)):
            views.append(augment(frames))
    return views


def views_from_rows(
    rows: Sequence[dict[str, Any]],
    *,
    num_views: int = 2,
    augment: Any = None,
    fps: float = 4.0,
    size: int | None = 64,
    max_frames: int = 64,
    seed: int = 0,
    synchronised: bool = True,
) -> tuple[list[list[torch.Tensor]], list[str]]:
    """The views of every video and a name per video.

    Rows with synchronised in-memory ``views`` (moving digits) give their first ``num_views`` cameras. Rows of files
    that share a ``sync`` value are one video seen by several cameras (ordered by ``view``; decoded at ``fps``, the
    shortest length kept). Any other row (a file or ``frames``), and with ``synchronised=False`` every row (in-memory
    views: their first camera), gives ``num_views`` augmented copies (:func:`augmented_views`; ``augment`` is then
    required).
    """
    videos: list[list[torch.Tensor]] = []
    names: list[str] = []
    synced: dict[Any, list[dict[str, Any]]] = {}
    for index, row in enumerate(rows):
        if "views" in row and synchronised:
            if len(row["views"]) < num_views:
                raise ValueError(f"video {index} has {len(row['views'])} synchronised views, fewer than {num_views}")
            videos.append([torch.as_tensor(view) for view in row["views"][:num_views]])
            names.append(str(row.get("caption", index)))
            continue
        if "video" in row and row.get("sync") not in (None, "") and synchronised:
            synced.setdefault(row["sync"], []).append(row)
            continue
        if augment is None:
            raise ValueError("views_from_rows: rows without synchronised views need an augmentation to make views")
        if "views" in row:
            frames = row["views"][0]
        elif "frames" in row:
            frames = row["frames"]
        else:
            frames = decode_video(row["video"], fps, size=size, max_frames=max_frames)
        videos.append(augmented_views(torch.as_tensor(frames), num_views, augment, seed=seed, index=index))
        names.append(Path(str(row.get("video", index))).name)
    for sync, group in synced.items():
        group = sorted(group, key=lambda row: int(row.get("view", 0)))
        if len(group) < num_views:
            raise ValueError(
                f"sync {sync!r} has {len(group)} views ({[str(r['video']) for r in group]}), fewer than {num_views}"
            )
        decoded = [decode_video(row["video"], fps, size=size, max_frames=max_frames) for row in group[:num_views]]
        length = min(len(clip) for clip in decoded)
        videos.append([torch.as_tensor(clip[:length]) for clip in decoded])
        names.append(str(sync))
    if not videos:
        raise ValueError("views_from_rows: no video to evaluate")
    return videos, names
