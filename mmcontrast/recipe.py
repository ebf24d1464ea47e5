"""The recipe schema: the typed sections of a ``recipes/*.yaml`` file.

Every key below is documented on its dataclass; ``load_recipe`` rejects unknown keys and wrong types by name.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from mmcontrast.data.tables import TableFormat
from mmcontrast.engine.trainer import TrainingConfig
from mmcontrast.methods.sbert import SbertLossConfig
from mmcontrast.modalities.text import Pooling
from mmcontrast.typed_config import apply_overrides, build, load_yaml, reference_markdown


@dataclass
class TextModelConfig:
    """The text encoder (``model:`` section).

    Attributes:
        name_or_path: a local transformers or sentence-transformers folder, or a hub name.
        pooling: ``mean``, ``cls`` or ``last``; default: the folder's own setting, else ``mean``.
        normalize: L2-normalise embeddings; default: the folder's own setting, else false.
        max_length: tokens per text; default: the folder's own setting, else the tokenizer's limit (<= 512).
    """

    name_or_path: str = "sentence-transformers/all-MiniLM-L6-v2"
    pooling: Pooling | None = None
    normalize: bool | None = None
    max_length: int | None = None


@dataclass
class DataConfig:
    """Training data (``data:`` section).

    Attributes:
        train: a csv/tsv/json/jsonl/parquet file, a folder, or a hub dataset name.
        format: how to read ``train`` (``auto`` goes by the file suffix; ``stsb`` is the STS Benchmark TSV).
        split: split of a hub dataset.
        columns: text columns of a row, in order: (anchor, positive[, negatives...]) or (sentence1, sentence2).
        score_column: pair score (cosine_similarity, cosent), 0/1 label (pair_margin) or class (triplet).
        score_max: scores are divided by this (5.0 for STS-B's 0..5 scale).
        limit: use only the first N rows.
        min_score: keep only rows whose score_column is >= this (e.g. STS-B pairs scored 4+ as positives).
        skip_bad_rows: skip (and count) rows with a missing or empty text instead of stopping with an error.
        no_duplicates: keep repeated texts out of one batch (in-batch negatives); default on for info_nce.
    """

    train: str = ""
    format: TableFormat = "auto"
    split: str = "train"
    columns: list[str] = field(default_factory=lambda: ["anchor", "positive"])
    score_column: str | None = None
    score_max: float = 1.0
    limit: int | None = None
    min_score: float | None = None
    skip_bad_rows: bool = False
    no_duplicates: bool | None = None


@dataclass
class EvalConfig:
    """Evaluation during and after training (``eval:`` section).

    Attributes:
        sts: a scored-pairs file for STS evaluation (STS-B TSV or a table with sentence1, sentence2, score).
        retrieval: a pairs file for retrieval evaluation (queries from the first column of ``retrieval_columns``).
        retrieval_columns: the (query, document) columns of ``retrieval``.
        retrieval_format: how to read ``retrieval`` (as ``data.format``).
        retrieval_min_score: keep only ``retrieval`` rows whose ``score`` column is >= this.
        limit: evaluate on the first N rows only.
        batch_size: texts per encoder call.
    """

    sts: str | None = None
    retrieval: str | None = None
    retrieval_columns: list[str] = field(default_factory=lambda: ["anchor", "positive"])
    retrieval_format: TableFormat = "auto"
    retrieval_min_score: float | None = None
    limit: int | None = None
    batch_size: int = 64


@dataclass
class Recipe:
    """A complete training recipe.

    Attributes:
        method: the training method (``sbert``).
        output_dir: run folder; the trained model goes to ``OUTPUT_DIR/model``.
        resume_from: ``latest`` or a checkpoint folder to continue a run from.
        model: the encoder.
        data: training data.
        loss: the loss.
        train: optimisation and checkpointing.
        eval: evaluation.
    """

    method: Literal["sbert"] = "sbert"
    output_dir: str = "runs/sbert"
    resume_from: str | None = None
    model: TextModelConfig = field(default_factory=TextModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: SbertLossConfig = field(default_factory=SbertLossConfig)
    train: TrainingConfig = field(default_factory=TrainingConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


def load_recipe(path: str | Path | None, overrides: Sequence[str] = ()) -> tuple[Recipe, dict[str, Any]]:
    """Read a recipe file (or start empty), apply ``key=value`` overrides, and check every key and type."""
    data = load_yaml(path) if path is not None else {}
    apply_overrides(data, overrides)
    recipe = build(Recipe, data, source=str(path or "recipe"))
    if not recipe.data.train:
        raise ValueError(f"{path or 'recipe'}: data.train is not set (a file, folder or hub dataset name)")
    return recipe, data


def recipe_reference() -> str:
    """The recipe reference page (docs/recipes.md), generated from the typed sections above."""
    intro = (
        "# Recipe reference\n\n"
        "Generated from the typed configs by `mmcontrast recipe-docs` (a test checks it is current).\n"
        "Every key can be set in a recipe file or overridden on the command line as `dotted.key=value`\n"
        "(the value is read as YAML: `train.lr=3e-5`, `data.columns=[a, b]`, `eval.sts=null`).\n"
        "An unknown key or a value of the wrong type stops with an error that names the key.\n\n"
    )
    return intro + reference_markdown(Recipe)
