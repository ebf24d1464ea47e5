"""Verified checkpoints: written to a temporary folder, fsynced, sealed with a manifest, then renamed into place.

Layout of ``OUTPUT_DIR/checkpoints/checkpoint-00000120/``: Accelerate's ``save_state`` files (the model in
safetensors, the optimizer and each process's RNG states as torch files, read back with ``weights_only=True``),
``trainer_state.json`` (step, run id, fingerprint, scheduler, log history) and, written last, ``manifest.json``
with the size and SHA-256 of every other file. A checkpoint is *valid* only when its manifest is there and every
file matches it; ``resume_from=latest`` takes the newest valid checkpoint and says which newer ones it skipped
and why. Folders whose name is not ``checkpoint-<number>`` (a user's backup copy) are ignored, as are the hidden
``.tmp-`` / ``.old-`` folders of an unfinished save.

Trust: a checkpoint folder is loaded without running code from it (safetensors, JSON, and torch files read
with ``weights_only=True``), and nothing is registered for Accelerate's pickled ``custom_checkpoint_*.pkl``
files. The manifest detects damage, not tampering: resume only from folders you wrote yourself.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

from accelerate import Accelerator
from accelerate.utils import load as load_weights_only  # torch.load(weights_only=True)

from mmcontrast.engine.durable import disk_full_error, publish, remove_leftovers, sha256

CHECKPOINT_PREFIX = "checkpoint-"
STATE_FILE = "trainer_state.json"
MANIFEST_FILE = "manifest.json"
MANIFEST_FORMAT = 1
_NAME = re.compile(rf"^{CHECKPOINT_PREFIX}(\d+)$")


class CheckpointError(RuntimeError):
    """A checkpoint cannot be written, found or loaded; the message names the folder, the file and what to do."""


def checkpoint_step(path: Path) -> int | None:
    """The step of a folder named ``checkpoint-<number>``; None for any other name."""
    match = _NAME.match(path.name)
    return int(match.group(1)) if match else None


def checkpoint_dirs(root: str | Path) -> list[Path]:
    """Folders named ``checkpoint-<number>`` under ``root``, oldest step first (validity not checked)."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [(step, p) for p in root.iterdir() if p.is_dir() and (step := checkpoint_step(p)) is not None]
    return [p for _, p in sorted(found)]


def verify(path: Path) -> str | None:
    """None if ``path`` holds a sealed checkpoint whose files all match its manifest, else what is wrong."""
    manifest_path = path / MANIFEST_FILE
    if not manifest_path.is_file():
        return f"{MANIFEST_FILE} is missing (the save did not finish, or an older mmcontrast wrote it)"
    try:
        manifest = json.loads(manifest_path.read_text())
        files = manifest["files"]
    except (ValueError, KeyError, TypeError):
        return f"{MANIFEST_FILE} is not a valid manifest"
    if manifest.get("format") != MANIFEST_FORMAT:
        return f"{MANIFEST_FILE} has format {manifest.get('format')!r}, this mmcontrast reads {MANIFEST_FORMAT}"
    for name, expected in files.items():
        file = path / name
        if not file.is_file():
            return f"{name} is missing"
        size = file.stat().st_size
        if size != expected["size"]:
            return f"{name} has {size} bytes, the manifest says {expected['size']} (truncated or replaced)"
        if sha256(file) != expected["sha256"]:
            return f"{name} does not match its checksum in {MANIFEST_FILE} (the file was changed or damaged)"
    return None


def read_state(path: Path) -> dict[str, Any]:
    """The ``trainer_state.json`` of a checkpoint folder."""
    return json.loads((path / STATE_FILE).read_text())


def resolve_resume(resume_from: str, root: str | Path) -> Path | None:
    """``latest`` -> the newest valid checkpoint under ``root`` (None if there is none), reporting every newer one
    it skipped and why; else the given folder, which must be a valid checkpoint."""
    root = Path(root)
    if resume_from == "latest":
        for path in reversed(checkpoint_dirs(root)):
            problem = verify(path)
            if problem is None:
                return path
            print(f"resume_from=latest: skipping {path}: {problem}")
        return None
    path = Path(resume_from)
    if checkpoint_step(path) is None or not path.is_dir():
        raise CheckpointError(
            f"resume_from='{resume_from}' is not a checkpoint folder (expected a {CHECKPOINT_PREFIX}<step> folder "
            f"under {root}); use resume_from=latest or one of those folders"
        )
    problem = verify(path)
    if problem is not None:
        raise CheckpointError(f"resume_from='{resume_from}': {problem}. {_previous_hint(path)}")
    return path


def _previous_hint(path: Path) -> str:
    step = checkpoint_step(path) or 0
    for earlier in reversed(checkpoint_dirs(path.parent)):
        if (checkpoint_step(earlier) or 0) < step and verify(earlier) is None:
            return f"Resume from the previous checkpoint instead: resume_from={earlier}"
    return "There is no earlier valid checkpoint: start the run again with overwrite_output_dir=true."


def save_checkpoint(accelerator: Accelerator, root: str | Path, step: int, state: dict[str, Any], keep: int) -> Path:
    """Save model, optimizer and RNG states plus ``state`` (JSON) for ``step``, seal the folder with a manifest,
    rename it into place, then keep only the newest ``keep`` checkpoints of this run (``state['run_id']``)."""
    root = Path(root)
    name = f"{CHECKPOINT_PREFIX}{step:08d}"
    final, temporary = root / name, root / f".tmp-{name}"
    try:
        if accelerator.is_main_process:
            shutil.rmtree(temporary, ignore_errors=True)
            temporary.mkdir(parents=True)
        accelerator.wait_for_everyone()
        accelerator.save_state(str(temporary))
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            (temporary / STATE_FILE).write_text(json.dumps(state, indent=1))
            files = sorted(p for p in temporary.rglob("*") if p.is_file())
            manifest = {
                "format": MANIFEST_FORMAT,
                "step": step,
                "run_id": state.get("run_id"),
                "files": {
                    str(p.relative_to(temporary)): {"size": p.stat().st_size, "sha256": sha256(p)} for p in files
                },
            }
            (temporary / MANIFEST_FILE).write_text(json.dumps(manifest, indent=1))
            publish(temporary, final)
            _retain(root, state.get("run_id"), keep)
    except Exception as error:  # torch, safetensors and the OS report a full disk with different types
        shutil.rmtree(temporary, ignore_errors=True)
        full = disk_full_error(error, f"checkpoint {name}", root)
        if full is None:
            raise
        raise full from error
    accelerator.wait_for_everyone()
    return final


def _retain(root: Path, run_id: str | None, keep: int) -> None:
    """Delete this run's oldest checkpoints beyond ``keep`` (0: keep all); other runs' folders are not touched."""
    if keep <= 0:
        return
    ours = [path for path in checkpoint_dirs(root) if _manifest_run_id(path) == run_id]
    for old in ours[:-keep]:
        shutil.rmtree(old)
    remove_leftovers(root, CHECKPOINT_PREFIX)


def _manifest_run_id(path: Path) -> str | None:
    """The run id sealed in a checkpoint's manifest (None when it has none): cheap, no checksums."""
    try:
        return json.loads((path / MANIFEST_FILE).read_text()).get("run_id")
    except (OSError, ValueError, AttributeError):
        return None


def load_checkpoint(accelerator: Accelerator, path: Path) -> dict[str, Any]:
    """Restore model, optimizer and RNG states from a verified checkpoint; returns its trainer state.

    A failure names the checkpoint and the file, and points to the previous valid checkpoint.
    """
    try:
        state = read_state(path)
    except (OSError, ValueError) as error:
        raise CheckpointError(f"cannot read {path / STATE_FILE}: {error}. {_previous_hint(path)}") from error
    custom = sorted(path.glob("custom_checkpoint_*.pkl"))
    if custom:
        raise CheckpointError(
            f"checkpoint {path} holds {custom[0].name}, a pickle that mmcontrast never writes and will not load "
            "(unpickling it could run code): remove it if you trust the folder, or resume from another checkpoint"
        )
    random_states = path / f"random_states_{accelerator.process_index}.pkl"
    try:  # Accelerate would skip an unreadable RNG file with an INFO log, and the resume would not be exact
        load_weights_only(random_states)
    except Exception as error:
        raise CheckpointError(
            f"cannot load {random_states} of checkpoint {path}: {type(error).__name__}: "
            f"{str(error).splitlines()[0]}. {_previous_hint(path)}"
        ) from error
    try:
        accelerator.load_state(str(path))
    except Exception as error:  # torch, safetensors and Accelerate raise many types for a file they cannot use
        file = _file_named_in(error, path)
        raise CheckpointError(
            f"cannot load {file} of checkpoint {path}: {type(error).__name__}: {str(error).splitlines()[0]}. "
            f"{_previous_hint(path)}"
        ) from error
    return state


def _file_named_in(error: BaseException, path: Path) -> Path:
    """The checkpoint file an error is about, as far as its message tells (else the model weights)."""
    message = str(error)
    for file in sorted(path.iterdir()):
        if file.name in message:
            return file
    if "size mismatch" in message or "state_dict" in message or "Missing key" in message:
        return path / "model.safetensors"
    return path
