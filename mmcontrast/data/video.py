"""Video data: probing and decoding clips at a target frame rate with PyAV, and an optional on-disk frame cache.

Decoding uses PyAV (FFmpeg's demuxers and decoders: mp4, mkv, webm, avi; h264, hevc, vp9, av1, ...). Every call
opens its own container in a ``with av.open(...)`` block, so nothing is left open between calls and no global state
is kept: the functions are safe in DataLoader workers (each worker decodes its own files).

Frames are chosen by *presentation time*, never by counting frames (a stream's ``frames`` field may be 0 or wrong,
and variable-frame-rate files have no fixed spacing). Times are in seconds from the first frame of the video stream:
a frame's time is ``(frame.pts - stream.start_time) * stream.time_base``. A clip of ``num_frames`` frames at ``fps``
starting at ``start`` wants the times ``start + i / fps``; for each it takes the last decoded frame whose time is
``<= start + i / fps`` (the first frame when no frame is that early). Decoding starts at the keyframe before
``start`` (a backward seek) and stops at the first frame past the last wanted time, so a short clip of a long file
decodes a few seconds of it, not the whole file. When the video ends before the last wanted time, its last frame is
repeated.

A truncated file (cut off at the end) is decoded as far as it goes: a clip that lies in its readable part is
returned as usual, a clip that needs frames from the missing part raises :class:`VideoDecodeError` naming the file,
the time where its frames stop and the duration its header declares (so that a cut file is never passed off as a
shorter video). A truncated mp4 whose index (``moov`` atom) sits at its end cannot be opened at all and raises the
same error.

Errors name the file and what is wrong: missing, empty, not a video (or unreadable), no video stream, ``start``
beyond the duration, no decodable frame. :func:`check_video_rows` checks a list of rows once and skips, counts and
reports the bad files (:meth:`VideoRows.report`) instead of crashing later, as :mod:`mmcontrast.data.audio` does.
"""

from __future__ import annotations

import hashlib
import math
import os
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from mmcontrast.data.tables import RECORD_SUFFIXES, label_rows, read_records

VIDEO_SUFFIXES = {".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".gif"}
_EPS = 1e-6
"""Slack (seconds) when comparing a frame's time with a wanted time, for float rounding of ``i / fps``."""
_TRUNCATION_SLACK = 0.5
"""Seconds of declared duration that may lack frames before a file counts as truncated (container padding, audio)."""

Size = int | tuple[int, int] | None


class VideoDecodeError(ValueError):
    """A file that is not decodable video (or not at the asked place); the message names the file and why."""


@dataclass(frozen=True)
class VideoInfo:
    """What :func:`probe_video` reads from a file's header (no frame is decoded).

    Attributes:
        path: the file.
        duration: seconds, from the video stream's ``duration`` in its time base (the container's duration when the
            stream has none).
        fps: the stream's average frame rate (``average_rate``, else FFmpeg's guessed rate).
        width, height: the coded frame size in pixels.
        codec: the decoder's name (e.g. ``h264``).
        start_time: the first presentation time of the stream, in seconds (frame times are counted from it).
    """

    path: str
    duration: float
    fps: float
    width: int
    height: int
    codec: str
    start_time: float = 0.0

    @property
    def num_frames(self) -> int:
        """Frames expected from duration x fps (an estimate: the header's frame count is not trusted)."""
        return max(1, round(self.duration * self.fps))


def _check_file(path: Path) -> None:
    if not path.is_file():
        raise FileNotFoundError(f"video file '{path}' does not exist")
    if path.stat().st_size == 0:
        raise VideoDecodeError(f"'{path}' is an empty file (0 bytes); re-download or remove it")


def _open(path: Path) -> Any:
    """``av.open`` for reading, turning FFmpeg's errors into a :class:`VideoDecodeError` naming the file."""
    import av

    _check_file(path)
    try:
        return av.open(str(path), mode="r")
    except av.error.FFmpegError as error:
        raise VideoDecodeError(
            f"'{path}' is not a video FFmpeg can read, or it is truncated ({type(error).__name__}: {error}); "
            "re-download, re-encode or remove it"
        ) from None


def _video_stream(container: Any, path: Path) -> Any:
    if not container.streams.video:
        kinds = sorted({stream.type for stream in container.streams}) or ["none"]
        raise VideoDecodeError(f"'{path}' has no video stream (its streams: {', '.join(kinds)})")
    return container.streams.video[0]


def _stream_info(container: Any, stream: Any, path: Path) -> VideoInfo:
    import av

    time_base = stream.time_base or Fraction(1, av.time_base)
    start = float(stream.start_time * time_base) if stream.start_time is not None else 0.0
    if stream.duration:
        duration = float(stream.duration * time_base)
    elif container.duration:
        duration = float(Fraction(container.duration, av.time_base)) - max(0.0, start)
    else:
        duration = 0.0
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    fps = float(rate) if rate else 0.0
    return VideoInfo(
        path=str(path),
        duration=duration,
        fps=fps,
        width=int(stream.codec_context.width or stream.width or 0),
        height=int(stream.codec_context.height or stream.height or 0),
        codec=stream.codec_context.name,
        start_time=start,
    )


def probe_video(path: str | Path) -> VideoInfo:
    """Duration (seconds), average fps and frame size of ``path``'s first video stream, from its header.

    When the header holds neither a stream nor a container duration (some streamed webm / ts files), the stream is
    decoded once to find its last frame time.

    Raises:
        FileNotFoundError: the file does not exist.
        VideoDecodeError: the file is empty, not a video (or truncated beyond opening), or has no video stream.
    """
    path = Path(path)
    with _open(path) as container:
        stream = _video_stream(container, path)
        info = _stream_info(container, stream, path)
        if info.duration > 0 and info.fps > 0:
            return info
        times = [time for time, _ in _frames(container, stream, path, info.start_time)]
    if not times:
        raise VideoDecodeError(f"'{path}' holds no decodable video frame")
    fps = info.fps
    if not fps:
        fps = (len(times) - 1) / max(times[-1] - times[0], _EPS) if len(times) > 1 else 1.0
    duration = info.duration or times[-1] + 1.0 / fps
    return VideoInfo(info.path, duration, fps, info.width, info.height, info.codec, info.start_time)


def _frames(container: Any, stream: Any, path: Path, start_time: float) -> Iterator[tuple[float, Any]]:
    """(time in seconds from the stream's start, frame) in presentation order; frames without a pts are dropped.

    A decoding error after good frames ends the frames there (FFmpeg reports a cut file this way without threads,
    and not at all with frame threads), so both settings behave alike; before any frame it is an error.
    """
    import av

    time_base = stream.time_base
    decoded = False
    try:
        for frame in container.decode(stream):
            if frame.pts is None:
                continue
            decoded = True
            yield float(frame.pts * time_base) - start_time, frame
    except av.error.EOFError:
        return
    except av.error.FFmpegError as error:
        if decoded:  # damaged or cut data after good frames: the frames end here (decode_clip says so if it matters)
            return
        raise VideoDecodeError(f"'{path}': decoding failed ({type(error).__name__}: {error})") from None


def _target_size(width: int, height: int, size: Size) -> tuple[int, int]:
    """(height, width) after resizing: ``size`` an int is the shorter side (aspect kept), a pair is exact (H, W)."""
    if size is None:
        return height, width
    if isinstance(size, int):
        if size <= 0:
            raise ValueError(f"size must be a positive number of pixels, got {size}")
        if height <= width:
            return size, max(1, round(width * size / height))
        return max(1, round(height * size / width)), size
    out_h, out_w = (int(v) for v in size)
    if out_h <= 0 or out_w <= 0:
        raise ValueError(f"size must be positive (height, width), got {size}")
    return out_h, out_w


def _to_array(frame: Any, size: Size) -> np.ndarray:
    height, width = _target_size(frame.width, frame.height, size)
    return frame.reformat(width=width, height=height, format="rgb24").to_ndarray()


class _SeekMissed(Exception):
    """The seek landed after the first wanted time (an imprecise index): decode again from the beginning."""


def _pick(
    container: Any, stream: Any, path: Path, info: VideoInfo, wanted: list[float], size: Size, seeked: bool
) -> tuple[list[np.ndarray], float]:
    """The frames for the ``wanted`` times (ascending), and the time of the last frame decoded."""
    out: list[np.ndarray] = []
    previous: list[Any] | None = None  # [time, frame, its array or None]
    last_time = -math.inf
    for time, frame in _frames(container, stream, path, info.start_time):
        if previous is None and seeked and time > wanted[0] + _EPS:
            raise _SeekMissed
        last_time = time
        current = [time, frame, None]
        while len(out) < len(wanted) and time > wanted[len(out)] + _EPS:
            # the last frame at or before the wanted time; none yet: the nearest one, this first frame
            source = previous if previous is not None else current
            if source[2] is None:
                source[2] = _to_array(source[1], size)
            out.append(source[2])
        if len(out) >= len(wanted):
            break  # past the last wanted time: stop decoding
        previous = current
    if previous is None:
        if seeked:  # nothing after the seek (a truncated file): decode from the start to see where frames stop
            raise _SeekMissed
        raise VideoDecodeError(f"'{path}' holds no decodable video frame")
    if len(out) < len(wanted):  # the video ended first: repeat its last frame
        array = previous[2] if previous[2] is not None else _to_array(previous[1], size)
        out.extend([array] * (len(wanted) - len(out)))
    return out, last_time


def decode_clip(
    path: str | Path, start: float, num_frames: int, fps: float, size: Size = None, *, threads: bool = True
) -> torch.Tensor:
    """``num_frames`` frames at ``fps`` from ``start`` seconds, as uint8 ``[T, H, W, 3]`` (RGB).

    Frame ``i`` is the last frame of the file shown at or before ``start + i / fps`` (the first frame when none is
    that early). When the video ends before ``start + (num_frames - 1) / fps`` its **last frame is repeated** to fill
    the clip. ``size``: None keeps the file's size, an int resizes the shorter side to it (aspect kept), a pair
    ``(H, W)`` resizes to exactly that (bilinear, FFmpeg's swscale). ``threads`` lets FFmpeg decode with its own
    threads (``thread_type = "AUTO"``, per call, bit-identical frames); turn it off in many DataLoader workers to
    avoid oversubscribing cores.

    Raises:
        FileNotFoundError: the file does not exist.
        VideoDecodeError: empty, not a video, no video stream, no decodable frame, or truncated before the clip.
        ValueError: ``start`` is negative or at / beyond the video's duration, or ``num_frames`` / ``fps`` not
            positive; the message names the file.
    """
    path = Path(path)
    if num_frames <= 0 or not fps > 0:
        raise ValueError(f"'{path}': num_frames and fps must be positive, got num_frames={num_frames}, fps={fps}")
    if start < 0 or not math.isfinite(start):
        raise ValueError(f"'{path}': start must be a time >= 0 in seconds, got {start}")
    wanted = [start + i / fps for i in range(num_frames)]
    with _open(path) as container:
        stream = _video_stream(container, path)
        info = _stream_info(container, stream, path)
        if info.duration > 0 and start >= info.duration:
            raise ValueError(
                f"'{path}': start {start:g} s is beyond the video's duration ({info.duration:.3f} s); "
                f"give a start below {info.duration:.3f}"
            )
        if threads:
            stream.thread_type = "AUTO"
        seeked = start > 0
        if seeked:
            offset = math.floor((start + info.start_time) / stream.time_base)
            container.seek(offset, stream=stream, backward=True, any_frame=False)
        try:
            frames, last_time = _pick(container, stream, path, info, wanted, size, seeked)
        except _SeekMissed:
            container.seek(math.floor(info.start_time / stream.time_base), stream=stream, backward=True)
            frames, last_time = _pick(container, stream, path, info, wanted, size, False)
    needed = min(wanted[-1], info.duration - 1.0 / max(info.fps, 1.0))
    if info.duration > 0 and last_time < needed - _TRUNCATION_SLACK and last_time < wanted[-1]:
        raise VideoDecodeError(
            f"'{path}' is truncated (or damaged): its frames stop at {max(last_time, 0.0):.2f} s but its header "
            f"declares {info.duration:.2f} s, and the clip {start:g}-{wanted[-1]:g} s needs frames past that; "
            "re-download or re-encode it"
        )
    return torch.from_numpy(np.stack(frames))


def grid_length(info: VideoInfo, fps: float) -> int:
    """How many frames :func:`decode_video` returns at ``fps``: the times ``k / fps`` below the duration."""
    return max(1, math.ceil(info.duration * fps - _EPS))


def decode_video(
    path: str | Path, fps: float, size: Size = None, max_frames: int | None = None, *, threads: bool = True
) -> torch.Tensor:
    """The whole video at ``fps`` (times ``0, 1/fps, ...`` below its duration) as uint8 ``[T, H, W, 3]``.

    ``max_frames`` keeps only the first ones (and stops decoding there). Same frame choice and errors as
    :func:`decode_clip`.
    """
    count = grid_length(probe_video(path), fps)
    if max_frames is not None:
        count = min(count, int(max_frames))
    return decode_clip(path, 0.0, count, fps, size, threads=threads)


class FrameCache:
    """Decoded frames on disk, one ``.npy`` file (uint8 ``[T, H, W, 3]``) per video, fps and size.

    A file's key hashes its resolved path, modification time and byte size with the fps and size, so an edited or
    replaced video is decoded again. Small datasets are decoded once; later epochs (and other processes) load the
    array. Files are written atomically (a temporary file, then a rename), so concurrent DataLoader workers never read
    a half-written entry; a cache file that cannot be read (corrupted, truncated, wrong shape) is decoded again and
    rewritten, not crashed on. ``rebuilt`` counts those.

    Examples:
        ``cache = FrameCache("cache/frames"); video = cache.video("clip.mp4", fps=4, size=64)``
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.rebuilt = 0

    def key(self, path: str | Path, fps: float, size: Size = None) -> str:
        path = Path(path).resolve()
        stat = path.stat()
        text = f"{path}|{stat.st_mtime_ns}|{stat.st_size}|fps={float(fps)!r}|size={size!r}"
        return hashlib.sha256(text.encode()).hexdigest()[:32]

    def file(self, path: str | Path, fps: float, size: Size = None) -> Path:
        """Where the frames of ``path`` at (``fps``, ``size``) are stored."""
        return self.folder / f"{Path(path).stem[:40]}-{self.key(path, fps, size)}.npy"

    def _load(self, file: Path) -> np.ndarray | None:
        try:
            array = np.load(file, allow_pickle=False)
        except FileNotFoundError:
            return None
        except Exception:  # any unreadable cache entry is rebuilt
            self.rebuilt += 1
            return None
        if array.dtype != np.uint8 or array.ndim != 4 or array.shape[-1] != 3 or array.shape[0] == 0:
            self.rebuilt += 1
            return None
        return array

    def video(self, path: str | Path, fps: float, size: Size = None) -> torch.Tensor:
        """:func:`decode_video` of ``path`` at (``fps``, ``size``), from the cache when it holds it."""
        _check_file(Path(path))
        file = self.file(path, fps, size)
        array = self._load(file)
        if array is None:
            array = decode_video(path, fps, size).numpy()
            self.folder.mkdir(parents=True, exist_ok=True)
            handle, temporary = tempfile.mkstemp(dir=self.folder, suffix=".tmp")
            try:
                with os.fdopen(handle, "wb") as out:
                    np.save(out, array, allow_pickle=False)
                os.replace(temporary, file)
            finally:
                if os.path.exists(temporary):
                    os.unlink(temporary)
        return torch.from_numpy(array)

    def clip(self, path: str | Path, start: float, num_frames: int, fps: float, size: Size = None) -> torch.Tensor:
        """``num_frames`` frames at ``fps`` from ``start``, taken from the cached video at ``fps``.

        Frame ``i`` is the cached frame at the last grid time ``k / fps <= start + i / fps`` (the last frame repeated
        past the end), so it equals :func:`decode_clip` when ``start`` lies on the grid (``start * fps`` whole).
        """
        video = self.video(path, fps, size)
        first = math.floor(start * fps + _EPS)
        if first >= len(video):
            raise ValueError(f"'{path}': start {start:g} s is beyond the video's {len(video)} frames at {fps:g} fps")
        index = torch.clamp(torch.arange(first, first + num_frames), max=len(video) - 1)
        return video[index]


@dataclass
class VideoRows:
    """Video rows plus the files that were dropped, like :class:`mmcontrast.data.audio.AudioRows`.

    Attributes:
        rows: the usable rows (dicts with ``video``, a path, and any other columns), each with its ``info``.
        skipped: (path, reason) of every file that was dropped.
    """

    rows: list[dict[str, Any]]
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def report(self, limit: int = 20) -> str:
        """A readable summary: rows kept, and every skipped file (up to ``limit``) with its reason."""
        lines = [f"{len(self.rows)} videos kept, {len(self.skipped)} skipped"]
        lines += [f"  skipped {path}: {reason}" for path, reason in self.skipped[:limit]]
        if len(self.skipped) > limit:
            lines.append(f"  ... and {len(self.skipped) - limit} more skipped")
        return "\n".join(lines)


def _check_video(path: Path, min_seconds: float) -> tuple[str | None, VideoInfo | None]:
    """(reason it is unusable or None, its info): the header, the first frame and a frame 1 s before the end."""
    try:
        info = probe_video(path)
        if info.duration < min_seconds:
            return f"{info.duration:.3f} s long, shorter than the minimum {min_seconds:g} s (min_seconds)", info
        decode_clip(path, 0.0, 1, 1.0, size=16, threads=False)
        decode_clip(path, max(0.0, info.duration - 1.0), 1, 1.0, size=16, threads=False)  # catches truncation
    except Exception as error:  # any decoder failure is a bad sample, reported
        return f"{type(error).__name__}: {error}", None
    return None, info


def check_video_rows(rows: list[dict[str, Any]], *, min_seconds: float = 0.0, column: str = "video") -> VideoRows:
    """Check every row's video once (header, first frame, last second); drop and record the unusable ones.

    Cheap: two frames are decoded per file, not the whole file. A warning names how many files were skipped and
    the first few (the full list is in ``skipped``).

    Raises:
        ValueError: no row is usable; the message holds the report.
    """
    result = VideoRows([])
    for row in tqdm(rows, desc="checking videos", leave=False, disable=len(rows) < 200):
        path = Path(row[column])
        reason, info = _check_video(path, min_seconds)
        if reason is not None:
            result.skipped.append((str(path), reason))
        else:
            result.rows.append({**row, "info": info})
    if result.skipped:
        warnings.warn(
            f"skipped {len(result.skipped)} unusable video file(s): "
            + "; ".join(f"{p} ({r})" for p, r in result.skipped[:3])
            + (" ..." if len(result.skipped) > 3 else ""),
            stacklevel=2,
        )
    if not result.rows:
        raise ValueError(f"no usable video among {len(rows)} file(s):\n{result.report()}")
    return result


def video_table(
    path: str | Path,
    *,
    video_column: str = "file_name",
    label_column: str | None = "label",
    min_seconds: float = 0.0,
) -> tuple[VideoRows, list[str]]:
    """A csv / tsv / json / jsonl table of video paths (relative to the table's folder) and any other columns
    (``caption``, ``label``, ``view``, ``sync``...); returns the checked rows and the class names.

    ``label_column`` (when every record has it) becomes class indices under ``label`` (its text under
    ``label_name``). Every file is checked once (:func:`check_video_rows`): bad files are skipped and reported.

    Raises:
        ValueError: the table cannot be read, or a record lacks its path; the message names the table and the line.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"video table '{path}' does not exist")
    format = RECORD_SUFFIXES.get(path.suffix.lower())
    if format is None:
        raise ValueError(
            f"video table '{path}' is not a .csv, .tsv, .json or .jsonl file; give it one of these suffixes"
        )
    records = read_records(path, format)
    rows = []
    for record, line in zip(records.rows, records.lines, strict=True):
        name = record.get(video_column)
        if not isinstance(name, str) or not name.strip():
            raise ValueError(
                f"{path}, line {line}: '{video_column}' holds {name!r}, not a video file name; give every record the "
                f"path of its video, relative to {path.parent} (or set the video column)"
            )
        rows.append({**record, "video": path.parent / name})
    rows, classes = label_rows(rows, label_column)
    return check_video_rows(rows, min_seconds=min_seconds), classes


def load_video_rows(
    source: str | Path, *, label_column: str | None = "label", min_seconds: float = 0.0
) -> tuple[VideoRows, list[str]]:
    """Video rows from a table file or a folder; returns the checked rows and the class names (``[]``: unlabelled).

    A folder is read by the first of these that applies: ``metadata.csv`` / ``metadata.jsonl`` in it (see
    :func:`video_table`); one sub-folder of videos per class (labelled rows, classes sorted by name); the video
    files directly in it (unlabelled). Every file is checked once: unusable ones (empty, truncated, not a video,
    audio only, shorter than ``min_seconds``) are skipped, counted and listed in :meth:`VideoRows.report`.
    """
    source = Path(source)
    if source.is_file():
        return video_table(source, label_column=label_column, min_seconds=min_seconds)
    if not source.is_dir():
        raise FileNotFoundError(f"video data '{source}' does not exist (give a folder of videos or a table of paths)")
    for name in ("metadata.csv", "metadata.jsonl"):
        if (source / name).is_file():
            return video_table(source / name, label_column=label_column, min_seconds=min_seconds)
    folders = sorted(p.name for p in source.iterdir() if p.is_dir())
    if folders:
        rows = [
            {"video": path, "label": label, "label_name": name}
            for label, name in enumerate(folders)
            for path in sorted((source / name).iterdir())
            if path.suffix.lower() in VIDEO_SUFFIXES
        ]
        classes = folders
    else:
        rows = [{"video": path} for path in sorted(source.iterdir()) if path.suffix.lower() in VIDEO_SUFFIXES]
        classes = []
    if not rows:
        raise ValueError(
            f"video folder '{source}' has no metadata.csv/metadata.jsonl and no video file "
            f"({', '.join(sorted(VIDEO_SUFFIXES))}) in it or in class sub-folders"
        )
    return check_video_rows(rows, min_seconds=min_seconds), classes


def synchronised_views(
    rows: list[dict[str, Any]], fps: float, *, size: Size = None, cache: FrameCache | None = None
) -> list[dict[str, Any]]:
    """Rows of files that share a ``sync`` value (one per camera, ordered by ``view``) -> one row per video with its
    decoded synchronised ``views``, uint8 ``[V, T, H, W, 3]`` (frames at ``fps``; the views cut to the shortest).

    The other columns come from the first view's row (``caption``, ``label``...). Every group needs the same number
    of views. Decoding happens here, once, into memory (a :class:`FrameCache` keeps it across runs): meant for
    datasets that fit in memory, as multi-camera recordings for time-contrastive learning usually are.

    Raises:
        ValueError: a row without ``sync``, or groups with different numbers of views (the message names them).
    """
    groups: dict[Any, list[dict[str, Any]]] = {}
    for row in rows:
        if row.get("sync") in (None, ""):
            raise ValueError(f"'{row['video']}' has no sync value; give every row of a multi-camera table one")
        groups.setdefault(row["sync"], []).append(row)
    counts = {sync: len(group) for sync, group in groups.items()}
    if len(set(counts.values())) != 1:
        raise ValueError(f"synchronised videos need the same number of views each; views per sync value: {counts}")
    out = []
    for group in tqdm(groups.values(), desc="decoding synchronised views", leave=False):
        group = sorted(group, key=lambda row: int(row.get("view", 0)))
        clips = [
            cache.video(row["video"], fps, size) if cache else decode_video(row["video"], fps, size=size)
            for row in group
        ]
        length = min(len(clip) for clip in clips)
        first = {key: value for key, value in group[0].items() if key not in ("video", "info", "view")}
        out.append({**first, "views": torch.stack([torch.as_tensor(clip[:length]) for clip in clips])})
    return out
