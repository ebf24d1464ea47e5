"""Frozen-feature probes of a representation: k-nearest-neighbour and linear-probe accuracy.

Both fit on the features of a labelled training split and score a held-out split; the encoder is frozen
(features computed once, in eval mode, without gradient).

- :func:`knn_accuracy`: each test feature takes the ``k`` training features of highest cosine similarity and
  votes for their labels: one vote each (``weighting="majority"``, the default; equal to scikit-learn's
  ``KNeighborsClassifier(k, metric="cosine")``, ties to the smallest label), or a vote equal to the cosine
  similarity (``weighting="similarity"``). No training, so it measures the geometry of the features directly.
- :func:`linear_probe_accuracy`: standardise the features (mean/std of the training split), then fit a
  multinomial logistic regression (scikit-learn, L2, L-BFGS) and report test accuracy. It measures what a linear
  classifier can read off the features.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

Weighting = Literal["majority", "similarity"]


def _as_tensor(values: Any, name: str, dtype: torch.dtype) -> torch.Tensor:
    tensor = torch.as_tensor(np.asarray(values) if not isinstance(values, torch.Tensor) else values)
    if tensor.numel() == 0:
        raise ValueError(f"{name} is empty")
    return tensor.detach().cpu().to(dtype)


def _features(train_feats: Any, test_feats: Any) -> tuple[torch.Tensor, torch.Tensor]:
    train_x = _as_tensor(train_feats, "train_feats", torch.float32)
    test_x = _as_tensor(test_feats, "test_feats", torch.float32)
    if train_x.ndim != 2 or test_x.ndim != 2 or train_x.shape[1] != test_x.shape[1]:
        raise ValueError(
            f"features must be [rows, d] with the same d, got train {list(train_x.shape)}, test {list(test_x.shape)}"
        )
    return train_x, test_x


def _labels(labels: Any, name: str, rows: int) -> torch.Tensor:
    tensor = _as_tensor(labels, name, torch.long)
    if tensor.shape != (rows,):
        raise ValueError(f"{name} must hold one label per row ({rows}), got shape {list(tensor.shape)}")
    if tensor.min() < 0:
        raise ValueError(f"{name} must be non-negative class indices")
    return tensor


def _check(train_feats, train_labels, test_feats, test_labels) -> tuple[torch.Tensor, ...]:
    train_x, test_x = _features(train_feats, test_feats)
    train_y = _labels(train_labels, "train_labels", train_x.shape[0])
    test_y = _labels(test_labels, "test_labels", test_x.shape[0])
    return train_x, train_y, test_x, test_y


def knn_predict(
    train_feats: Any,
    train_labels: Any,
    test_feats: Any,
    *,
    k: int = 20,
    weighting: Weighting = "majority",
    chunk_size: int = 1024,
) -> torch.Tensor:
    """Labels predicted by a cosine k-nearest-neighbour vote (see the module docstring)."""
    train_x, test_x = _features(train_feats, test_feats)
    train_y = _labels(train_labels, "train_labels", train_x.shape[0])
    if not 1 <= k <= train_x.shape[0]:
        raise ValueError(f"k must be in [1, {train_x.shape[0]}] (training rows), got {k}")
    if weighting not in ("majority", "similarity"):
        raise ValueError(f"weighting must be 'majority' or 'similarity', got {weighting!r}")
    train_x, test_x = F.normalize(train_x, dim=1), F.normalize(test_x, dim=1)
    num_classes = int(train_y.max()) + 1
    predictions = []
    for start in range(0, test_x.shape[0], chunk_size):
        similarity = test_x[start : start + chunk_size] @ train_x.T
        top, neighbours = similarity.topk(k, dim=1)
        weights = torch.ones_like(top) if weighting == "majority" else top
        votes = torch.zeros(top.shape[0], num_classes).scatter_add_(1, train_y[neighbours], weights)
        predictions.append(votes.argmax(dim=1))  # first maximum: ties go to the smallest label
    return torch.cat(predictions)


def knn_accuracy(
    train_feats: Any,
    train_labels: Any,
    test_feats: Any,
    test_labels: Any,
    k: int = 20,
    *,
    weighting: Weighting = "majority",
) -> float:
    """Top-1 accuracy of a cosine-similarity k-NN classifier fit on the training features.

    Args:
        train_feats, test_feats: ``[rows, d]`` features (tensors or arrays); cosine similarity is used, so
            their scale does not matter.
        train_labels, test_labels: integer class labels, one per row.
        k: neighbours per query.
        weighting: ``majority`` (one vote per neighbour) or ``similarity`` (votes weighted by cosine similarity).
    """
    train_x, train_y, test_x, test_y = _check(train_feats, train_labels, test_feats, test_labels)
    predictions = knn_predict(train_x, train_y, test_x, k=k, weighting=weighting)
    return float((predictions == test_y).float().mean())


def linear_probe_predict(
    train_feats: Any,
    train_labels: Any,
    test_feats: Any,
    *,
    C: float = 1.0,
    max_iter: int = 5000,
) -> torch.Tensor:
    """Labels predicted by a logistic-regression probe on standardised frozen features (see the module docstring).

    Args:
        train_feats, test_feats: ``[rows, d]`` features.
        train_labels: integer class labels of the training rows.
        C: inverse L2 regularisation strength of :class:`sklearn.linear_model.LogisticRegression`.
        max_iter: L-BFGS iterations; a probe that does not converge in them is reported with a warning.
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    train_x, test_x = _features(train_feats, test_feats)
    train_y = _labels(train_labels, "train_labels", train_x.shape[0])
    probe = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=max_iter))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        probe.fit(train_x.double().numpy(), train_y.numpy())
    if any(issubclass(w.category, ConvergenceWarning) for w in caught):
        warnings.warn(f"linear probe: logistic regression did not converge in {max_iter} iterations", stacklevel=3)
    return torch.as_tensor(probe.predict(test_x.double().numpy()), dtype=torch.long)


def linear_probe_accuracy(
    train_feats: Any,
    train_labels: Any,
    test_feats: Any,
    test_labels: Any,
    *,
    C: float = 1.0,
    max_iter: int = 5000,
) -> float:
    """Top-1 accuracy of a logistic-regression probe on standardised frozen features.

    Args:
        train_feats, test_feats: ``[rows, d]`` features.
        train_labels, test_labels: integer class labels.
        C: inverse L2 regularisation strength of :class:`sklearn.linear_model.LogisticRegression`.
        max_iter: L-BFGS iterations; a probe that does not converge in them is reported with a warning.
    """
    train_x, train_y, test_x, test_y = _check(train_feats, train_labels, test_feats, test_labels)
    predictions = linear_probe_predict(train_x, train_y, test_x, C=C, max_iter=max_iter)
    return float((predictions == test_y).float().mean())


@torch.no_grad()
def encode_images(
    encoder: Callable[[torch.Tensor], torch.Tensor], images: Sequence[Any], batch_size: int = 256
) -> torch.Tensor:
    """Frozen features ``[N, d]`` (fp32, CPU) of images through an image encoder's ``preprocess`` and forward.

    The encoder runs in eval mode (batch norm uses its running statistics) and is put back in its mode after.
    """
    module = encoder if isinstance(encoder, torch.nn.Module) else None
    was_training = module.training if module is not None else False
    if module is not None:
        module.eval()
    device = next(module.parameters()).device if module is not None else torch.device("cpu")
    chunks = []
    for start in range(0, len(images), batch_size):
        pixels = encoder.preprocess(images[start : start + batch_size]).to(device)  # type: ignore[attr-defined]
        chunks.append(encoder(pixels).float().cpu())
    if module is not None:
        module.train(was_training)
    return torch.cat(chunks)


class FrozenFeatureProbe:
    """kNN and linear-probe accuracy of an image encoder's frozen features (an engine evaluator).

    Args:
        train_images, train_labels: the split the probes are fit on.
        test_images, test_labels: the held-out split they are scored on.
        encoder_of: picks the image encoder out of what the evaluator is called with (e.g. a method).
        k: neighbours of the kNN probe.
        weighting: kNN vote (``majority`` or ``similarity``).
        knn, linear: which probes to run.
    """

    def __init__(
        self,
        train_images: Sequence[Any],
        train_labels: Sequence[int],
        test_images: Sequence[Any],
        test_labels: Sequence[int],
        *,
        encoder_of: Callable[[Any], Any] = lambda model: model,
        k: int = 20,
        weighting: Weighting = "majority",
        knn: bool = True,
        linear: bool = True,
    ) -> None:
        self.train_images, self.train_labels = list(train_images), list(train_labels)
        self.test_images, self.test_labels = list(test_images), list(test_labels)
        self.encoder_of = encoder_of
        self.k, self.weighting, self.knn, self.linear = k, weighting, knn, linear

    def __call__(self, model: Any) -> dict[str, float]:
        encoder = self.encoder_of(model)
        train_x = encode_images(encoder, self.train_images)
        test_x = encode_images(encoder, self.test_images)
        metrics = {}
        if self.knn:
            metrics["knn_top1"] = knn_accuracy(
                train_x, self.train_labels, test_x, self.test_labels, self.k, weighting=self.weighting
            )
        if self.linear:
            metrics["linear_probe_top1"] = linear_probe_accuracy(train_x, self.train_labels, test_x, self.test_labels)
        return metrics


BASELINES = ("random-init", "mfcc")
"""Baselines :func:`probe_encoder_folder` can add: the architecture at random init, MFCCs (audio only)."""


def _class_order(names: set[str]) -> list[str]:
    """Class names sorted as numbers when they all are integers (``10`` after ``9``), else as text."""
    numeric = all(name.lstrip("-").isdigit() for name in names)
    return sorted(names, key=lambda name: (int(name), name) if numeric else (0, name))


def probe_scores(
    train_feats: torch.Tensor, train_labels: torch.Tensor, test_feats: torch.Tensor, test_labels: torch.Tensor, k: int
) -> tuple[dict[str, Any], torch.Tensor]:
    """Linear-probe and cosine kNN accuracy (``k`` clamped to the training rows) and the linear probe's test
    predictions."""
    predictions = linear_probe_predict(train_feats, train_labels, test_feats)
    k = min(k, train_feats.shape[0])
    knn = knn_predict(train_feats, train_labels, test_feats, k=k)
    scores = {
        "linear_probe_top1": float((predictions == test_labels).double().mean()),
        "knn_top1": float((knn == test_labels).double().mean()),
        "knn_k": k,
        "dim": int(train_feats.shape[1]),
    }
    return scores, predictions


def probe_encoder_folder(
    model: str | Path,
    train: str | Path,
    test: str | Path,
    label: str,
    *,
    pooling: str = "mean",
    baselines: Sequence[str] = (),
    batch_size: int = 64,
    k: int = 20,
    seed: int = 0,
    confusion_matrix: str | Path | None = None,
) -> dict[str, Any]:
    """Probe the frozen features of an encoder folder on a labelled train / test pair of tables.

    Loads the encoder (:func:`mmcontrast.evaluation.features.load_encoder`; audio, image or text), decodes the
    tables (:func:`~mmcontrast.evaluation.features.load_probe_table`: undecodable files are skipped and listed),
    computes features (audio pooled by ``pooling``: ``mean`` or ``last``), fits a logistic regression and a cosine
    kNN on ``train`` and scores them on ``test``; the same for each of ``baselines`` (``random-init``, ``mfcc``).

    Returns:
        A JSON-ready report: ``model``, ``modality``, ``format``, ``train``, ``test``, ``label``, ``pooling``,
        ``classes``, ``train_rows``, ``test_rows``, ``skipped`` (``{"train": [[file, reason], ...], "test": [...]}``),
        ``results`` (``{"model" | "random-init" | "mfcc": {"linear_probe_top1", "knn_top1", "knn_k", "dim"}}``)
        and ``confusion_matrix`` (the PNG of the model's linear probe, when asked).

    Raises:
        ValueError: a wrong folder, a table without the label column, an unknown baseline, ``mfcc`` for a model
            that is not audio, a test label the training table never has... each naming the input.
    """
    from mmcontrast.evaluation.features import (
        decode_probe_table,
        encoder_features,
        load_encoder,
        mfcc_features,
        read_probe_table,
    )

    unknown = [name for name in baselines if name not in BASELINES]
    if unknown:
        raise ValueError(f"--baselines: unknown baseline {unknown[0]!r}; choose from {', '.join(BASELINES)}")
    if pooling not in ("mean", "last"):
        raise ValueError(f"--pooling must be 'mean' or 'last', got {pooling!r}")
    loaded = load_encoder(model)
    if "mfcc" in baselines and loaded.modality != "audio":
        article = "an" if loaded.modality[0] in "aeiou" else "a"
        raise ValueError(f"--baselines mfcc is for audio encoders; '{model}' is {article} {loaded.modality} encoder")
    rate = loaded.model.sample_rate if loaded.modality == "audio" else None
    image_size = getattr(loaded.model, "image_size", None) if loaded.modality == "video" else None
    column = "text" if loaded.modality == "text" else "file_name"
    read = {  # both tables are read and checked before any file is decoded
        name: read_probe_table(path, label, option=f"--{name}", input_column=column)
        for name, path in (("train", train), ("test", test))
    }
    classes = _class_order({name for _, name in read["train"][1]})
    unseen = _class_order({name for _, name in read["test"][1]} - set(classes))
    if unseen:
        raise ValueError(
            f"--test '{test}': label(s) {unseen[:5]} of column '{label}' never occur in --train '{train}'; a probe "
            "cannot predict a class it was not fit on: add them to the training table or drop them"
        )
    tables = {
        name: decode_probe_table(
            source, pairs, loaded.modality, option=f"--{name}", sample_rate=rate, image_size=image_size
        )
        for name, (source, pairs) in read.items()
    }
    index = {name: i for i, name in enumerate(classes)}
    train_y = torch.tensor([index[name] for name in tables["train"].labels])
    test_y = torch.tensor([index[name] for name in tables["test"].labels])
    report: dict[str, Any] = {
        "model": str(model),
        "modality": loaded.modality,
        "format": loaded.format,
        "train": str(train),
        "test": str(test),
        "label": label,
        "pooling": pooling,
        "classes": classes,
        "train_rows": len(train_y),
        "test_rows": len(test_y),
        "skipped": {name: [list(item) for item in table.skipped] for name, table in tables.items()},
        "results": {},
    }

    def features(encoder: Any, name: str) -> dict[str, torch.Tensor]:
        return {
            split: encoder_features(
                encoder, table.inputs, pooling=pooling, batch_size=batch_size, desc=f"{name} features ({split})"
            )
            for split, table in tables.items()
        }

    runs: list[tuple[str, Any]] = [("model", loaded)]
    runs += [(name, None) for name in baselines]
    for name, encoder in runs:
        if name == "mfcc":
            feats = {s: mfcc_features(t.inputs, int(rate), pooling=pooling) for s, t in tables.items()}  # type: ignore[arg-type]
        else:
            encoder = encoder or load_encoder(model, random_init=True, seed=seed)
            feats = features(encoder, name)
        report["results"][name], predictions = probe_scores(feats["train"], train_y, feats["test"], test_y, k)
        if name == "model" and confusion_matrix:
            from mmcontrast.evaluation.plots import plot_confusion_matrix

            plot_confusion_matrix(
                test_y.tolist(), predictions.tolist(), classes, confusion_matrix, title=f"linear probe: {label}"
            )
            report["confusion_matrix"] = str(confusion_matrix)
    return report


def probe_card_results(report: dict[str, Any], dataset_name: str | None = None) -> list[tuple[str, str, str, float]]:
    """The model's probe accuracies of a :func:`probe_encoder_folder` or
    :func:`~mmcontrast.evaluation.frame_probe.probe_frames` report as model-card results (task type, dataset name,
    metric name, value), for :func:`mmcontrast.hub.model_card.update_card_results`.

    The task follows the modality (``audio-classification``, ``image-classification``, ``text-classification``);
    the dataset is ``dataset_name`` or, by default, the tables' folder and file names (the label file's, for a frame
    probe); the metric names say the probe, the label and the pooling (``frames`` for a frame probe), e.g.
    ``linear probe accuracy (digit, mean)`` and ``20-NN accuracy (digit, mean)``. Baselines are not the model's
    results and are left out.
    """
    from mmcontrast.hub.model_card import PROBE_TASKS

    if dataset_name is None:
        if report.get("level") == "frame":
            frames = Path(report["frames"])
            dataset_name = f"{frames.parent.name} ({frames.name})"
        else:
            train, test = Path(report["train"]), Path(report["test"])
            dataset_name = f"{test.parent.name} ({train.name} / {test.name})"
    scores = report["results"]["model"]
    how = "frames" if report.get("level") == "frame" else report["pooling"]
    task = PROBE_TASKS[report["modality"]]
    return [
        (task, dataset_name, f"linear probe accuracy ({report['label']}, {how})", scores["linear_probe_top1"]),
        (task, dataset_name, f"{scores['knn_k']}-NN accuracy ({report['label']}, {how})", scores["knn_top1"]),
    ]
