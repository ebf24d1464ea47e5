"""mmcontrast's own two-tower format, for towers with no transformers or open_clip home (a timm image tower, a
mean-pooled text tower...): save a trained two-tower method and load it back exactly.

The folder holds ``model.safetensors`` (the whole method's state dict) and ``config.json``:
``{"format": "mmcontrast-clip", "modalities": [...], "recipe": {...}}``, the recipe the method was built from
(``modalities``: the towers, e.g. ``["image", "text"]`` or ``["audio", "text"]``; older folders lack it: image-text).
Loading rebuilds the untrained method from that recipe, then reads every weight from the safetensors file
(strictly): nothing is unpickled or run from the folder; a pretrained tower's ``name_or_path`` in the recipe must
be reachable (a local path is stored relative to the run folder, the model folder's parent: see
:mod:`mmcontrast.hub.portable_paths`).

Rebuilding from a recipe is the recipe layer's job, and the hub sits below it (imports point down): each recipe
module registers its builder here (:func:`register_method_builder`, keyed by the recipe's ``method``: ``clip``,
``clap``, and video-text next), or the caller passes ``build=``. Importing :mod:`mmcontrast.recipe` registers
every recipe's builder.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file

from mmcontrast.hub.portable_paths import resolve_portable_paths
from mmcontrast.methods.two_tower import TwoTower

MMCONTRAST_CLIP_FORMAT = "mmcontrast-clip"

MethodBuilder = Callable[[dict[str, Any], str], TwoTower]
"""``build(recipe, source)``: the untrained method a stored recipe (a dict) describes; ``source`` names the file
in errors."""

_BUILDERS: dict[str, MethodBuilder] = {}


def register_method_builder(method: str, build: MethodBuilder) -> None:
    """Make folders whose stored recipe has ``method: <method>`` loadable (called by the recipe layer)."""
    _BUILDERS[method] = build


def save_mmcontrast_clip(method: TwoTower, raw: dict[str, Any], directory: str | Path) -> Path:
    """Write a two-tower method whose towers have no transformers / open_clip form: ``model.safetensors`` (the
    whole method) and ``config.json`` holding the recipe ``raw``, from which :func:`load_mmcontrast_clip` rebuilds
    it."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous() for k, v in method.state_dict().items()}, directory / "model.safetensors")
    config = {"format": MMCONTRAST_CLIP_FORMAT, "modalities": list(method.modalities), "recipe": raw}
    (directory / "config.json").write_text(json.dumps(config, indent=1) + "\n")
    return directory


def load_mmcontrast_clip(directory: str | Path, build: MethodBuilder | None = None) -> TwoTower:
    """Rebuild the two-tower method of a folder written by :func:`save_mmcontrast_clip` (eval mode).

    Args:
        directory: the folder.
        build: what rebuilds the untrained method from the stored recipe; default: the builder registered for
            the recipe's ``method`` (:func:`register_method_builder`).
    """
    directory = Path(directory)
    source = str(directory / "config.json")
    config = json.loads((directory / "config.json").read_text())
    if config.get("format") != MMCONTRAST_CLIP_FORMAT:
        found = config.get("format")
        raise ValueError(f"'{directory}' is not an mmcontrast CLIP folder (config.json format: {found!r})")
    recipe = config.get("recipe")
    if not isinstance(recipe, dict):
        raise ValueError(f"{source}: 'recipe' must be the recipe the model was built from, got {recipe!r}")
    if build is None:
        name = recipe.get("method", "clip")
        if name not in _BUILDERS:
            raise ValueError(
                f"'{directory}' holds a '{name}' model, and no builder for '{name}' models is registered: import "
                "mmcontrast.recipe first (it registers every recipe's builder), or pass build="
            )
        build = _BUILDERS[name]
    method = build(resolve_portable_paths(recipe, directory.resolve().parent), source)
    method.load_state_dict(load_file(directory / "model.safetensors"))
    return method.eval()
