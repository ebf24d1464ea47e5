"""Callbacks: code that runs at fixed points of the training loop, without changing the loop.

A callback subclasses :class:`TrainerCallback` and overrides the hooks it needs; the :class:`~mmcontrast.engine.
trainer.Trainer` calls them on every process, in the order given, with the trainer itself (``trainer.method``,
``trainer.config``, ``trainer.output_dir``...). Setting ``trainer.should_stop = True`` in a hook ends the run after
the current step, as transformers' ``TrainerControl.should_training_stop`` does; the run then evaluates, writes its
log and exports as usual.

Evaluation metrics reach :meth:`TrainerCallback.on_evaluate` on every process (the main process evaluates and
broadcasts them), so a decision taken from them is the same everywhere. Two callbacks ship with the engine and are
switched on from the recipe: :class:`EarlyStopping` (`train.early_stopping`) and :class:`KeepBest`
(`train.keep_best`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from safetensors.torch import load_model, save_model

from mmcontrast.engine.durable import publish
from mmcontrast.typed_config import ConfigError

if TYPE_CHECKING:
    from mmcontrast.engine.trainer import Trainer, TrainingResult

BEST_DIR = "best"


class TrainerCallback:
    """Hooks of the training loop; each does nothing unless overridden."""

    def on_train_begin(self, trainer: Trainer, step: int) -> None:
        """Before the first step (``step`` > 0 when the run resumes)."""

    def on_log(self, trainer: Trainer, record: dict[str, Any]) -> None:
        """After a logging interval: ``record`` holds step, epoch, loss, lr, rows/s and the method's metrics."""

    def on_evaluate(self, trainer: Trainer, step: int, metrics: dict[str, float]) -> None:
        """After the evaluators ran (also before training with `eval.before_training`, at ``step`` 0 or the
        resumed step, and at the end)."""

    def on_save(self, trainer: Trainer, step: int) -> None:
        """After a checkpoint was written."""

    def on_train_end(self, trainer: Trainer, result: TrainingResult) -> None:
        """After the last step and the final evaluation, before the weights are checked and exported."""


def _improved(value: float, best: float | None, mode: str, min_delta: float = 0.0) -> bool:
    if best is None:
        return True
    return value > best + min_delta if mode == "max" else value < best - min_delta


def _metric(metrics: dict[str, float], name: str, key: str) -> float:
    """The metric ``name`` of an evaluation; a missing one is an error that lists those measured."""
    if name not in metrics:
        known = ", ".join(sorted(metrics)) or "none (no evaluator is configured)"
        raise ConfigError(f"key '{key}' is {name!r}, a metric the evaluation does not measure; it measures: {known}")
    return float(metrics[name])


class EarlyStopping(TrainerCallback):
    """Stop when ``metric`` has not improved by more than ``min_delta`` for ``patience`` evaluations in a row.

    The state (best value, evaluations without improvement) is rebuilt from the run's log history when a run
    resumes, so a resumed run stops where the uninterrupted one would.
    """

    def __init__(self, metric: str, patience: int = 3, mode: str = "max", min_delta: float = 0.0) -> None:
        self.metric, self.patience, self.mode, self.min_delta = metric, patience, mode, min_delta
        self.best: float | None = None
        self.waited = 0

    def on_train_begin(self, trainer: Trainer, step: int) -> None:
        self.best, self.waited = None, 0
        for record in trainer.log_history:  # evaluations of the interrupted run, replayed
            if self.metric in record and "loss" not in record:
                self._update(float(record[self.metric]))

    def _update(self, value: float) -> None:
        if math.isfinite(value) and _improved(value, self.best, self.mode, self.min_delta):
            self.best, self.waited = value, 0
        else:
            self.waited += 1

    def on_evaluate(self, trainer: Trainer, step: int, metrics: dict[str, float]) -> None:
        self._update(_metric(metrics, self.metric, "train.early_stopping.metric"))
        if self.waited >= self.patience and step < trainer.total_steps and not trainer.should_stop:
            trainer.should_stop = True
            trainer.accelerator.print(
                f"early stopping at step {step}: {self.metric} has not improved on {self.best:.4g} for "
                f"{self.waited} evaluations"
            )


class KeepBest(TrainerCallback):
    """Keep the weights of the best evaluation (``OUTPUT_DIR/best/model.safetensors``) and load them back at the
    end, so the final evaluation, the export and the summary are the best model's.

    The saved weights survive a kill: a resumed run reads the best value from its log history and keeps the file.
    """

    def __init__(self, metric: str, mode: str = "max") -> None:
        self.metric, self.mode = metric, mode
        self.best: float | None = None
        self.best_step: int | None = None

    def _folder(self, trainer: Trainer) -> Path:
        return trainer.output_dir / BEST_DIR

    def on_train_begin(self, trainer: Trainer, step: int) -> None:
        self.best, self.best_step = None, None
        for record in trainer.log_history:
            if self.metric in record and "loss" not in record and record["step"] <= step:
                value = float(record[self.metric])
                if math.isfinite(value) and _improved(value, self.best, self.mode):
                    self.best, self.best_step = value, int(record["step"])

    def on_evaluate(self, trainer: Trainer, step: int, metrics: dict[str, float]) -> None:
        value = _metric(metrics, self.metric, "train.keep_best.metric")
        if step == self.best_step or not math.isfinite(value) or not _improved(value, self.best, self.mode):
            return
        self.best, self.best_step = value, step
        if trainer.accelerator.is_main_process:
            staging = trainer.output_dir / f".tmp-{BEST_DIR}"
            staging.mkdir(parents=True, exist_ok=True)
            save_model(trainer.method, str(staging / "model.safetensors"))
            (staging / "step.txt").write_text(f"{step} {self.metric}={value}\n")
            publish(staging, self._folder(trainer))
        trainer.accelerator.wait_for_everyone()

    def on_train_end(self, trainer: Trainer, result: TrainingResult) -> None:
        if self.best_step is None:
            return
        result.best_step = self.best_step
        if self.best_step == result.global_step:
            return
        folder = self._folder(trainer)
        saved = (folder / "step.txt").read_text().split()[0] if (folder / "step.txt").is_file() else None
        if saved != str(self.best_step):
            raise FileNotFoundError(
                f"train.keep_best: the best model (step {self.best_step}) should be in {folder}, which holds "
                f"{'step ' + saved if saved else 'nothing'}; the run was resumed from before it was written and "
                "ended sooner. Train on to that step, or drop train.keep_best to export the last model"
            )
        load_model(trainer.method, str(folder / "model.safetensors"))
        trainer.accelerator.print(f"keep_best: the model of step {self.best_step} ({self.metric}={self.best:.4g})")
        result.final_metrics = trainer.evaluate(result.global_step, notify=False)
