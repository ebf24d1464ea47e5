"""Run a recipe: build its parts, train them with the engine, export the model folder, push it to the Hub.

The run folder's lock is held from before training until the model folder is written. The model folder is
written under a hidden temporary name and renamed into place (:func:`mmcontrast.engine.durable.publish`), so
`OUTPUT_DIR/model` is either complete, card included, or absent.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from accelerate.utils import set_seed

from mmcontrast.engine.callbacks import TrainerCallback
from mmcontrast.engine.durable import disk_full_error, publish
from mmcontrast.engine.fingerprint import recipe_fingerprint
from mmcontrast.engine.processes import process_state
from mmcontrast.engine.run_folder import RunFolder
from mmcontrast.engine.trainer import Trainer
from mmcontrast.hub.push import check_push_settings, push_model
from mmcontrast.recipe import build_parts, check_recipe
from mmcontrast.recipes.base import EvalSchedule, RecipeBase, RecipeParts, effective_recipe


def train_recipe(
    recipe: RecipeBase, callbacks: Sequence[TrainerCallback] = (), trackers: Sequence[Any] = ()
) -> dict[str, Any]:
    """Train the recipe's method, export it and push it when `push_to_hub.repo_id` is set; returns a summary (steps,
    final metrics, the step of the kept model with `train.keep_best`, skipped rows, model folder, and the URL of the
    push).

    The recipe is checked first as a recipe file is (a recipe built in Python included); ``callbacks`` and
    ``trackers`` (Accelerate ``GeneralTracker`` objects) join those the recipe switches on.
    """
    recipe = check_recipe(recipe)
    push = recipe.push_to_hub
    if push.repo_id:  # a missing token or a bad repo id stops the run before training, not after
        check_push_settings(push.repo_id, push.revision, push.create_pr)
    set_seed(recipe.train.seed)
    parts = build_parts(recipe)
    output_dir = Path(recipe.output_dir)
    trainer = Trainer(
        parts.method,
        parts.dataset,
        parts.batch_sampler,
        recipe.train,
        output_dir,
        evaluators=parts.evaluators,
        run_config=effective_recipe(recipe),
        fingerprint=recipe_fingerprint(asdict(recipe)),
        overwrite_output_dir=recipe.overwrite_output_dir,
        callbacks=callbacks,
        trackers=trackers,
        evaluate_before_training=_evaluates_before_training(recipe),
    )
    state = process_state()
    with RunFolder(output_dir):
        result = trainer.train(resume_from=recipe.resume_from)
        summary = {
            "global_step": result.global_step,
            "metrics": result.final_metrics,
            "best_step": result.best_step,
            "skipped_rows": parts.skipped_rows + result.skipped_samples,  # read up front, or skipped in the stream
            "model_dir": str(output_dir / "model"),
        }
        if state.is_main_process:
            export_model(parts, trainer, result, output_dir)
            (output_dir / "summary.json").write_text(json.dumps(summary, indent=1))
        state.wait_for_everyone()
    state.destroy_process_group()
    if state.is_main_process and push.repo_id:  # after the barrier: the other processes need not wait for it
        summary["pushed_to"] = push_model(summary["model_dir"], **asdict(push))  # PushConfig = push_model's options
        (output_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def _evaluates_before_training(recipe: RecipeBase) -> bool:
    """`eval.before_training` of recipes whose `eval:` section has it (a recipe without evaluation has none)."""
    section = getattr(recipe, "eval", None)
    return isinstance(section, EvalSchedule) and section.before_training


def export_model(parts: RecipeParts, trainer: Trainer, result: Any, output_dir: Path) -> Path:
    """Write the recipe's model folder to `OUTPUT_DIR/model` (see :func:`export_folder`)."""
    return export_folder(
        lambda staging: parts.export(trainer.method, result, output_dir, staging), output_dir / "model"
    )


def export_folder(write: Callable[[Path], Any], final: Path) -> Path:
    """Run ``write(folder)`` on a temporary folder beside ``final``, then rename it to ``final`` (replacing any),
    so that ``final`` is complete or absent; a full disk is reported as such."""
    staging = final.parent / f".tmp-{final.name}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        write(staging)
        publish(staging, final)
    except Exception as error:  # torch, safetensors and the OS report a full disk with different types
        shutil.rmtree(staging, ignore_errors=True)
        full = disk_full_error(error, "the model folder", final.parent)
        if full is None:
            raise
        raise full from error
    return final
