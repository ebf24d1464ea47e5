"""Run a recipe: build its parts, train them with the engine, export the model folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from accelerate.utils import set_seed

from mmcontrast.engine.processes import process_state
from mmcontrast.engine.trainer import Trainer
from mmcontrast.recipe import build_parts
from mmcontrast.recipes.base import RecipeBase


def train_recipe(recipe: RecipeBase, raw: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train the recipe's method; returns a summary (steps, final metrics, model folder, skipped rows)."""
    set_seed(recipe.train.seed)
    raw = raw if raw is not None else {}
    parts = build_parts(recipe, raw)
    output_dir = Path(recipe.output_dir)
    trainer = Trainer(
        parts.method,
        parts.dataset,
        parts.batch_sampler,
        recipe.train,
        output_dir,
        evaluators=parts.evaluators,
        run_config=raw,
    )
    result = trainer.train(resume_from=recipe.resume_from)
    summary = {
        "global_step": result.global_step,
        "metrics": result.final_metrics,
        "skipped_rows": parts.skipped_rows,
        "model_dir": str(output_dir / "model"),
    }
    state = process_state()
    if state.is_main_process:
        parts.export(trainer.method, result, output_dir)
        (output_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    state.wait_for_everyone()
    state.destroy_process_group()
    return summary
