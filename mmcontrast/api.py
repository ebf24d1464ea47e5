"""The Python API: recipes built, checked and trained from Python, and the engine used directly.

Two ways in (docs/python-api.md walks through both):

- **Recipes** (what the command line runs): :func:`load_recipe` reads a recipe file or dict with overrides, or
  build the schema dataclasses yourself (:class:`~mmcontrast.recipes.sbert.SbertRecipe`,
  :class:`~mmcontrast.recipes.clip.ClipRecipe`...); :func:`train` checks the recipe exactly as a recipe file is
  checked, trains it, evaluates it and exports the model folder with its card. The same recipe and seed give the
  same parameters as ``mmcontrast train``.
- **The engine**: build a :class:`~mmcontrast.methods.base.Method` and a dataset yourself, train them with
  :class:`~mmcontrast.engine.trainer.Trainer` (a seeded, sharded batch sampler is made for you), and write the
  model folder and its card with :func:`save_model`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import yaml

from mmcontrast.engine.callbacks import TrainerCallback
from mmcontrast.engine.trainer import Trainer, TrainingResult
from mmcontrast.hub.model_card import CardInfo, training_curve, write_model_card
from mmcontrast.recipe import check_recipe, load_recipe
from mmcontrast.recipes.base import RecipeBase
from mmcontrast.recipes.sbert import SENTENCE_TRANSFORMERS_USAGE
from mmcontrast.run_recipe import export_folder, train_recipe

__all__ = ["check_recipe", "load_recipe", "save_model", "train"]

_PIPELINE_USAGE = """from transformers import pipeline

classifier = pipeline("zero-shot-image-classification", model="{path}")
print(classifier("my_image.png", candidate_labels=["cat", "dog"]))"""


def train(
    recipe: RecipeBase | str | Path,
    overrides: Sequence[str] | dict[str, Any] = (),
    *,
    callbacks: Sequence[TrainerCallback] = (),
    trackers: Sequence[Any] = (),
) -> dict[str, Any]:
    """Train a recipe (an object, or a recipe file with ``overrides``) as ``mmcontrast train`` does.

    The recipe is checked as a recipe file is: a value of the wrong type or out of range raises
    :class:`~mmcontrast.typed_config.ConfigError` naming the key before anything is loaded.

    Args:
        recipe: a recipe object, or the path of a recipe file.
        overrides: with a path, ``["train.lr=1e-4"]`` or ``{"train.lr": 1e-4}``.
        callbacks: :class:`~mmcontrast.engine.callbacks.TrainerCallback` objects called by the training loop.
        trackers: Accelerate tracker objects (``accelerate.tracking.GeneralTracker``) beside `train.report_to`.

    Returns:
        The run's summary (also written to ``OUTPUT_DIR/summary.json``): ``global_step``, ``metrics`` (the final
        evaluation), ``best_step`` (with `train.keep_best`), ``skipped_rows``, ``model_dir``.
    """
    if not isinstance(recipe, RecipeBase):
        recipe = load_recipe(recipe, overrides)
    elif overrides:
        raise ValueError("overrides apply to a recipe file; change a recipe object's attributes instead")
    return train_recipe(recipe, callbacks=callbacks, trackers=trackers)


def save_model(trainer: Trainer, result: TrainingResult, directory: str | Path | None = None) -> Path:
    """Write what a :class:`~mmcontrast.engine.trainer.Trainer` trained as a model folder with a model card.

    A :class:`~mmcontrast.methods.sbert.SentenceBERT` method becomes a sentence-transformers folder; a
    :class:`~mmcontrast.methods.clip.CLIP` method whose towers have a transformers form becomes a transformers
    ``CLIPModel`` / ``VisionTextDualEncoderModel`` folder (the zero-shot pipeline loads it). Other methods have
    formats that depend on their recipe: train them with :func:`train`. The card holds the training settings
    (the effective `train:` section), the final metrics and the training curve. The folder is written under a
    temporary name and renamed into place, as a recipe run's is.

    Args:
        trainer: the trainer after :meth:`~mmcontrast.engine.trainer.Trainer.train`.
        result: what ``trainer.train()`` returned.
        directory: where to write the folder; default ``trainer.output_dir / "model"``.
    """
    from mmcontrast.hub.transformers_clip import export_transformers_clip, transformers_export_kind
    from mmcontrast.methods.clip import CLIP
    from mmcontrast.methods.sbert import SentenceBERT

    method = trainer.method.eval()
    final = Path(directory) if directory is not None else trainer.output_dir / "model"
    if isinstance(method, SentenceBERT):
        library, task, usage = "sentence-transformers", "sentence-similarity", SENTENCE_TRANSFORMERS_USAGE

        def write(folder: Path) -> None:
            method.encoder.save_pretrained(folder)

    elif isinstance(method, CLIP) and transformers_export_kind(method) is not None:
        library, task, usage = "transformers", "zero-shot-image-classification", _PIPELINE_USAGE

        def write(folder: Path) -> None:
            export_transformers_clip(method, folder)

    else:
        raise TypeError(
            f"save_model writes SentenceBERT and transformers-form CLIP methods; a {type(method).__name__} "
            "method's format depends on its recipe: train it with mmcontrast.train(recipe), which exports it"
        )

    metrics = result.final_metrics  # evaluator/metric -> value

    def write_with_card(folder: Path) -> None:
        write(folder)
        settings = {"method": type(method).__name__, "train": asdict(trainer.config)}
        write_model_card(
            folder,
            CardInfo(
                title=f"mmcontrast {type(method).__name__} model ({trainer.output_dir.name})",
                description=f"A {type(method).__name__} model trained with mmcontrast's engine from Python.",
                library_name=library,
                pipeline_tag=task,
                usage=usage.format(path=final),
                recipe=yaml.safe_dump(settings, sort_keys=False),
                tags=[task],
                results=[(name.split("/")[0], name.split("/")[0], name, value) for name, value in metrics.items()],
                image=training_curve(result.log_history, folder),
            ),
        )

    return export_folder(write_with_card, final)
