"""Audio data: decoding, audio rows from a folder or a table of paths, and the bad files that were dropped.

Decoding uses soundfile (libsndfile: wav, flac, ogg, any bit depth) and falls back to PyAV (FFmpeg's decoders:
mp3, m4a/aac, the audio track of a video). torchaudio's own ``load`` needs torchcodec and a system FFmpeg, so it is
not used; torchaudio only resamples (:func:`torchaudio.functional.resample`). Every clip becomes a float32 mono
waveform ``[T]`` (channels averaged) at the rate the encoder asks for.

Rows come from

- an *audio folder* in the Hugging Face ``audiofolder`` convention: ``metadata.csv`` / ``metadata.jsonl`` with a
  ``file_name`` column (relative to the folder) and any other columns, or one sub-folder per class;
- a plain folder of audio files whose names carry the fields, read with a regular expression with named groups
  (FSDD: :data:`FSDD_PATTERN`, ``{digit}_{speaker}_{take}.wav``);
- a csv / tsv / json / jsonl table of paths (:func:`mmcontrast.data.tables.read_records`, so that errors name the
  file and the line).

Every file is decoded once when the rows are built. A file that cannot be used (empty, truncated, not audio,
holding NaN, or shorter than ``min_seconds``, :data:`MIN_SECONDS` by default) is skipped, counted and reported with
its path in :attr:`AudioRows.skipped` (and :meth:`AudioRows.report`), so that a run never crashes on it midway.
Files at another sample rate are resampled and multi-channel files are mixed down; both are listed as well.
Clips shorter than an encoder's window are padded later, by the adapter (:mod:`mmcontrast.modalities.audio`).
"""

from __future__ import annotations

import io
import re
import struct
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
from tqdm.auto import tqdm

from mmcontrast.data.tables import RECORD_SUFFIXES, label_rows, read_records

AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".m4a", ".aac", ".aiff", ".aif", ".mp4", ".webm"}
AUDIO_MEMBERS = tuple(suffix[1:] for suffix in sorted(AUDIO_SUFFIXES))  # a tar sample's audio member, in this order
MIN_SECONDS = 0.02
"""Clips shorter than this (20 ms, two 10 ms frames) are skipped; longer short clips are padded by the adapter."""
FSDD_PATTERN = r"(?P<label>\d)_(?P<speaker>[a-z]+)_(?P<take>\d+)\.wav"
"""File names of the Free Spoken Digit Dataset: ``{digit}_{speaker}_{take}.wav``."""


class AudioDecodeError(ValueError):
    """A file that is not decodable audio; the message names the file and why."""


def _wav_truncation(handle: BinaryIO, size: int) -> str | None:
    """For a RIFF/WAVE file of ``size`` bytes, why its ``data`` chunk is shorter than its header declares (None when
    it is whole).

    libsndfile reads a truncated wav without complaint, returning the samples that are there, so a cut file would
    pass as a shorter clip; this reads the chunk headers instead. Streaming writers' sizes of 0 or 0xFFFFFFFF are
    taken as unknown.
    """
    header = handle.read(12)
    if len(header) < 12 or header[:4] != b"RIFF" or header[8:12] != b"WAVE":
        return None
    offset = 12
    while True:
        handle.seek(offset)
        chunk = handle.read(8)
        if len(chunk) < 8:
            return None
        name, length = chunk[:4], struct.unpack("<I", chunk[4:])[0]
        if name == b"data":
            if length in (0, 0xFFFFFFFF):
                return None
            held = size - offset - 8
            if held < length:
                return f"truncated wav: its header declares {length} bytes of samples, the file holds {held}"
            return None
        offset += 8 + length + (length & 1)


def _decode_soundfile(source: str | BinaryIO) -> tuple[np.ndarray, int]:
    import soundfile

    data, rate = soundfile.read(source, dtype="float32", always_2d=True)  # [T, C]
    return data.T, int(rate)


def _decode_av(source: str | BinaryIO, name: str) -> tuple[np.ndarray, int]:
    """The first audio stream of any container FFmpeg reads (mp3, m4a, a video's sound), as float32 ``[C, T]``."""
    import av

    with av.open(source) as container:
        if not container.streams.audio:
            raise AudioDecodeError(f"'{name}' has no audio stream")
        stream = container.streams.audio[0]
        rate = int(stream.codec_context.sample_rate or stream.rate)
        resampler = av.AudioResampler(format="fltp", layout=stream.layout.name if stream.layout else None, rate=rate)
        chunks = []
        for frame in container.decode(stream):
            for out in resampler.resample(frame):
                chunks.append(out.to_ndarray())
        for out in resampler.resample(None):
            chunks.append(out.to_ndarray())
    if not chunks:
        return np.zeros((1, 0), dtype=np.float32), rate
    return np.concatenate(chunks, axis=1).astype(np.float32, copy=False), rate


def decode_audio(path: str | Path) -> tuple[np.ndarray, int]:
    """The samples of an audio file as float32 ``[channels, T]`` in [-1, 1] and its sample rate, unchanged.

    Raises:
        FileNotFoundError: the file does not exist.
        AudioDecodeError: neither soundfile nor PyAV can decode it, or it is a truncated wav; the message names the
            file and both decoders' errors.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"audio file '{path}' does not exist")
    with path.open("rb") as handle:
        return _decode(handle, path.stat().st_size, str(path))


def decode_audio_bytes(data: bytes, name: str) -> tuple[np.ndarray, int]:
    """:func:`decode_audio` of a file held in memory (a tar member, a parquet cell); ``name`` names it in errors.

    Raises:
        AudioDecodeError: see :func:`decode_audio`.
    """
    return _decode(io.BytesIO(data), len(data), name)


def _decode(handle: BinaryIO, size: int, name: str) -> tuple[np.ndarray, int]:
    if size == 0:
        raise AudioDecodeError(f"'{name}' is an empty file (0 bytes)")
    truncated = _wav_truncation(handle, size)
    if truncated:
        raise AudioDecodeError(f"'{name}': {truncated}; re-export or re-download it")
    try:
        handle.seek(0)
        return _decode_soundfile(handle)
    except Exception as first:  # libsndfile raises its own error types; fall back to FFmpeg
        try:
            handle.seek(0)
            return _decode_av(handle, name)
        except AudioDecodeError:
            raise
        except Exception as second:
            raise AudioDecodeError(
                f"'{name}' is not audio that soundfile or PyAV can decode (soundfile: {first}; PyAV: "
                f"{type(second).__name__}: {second}); convert it to wav or flac, or remove it"
            ) from None


def to_mono(samples: np.ndarray | torch.Tensor) -> torch.Tensor:
    """``[channels, T]`` (or ``[T]``) -> float32 mono ``[T]``, the mean of the channels."""
    waveform = torch.as_tensor(samples, dtype=torch.float32)
    return waveform if waveform.ndim == 1 else waveform.mean(dim=0)


def resample(waveform: torch.Tensor, rate: int, target_rate: int | None) -> torch.Tensor:
    """``waveform`` at ``rate`` resampled to ``target_rate`` (:func:`torchaudio.functional.resample`); None keeps it."""
    if target_rate is None or int(rate) == int(target_rate):
        return waveform
    import torchaudio.functional

    return torchaudio.functional.resample(waveform, int(rate), int(target_rate))


def load_audio(path: str | Path, target_rate: int | None = None) -> tuple[torch.Tensor, int]:
    """Decode ``path`` to a float32 mono waveform ``[T]``, resampled to ``target_rate`` (None: the file's rate).

    Returns:
        ``(waveform, rate)``, ``rate`` being ``target_rate`` when given.

    Raises:
        FileNotFoundError, AudioDecodeError: see :func:`decode_audio`.
    """
    samples, rate = decode_audio(path)
    waveform = resample(to_mono(samples), rate, target_rate)
    return waveform.contiguous(), int(target_rate or rate)


@dataclass
class AudioRows:
    """Audio rows plus the bookkeeping of what was dropped or changed.

    Attributes:
        rows: dicts with ``audio`` (a path), ``label`` (an int, when labelled), ``speaker`` (when known) and the
            other columns or named groups of the source.
        classes: class names when the rows are labelled (``label`` indexes them).
        skipped: (path, reason) of every file that was dropped.
        resampled: (path, rate) of every file whose rate differs from the asked ``sample_rate``.
        mixed_down: (path, channels) of every multi-channel file.
        sample_rate: the rate the rows are decoded at (None: each file's own).
    """

    rows: list[dict[str, Any]]
    classes: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    resampled: list[tuple[str, int]] = field(default_factory=list)
    mixed_down: list[tuple[str, int]] = field(default_factory=list)
    sample_rate: int | None = None

    def report(self, limit: int = 20) -> str:
        """A readable summary: rows kept, and every skipped file (up to ``limit``) with its reason."""
        lines = [f"{len(self.rows)} audio clips kept, {len(self.skipped)} skipped"]
        for path, reason in self.skipped[:limit]:
            lines.append(f"  skipped {path}: {reason}")
        if len(self.skipped) > limit:
            lines.append(f"  ... and {len(self.skipped) - limit} more skipped")
        if self.resampled:
            rates = sorted({rate for _, rate in self.resampled})
            lines.append(f"{len(self.resampled)} resampled to {self.sample_rate} Hz (from {rates} Hz)")
        if self.mixed_down:
            lines.append(f"{len(self.mixed_down)} mixed down to mono")
        return "\n".join(lines)


class DecodedAudio(Sequence):
    """Rows whose ``audio`` path is decoded to a float32 mono ``[T]`` waveform at ``sample_rate`` when a row is read.

    Plain data (paths and numbers), so it pickles into DataLoader workers; decoding happens in the worker.
    """

    def __init__(self, rows: Sequence[dict[str, Any]] | AudioRows, sample_rate: int | None = None) -> None:
        if isinstance(rows, AudioRows):
            sample_rate = sample_rate or rows.sample_rate
            rows = rows.rows
        self.rows = list(rows)
        self.sample_rate = sample_rate

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, Any]:  # type: ignore[override]
        row = dict(self.rows[index])
        if isinstance(row["audio"], (str, Path)):
            row["audio"], row["sample_rate"] = load_audio(row["audio"], self.sample_rate)
        return row


def _check_audio(path: Path, min_seconds: float) -> tuple[str | None, int, int]:
    """(reason it is unusable or None, its rate, its channels)."""
    try:
        samples, rate = decode_audio(path)
    except Exception as error:  # any decoder failure is a bad sample, reported
        return f"{type(error).__name__}: {error}", 0, 0
    channels, frames = samples.shape
    if frames == 0:
        return "holds no samples", rate, channels
    if not np.isfinite(samples).all():
        return "holds NaN or infinite samples", rate, channels
    seconds = frames / rate
    if seconds < min_seconds:
        return (
            f"{seconds:.3f} s long, shorter than the minimum {min_seconds:g} s (min_seconds); pad or remove it",
            rate,
            channels,
        )
    return None, rate, channels


def check_audio_rows(
    rows: list[dict[str, Any]],
    *,
    classes: Sequence[str] = (),
    sample_rate: int | None = None,
    min_seconds: float = MIN_SECONDS,
    desc: str = "checking audio",
) -> AudioRows:
    """Decode every row's ``audio`` once; drop (and record) the unusable ones, record resampling and mixdown.

    A warning names how many files were skipped and the first few (the full list is in ``skipped``).
    """
    result = AudioRows([], list(classes), sample_rate=sample_rate)
    for row in tqdm(rows, desc=desc, leave=False, disable=len(rows) < 200):
        path = Path(row["audio"])
        reason, rate, channels = _check_audio(path, min_seconds)
        if reason is not None:
            result.skipped.append((str(path), reason))
            continue
        if sample_rate is not None and rate != sample_rate:
            result.resampled.append((str(path), rate))
        if channels > 1:
            result.mixed_down.append((str(path), channels))
        result.rows.append(row)
    if result.skipped:
        warnings.warn(
            f"skipped {len(result.skipped)} unusable audio file(s): "
            + "; ".join(f"{p} ({r})" for p, r in result.skipped[:3])
            + (" ..." if len(result.skipped) > 3 else ""),
            stacklevel=2,
        )
    if not result.rows:
        raise ValueError(f"no usable audio among {len(rows)} file(s):\n{result.report()}")
    return result


def _speaker(row: dict[str, Any], speaker_column: str | None) -> dict[str, Any]:
    if speaker_column and speaker_column in row and speaker_column != "speaker":
        row["speaker"] = str(row[speaker_column])
    return row


def _match_name(path: Path, pattern: re.Pattern[str] | None) -> dict[str, Any] | None:
    """The named groups of ``pattern`` in the file name (digit strings become ints, but ``label`` stays text)."""
    if pattern is None:
        return {}
    match = pattern.fullmatch(path.name)
    if match is None:
        return None
    fields: dict[str, Any] = {}
    for key, value in match.groupdict().items():
        fields[key] = int(value) if key not in ("label", "speaker") and value is not None and value.isdigit() else value
    return fields


def audio_table(
    path: str | Path,
    *,
    audio_column: str = "file_name",
    label_column: str | None = "label",
    speaker_column: str | None = "speaker",
    pattern: str | None = None,
    sample_rate: int | None = None,
    min_seconds: float = MIN_SECONDS,
) -> AudioRows:
    """A csv / tsv / json / jsonl table of audio paths (relative to the table's folder) and any other columns.

    ``label_column`` (when every record has it) becomes class indices; ``speaker_column`` is copied to ``speaker``;
    ``pattern``'s named groups, matched on the file name, add fields (e.g. speaker) the table lacks.

    Raises:
        ValueError: the table cannot be read, or a record lacks its path; the message names the table and the line.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"audio table '{path}' does not exist")
    format = RECORD_SUFFIXES.get(path.suffix.lower())
    if format is None:
        raise ValueError(
            f"audio table '{path}' is not a .csv, .tsv, .json or .jsonl file; give it one of these suffixes"
        )
    records = read_records(path, format)
    regex = re.compile(pattern) if pattern else None
    rows = []
    for record, line in zip(records.rows, records.lines, strict=True):
        name = record.get(audio_column)
        if not isinstance(name, str) or not name.strip():
            raise ValueError(
                f"{path}, line {line}: '{audio_column}' holds {name!r}, not an audio file name; give every record the "
                f"path of its audio, relative to {path.parent} (or set the audio column)"
            )
        file = path.parent / name
        fields = _match_name(file, regex) or {}
        rows.append(_speaker({**fields, **record, "audio": file}, speaker_column))
    rows, classes = label_rows(rows, label_column)
    return check_audio_rows(rows, classes=classes, sample_rate=sample_rate, min_seconds=min_seconds)


def audio_folder(
    root: str | Path,
    *,
    pattern: str | None = None,
    label_column: str | None = "label",
    speaker_column: str | None = "speaker",
    sample_rate: int | None = None,
    min_seconds: float = MIN_SECONDS,
) -> AudioRows:
    """An audio folder, read by the first of these that applies:

    1. ``metadata.csv`` / ``metadata.jsonl`` in ``root`` (see :func:`audio_table`);
    2. with a ``pattern``: every file under ``root`` (searched recursively) whose name matches it; its named groups
       become fields (``label`` a class, ``speaker``, ``take``; digit strings other than label and speaker become
       ints);
    3. one sub-folder per class (labelled rows, classes sorted by name);
    4. the audio files directly in ``root`` (unlabelled rows).

    Classes whose names are all integers are sorted as numbers. Every file is decoded once to check it
    (:func:`check_audio_rows`).

    Examples:
        ``audio_folder("fsdd/recordings", pattern=FSDD_PATTERN, sample_rate=8000)``
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"audio folder '{root}' does not exist")
    options = dict(label_column=label_column, speaker_column=speaker_column, sample_rate=sample_rate)
    for name in ("metadata.csv", "metadata.jsonl"):
        if (root / name).is_file():
            return audio_table(root / name, pattern=pattern, min_seconds=min_seconds, **options)  # type: ignore[arg-type]
    regex = re.compile(pattern) if pattern else None
    folders = sorted(p.name for p in root.iterdir() if p.is_dir())
    if folders and regex is None:
        rows = [
            {"audio": path, "label": label, "label_name": name}
            for label, name in enumerate(folders)
            for path in sorted((root / name).iterdir())
            if path.suffix.lower() in AUDIO_SUFFIXES
        ]
        return check_audio_rows(rows, classes=folders, sample_rate=sample_rate, min_seconds=min_seconds)
    files = sorted(root.rglob("*") if regex is not None else root.iterdir())
    rows = []
    for path in files:
        if not path.is_file() or (path.suffix.lower() not in AUDIO_SUFFIXES and regex is None):
            continue
        fields = _match_name(path, regex)
        if fields is not None:
            rows.append({**fields, "audio": path})
    if not rows:
        raise ValueError(
            f"audio folder '{root}' has no metadata.csv/metadata.jsonl, no class sub-folders and no audio file"
            + (f" whose name matches {pattern!r}" if pattern else "")
        )
    rows, classes = label_rows(rows, label_column)
    return check_audio_rows(rows, classes=classes, sample_rate=sample_rate, min_seconds=min_seconds)


def load_audio_rows(source: str | Path, **options: Any) -> AudioRows:
    """A table of paths (a file) or an audio folder (a directory); ``options`` go to :func:`audio_table` or
    :func:`audio_folder`."""
    if Path(source).is_file():
        return audio_table(source, **options)
    return audio_folder(source, **options)


def split_by_take(
    rows: AudioRows, test_takes: Iterable[int] = range(5), *, take_column: str = "take"
) -> tuple[AudioRows, AudioRows]:
    """(train, test) rows: test holds the rows whose ``take`` is in ``test_takes`` (FSDD's usual split: takes 0-4).

    Raises:
        ValueError: a row has no ``take`` (give a filename pattern with a ``take`` group, e.g. :data:`FSDD_PATTERN`).
    """
    test_set = {int(t) for t in test_takes}
    train, test = [], []
    for row in rows.rows:
        if take_column not in row:
            raise ValueError(
                f"split_by_take: row for '{row.get('audio')}' has no '{take_column}'; read the files with a pattern "
                f"that has a (?P<{take_column}>...) group, e.g. FSDD_PATTERN"
            )
        (test if int(row[take_column]) in test_set else train).append(row)

    def part(selected: list[dict[str, Any]]) -> AudioRows:
        return AudioRows(selected, rows.classes, rows.skipped, rows.resampled, rows.mixed_down, rows.sample_rate)

    return part(train), part(test)


def speakers(rows: AudioRows | Sequence[dict[str, Any]]) -> list[str]:
    """The distinct speakers of the rows, sorted (rows without a speaker are ignored)."""
    items = rows.rows if isinstance(rows, AudioRows) else rows
    return sorted({str(row["speaker"]) for row in items if row.get("speaker") is not None})
