"""The Sentence-BERT recipe: text encoder + scored or paired text data -> a sentence-transformers folder."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import yaml

from mmcontrast.data.multi_source import MultiSourceDataset
from mmcontrast.data.samplers import MultiSourceBatchSampler, MultiSourceStrategy
from mmcontrast.data.streaming import BadSample, StreamedBatches
from mmcontrast.data.tables import TableFormat, as_number, clean_table, load_table, row_problem
from mmcontrast.engine.trainer import TrainingConfig, TrainingResult
from mmcontrast.evaluation.retrieval import RetrievalEvaluator, retrieval_metrics
from mmcontrast.evaluation.sts import STSEvaluator
from mmcontrast.hub.model_card import CardInfo, training_curve, write_model_card
from mmcontrast.methods.sbert import MultiSourceSentenceBERT, SbertLossConfig, SentenceBERT
from mmcontrast.modalities.text import Pooling, TextEncoder
from mmcontrast.recipes.base import (
    EvalSchedule,
    RecipeBase,
    RecipeParts,
    StreamingConfig,
    batch_sampler,
    streamed_batches,
)
from mmcontrast.typed_config import FiniteFloat, PositiveFloat, PositiveInt

SENTENCE_TRANSFORMERS_USAGE = """from sentence_transformers import SentenceTransformer

model = SentenceTransformer("{path}")
embeddings = model.encode(["A man is playing a guitar.", "Someone plays an instrument."])
print(model.similarity(embeddings, embeddings))"""

MATRYOSHKA_USAGE = """from sentence_transformers import SentenceTransformer

model = SentenceTransformer("{path}", truncate_dim={dim})  # or any other of the Matryoshka dimensions
embeddings = model.encode(["A man is playing a guitar.", "Someone plays an instrument."])
print(embeddings.shape, model.similarity(embeddings, embeddings))"""


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
class SbertModelConfig(TextModelConfig):
    """The text encoder (`model:` section) and its prompts.

    Attributes:
        prompts: named prompts, name -> text prepended to a text before encoding (e.g. `{query: "query: ",
            document: "passage: "}`); `data.prompts` says which column gets which, and the exported folder keeps
            them for `SentenceTransformer.encode(texts, prompt_name=...)`.
        default_prompt_name: the prompt (a name in `prompts`) of texts given without one: of the columns not in
            `data.prompts`, of evaluation texts, and of sentence-transformers' `encode` on the export.
    """

    prompts: dict[str, str] = field(default_factory=dict)
    default_prompt_name: str | None = None


@dataclass
class TextTableConfig:
    """One training table: where it is and what its columns mean.

    Attributes:
        train: a csv/tsv/json/jsonl/parquet file, a folder, or a hub dataset name.
        format: how to read `train` (`auto` goes by the file suffix; `stsb` is the STS Benchmark TSV).
        subset: subset (configuration) of a hub dataset or dataset folder, e.g. `triplet` of
            `sentence-transformers/all-nli`; needed when it has several, and an error lists them.
        split: split of a hub dataset or dataset folder.
        columns: text columns of a row, in order: (anchor, positive[, negatives...]) or (sentence1, sentence2).
        score_column: pair score (cosine_similarity, cosent), 0/1 label (pair_margin) or class (triplet).
        score_max: scores are divided by this (5.0 for STS-B's 0..5 scale); a score outside [0, score_max] is a
            bad row (not under the triplet loss, whose score column holds class labels).
        limit: use only the first N rows.
        min_score: keep only rows whose score_column is >= this (e.g. STS-B pairs scored 4+ as positives).
        skip_bad_rows: skip (and count) rows with a missing or empty text instead of stopping with an error.
        no_duplicates: keep repeated texts out of one batch (in-batch negatives); default on for info_nce.
        prompts: column -> prompt name (in `model.prompts`) prepended to that column's texts in training, e.g.
            `{anchor: query, positive: document}`; evaluation uses the first column's prompt for retrieval
            queries and the second's for the documents.
    """

    train: str = ""
    format: TableFormat = "auto"
    subset: str | None = None
    split: str = "train"
    columns: list[str] = field(default_factory=lambda: ["anchor", "positive"])
    score_column: str | None = None
    score_max: PositiveFloat = 1.0
    limit: PositiveInt | None = None
    min_score: FiniteFloat | None = None
    skip_bad_rows: bool = False
    no_duplicates: bool | None = None
    prompts: dict[str, str] = field(default_factory=dict)


@dataclass
class TextSourceConfig(TextTableConfig):
    """One of several training datasets (an entry `NAME: {...}` of `data.datasets`): the keys of `data`, plus its
    own loss.

    Attributes:
        loss: this dataset's loss (the keys of the `loss` section); null: the recipe's `loss`.
    """

    loss: SbertLossConfig | None = None


@dataclass
class TextDataConfig(TextTableConfig, StreamingConfig):
    """Training data (`data:` section): one table (`data.train` and the keys beside it) or several (`datasets`),
    read whole or streamed (`streaming`).

    Attributes:
        datasets: several training datasets, `NAME: {train: ..., columns: [...], loss: {...}, ...}`, each with the
            keys of this section (the `data.datasets.*` keys below) and its own loss; every batch comes from one
            of them (its columns, prompts and loss; in-batch negatives from that dataset only). Leave `data.train`
            unset when it is given.
        multi_dataset_sampler: with `datasets`, which dataset each batch comes from: `round_robin` (each in turn,
            the epoch ending when one has no batch left, as sentence-transformers) or `proportional` (every batch
            of every dataset once per epoch, in a seeded random order: datasets drawn in proportion to their size).
    """

    datasets: dict[str, TextSourceConfig] = field(default_factory=dict)
    multi_dataset_sampler: MultiSourceStrategy = "round_robin"


@dataclass
class TextEvalConfig(EvalSchedule):
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
    model: SbertModelConfig = field(default_factory=SbertModelConfig)
    data: TextDataConfig = field(default_factory=TextDataConfig)
    loss: SbertLossConfig = field(default_factory=SbertLossConfig)
    eval: TextEvalConfig = field(default_factory=TextEvalConfig)


def _evaluators(config: TextEvalConfig, prompts: TextPrompts, dims: list[int] | None) -> dict[str, Any]:
    """The `eval:` section's evaluators, each file read and checked now (a missing one names its key).

    Texts get the prompts training gave them (:class:`TextPrompts`); with Matryoshka ``dims``, STS is also
    reported at each truncated dimension (``spearman_cosine@96``).
    """
    evaluators: dict[str, Any] = {}

    def encode_with(method: SentenceBERT, prompt: str):
        return lambda texts: method.encoder.encode([prompt + text for text in texts], config.batch_size)

    if config.sts:
        sts = STSEvaluator.from_file(config.sts, limit=config.limit, batch_size=config.batch_size, name="eval.sts")
        evaluators["sts"] = lambda method: _sts_at_dims(sts, encode_with(method, prompts.default), dims)
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
        evaluators["retrieval"] = lambda method: retrieval_metrics(
            encode_with(method, prompts.query)(retrieval.queries),
            encode_with(method, prompts.document)(retrieval.corpus),
            retrieval.relevant,
            retrieval.ks,
        )
    return evaluators


def _sts_at_dims(sts: STSEvaluator, encode: Callable[[list[str]], torch.Tensor], dims: list[int] | None) -> dict:
    """STS metrics of the full embeddings, and with ``dims`` of their first N dimensions for each N (cosine
    similarity is scale-free, so a truncated prefix needs no re-normalisation), named ``METRIC@N``."""
    cache: dict[tuple[str, ...], torch.Tensor] = {}

    def encode_once(texts: list[str]) -> torch.Tensor:
        if tuple(texts) not in cache:
            cache[tuple(texts)] = encode(texts)
        return cache[tuple(texts)]

    metrics = sts(encode_once)
    full = next(iter(cache.values())).shape[1]
    for dim in dims or []:
        if dim < full:
            truncated = sts(lambda texts, dim=dim: encode_once(texts)[:, :dim])
            metrics.update({f"{name}@{dim}": value for name, value in truncated.items()})
    return metrics


@dataclass
class TextPrompts:
    """The prompt texts of a recipe: ``columns`` (column -> text) in training, ``default`` for texts without a
    prompt (STS), ``query`` / ``document`` for retrieval evaluation (the first and second training column's)."""

    columns: dict[str, str]
    default: str
    query: str
    document: str


def text_prompts(model: SbertModelConfig, table: TextTableConfig, key: str = "data") -> TextPrompts:
    """Resolve a table's `prompts` (column -> prompt name) and `model.default_prompt_name` against
    `model.prompts`, naming the key (under ``key``) of a prompt name that is not there."""
    known = ", ".join(model.prompts) or "none"
    if model.default_prompt_name is not None and model.default_prompt_name not in model.prompts:
        raise ValueError(
            f"model.default_prompt_name is '{model.default_prompt_name}', which is not in model.prompts "
            f"(prompts: {known}); add it to model.prompts or set model.default_prompt_name=null"
        )
    for column, name in table.prompts.items():
        if name not in model.prompts:
            raise ValueError(
                f"{key}.prompts.{column} is '{name}', which is not in model.prompts (prompts: {known}); "
                "add it to model.prompts or use one of its names"
            )
        if column not in table.columns:
            raise ValueError(
                f"{key}.prompts names column '{column}', which is not in {key}.columns {table.columns}; "
                "give prompts for the training columns"
            )
    default = model.prompts.get(model.default_prompt_name or "", "")
    columns = {}
    for column in table.columns:
        text = model.prompts[table.prompts[column]] if column in table.prompts else default
        if text:
            columns[column] = text
    first, second = (table.columns + table.columns)[:2]
    return TextPrompts(columns, default, columns.get(first, ""), columns.get(second, ""))


@dataclass
class TextSource:
    """One training table as the recipe reads it: its settings, its loss and the key its settings live under."""

    table: TextTableConfig
    loss: SbertLossConfig
    key: str


def text_sources(recipe: SbertRecipe) -> dict[str, TextSource]:
    """`data` as one source named `train`, or the sources of `data.datasets` by name."""
    data = recipe.data
    if data.datasets:
        if data.train:
            raise ValueError(
                "data.train and data.datasets are both set: train on one table (data.train) or on several "
                "(data.datasets), not both"
            )
        return {
            name: TextSource(source, source.loss or recipe.loss, f"data.datasets.{name}")
            for name, source in data.datasets.items()
        }
    if not data.train:
        raise ValueError("data.train is not set (a file, folder or hub dataset name), nor data.datasets")
    return {"train": TextSource(data, recipe.loss, "data")}


def _source_parts(
    encoder: TextEncoder, source: TextSource, prompts: TextPrompts, train: TrainingConfig
) -> tuple[SentenceBERT, Any, Any, int]:
    """A source's method, checked table, batch sampler and number of skipped rows."""
    table_config, loss = source.table, source.loss
    if not table_config.train:
        raise ValueError(f"{source.key}.train is not set (a file, folder or hub dataset name)")
    try:
        method = SentenceBERT(
            encoder,
            table_config.columns,
            loss,
            table_config.score_column,
            table_config.score_max,
            prompts.columns,
        )
    except ValueError as error:
        if source.key == "data":
            raise
        raise ValueError(f"{source.key}: {error}") from error
    table = load_table(
        table_config.train,
        format=table_config.format,
        split=table_config.split,
        subset=table_config.subset,
        limit=table_config.limit,
        min_score=table_config.min_score,
        score_column=table_config.score_column or "score",
        key=source.key,
    )
    table, skipped = clean_table(
        table,
        table_config.columns,
        score_column=method.score_column,
        source=f"{source.key}.train ({table_config.train})",
        skip_bad_rows=table_config.skip_bad_rows,
        score_max=None if loss.name == "triplet" else table_config.score_max,  # triplet's column holds classes
    )
    keys = list(zip(*(table[c] for c in table_config.columns), strict=True)) if _no_duplicates(source) else None
    lengths = _row_lengths(encoder, table, table_config.columns, prompts.columns) if train.group_by_length else None
    return method, table, batch_sampler(train, len(table), keys, lengths), skipped


def _no_duplicates(source: TextSource) -> bool:
    """Whether repeated texts are kept out of a batch: `no_duplicates`, by default on for in-batch negatives."""
    if source.table.no_duplicates is None:
        return source.loss.name == "info_nce"
    return source.table.no_duplicates


class StreamedTextRows:
    """A streamed row as the Sentence-BERT method takes it: its text columns and its score as a number; a bad row
    (:func:`~mmcontrast.data.tables.row_problem`) raises :class:`BadSample`, a row under `min_score` is left out."""

    def __init__(
        self, columns: list[str], score_column: str | None, score_max: float | None, min_score: float | None
    ) -> None:
        self.columns, self.score_column, self.score_max, self.min_score = columns, score_column, score_max, min_score

    def __call__(self, raw: dict[str, Any]) -> dict[str, Any] | None:
        problem = row_problem(raw, self.columns, score_column=self.score_column, score_max=self.score_max)
        if problem:
            raise BadSample(problem)
        row = {column: raw[column] for column in self.columns}
        if self.score_column is not None:
            row[self.score_column] = as_number(raw[self.score_column])
        if self.min_score is not None and (self.score_column is None or row[self.score_column] < self.min_score):
            return None
        return row


def _streamed_source(
    encoder: TextEncoder, source: TextSource, prompts: TextPrompts, recipe: SbertRecipe
) -> tuple[SentenceBERT, StreamedBatches]:
    """The method and the streamed batches of `data.streaming`: rows checked as they arrive, bad ones skipped."""
    table, loss = source.table, source.loss
    if recipe.data.datasets:
        raise ValueError("data.streaming streams one table (data.train); data.datasets cannot be streamed yet")
    if table.format != "auto":
        raise ValueError(
            f"data.format is {table.format}, but a stream is read by its shards' suffix (.parquet, .jsonl, .json, "
            ".csv, .tsv, .tar) or as a hub dataset: set data.format=auto"
        )
    if table.min_score is not None and table.score_column is None:
        raise ValueError("data.min_score is set, but data.score_column is not: name the score column it filters on")
    method = SentenceBERT(encoder, table.columns, loss, table.score_column, table.score_max, prompts.columns)
    score_max = None if loss.name == "triplet" else table.score_max  # triplet's score column holds classes
    decode = StreamedTextRows(table.columns, method.score_column, score_max, table.min_score)
    columns = table.columns
    keys = (lambda row: [row[column] for column in columns]) if _no_duplicates(source) else None
    batches = streamed_batches(
        recipe.train,
        recipe.data,
        table.train,
        decode,
        split=table.split,
        subset=table.subset,
        limit=table.limit,
        duplicate_keys=keys,
    )
    return method, batches


def _row_lengths(encoder: TextEncoder, table: Any, columns: list[str], prompts: dict[str, str]) -> list[int]:
    """Per row, the token count of its longest text (prompt included): what its batch is padded to."""
    per_column = [encoder.token_lengths([prompts.get(c, "") + text for text in table[c]]) for c in columns]
    return [max(lengths) for lengths in zip(*per_column, strict=True)]


def build(recipe: SbertRecipe, raw: dict[str, Any]) -> RecipeParts:
    """Encoder, method, checked data, sampler and evaluators of a Sentence-BERT recipe (one table, or several
    with a batch sampler that draws each batch from one of them)."""
    sources = text_sources(recipe)
    prompts = {name: text_prompts(recipe.model, source.table, source.key) for name, source in sources.items()}
    dims = sorted({dim for source in sources.values() for dim in source.loss.matryoshka_dims or []}, reverse=True)
    first = next(iter(prompts.values()))
    evaluators = _evaluators(recipe.eval, first, dims or None)  # a missing evaluation file stops the run now
    encoder = TextEncoder.from_pretrained(
        recipe.model.name_or_path,
        pooling=recipe.model.pooling,
        normalize=recipe.model.normalize,
        max_length=recipe.model.max_length,
    )
    encoder.prompts |= recipe.model.prompts  # saved with the export, for encode(..., prompt_name=...)
    if recipe.model.default_prompt_name is not None:
        encoder.default_prompt_name = recipe.model.default_prompt_name
    if recipe.data.streaming:
        method, dataset = _streamed_source(encoder, sources["train"], prompts["train"], recipe)
        return _parts(recipe, raw, method, dataset, None, evaluators, 0)
    parts = {name: _source_parts(encoder, source, prompts[name], recipe.train) for name, source in sources.items()}
    if len(parts) == 1 and not recipe.data.datasets:
        method, dataset, sampler, skipped = parts["train"]
    else:
        method = MultiSourceSentenceBERT({name: part[0] for name, part in parts.items()})
        dataset = MultiSourceDataset([part[1] for part in parts.values()])
        sampler = MultiSourceBatchSampler(
            [part[2] for part in parts.values()],
            dataset.offsets,
            recipe.data.multi_dataset_sampler,
            seed=recipe.train.seed,
        )
        skipped = sum(part[3] for part in parts.values())
    return _parts(recipe, raw, method, dataset, sampler, evaluators, skipped)


def _parts(
    recipe: SbertRecipe,
    raw: dict[str, Any],
    method: SentenceBERT | MultiSourceSentenceBERT,
    dataset: Any,
    sampler: Any,
    evaluators: dict[str, Any],
    skipped: int,
) -> RecipeParts:
    return RecipeParts(
        method=method,
        dataset=dataset,
        batch_sampler=sampler,
        evaluators=evaluators,
        export=lambda trained, result, output_dir, model_dir: export(
            trained, recipe, raw, result, output_dir, model_dir
        ),
        skipped_rows=skipped,
    )


def export(
    method: SentenceBERT | MultiSourceSentenceBERT,
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
    sources = text_sources(recipe)
    dims = sorted({dim for source in sources.values() for dim in source.loss.matryoshka_dims or []}, reverse=True)
    trained_on = "; ".join(
        f"loss `{source.loss.name}` on `{source.table.train}`"
        + (f" (subset `{source.table.subset}`)" if source.table.subset else "")
        for source in sources.values()
    )
    description = (
        f"A sentence-transformers model trained with the Sentence-BERT method of mmcontrast, {trained_on}. It maps "
        f"text to {method.encoder.embedding_dim}-dimensional embeddings for semantic similarity and search."
    )
    usage = SENTENCE_TRANSFORMERS_USAGE.format(path=output_dir / "model")
    if dims:
        description += (
            f" It was trained with Matryoshka representation learning at the dimensions {dims} (matryoshka_dims): "
            f"it can be truncated to any of them, e.g. `SentenceTransformer(path, truncate_dim={dims[-1]})`."
        )
        usage = MATRYOSHKA_USAGE.format(path=output_dir / "model", dim=dims[-1])
    if recipe.model.prompts:
        names = ", ".join(f"`{name}`" for name in recipe.model.prompts)
        description += f" It was trained with prompts ({names}): pass `prompt_name=...` to `encode`."
    write_model_card(
        model_dir,
        CardInfo(
            title=f"mmcontrast sbert model ({output_dir.name})",
            description=description,
            library_name="sentence-transformers",
            pipeline_tag="sentence-similarity",
            usage=usage,
            recipe=yaml.safe_dump(raw, sort_keys=False),
            base_model=recipe.model.name_or_path,
            datasets=[source.table.train for source in sources.values()],
            tags=["sentence-transformers", "sentence-similarity", "feature-extraction"]
            + (["matryoshka"] if dims else []),
            results=results,
            image=training_curve(result.log_history, model_dir),
        ),
    )
    return model_dir
