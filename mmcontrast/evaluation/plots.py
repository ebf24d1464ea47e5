"""Plots a person would rather look at than read: the training curve, the confusion matrix."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def plot_training_curve(log_history: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Loss (and learning rate) against step, with evaluation metrics on a second panel when present."""
    train = [r for r in log_history if "loss" in r]
    evals = [r for r in log_history if "loss" not in r]
    panels = 2 if evals else 1
    figure, axes = plt.subplots(1, panels, figsize=(6 * panels, 4), squeeze=False)
    loss_axis = axes[0][0]
    loss_axis.plot([r["step"] for r in train], [r["loss"] for r in train], marker=".", label="training loss")
    loss_axis.set_xlabel("step")
    loss_axis.set_ylabel("loss")
    loss_axis.set_title("training loss")
    loss_axis.grid(alpha=0.3)
    if evals:
        eval_axis = axes[0][1]
        names = sorted({k for r in evals for k in r if k != "step"})
        for name in names:
            points = [(r["step"], r[name]) for r in evals if name in r]
            eval_axis.plot(*zip(*points, strict=True), marker="o", label=name)
        eval_axis.set_xlabel("step")
        eval_axis.set_title("evaluation")
        eval_axis.grid(alpha=0.3)
        eval_axis.legend(fontsize=7)
    return _save(figure, path)


def plot_confusion_matrix(
    labels: Sequence[int],
    predictions: Sequence[int],
    classes: Sequence[str],
    path: str | Path,
    *,
    title: str = "zero-shot confusion matrix",
) -> Path:
    """Save a confusion-matrix PNG (rows: true class, columns: predicted class, row-normalised) titled ``title``."""
    from sklearn.metrics import confusion_matrix

    matrix = confusion_matrix(list(labels), list(predictions), labels=list(range(len(classes))), normalize="true")
    size = max(4.0, 0.5 * len(classes) + 2)
    figure, axis = plt.subplots(figsize=(size, size))
    image = axis.imshow(matrix, cmap="Blues", vmin=0, vmax=1)
    axis.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    axis.set_yticks(range(len(classes)), classes)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    if len(classes) <= 20:
        for i in range(len(classes)):
            for j in range(len(classes)):
                if matrix[i, j] >= 0.005:
                    colour = "white" if matrix[i, j] > 0.5 else "black"
                    axis.text(j, i, f"{matrix[i, j]:.2f}", ha="center", va="center", fontsize=7, color=colour)
    figure.colorbar(image, fraction=0.046)
    axis.set_title(title)
    return _save(figure, path)


def _save(figure, path: str | Path) -> Path:
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
