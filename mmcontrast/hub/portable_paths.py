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
from collections.abc import Callable
from pathlib import Path
from typing import Any


def portable_paths(tree: Any, run_dir: Path) -> Any:
    """``tree`` (a recipe as plain dicts and lists) with every path (see :func:`_path_like`) that names an
    existing local file or folder rewritten relative to the run folder ``run_dir``, so that no absolute local path
    reaches a model card, a model config or the Hub; hub names, `sklearn:digits` and other values stay as written.
    :func:`resolve_portable_paths` turns them back into usable paths."""
    run_dir = run_dir.resolve()

    def relative(path: str) -> str:
        if not os.path.exists(path):
            return path
        return Path(os.path.relpath(Path(path).resolve(), run_dir)).as_posix()

    return _map_paths(tree, relative)


def resolve_portable_paths(tree: Any, run_dir: Path) -> Any:
    """The inverse of :func:`portable_paths` for a recipe stored in a model folder: relative strings that name an
    existing file or folder from ``run_dir`` become absolute paths; everything else stays as stored."""

    def absolute(path: str) -> str:
        return str((run_dir / path).resolve()) if not os.path.isabs(path) and (run_dir / path).exists() else path

    return _map_paths(tree, absolute)


def _map_paths(tree: Any, rewrite: Callable[[str], str]) -> Any:
    """``tree`` with ``rewrite`` applied to every path-like string in it, however deep in dicts and lists."""
    if isinstance(tree, dict):
        return {key: _map_paths(value, rewrite) for key, value in tree.items()}
    if isinstance(tree, list):
        return [_map_paths(value, rewrite) for value in tree]
    return rewrite(tree) if _path_like(tree) else tree


def _path_like(value: Any) -> bool:
    """A string shaped like a path (absolute, with a separator, or a file name with a suffix), so that a value
    such as ``train`` is never taken for a folder of that name."""
    return isinstance(value, str) and bool(value) and ("/" in value or os.path.isabs(value) or bool(Path(value).suffix))


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
