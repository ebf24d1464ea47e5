"""Local paths in what a run publishes (model cards, model configs, tracker runs), made relative to the run folder.

A recipe names its data and starting weights by local paths; written as they are, absolute paths would reach the
Hub with a model card and say nothing useful to its readers. :func:`portable_paths` rewrites every path that names
an existing file or folder relative to the run folder (``../../shared/data/stsb/train.tsv``), and
:func:`resolve_portable_paths` turns such a stored recipe back into usable paths when a model folder that sits in
its run folder is rebuilt from it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any


def portable_paths(tree: Any, run_dir: Path) -> Any:
    """``tree`` (a recipe as plain dicts and lists) with every path (see :func:`_path_like`) that names an
    existing local file or folder rewritten relative to the run folder ``run_dir``, so that no absolute local path
    reaches a model card, a model config or the Hub; hub names, `sklearn:digits` and other values stay as written.
    :func:`resolve_portable_paths` turns them back into usable paths."""
    if isinstance(tree, dict):
        return {key: portable_paths(value, run_dir) for key, value in tree.items()}
    if isinstance(tree, list):
        return [portable_paths(value, run_dir) for value in tree]
    if _path_like(tree) and os.path.exists(tree):
        return Path(os.path.relpath(Path(tree).resolve(), run_dir.resolve())).as_posix()
    return tree


def _path_like(value: Any) -> bool:
    """A string shaped like a path (absolute, with a separator, or a file name with a suffix), so that a value
    such as ``train`` is never taken for a folder of that name."""
    return isinstance(value, str) and bool(value) and ("/" in value or os.path.isabs(value) or bool(Path(value).suffix))


def resolve_portable_paths(tree: Any, run_dir: Path) -> Any:
    """The inverse of :func:`portable_paths` for a recipe stored in a model folder: relative strings that name an
    existing file or folder from ``run_dir`` become absolute paths; everything else stays as stored."""
    if isinstance(tree, dict):
        return {key: resolve_portable_paths(value, run_dir) for key, value in tree.items()}
    if isinstance(tree, list):
        return [resolve_portable_paths(value, run_dir) for value in tree]
    if _path_like(tree) and not os.path.isabs(tree) and (run_dir / tree).exists():
        return str((run_dir / tree).resolve())
    return tree


_ABSOLUTE = re.compile(r"(?<![\w.:/])/[^\s`'\"<>()\[\]]+")


def portable_text(text: str, run_dir: Path) -> str:
    """``text`` (a card's description) with every absolute path of an existing file or folder written relative
    to the run folder ``run_dir``."""

    def relative(match: re.Match) -> str:
        path = match.group(0).rstrip(".,;:")
        if not os.path.exists(path):
            return match.group(0)
        return Path(os.path.relpath(path, run_dir.resolve())).as_posix() + match.group(0)[len(path) :]

    return _ABSOLUTE.sub(relative, text)
