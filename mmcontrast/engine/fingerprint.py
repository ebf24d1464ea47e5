"""What decides a run's trajectory, stored in every checkpoint and compared when a run resumes.

A resumed run must replay the run it continues. Its fingerprint holds the method's own sections of the recipe
(model, data, loss, views...), every training setting except those that are safe to change, the number of
training rows, the number of processes and the mmcontrast version. Resuming with a difference refuses and names
the keys. Safe to change on resume (:data:`RESUMABLE_TRAIN_KEYS`): `train.max_steps` / `train.epochs` (to extend
or shorten a run; the learning-rate schedule follows the new total, warm-up stays as it was), the logging, saving
and evaluation intervals, `train.save_total_limit`, `train.num_workers`, `train.progress_bar`, `train.report_to`,
`train.early_stopping`, `train.keep_best`, `train.gradient_checkpointing`, `train.find_unused_parameters`,
`train.compile`,
`train.compile_backend` and `train.compile_mode` (they change how the same maths is computed, not the maths; a
compiled step rounds differently from an eager one, so a resume that switches them continues the run closely, not
bit for bit); and the recipe's
`eval`, `output_dir`, `resume_from`, `overwrite_output_dir` and `push_to_hub` sections.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

import mmcontrast
from mmcontrast.engine.config import TrainingConfig

RESUMABLE_TRAIN_KEYS = frozenset(
    {
        "epochs",
        "max_steps",
        "logging_steps",
        "save_steps",
        "save_total_limit",
        "eval_steps",
        "num_workers",
        "progress_bar",
        "report_to",
        "early_stopping",
        "keep_best",
        "gradient_checkpointing",
        "find_unused_parameters",
        "compile",
        "compile_backend",
        "compile_mode",
    }
)
RESUMABLE_RECIPE_KEYS = frozenset({"train", "eval", "output_dir", "resume_from", "overwrite_output_dir", "push_to_hub"})


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; values made JSON-plain (tuples become lists)."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = json.loads(json.dumps(value, default=str))
    return flat


def recipe_fingerprint(recipe: dict[str, Any]) -> dict[str, Any]:
    """The sections of a recipe (as a plain dict with every default filled in) that a resume must not change."""
    return flatten({k: v for k, v in recipe.items() if k not in RESUMABLE_RECIPE_KEYS})


def run_fingerprint(
    config: TrainingConfig, recipe: dict[str, Any], *, num_rows: int, num_processes: int
) -> dict[str, Any]:
    """The whole fingerprint: the recipe part, the training settings that are not safe to change, the data size."""
    train = {k: v for k, v in asdict(config).items() if k not in RESUMABLE_TRAIN_KEYS}
    return {
        **recipe,
        **flatten(train, "train."),
        "training rows": num_rows,
        "processes": num_processes,
        "mmcontrast version": mmcontrast.__version__,
    }


def differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """``key: checkpoint X, now Y`` for every key whose value differs (or exists on one side only)."""
    missing = object()
    found = []
    for key in sorted(set(saved) | set(current)):
        before, now = saved.get(key, missing), current.get(key, missing)
        if before != now:
            shown = ["(not set)" if v is missing else json.dumps(v) for v in (before, now)]
            found.append(f"{key}: checkpoint {shown[0]}, now {shown[1]}")
    return found
