"""A run folder belongs to one run: a lock held for the run's lifetime, and no silent reuse of another run's output.

The lock is an exclusive POSIX record lock (``lockf``) on ``OUTPUT_DIR/.mmcontrast-run.lock``, taken by the main
process. The kernel drops it when the holding process ends, however it ends, so the lock of a killed run is stale at
once and the next run takes it over (and says whose it was). Unlike a ``flock``, it is not shared with the
processes the run forks (DataLoader workers), which may outlive a killed run by a few seconds. The file records the
holder (pid, host, start time, command) for the message a second run gets while the first is alive.

A run that starts afresh in a folder holding another run's checkpoints or model refuses, unless it resumes from
one of those checkpoints (``resume_from``) or is told to replace them (``overwrite_output_dir=true``).
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import socket
import sys
import time
from pathlib import Path
from types import TracebackType

import torch

from mmcontrast.engine.checkpoints import checkpoint_dirs
from mmcontrast.engine.durable import remove_leftovers

LOCK_FILE = ".mmcontrast-run.lock"
RUN_OUTPUTS = ("checkpoints", "model", "summary.json", "training_log.json")

_held: dict[Path, int] = {}  # folder -> file descriptor holding its lock (main process)
_depth: dict[Path, int] = {}  # folder -> nesting of ``with RunFolder(...)`` in this process (every process)


class RunFolderError(RuntimeError):
    """The run folder is in use by another live run, or holds another run's output."""


def _broadcast_error(message: str | None) -> str | None:
    """The main process's verdict, on every process of a distributed run."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return message
    box = [message]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def _is_main_process() -> bool:
    return not (torch.distributed.is_available() and torch.distributed.is_initialized()) or (
        torch.distributed.get_rank() == 0
    )


class RunFolder:
    """Hold the run folder's lock while the ``with`` block runs (re-entrant within one process).

    Args:
        output_dir: the run folder (created if missing).
    """

    def __init__(self, output_dir: str | Path) -> None:
        self.output_dir = Path(output_dir).resolve()

    def __enter__(self) -> RunFolder:
        depth = _depth.get(self.output_dir, 0)
        if depth == 0:  # the outermost ``with`` on every process takes part in the (collective) acquisition
            error = self._acquire() if _is_main_process() else None
            error = _broadcast_error(error)
            if error is not None:
                if self.output_dir in _held:
                    os.close(_held.pop(self.output_dir))
                raise RunFolderError(error)
        _depth[self.output_dir] = depth + 1
        return self

    def _acquire(self) -> str | None:
        self.output_dir.mkdir(parents=True, exist_ok=True)
        path = self.output_dir / LOCK_FILE
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.lockf(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # EAGAIN / EACCES: another process holds it
            holder = _describe(os.pread(descriptor, 4096, 0))
            os.close(descriptor)
            return (
                f"output_dir '{self.output_dir}' is in use by another run ({holder}). Wait for it to finish, stop "
                "it, or choose another output_dir"
            )
        previous = os.pread(descriptor, 4096, 0)
        if previous.strip():
            print(f"output_dir '{self.output_dir}': taking over the lock of a run that ended ({_describe(previous)})")
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            "command": " ".join(sys.argv),
        }
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, json.dumps(record).encode(), 0)
        _held[self.output_dir] = descriptor
        remove_leftovers(self.output_dir)  # hidden folders of a killed run's unfinished export
        remove_leftovers(self.output_dir / "checkpoints")
        return None

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        _depth[self.output_dir] -= 1
        if _depth[self.output_dir] == 0:
            del _depth[self.output_dir]
            if self.output_dir in _held:
                descriptor = _held.pop(self.output_dir)
                os.ftruncate(descriptor, 0)
                os.close(descriptor)  # closing drops the lock


def _describe(raw: bytes) -> str:
    try:
        record = json.loads(raw.decode() or "{}")
        return f"pid {record['pid']} on {record['host']}, started {record['started']}: {record['command']}"
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        return "holder unknown"


def prepare_run_folder(output_dir: str | Path, *, resuming: bool, overwrite: bool) -> None:
    """Refuse to start a new run over another run's output, or clear it when ``overwrite`` is set.

    Call on every process while holding the folder's :class:`RunFolder` lock; the main process decides.
    """
    error = None
    if _is_main_process() and not resuming:
        try:
            _clear_or_refuse(Path(output_dir), overwrite)
        except RunFolderError as refused:
            error = str(refused)
    error = _broadcast_error(error)
    if error is not None:
        raise RunFolderError(error)


def _clear_or_refuse(output_dir: Path, overwrite: bool) -> None:
    found = [output_dir / name for name in RUN_OUTPUTS if (output_dir / name).exists()]
    checkpoints = checkpoint_dirs(output_dir / "checkpoints")
    if not (checkpoints or (output_dir / "model").exists()):
        return
    if not overwrite:
        held = f"{len(checkpoints)} checkpoint(s), newest {checkpoints[-1].name}" if checkpoints else "a model folder"
        raise RunFolderError(
            f"output_dir '{output_dir}' holds another run ({held}). Continue that run with resume_from=latest, "
            "replace it with overwrite_output_dir=true, or choose another output_dir"
        )
    for path in found:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
    print(f"overwrite_output_dir=true: removed the earlier run's {', '.join(p.name for p in found)} in {output_dir}")
