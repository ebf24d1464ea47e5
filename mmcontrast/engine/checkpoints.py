"""Checkpoints written atomically: save into a hidden temporary folder, then rename it into place.

A process killed mid-save leaves only a ``.tmp-*`` folder, which is never taken for a checkpoint, so
``resume_from=latest`` always finds a complete one.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from accelerate import Accelerator

CHECKPOINT_PREFIX = "checkpoint-"
STATE_FILE = "trainer_state.json"


def checkpoint_dirs(root: str | Path) -> list[Path]:
    """Complete checkpoints under ``root``, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith(CHECKPOINT_PREFIX)]
    return sorted(found, key=lambda p: int(p.name.removeprefix(CHECKPOINT_PREFIX)))


def resolve_resume(resume_from: str, root: str | Path) -> Path | None:
    """``latest`` -> newest checkpoint under ``root`` (None if there is none yet); else the given folder."""
    if resume_from == "latest":
        found = checkpoint_dirs(root)
        return found[-1] if found else None
    path = Path(resume_from)
    if not (path / STATE_FILE).is_file():
        raise FileNotFoundError(
            f"resume_from='{resume_from}' is not a checkpoint folder (no {STATE_FILE}); "
            f"use resume_from=latest or a folder under {root}"
        )
    return path


def save_checkpoint(accelerator: Accelerator, root: str | Path, step: int, state: dict[str, Any], keep: int) -> Path:
    """Save model, optimizer, scheduler and RNG states for ``step``, then keep only the newest ``keep``."""
    root = Path(root)
    final = root / f"{CHECKPOINT_PREFIX}{step:08d}"
    temporary = root / f".tmp-{CHECKPOINT_PREFIX}{step:08d}"
    if accelerator.is_main_process:
        shutil.rmtree(temporary, ignore_errors=True)
        temporary.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(temporary))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        with (temporary / STATE_FILE).open("w") as handle:
            json.dump(state, handle, indent=1)
            handle.flush()
            os.fsync(handle.fileno())
        if final.exists():
            shutil.rmtree(final)
        os.replace(temporary, final)
        for old in checkpoint_dirs(root)[:-keep] if keep > 0 else []:
            shutil.rmtree(old)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(accelerator: Accelerator, path: Path) -> dict[str, Any]:
    """Restore everything ``save_checkpoint`` saved; returns the trainer state (step, log history)."""
    accelerator.load_state(str(path))
    return json.loads((path / STATE_FILE).read_text())
