"""Durable files and folders: fsync what was written, checksum it, and publish a finished folder with renames.

A folder is built under a hidden temporary name, every file and the folder itself are fsynced, and only then is
it renamed into place. Replacing an existing folder renames the old one aside first, so at every moment the
final name is the complete old folder, nothing, or the complete new folder; never a mix of the two.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
from pathlib import Path

HIDDEN_PREFIXES = (".tmp-", ".old-")


def fsync_path(path: Path) -> None:
    """Flush one file or folder entry to disk."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def fsync_tree(root: Path) -> None:
    """Flush every file under ``root``, then every folder (deepest first), so renames of their entries persist."""
    folders = [root]
    for path in sorted(root.rglob("*")):
        if path.is_dir():
            folders.append(path)
        elif path.is_file():
            fsync_path(path)
    for folder in sorted(folders, key=lambda p: len(p.parts), reverse=True):
        fsync_path(folder)


def sha256(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def publish(staging: Path, final: Path) -> None:
    """Move the complete folder ``staging`` to ``final`` (same parent), replacing any folder there.

    The old folder is renamed to a hidden ``.old-`` name before the new one takes its place and is deleted last,
    so a kill at any point leaves ``final`` complete (old or new) or absent, and the hidden names are ignored.
    """
    fsync_tree(staging)
    aside = final.parent / f".old-{final.name}-{os.getpid()}"
    if final.exists():
        os.replace(final, aside)
    os.replace(staging, final)
    fsync_path(final.parent)
    shutil.rmtree(aside, ignore_errors=True)


def remove_leftovers(root: Path, name: str | None = None) -> None:
    """Delete the hidden ``.tmp-`` / ``.old-`` folders a killed run left in ``root`` (those of ``name`` only, if
    given). Call only while holding the run folder's lock: no live run is writing them then."""
    if not root.is_dir():
        return
    for path in root.iterdir():
        if path.name.startswith(tuple(prefix + (name or "") for prefix in HIDDEN_PREFIXES)):
            shutil.rmtree(path, ignore_errors=True)


def disk_full_error(error: BaseException, what: str, where: Path) -> OSError | None:
    """An ``OSError`` that says plainly that a failed write filled the disk; None if the disk is not full.

    torch's zip writer reports a full disk as ``unexpected pos ...`` with no errno, so the free space on ``where``
    decides, besides an ``ENOSPC`` errno.
    """
    try:
        free = shutil.disk_usage(where).free
    except OSError:
        return None
    if getattr(error, "errno", None) != errno.ENOSPC and free >= 1 << 20:
        return None
    return OSError(
        errno.ENOSPC,
        f"no space left on the device while writing {what} under {where} ({free} bytes free): free some space "
        "(or lower train.save_total_limit), then resume with resume_from=latest",
    )
