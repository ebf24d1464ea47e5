"""Frozen features of any encoder folder mmcontrast writes, and of labelled tables, for probes.

An encoder folder is recognised by its marker files (:func:`mmcontrast.hub.folders.folder_kind`):

- ``audio``: an :class:`~mmcontrast.modalities.audio.AudioEncoder` folder (``config.json`` of format
  ``mmcontrast-audio-encoder``). Frames ``[B, F, d]`` (the contexts ``c_t`` when the encoder has a context network,
  as a CPC export does) are pooled per utterance: ``mean`` over the valid frames, or ``last``, the last valid frame
  (for a CPC encoder, the context vector of the last frame: the CPC paper's protocol);
- ``image``: an :class:`~mmcontrast.modalities.image.ImageEncoder` folder (``mmcontrast-image-encoder``);
- ``text``: a sentence-transformers or transformers folder (:class:`~mmcontrast.modalities.text.TextEncoder`, its
  own pooling);
- ``video``: a :class:`~mmcontrast.modalities.video.VideoEncoder` folder (``mmcontrast-video-encoder``) or a
  transformers video model folder (VideoMAE, X-CLIP), loaded by :func:`mmcontrast.modalities.video.load_video_encoder`.
  A video's feature is the encoder's clip embedding (its own temporal pooling; ``pooling`` does not apply).

A *probe table* is a csv / tsv / json / jsonl file in the Hugging Face imagefolder / audiofolder metadata
convention: a ``file_name`` column, relative to the table's folder (or absolute), and a label column; for a text
model a ``text`` column instead of ``file_name``. It is read by :func:`mmcontrast.data.tables.read_records`, so
errors name the file and the line. Files that cannot be decoded are skipped, counted and reported, never a crash.

A video row is one clip: the file is checked by :func:`mmcontrast.data.video.check_video_rows` (header, first frame,
last second), then decoded whole by :func:`mmcontrast.data.video.decode_video` at ``VIDEO_FPS`` (4) frames a second,
its shorter side resized to the encoder's ``image_size`` (``VIDEO_SIZE``, 64, when the encoder has none), and only
its first ``VIDEO_MAX_FRAMES`` (32, so 8 s) kept: enough frames for a clip-level label at a bounded cost (a
transformers video model then samples its own ``num_frames`` from them). The encoder's ``preprocess`` crops and
normalises the frames.

Baselines, computed on the same rows: :func:`load_encoder` with ``random_init=True`` rebuilds the same
architecture from its ``config.json`` without loading the weights (seeded; a video encoder is loaded, then every
weight is redrawn by :func:`mmcontrast.evaluation.video_views.random_init`: the same architecture, no trained value
kept); :func:`mfcc_features` (audio only) gives
MFCCs (:class:`torchaudio.transforms.MFCC`: 13 coefficients, 40 mel bands, 25 ms windows every 10 ms,
``center=False``), their mean and standard deviation over time for ``mean`` pooling, or one frame (the last) for
``last`` pooling (the CPC paper's single-frame MFCC baseline).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from tqdm.auto import tqdm

from mmcontrast.data.tables import RECORD_SUFFIXES, read_records

Modality = Literal["audio", "image", "text", "video"]
MODALITIES: tuple[Modality, ...] = ("audio", "image", "text", "video")
VIDEO_FPS = 4.0
"""Frames a second a probe table's video is decoded at."""
VIDEO_SIZE = 64
"""Shorter side its frames are resized to when the encoder has no ``image_size``."""
VIDEO_MAX_FRAMES = 32
"""Frames of a video kept (its first ones: 8 s at ``VIDEO_FPS``)."""
MFCC_COEFFICIENTS = 13
MFCC_MELS = 40
MFCC_WINDOW_SECONDS = 0.025
MFCC_HOP_SECONDS = 0.010


@dataclass
class LoadedEncoder:
    """An encoder loaded from a folder, with what it is.

    Attributes:
        modality: ``audio``, ``image``, ``text`` or ``video``.
        format: the folder's format (``mmcontrast-audio-encoder``, ``sentence-transformers``...).
        model: the :class:`AudioEncoder`, :class:`ImageEncoder`, :class:`TextEncoder` or video encoder
            (:class:`VideoEncoder`, :class:`TransformersVideoEncoder`), in eval mode.
    """

    modality: Modality
    format: str
    model: Any


@dataclass
class ProbeTable:
    """The labelled inputs of one probe table.

    Attributes:
        source: the table file.
        inputs: the decoded inputs (waveforms, images, uint8 clips ``[T, H, W, 3]``) or texts, one per kept row.
        labels: the label of each kept row, as text.
        skipped: (file, reason) of every row whose file could not be decoded.
    """

    source: Path
    inputs: list[Any]
    labels: list[str]
    skipped: list[tuple[str, str]] = field(default_factory=list)


def encoder_modality(folder: str | Path) -> tuple[Modality, str]:
    """``(modality, format)`` of an encoder folder; any other folder is an error that says what it is."""
    from mmcontrast.hub.folders import check_model_folder, folder_kind

    check_model_folder(folder, MODALITIES)
    if not Path(folder).expanduser().exists():  # a Hub name of a text model (check_model_folder lets it through)
        return "text", "hub"
    found = folder_kind(Path(folder).expanduser())
    return found.kind, found.format  # type: ignore[return-value]


def load_encoder(folder: str | Path, *, random_init: bool = False, seed: int = 0) -> LoadedEncoder:
    """Load the encoder of ``folder`` (eval mode); ``random_init`` rebuilds its architecture from the folder's
    config without loading the weights, from ``torch.manual_seed(seed)`` (the random-init baseline). A video
    encoder is loaded, then every weight is redrawn (:func:`mmcontrast.evaluation.video_views.random_init`, seeded)."""
    modality, format = encoder_modality(folder)
    if modality == "video":
        from mmcontrast.modalities.video import load_video_encoder

        model: Any = load_video_encoder(folder)
        if random_init:
            from mmcontrast.evaluation.video_views import random_init as redraw

            model = redraw(model, seed)
    elif modality == "audio":
        from mmcontrast.modalities.audio import AudioEncoder

        model = AudioEncoder.from_pretrained(folder)
        if random_init:
            import json

            config = json.loads((Path(folder) / "config.json").read_text())
            extra = {"context": config["context"]} if config.get("context") else {}
            torch.manual_seed(seed)
            model = AudioEncoder(
                config["kind"],
                sample_rate=config["sample_rate"],
                pooling=config.get("pooling", "mean"),
                normalize=config.get("normalize", False),
                **extra,
                **config["options"],
            )
    elif modality == "image":
        from mmcontrast.modalities.image import ImageEncoder

        model = ImageEncoder.from_pretrained(folder)
        if random_init:
            torch.manual_seed(seed)
            if model.kind == "transformers":
                from transformers import AutoModel

                model.backbone = AutoModel.from_config(model.backbone.config)
            else:
                options = dict(getattr(model, "create_options", None) or {})
                model.backbone = ImageEncoder.create(model.name, image_size=model.image_size, **options).backbone
    else:
        from mmcontrast.modalities.text import TextEncoder

        model = TextEncoder.from_pretrained(folder)
        if random_init:
            from transformers import AutoModel

            torch.manual_seed(seed)
            model.transformer = AutoModel.from_config(model.transformer.config)
    return LoadedEncoder(modality, format, model.eval())


def read_probe_table(
    path: str | Path, label_column: str, *, option: str, input_column: str = "file_name"
) -> tuple[Path, list[tuple[Any, str]]]:
    """The ``(input, label)`` pairs of a probe table (see the module docstring); file inputs are resolved against
    the table's folder. Errors name ``option`` (``--train``), the file, the line and what to do."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{option}: table '{path}' does not exist")
    format = RECORD_SUFFIXES.get(path.suffix.lower())
    if format is None:
        raise ValueError(f"{option}: table '{path}' is not a .csv, .tsv, .json or .jsonl file; give it one of these")
    try:
        records = read_records(path, format)
    except ValueError as error:
        raise ValueError(f"{option}: {error}") from error
    pairs = []
    for record, line in zip(records.rows, records.lines, strict=True):
        for column in (input_column, label_column):
            if column not in record:
                raise ValueError(
                    f"{option}: table '{path}', line {line}: no column '{column}'; the table has columns "
                    f"{sorted(record)} (set --label to the label column; inputs go in '{input_column}')"
                )
        value, label = record[input_column], record[label_column]
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"{option}: table '{path}', line {line}: '{input_column}' is empty")
        if label is None or not str(label).strip():
            raise ValueError(f"{option}: table '{path}', line {line}: label '{label_column}' is empty")
        pairs.append((path.parent / value if input_column == "file_name" else value, str(label).strip()))
    if not pairs:
        raise ValueError(f"{option}: table '{path}' has no rows")
    return path, pairs


def load_probe_table(
    path: str | Path,
    label_column: str,
    modality: Modality,
    *,
    option: str,
    sample_rate: int | None = None,
    image_size: int | None = None,
) -> ProbeTable:
    """Read a probe table (:func:`read_probe_table`; a text model's inputs are its ``text`` column) and decode its
    files (:func:`decode_probe_table`)."""
    input_column = "text" if modality == "text" else "file_name"
    source, pairs = read_probe_table(path, label_column, option=option, input_column=input_column)
    return decode_probe_table(source, pairs, modality, option=option, sample_rate=sample_rate, image_size=image_size)


def decode_probe_table(
    source: Path,
    pairs: Sequence[tuple[Any, str]],
    modality: Modality,
    *,
    option: str,
    sample_rate: int | None = None,
    image_size: int | None = None,
) -> ProbeTable:
    """Decode the ``(input, label)`` pairs of a table: audio as float32 mono waveforms ``[T]`` at ``sample_rate``
    (:mod:`mmcontrast.data.audio`), images as 8-bit RGB PIL images, videos as uint8 clips ``[T, H, W, 3]`` (see the
    module docstring; shorter side ``image_size``, default ``VIDEO_SIZE``), texts as they are; undecodable files
    are skipped and listed in :attr:`ProbeTable.skipped`."""
    if modality == "text":
        return ProbeTable(source, [text for text, _ in pairs], [label for _, label in pairs])
    inputs, labels, skipped = [], [], []
    if modality == "video":
        from mmcontrast.data.video import check_video_rows, decode_video

        rows = [{"video": file, "label_name": label} for file, label in pairs]
        with warnings.catch_warnings():  # the skipped files are reported by the caller, named
            warnings.simplefilter("ignore")
            try:
                checked = check_video_rows(rows)
            except ValueError as error:
                raise ValueError(f"{option}: table '{source}': no decodable video file ({error})") from None
        skipped = list(checked.skipped)
        size = int(image_size or VIDEO_SIZE)
        for row in tqdm(checked.rows, desc=f"decoding {option} videos", leave=False):
            try:
                inputs.append(decode_video(row["video"], VIDEO_FPS, size=size, max_frames=VIDEO_MAX_FRAMES))
            except Exception as error:  # damaged past what the check reads: skipped and reported
                skipped.append((str(row["video"]), f"{type(error).__name__}: {error}"))
                continue
            labels.append(row["label_name"])
        if not inputs:
            raise ValueError(f"{option}: table '{source}': no decodable video among {len(pairs)} file(s)")
    elif modality == "audio":
        from mmcontrast.data.audio import check_audio_rows, load_audio

        rows = [{"audio": file, "label_name": label} for file, label in pairs]
        with warnings.catch_warnings():  # the skipped files are reported by the caller, named
            warnings.simplefilter("ignore")
            try:
                checked = check_audio_rows(rows, sample_rate=sample_rate, desc=f"checking {option} audio")
            except ValueError as error:
                raise ValueError(f"{option}: table '{source}': no decodable audio file ({error})") from None
        skipped = list(checked.skipped)
        for row in tqdm(checked.rows, desc=f"decoding {option} audio", leave=False):
            inputs.append(load_audio(row["audio"], sample_rate)[0])
            labels.append(row["label_name"])
    else:
        from PIL import Image

        from mmcontrast.modalities.image import to_rgb

        for file, label in tqdm(pairs, desc=f"decoding {option} images", leave=False):
            try:
                with Image.open(file) as image:
                    inputs.append(to_rgb(image))
            except Exception as error:  # PIL raises many types for bad files: skipped and reported
                skipped.append((str(file), f"{type(error).__name__}: {error}"))
                continue
            labels.append(label)
        if not inputs:
            raise ValueError(f"{option}: table '{source}': no readable image among {len(pairs)} file(s)")
    return ProbeTable(source, inputs, labels, skipped)


def _device(model: torch.nn.Module) -> torch.device:
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


@torch.no_grad()
def audio_features(
    encoder: Any, waveforms: Sequence[torch.Tensor], *, pooling: str = "mean", batch_size: int = 64, desc: str = ""
) -> torch.Tensor:
    """Utterance features ``[N, d]`` (fp32, CPU) of an :class:`AudioEncoder`: its frames pooled over each clip's
    valid frames (``mean``) or its last valid frame (``last``). Clips are batched by length (less padding)."""
    order = sorted(range(len(waveforms)), key=lambda i: waveforms[i].shape[-1])
    device = _device(encoder)
    out = torch.empty(len(waveforms), encoder.embedding_dim)
    for start in tqdm(range(0, len(order), batch_size), desc=desc or "audio features", leave=False):
        indices = order[start : start + batch_size]
        batch = encoder.preprocess([waveforms[i] for i in indices])
        values, mask = batch["input_values"].to(device), batch["attention_mask"].to(device)
        frames = encoder(values, mask)
        pooled = encoder.pool(frames, encoder.frame_mask(mask, frames.shape[1]), pooling)
        out[torch.tensor(indices)] = pooled.float().cpu()
    return out


@torch.no_grad()
def video_features(
    encoder: Any, clips: Sequence[torch.Tensor], *, batch_size: int = 64, desc: str = ""
) -> torch.Tensor:
    """Clip embeddings ``[N, d]`` (fp32, CPU) of a video encoder on uint8 clips ``[T, H, W, 3]``:
    ``encoder(**encoder.preprocess(batch))``, in eval mode, without gradients. Clips are batched by length (less
    padding); a clip's embedding does not depend on the other clips of its batch."""
    encoder.eval()
    order = sorted(range(len(clips)), key=lambda i: clips[i].shape[0])
    device = _device(encoder)
    out = torch.empty(len(clips), encoder.embedding_dim)
    for start in tqdm(range(0, len(order), batch_size), desc=desc or "video features", leave=False):
        indices = order[start : start + batch_size]
        batch = encoder.preprocess([clips[i] for i in indices])
        out[torch.tensor(indices)] = encoder(**{k: v.to(device) for k, v in batch.items()}).float().cpu()
    return out


@torch.no_grad()
def image_features(encoder: Any, images: Sequence[Any], *, batch_size: int = 64, desc: str = "") -> torch.Tensor:
    """Features ``[N, d]`` (fp32, CPU) of an :class:`ImageEncoder` on PIL images."""
    device = _device(encoder)
    chunks = []
    for start in tqdm(range(0, len(images), batch_size), desc=desc or "image features", leave=False):
        chunks.append(encoder(encoder.preprocess(images[start : start + batch_size]).to(device)).float().cpu())
    return torch.cat(chunks)


def encoder_features(
    loaded: LoadedEncoder, inputs: Sequence[Any], *, pooling: str = "mean", batch_size: int = 64, desc: str = ""
) -> torch.Tensor:
    """Features ``[N, d]`` of ``inputs`` (waveforms, images, clips or texts, as :func:`load_probe_table` gives
    them); ``pooling`` applies to audio only."""
    if loaded.modality == "video":
        return video_features(loaded.model, inputs, batch_size=batch_size, desc=desc)
    if loaded.modality == "audio":
        return audio_features(loaded.model, inputs, pooling=pooling, batch_size=batch_size, desc=desc)
    if loaded.modality == "image":
        return image_features(loaded.model, inputs, batch_size=batch_size, desc=desc)
    return loaded.model.encode(list(inputs), batch_size, show_progress=True, desc=desc or "text features")


def mfcc_transform(sample_rate: int) -> Any:
    """The baselines' :class:`torchaudio.transforms.MFCC` at ``sample_rate``: 13 coefficients, 40 mel bands, 25 ms
    windows every 10 ms, ``center=False`` (a frame sees only its own window)."""
    import torchaudio.transforms

    return torchaudio.transforms.MFCC(
        sample_rate=sample_rate,
        n_mfcc=MFCC_COEFFICIENTS,
        melkwargs={
            "n_fft": round(MFCC_WINDOW_SECONDS * sample_rate),
            "hop_length": round(MFCC_HOP_SECONDS * sample_rate),
            "n_mels": MFCC_MELS,
            "center": False,
        },
    )


def mfcc_features(waveforms: Sequence[torch.Tensor], sample_rate: int, *, pooling: str = "mean") -> torch.Tensor:
    """MFCC baseline features (see the module docstring): ``[N, 26]`` mean and std over time (``mean``) or
    ``[N, 13]``, the last frame (``last``). Clips shorter than one window are zero padded to it."""
    transform = mfcc_transform(sample_rate)
    window = transform.MelSpectrogram.spectrogram.n_fft
    features = []
    for waveform in tqdm(waveforms, desc="mfcc features", leave=False):
        if waveform.shape[-1] < window:
            waveform = torch.nn.functional.pad(waveform, (0, window - waveform.shape[-1]))
        coefficients = transform(waveform.float())  # [n_mfcc, F]
        if pooling == "mean":
            std = coefficients.std(dim=1) if coefficients.shape[1] > 1 else torch.zeros(MFCC_COEFFICIENTS)
            features.append(torch.cat([coefficients.mean(dim=1), std]))
        else:
            features.append(coefficients[:, -1])
    return torch.stack(features)
