"""Load a recipe file: read the ``method`` key, then check every key against that method's typed schema
(names, types and ranges) and the precision against the hardware, before anything is loaded. A recipe built in
Python (the schema dataclasses) goes through the same checks (:func:`check_recipe`).

Each method's schema and builder live in :mod:`mmcontrast.recipes`; this module is the registry.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from mmcontrast.engine.config import check_hardware
from mmcontrast.recipes import clap, clip, cpc, cvrl, sbert, simclr, tcn, video_text, view_methods
from mmcontrast.recipes.base import RecipeBase, RecipeParts, effective_recipe
from mmcontrast.typed_config import ConfigError, apply_overrides, build, load_yaml, reference_markdown, set_key


class RecipeKind(NamedTuple):
    """A method's recipe schema and the function that builds its parts."""

    schema: type[RecipeBase]
    build: Callable[[Any, dict[str, Any]], RecipeParts]


RECIPES: dict[str, RecipeKind] = {
    "sbert": RecipeKind(sbert.SbertRecipe, sbert.build),
    "clip": RecipeKind(clip.ClipRecipe, clip.build),
    **{name: RecipeKind(simclr.SimclrRecipe, simclr.build) for name in view_methods.VIEWS_METHODS},
    "cpc": RecipeKind(cpc.CpcRecipe, cpc.build),
    "clap": RecipeKind(clap.ClapRecipe, clap.build),
    "tcn": RecipeKind(tcn.TcnRecipe, tcn.build),
    "cvrl": RecipeKind(cvrl.CvrlRecipe, cvrl.build),
    "video_text": RecipeKind(video_text.VideoTextRecipe, video_text.build),
}


def load_recipe(
    path: str | Path | Mapping[str, Any] | None, overrides: Sequence[str] | Mapping[str, Any] = ()
) -> RecipeBase:
    """Read a recipe (a YAML file, a dict in the same shape, or None to start empty), apply overrides, check every
    key, type and range, and refuse a ``train.mixed_precision`` this machine cannot honour.

    Args:
        path: the recipe file, or the recipe as a dict.
        overrides: ``["train.lr=1e-4", ...]`` (values read as YAML, as on the command line) or
            ``{"train.lr": 1e-4, ...}`` (values used as they are).

    Returns:
        The recipe, an instance of the method's schema (e.g. :class:`~mmcontrast.recipes.sbert.SbertRecipe`).
    """
    if isinstance(path, Mapping):
        data, source = _plain_copy(path), "recipe"
    else:
        data, source = (load_yaml(path) if path is not None else {}), str(path or "recipe")
    if isinstance(overrides, Mapping):
        for key, value in overrides.items():
            set_key(data, key, value)
    else:
        apply_overrides(data, overrides)
    return _build(data, source)


def _plain_copy(tree: Any) -> Any:
    """A copy of ``tree`` as the YAML reader gives it: mappings as dicts, tuples as lists (``adam_betas=(0.9, 0.98)``
    set in Python), so that the caller's objects are never changed and the typed checks see YAML's types."""
    if isinstance(tree, Mapping):
        return {key: _plain_copy(value) for key, value in tree.items()}
    if isinstance(tree, (list, tuple)):
        return [_plain_copy(value) for value in tree]
    return tree


def _build(data: dict[str, Any], source: str) -> RecipeBase:
    method = data.get("method")
    if method not in RECIPES:
        known = ", ".join(RECIPES)
        raise ConfigError(f"{source}: key 'method' must be one of {known}, got {method!r}")
    recipe = build(RECIPES[method].schema, data, source=source)
    check_hardware(recipe.train, source)
    return recipe


def check_recipe(recipe: RecipeBase) -> RecipeBase:
    """A recipe built or changed in Python, checked as a recipe file is (every key's type and range, the
    precision against the hardware): returns an equal, freshly built recipe, or raises :class:`ConfigError`
    naming the key (``train.lr`` given as a string, a batch size of 0...)."""
    if not isinstance(recipe, RecipeBase):
        raise TypeError(f"expected a recipe (e.g. mmcontrast.load_recipe(...)), got {type(recipe).__name__}")
    return _build(_plain_copy(dataclasses.asdict(recipe)), f"{type(recipe).__name__}")


def build_parts(recipe: RecipeBase) -> RecipeParts:
    """The method, data, sampler, evaluators and exporter the recipe describes; the builder receives the effective
    recipe (:func:`~mmcontrast.recipes.base.effective_recipe`) to write into cards and model configs."""
    return RECIPES[recipe.method].build(recipe, effective_recipe(recipe))


def recipe_reference() -> str:
    """The recipe reference page (docs/recipes.md), generated from the typed schemas."""
    intro = (
        "# Recipe reference\n\n"
        "Generated from the typed configs by `mmcontrast recipe-docs` (a test checks it is current).\n"
        "Every key can be set in a recipe file or overridden on the command line as `dotted.key=value`\n"
        "(the value is read as YAML: `train.lr=3e-5`, `data.columns=[a, b]`, `eval.sts=null`).\n"
        "An unknown key, a value of the wrong type or a number out of range stops with an error that names the\n"
        "key. The type column shows each number's allowed range (`int (>= 1) | null`: a whole number of at\n"
        "least 1, or null); numbers must also be finite.\n"
        f"The `method` key chooses the schema: {', '.join(f'`{m}`' for m in RECIPES)}.\n"
    )
    names: dict[type, list[str]] = {}  # one section per schema (the views methods share one)
    for name, kind in RECIPES.items():
        names.setdefault(kind.schema, []).append(f"`{name}`")
    sections = [
        f"\n# method: {', '.join(methods)}\n\n" + reference_markdown(schema) for schema, methods in names.items()
    ]
    return intro + "".join(sections)
