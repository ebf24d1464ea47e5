"""The Sentence-BERT recipe: text encoder + scored or paired text data -> a sentence-transformers folder."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from mmcontrast.data.tables import TableFormat, clean_table, load_table
from mmcontrast.engine.trainer import TrainingResult
from mmcontrast.evaluation.retrieval import RetrievalEvaluator
from mmcontrast.evaluation.sts import STSEvaluator
from mmcontrast.hub.model_card import CardInfo, training_curve, write_model_card
from mmcontrast.methods.sbert import SbertLossConfig, SentenceBERT
from mmcontrast.modalities.text import Pooling, TextEncoder
from mmcontrast.recipes.base import RecipeBase, RecipeParts, batch_sampler
from mmcontrast.typed_config import FiniteFloat, PositiveFloat, PositiveInt

SENTENCE_TRANSFORMERS_USAGE = """from sentence_transformers import SentenceTransformer

model = SentenceTransformer("{path}")
embeddings = model.encode(["A man is playing a guitar.", "Someone plays an instrument."])
print(model.similarity(embeddings, embeddings))"""


@dataclass
class TextModelConfig:
    """The text encoder (`model:` section).

    Attributes:
        name_or_path: a local transformers or sentence-transformers folder, or a hub name.
        pooling: `mean`, `cls` or `last`; default: the folder's own setting, else `mean`.
        normalize: L2-normalise embeddings; default: the folder's own setting, else false.
        max_length: tokens per text; default: the folder's own setting, else the tokenizer's limit (<= 512).
    """

    name_or_path: str = "sentence-transformers/all-MiniLM-L6-v2"
    pooling: Pooling | None = None
    normalize: bool | None = None
    max_length: PositiveInt | None = None


@dataclass
class TextDataConfig:
    """Training data (`data:` section).

    Attributes:
        train: a csv/tsv/json/jsonl/parquet file, a folder, or a hub dataset name.
        format: how to read `train` (`auto` goes by the file suffix; `stsb` is the STS Benchmark TSV).
        split: split of a hub dataset.
        columns: text columns of a row, in order: (anchor, positive[, negatives...]) or (sentence1, sentence2).
        score_column: pair score (cosine_similarity, cosent), 0/1 label (pair_margin) or class (triplet).
        score_max: scores are divided by this (5.0 for STS-B's 0..5 scale); a score outside [0, score_max] is a
            bad row (not under the triplet loss, whose score column holds class labels).
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
    score_max: PositiveFloat = 1.0
    limit: PositiveInt | None = None
    min_score: FiniteFloat | None = None
    skip_bad_rows: bool = False
    no_duplicates: bool | None = None


@dataclass
class TextEvalConfig:
    """Evaluation during and after training (`eval:` section).

    Attributes:
        sts: a scored-pairs file for STS evaluation (STS-B TSV or a table with sentence1, sentence2, score).
        retrieval: a pairs file for retrieval evaluation (queries from the first column of `retrieval_columns`).
        retrieval_columns: the (query, document) columns of `retrieval`.
        retrieval_format: how to read `retrieval` (as `data.format`).
        retrieval_min_score: keep only `retrieval` rows whose `score` column is >= this.
        limit: evaluate on the first N rows only.
        batch_size: texts per encoder call.
    """

    sts: str | None = None
    retrieval: str | None = None
    retrieval_columns: list[str] = field(default_factory=lambda: ["anchor", "positive"])
    retrieval_format: TableFormat = "auto"
    retrieval_min_score: FiniteFloat | None = None
    limit: PositiveInt | None = None
    batch_size: PositiveInt = 64


@dataclass
class SbertRecipe(RecipeBase):
    """Sentence-BERT: a siamese text encoder on pairs, triplets or scored pairs.

    Attributes:
        method: `sbert`.
        model: the text encoder.
        data: training data.
        loss: the loss.
        eval: evaluation.
    """

    method: Literal["sbert"] = "sbert"
    output_dir: str = "runs/sbert"
    model: TextModelConfig = field(default_factory=TextModelConfig)
    data: TextDataConfig = field(default_factory=TextDataConfig)
    loss: SbertLossConfig = field(default_factory=SbertLossConfig)
    eval: TextEvalConfig = field(default_factory=TextEvalConfig)


def _evaluators(config: TextEvalConfig) -> dict[str, Any]:
    """The `eval:` section's evaluators, each file read and checked now (a missing one names its key)."""
    evaluators: dict[str, Any] = {}

    def encode_with(method: SentenceBERT):
        return lambda texts: method.encoder.encode(texts, config.batch_size)

    if config.sts:
        sts = STSEvaluator.from_file(config.sts, limit=config.limit, batch_size=config.batch_size, name="eval.sts")
        evaluators["sts"] = lambda method: sts(encode_with(method))
    if config.retrieval:
        retrieval = RetrievalEvaluator.from_pairs(
            config.retrieval,
            columns=config.retrieval_columns,
            format=config.retrieval_format,
            min_score=config.retrieval_min_score,
            limit=config.limit,
            name="eval.retrieval",
            columns_name="eval.retrieval_columns",
        )
        evaluators["retrieval"] = lambda method: retrieval(encode_with(method))
    return evaluators


def build(recipe: SbertRecipe, raw: dict[str, Any]) -> RecipeParts:
    """Encoder, method, checked data, sampler and evaluators of a Sentence-BERT recipe."""
    data = recipe.data
    if not data.train:
        raise ValueError("data.train is not set (a file, folder or hub dataset name)")
    evaluators = _evaluators(recipe.eval)  # a missing evaluation file stops the run before anything loads
    encoder = TextEncoder.from_pretrained(
        recipe.model.name_or_path,
        pooling=recipe.model.pooling,
        normalize=recipe.model.normalize,
        max_length=recipe.model.max_length,
    )
    method = SentenceBERT(encoder, data.columns, recipe.loss, data.score_column, data.score_max)
    table = load_table(
        data.train,
        format=data.format,
        split=data.split,
        limit=data.limit,
        min_score=data.min_score,
        score_column=data.score_column or "score",
    )
    table, skipped = clean_table(
        table,
        data.columns,
        score_column=method.score_column,
        source=f"data.train ({data.train})",
        skip_bad_rows=data.skip_bad_rows,
        score_max=None if recipe.loss.name == "triplet" else data.score_max,  # triplet's column holds classes
    )
    no_duplicates = recipe.loss.name == "info_nce" if data.no_duplicates is None else data.no_duplicates
    keys = list(zip(*(table[c] for c in data.columns), strict=True)) if no_duplicates else None
    return RecipeParts(
        method=method,
        dataset=table,
        batch_sampler=batch_sampler(recipe.train, len(table), keys),
        evaluators=evaluators,
        export=lambda trained, result, output_dir, model_dir: export(
            trained, recipe, raw, result, output_dir, model_dir
        ),
        skipped_rows=skipped,
    )


def export(
    method: SentenceBERT,
    recipe: SbertRecipe,
    raw: dict[str, Any],
    result: TrainingResult,
    output_dir: Path,
    model_dir: Path,
) -> Path:
    """Write the model folder (``model_dir``, which the run then moves to `OUTPUT_DIR/model`) as a
    sentence-transformers folder with a model card and the training curve."""
    method.encoder.save_pretrained(model_dir)
    tasks = {"sts": "sentence-similarity", "retrieval": "retrieval"}
    sources = {"sts": recipe.eval.sts, "retrieval": recipe.eval.retrieval}
    results = []
    for name, value in result.final_metrics.items():
        evaluator, metric = name.split("/", 1)
        results.append((tasks[evaluator], Path(sources[evaluator] or evaluator).stem, metric, value))
    write_model_card(
        model_dir,
        CardInfo(
            title=f"mmcontrast sbert model ({output_dir.name})",
            description=(
                f"A sentence-transformers model trained with the Sentence-BERT method of mmcontrast, loss "
                f"`{recipe.loss.name}`, on `{recipe.data.train}`. It maps text to "
                f"{method.encoder.embedding_dim}-dimensional embeddings for semantic similarity and search."
            ),
            library_name="sentence-transformers",
            pipeline_tag="sentence-similarity",
            usage=SENTENCE_TRANSFORMERS_USAGE.format(path=output_dir / "model"),
            recipe=yaml.safe_dump(raw, sort_keys=False),
            base_model=recipe.model.name_or_path,
            datasets=[recipe.data.train],
            tags=["sentence-transformers", "sentence-similarity", "feature-extraction"],
            results=results,
            image=training_curve(result.log_history, model_dir),
        ),
    )
    return model_dir
