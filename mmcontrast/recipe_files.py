"""The runnable recipe files shipped with mmcontrast (the repository's ``recipes/*.yaml``): find, describe, copy.

A wheel installs them inside the package as ``mmcontrast/bundled_recipes/`` (``setup.py`` maps that package onto
the repository's top-level ``recipes/`` folder); a source checkout or an editable install reads ``recipes/`` itself.
"""

from __future__ import annotations

import difflib
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

_PACKAGE = Path(__file__).resolve().parent


def recipes_folder() -> Path:
    """The folder of the shipped recipe files: the installed copy, else the source checkout's ``recipes/``."""
    installed = _PACKAGE / "bundled_recipes"
    return installed if installed.is_dir() else _PACKAGE.parent / "recipes"


@dataclass
class RecipeFile:
    """A shipped recipe.

    Attributes:
        name: the file name without ``.yaml`` (``sbert_stsb``).
        path: where the file is.
        description: the first sentence of the file's leading comment.
        data: what the recipe needs from outside the package: the ``../`` paths it reads (the shared data a
            repository clone sits next to), or ``data.train`` when the recipe leaves it for the user to give.
    """

    name: str
    path: Path
    description: str
    data: list[str]


def shipped_recipes() -> list[RecipeFile]:
    """Every shipped recipe, by name."""
    return [_describe(path) for path in sorted(recipes_folder().glob("*.yaml"))]


def find_recipe(name: str) -> RecipeFile:
    """The shipped recipe ``name`` (``.yaml`` optional); an unknown name is an error listing the closest names."""
    recipes = {recipe.name: recipe for recipe in shipped_recipes()}
    stem = name.removesuffix(".yaml")
    if stem in recipes:
        return recipes[stem]
    close = difflib.get_close_matches(stem, recipes, n=5, cutoff=0.5) or [n for n in recipes if stem in n]
    hint = f"did you mean {', '.join(close)}?" if close else f"the recipes are {', '.join(recipes)}"
    raise ValueError(f"no shipped recipe named '{name}': {hint} (mmcontrast recipes list shows them all)")


def copy_recipe(name: str, destination: str | Path = ".", *, force: bool = False) -> Path:
    """Write recipe ``name`` to ``destination``: a folder (existing, or given with a trailing ``/``) gets
    ``NAME.yaml``; any other path is the file written. An existing file is kept unless ``force``."""
    recipe = find_recipe(name)
    target = Path(destination)
    if target.is_dir() or str(destination).endswith(("/", "\\")):
        target = target / recipe.path.name
    if target.exists() and not force:
        raise FileExistsError(f"'{target}' already exists: give --force to overwrite it, or another destination")
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(recipe.path, target)
    return target


def _describe(path: Path) -> RecipeFile:
    return RecipeFile(
        path.stem, path, _first_sentence(path.read_text()), _outside_data(yaml.safe_load(path.read_text()))
    )


def _first_sentence(text: str) -> str:
    """The leading comment's first sentence: its lines up to the first indented one (a command), joined."""
    lines = []
    for line in text.splitlines():
        if not line.startswith("#") or line.startswith("#  "):
            break
        lines.append(line.lstrip("#").strip())
    comment = " ".join(lines)
    end = re.search(r"(?<!\bal)(?<!\be\.g)\.(\s|$)", comment)  # "et al. 2021" and "e.g." do not end a sentence
    return comment[: end.start() + 1] if end else comment


def _outside_data(recipe: dict[str, Any]) -> list[str]:
    """The ``../`` paths a recipe reads, after ``data.train`` when its data section names no training data."""
    found = list(dict.fromkeys(value for value in _values(recipe) if value.startswith("../")))
    data = recipe.get("data") or {}
    if not any(key in ("train", "text") for key in _keys(data)):
        found.insert(0, "data.train")
    return found


def _values(tree: Any) -> list[str]:
    """Every text value of a YAML tree, depth first."""
    if isinstance(tree, dict):
        return [value for item in tree.values() for value in _values(item)]
    if isinstance(tree, list):
        return [value for item in tree for value in _values(item)]
    return [tree] if isinstance(tree, str) else []


def _keys(tree: Any) -> list[str]:
    """Every key (with a value) of a YAML tree's mappings, depth first."""
    if not isinstance(tree, dict):
        return []
    return [key for key, value in tree.items() if value is not None] + [k for v in tree.values() for k in _keys(v)]
