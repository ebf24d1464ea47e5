"""What a model folder holds, told before anything is loaded from it.

`mmcontrast eval` takes a text model and `mmcontrast zero-shot` an image-text model; given another folder (an
empty one, a run or one of its training checkpoints, a model of the other kind, weights in pickle files only),
a loader fails far from the cause ("install sentencepiece", a missing key in a state dict). :func:`folder_kind`
recognises each layout mmcontrast writes or reads by its marker files, and :func:`check_model_folder` turns a
wrong one into an error that says what the folder is and what to give instead.

A video encoder folder (kind ``video``) is either a :meth:`~mmcontrast.modalities.video.VideoEncoder.save_pretrained`
folder (``config.json`` with ``format: mmcontrast-video-encoder``) or a transformers video model folder
(``config.json`` with ``model_type`` ``videomae`` or ``xclip``, with or without the ``mmcontrast_video.json`` that
:meth:`~mmcontrast.modalities.transformers_video.TransformersVideoEncoder.save_pretrained` adds): the folders
:func:`~mmcontrast.modalities.video.load_video_encoder` loads.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Wanted = Literal["text", "image-text", "image", "audio", "audio-text", "video"]

# transformers model types of image-text dual encoders (those mmcontrast exports, and their common peers)
IMAGE_TEXT_MODEL_TYPES = frozenset(
    {"clip", "vision-text-dual-encoder", "siglip", "siglip2", "chinese_clip", "align", "altclip"}
)
# transformers model types of audio-text dual encoders (CLAP)
AUDIO_TEXT_MODEL_TYPES = frozenset({"clap"})
# transformers model types of video encoders (mmcontrast.modalities.transformers_video.VIDEO_MODEL_TYPES, kept here
# so that telling a folder's kind never imports transformers)
VIDEO_MODEL_TYPES = frozenset({"videomae", "xclip"})
VIDEO_ENCODER_FORMAT = "mmcontrast-video-encoder"
SAFETENSORS_SUFFIX = ".safetensors"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
# files an Accelerate checkpoint of a run holds besides the weights (engine/checkpoints.py)
CHECKPOINT_MARKERS = ("trainer_state.json", "optimizer.bin", "scheduler.bin")
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.txt",
    "vocab.json",
    "spiece.model",
    "sentencepiece.bpe.model",
    "tokenizer.model",
)


class ModelFolderError(ValueError):
    """A model folder is not of the kind a command needs; the message says what it is and what to use."""


@dataclass(frozen=True)
class FolderKind:
    """What a folder holds.

    Attributes:
        kind: `text`, `image-text`, `audio-text`, `video-text`, `image`, `audio`, `video`, `checkpoint`,
            `checkpoints`, `run`, `pickle-only`, `empty` or `unknown`.
        format: for a model, its format: `sentence-transformers`, `open_clip`, `mmcontrast-clip`,
            `mmcontrast-image-encoder`, `mmcontrast-audio-encoder`, `mmcontrast-video-encoder`, or
            `transformers <model_type>` (a transformers video folder: `transformers videomae` / `transformers xclip`);
            for `pickle-only`, the pickle files.
    """

    kind: str
    format: str = ""


def _config(folder: Path) -> dict:
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError) as error:
        raise ModelFolderError(f"'{folder / 'config.json'}' is not a readable JSON file ({error})") from error
    return config if isinstance(config, dict) else {}


def _has_weights(folder: Path) -> bool:
    return any(path.suffix == SAFETENSORS_SUFFIX for path in folder.iterdir())


def folder_kind(folder: str | Path) -> FolderKind:
    """Recognise an existing folder by its marker files (see the module docstring)."""
    folder = Path(folder)
    names = {path.name for path in folder.iterdir()}
    if not names:
        return FolderKind("empty")
    if any(name in names for name in CHECKPOINT_MARKERS) or any(n.startswith("random_states_") for n in names):
        return FolderKind("checkpoint")
    checkpoints = [name for name in names if name.startswith("checkpoint-")]
    if checkpoints and all(name in checkpoints or name.startswith(".") for name in names):
        return FolderKind("checkpoints")
    if names & {"checkpoints", "summary.json", "training_log.json"} and "config.json" not in names:
        return FolderKind("run")
    if "open_clip_config.json" in names:
        return FolderKind("image-text", "open_clip")
    if "modules.json" in names:
        return FolderKind("text", "sentence-transformers")
    config = _config(folder) if "config.json" in names else {}
    if config.get("format") == "mmcontrast-clip":
        modalities = config.get("modalities", ())
        kind = "audio-text" if "audio" in modalities else "video-text" if "video" in modalities else "image-text"
        return FolderKind(kind, "mmcontrast-clip")
    if config.get("format") == "mmcontrast-image-encoder":
        return FolderKind("image", "mmcontrast-image-encoder")
    if config.get("format") == "mmcontrast-audio-encoder":
        return FolderKind("audio", "mmcontrast-audio-encoder")
    if config.get("format") == VIDEO_ENCODER_FORMAT:
        return FolderKind("video", VIDEO_ENCODER_FORMAT)
    pickles = sorted(name for name in names if name.endswith(PICKLE_SUFFIXES))
    if pickles and not _has_weights(folder):
        return FolderKind("pickle-only", ", ".join(pickles))
    if "config.json" not in names:
        return FolderKind("unknown")
    model_type = config.get("model_type")
    if model_type in IMAGE_TEXT_MODEL_TYPES:
        return FolderKind("image-text", f"transformers {model_type}")
    if model_type in AUDIO_TEXT_MODEL_TYPES:
        return FolderKind("audio-text", f"transformers {model_type}")
    if model_type in VIDEO_MODEL_TYPES and "format" not in config:
        return FolderKind("video", f"transformers {model_type}")
    return FolderKind("text", f"transformers {model_type or 'model'}")


def _listing(folder: Path, limit: int = 6) -> str:
    names = sorted(path.name for path in folder.iterdir())
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _run_model(run: Path | None) -> str:
    """Where a run's exported model is, for a message about one of its checkpoints."""
    if run is None:
        return "OUTPUT_DIR/model"
    model = run / "model"
    return f"'{model}'" if model.is_dir() else f"'{model}' (written when the run's training ends)"


def _pickle_only(folder: str | Path, files: str, weights_dir: str | Path) -> str:
    return (
        f"'{folder}' holds only pickle weights ({files}); mmcontrast loads safetensors only: convert them once, "
        f'if you trust the file, with python -c "from transformers import AutoModel; '
        f"AutoModel.from_pretrained('{weights_dir}').save_pretrained('{weights_dir}')\""
    )


def check_model_folder(folder: str | Path, wanted: Wanted | tuple[Wanted, ...]) -> None:
    """Raise unless ``folder`` holds a model of the ``wanted`` kind, or of one of the ``wanted`` kinds (or may be a
    Hugging Face Hub name).

    A ``text`` model named by something that does not exist and does not look like a path (``org/name``) is
    left to the loader, which reads the Hub cache; a path that does not exist raises :class:`FileNotFoundError`;
    any other folder that is not a ``wanted`` model raises :class:`ModelFolderError` saying what it is and what
    to give instead.
    """
    kinds = (wanted,) if isinstance(wanted, str) else tuple(wanted)
    path = Path(folder).expanduser()
    text = str(folder)
    if not path.exists():
        looks_like_path = text.startswith(("/", ".", "~")) or text.count("/") > 1 or bool(path.suffix)
        if "text" not in kinds or looks_like_path:
            raise FileNotFoundError(f"model folder '{folder}' does not exist")
        return
    if not path.is_dir():
        raise ModelFolderError(f"'{folder}' is a file, not a model folder")
    found = folder_kind(path)
    if found.kind in kinds:
        if found.kind == "text":
            _check_text_folder(folder, path)
        return
    if len(kinds) > 1 and found.kind in ("text", "image-text", "audio-text", "video-text", "image", "audio", "video"):
        article = "an" if found.kind[0] in "aeiou" else "a"
        raise ModelFolderError(
            f"'{folder}' is {article} {found.kind} model folder ({found.format}), not one of the kinds this command "
            f"takes ({', '.join(kinds)} encoders)"
            + (": use mmcontrast zero-shot" if found.kind in ("image-text", "audio-text") else "")
        )
    wanted = kinds[0]
    resolved = path.resolve()
    messages = {
        "empty": f"model folder '{folder}' is empty: give the model folder a run exported (OUTPUT_DIR/model)",
        "checkpoint": (
            f"'{folder}' is a training checkpoint, not a model folder: use the run's exported model, "
            + _run_model(resolved.parent.parent if resolved.parent.name == "checkpoints" else None)
        ),
        "checkpoints": (
            f"'{folder}' holds a run's training checkpoints, not a model: use the run's exported model, "
            + _run_model(resolved.parent)
        ),
        "run": f"'{folder}' is a run folder, not a model folder: use its exported model, {_run_model(path)}",
        "pickle-only": _pickle_only(folder, found.format, folder),
        "text": f"'{folder}' is a text model folder ({found.format}), not an image-text model: use mmcontrast eval",
        "image-text": (
            f"'{folder}' is an image-text (CLIP) model folder ({found.format}), not a text model: "
            "use mmcontrast zero-shot"
        ),
        "image": (
            f"'{folder}' is an image encoder folder ({found.format}), not a {wanted} model: load it with "
            "mmcontrast.modalities.image.ImageEncoder.from_pretrained"
        ),
        "audio-text": (
            f"'{folder}' is an audio-text (CLAP) model folder ({found.format}), not a {wanted} model: "
            "use mmcontrast zero-shot"
        ),
        "video-text": (
            f"'{folder}' is a video-text model folder ({found.format}), not a {wanted} model: load it with "
            "mmcontrast.hub.mmcontrast_clip.load_mmcontrast_clip, or give its video_encoder sub-folder to "
            "mmcontrast eval video / eval probe"
        ),
        "audio": (
            f"'{folder}' is an audio encoder folder ({found.format}), not a {wanted} model: probe it with "
            "mmcontrast eval probe, or load it with mmcontrast.modalities.audio.AudioEncoder.from_pretrained"
        ),
        "video": (
            f"'{folder}' is a video encoder folder ({found.format}), not a {wanted} model: probe it with "
            "mmcontrast eval probe or mmcontrast eval video, or load it with "
            "mmcontrast.modalities.video.load_video_encoder"
        ),
        "unknown": (
            f"'{folder}' is not a model folder: it has no config.json, modules.json or open_clip_config.json "
            f"(it holds {_listing(path)})"
        ),
    }
    raise ModelFolderError(messages[found.kind])


def _check_text_folder(folder: str | Path, path: Path) -> None:
    """A text model folder has a config, safetensors weights and a tokenizer (in its transformer sub-folder)."""
    transformer = path
    if (path / "modules.json").is_file():
        try:
            modules = json.loads((path / "modules.json").read_text())
        except ValueError as error:
            raise ModelFolderError(f"'{path / 'modules.json'}' is not valid JSON ({error})") from error
        paths = [m.get("path", "") for m in modules if str(m.get("type", "")).endswith("Transformer")]
        transformer = path / paths[0] if paths else path
    if not (transformer / "config.json").is_file():
        raise ModelFolderError(f"text model folder '{folder}' has no config.json in '{transformer}'")
    if not _has_weights(transformer):
        pickles = sorted(p.name for p in transformer.iterdir() if p.name.endswith(PICKLE_SUFFIXES))
        if pickles:
            raise ModelFolderError(_pickle_only(folder, ", ".join(pickles), transformer))
        raise ModelFolderError(f"text model folder '{folder}' has no weights (no *.safetensors in '{transformer}')")
    if not any((transformer / name).is_file() for name in TOKENIZER_FILES):
        raise ModelFolderError(
            f"text model folder '{folder}' has no tokenizer (none of {', '.join(TOKENIZER_FILES)} in "
            f"'{transformer}'): save the tokenizer into it with tokenizer.save_pretrained"
        )
