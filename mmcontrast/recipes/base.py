"""What every recipe shares: the common keys, the parts a recipe builds, the batch sampler choice, and the
effective recipe that runs write into model cards, model configs and trackers."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mmcontrast.data.samplers import (
    GroupedBatchSampler,
    LengthGroupedBatchSampler,
    NoDuplicatesBatchSampler,
    ShuffledBatchSampler,
)
from mmcontrast.data.streaming import Decode, StreamedBatches, open_stream
from mmcontrast.engine.config import sampler_sharding
from mmcontrast.engine.processes import process_state
from mmcontrast.engine.trainer import Evaluator, TrainingConfig, TrainingResult
from mmcontrast.hub.portable_paths import portable_paths
from mmcontrast.methods.base import Method
from mmcontrast.typed_config import ConfigError, PositiveInt


@dataclass
class PushConfig:
    """Push the model folder to the Hugging Face Hub after training, evaluation and export (`push_to_hub:` section).

    The token comes from `hf auth login` or `HF_TOKEN`; it never goes in the recipe. See docs/hub.md.

    Attributes:
        repo_id: `USER/NAME` (or `ORG/NAME`) of the model repo; null: no push.
        private: create the repo private (an existing repo keeps its visibility).
        revision: a branch to push to (created from `main` when missing); null: `main`.
        create_pr: open a pull request against `main` instead of committing to it (not with `revision`).
        commit_message: message of the commit (default: `Upload model trained with mmcontrast`).
        overwrite: push even when the repo holds files the model folder does not have, and delete them (a
            repo holding another model is refused without it).
    """

    repo_id: str | None = None
    private: bool = False
    revision: str | None = None
    create_pr: bool = False
    commit_message: str | None = None
    overwrite: bool = False


@dataclass
class EvalSchedule:
    """When a recipe's `eval:` section runs, beside `train.eval_steps` and the end of the run.

    Attributes:
        before_training: evaluate once before the first step: the baseline the trained model is compared with,
            logged at step 0 (in `training_log.json`, the trackers and the training curve).
    """

    before_training: bool = False


@dataclass
class StreamingConfig:
    """Streamed training data: the `data.streaming` and `data.shuffle_buffer` keys (docs/streaming.md).

    Attributes:
        streaming: read `data.train` as a stream: a hub dataset, or local shards (a folder, a glob pattern or a
            file) of parquet, json / jsonl, csv / tsv, or webdataset tar files (`KEY.jpg` + `KEY.txt` per sample).
            Rows are read as training needs them, split over processes and DataLoader workers (whole shards per
            worker), shuffled in seeded blocks; bad samples are skipped and counted; resume is exact. The run
            lasts `train.max_steps`, or `train.epochs` when the rows can be counted (parquet, tar, jsonl).
        shuffle_buffer: rows per shuffle block of a stream (up to this many rows of one shard, permuted from the
            seed, the epoch and the block): larger mixes rows from further apart and holds more rows in memory.
    """

    streaming: bool = False
    shuffle_buffer: PositiveInt = 1000


@dataclass
class RecipeBase:
    """Keys of every recipe.

    Attributes:
        method: the training method.
        output_dir: run folder; the trained model goes to `OUTPUT_DIR/model`.
        resume_from: `latest` or a checkpoint folder to continue a run from (see docs/runs.md: what must match).
        overwrite_output_dir: start afresh in an `output_dir` that holds another run's checkpoints or model,
            deleting them; without it such a folder is refused unless the run resumes.
        train: optimisation, precision, checkpointing.
        push_to_hub: push the model folder to the Hugging Face Hub at the end of the run.
    """

    method: str = ""
    output_dir: str = "runs/run"
    resume_from: str | None = None
    overwrite_output_dir: bool = False
    train: TrainingConfig = field(default_factory=TrainingConfig)
    push_to_hub: PushConfig = field(default_factory=PushConfig)


@dataclass
class RecipeParts:
    """What a recipe builds for the engine: the method, its data, the evaluators, and how to export.

    Attributes:
        method: the method to train.
        dataset: rows indexable by integer, or streamed batches (`data.streaming`).
        batch_sampler: seeded, sharded batch sampler over ``dataset``; None for streamed batches.
        evaluators: name -> callable(method) -> metrics.
        export: writes the trained model folder; called with (method, training result, run folder, folder to
            write the model into), the last a temporary folder that the run renames to `OUTPUT_DIR/model`.
        skipped_rows: bad rows dropped from the data (reported at the end).
    """

    method: Method
    dataset: Sequence[Any]
    batch_sampler: Any
    evaluators: dict[str, Evaluator]
    export: Callable[[Method, TrainingResult, Path, Path], Path]
    skipped_rows: int = 0


def batch_sampler(
    train: TrainingConfig,
    num_rows: int,
    keys: Sequence[Sequence[Any]] | None = None,
    lengths: Sequence[int] | None = None,
) -> ShuffledBatchSampler:
    """Seeded batch sampler sharded over the processes; with ``keys``, no repeated key within a batch; with
    `train.group_by_length`, batches of rows of similar ``lengths`` (which the recipe must then give)."""
    if train.group_by_length:
        if lengths is None:
            raise ConfigError(
                "key 'train.group_by_length' is true, but this recipe's rows have no text length to group by "
                "(it groups the texts of the sbert recipe): set it to false"
            )
        if keys is not None:
            raise ConfigError(
                "key 'train.group_by_length' is true together with the no-duplicates rule of in-batch negatives "
                "(data.no_duplicates, on by default for info_nce), which it cannot honour yet: set one of them false"
            )
        return LengthGroupedBatchSampler(lengths, train.batch_size, **sampler_sharding(train))
    if keys is not None:
        return NoDuplicatesBatchSampler(keys, train.batch_size, **sampler_sharding(train))
    return ShuffledBatchSampler(num_rows, train.batch_size, **sampler_sharding(train))


def streamed_batches(
    train: TrainingConfig,
    data: StreamingConfig,
    source: str,
    decode: Decode,
    *,
    split: str = "train",
    subset: str | None = None,
    limit: int | None = None,
    duplicate_keys: Callable[[dict[str, Any]], Sequence[Any]] | None = None,
    key: str = "data",
) -> StreamedBatches:
    """This process's streamed training batches of ``source`` (`data.streaming`), each row through ``decode``."""
    if train.group_by_length:
        raise ConfigError(
            "key 'train.group_by_length' is true, but the data is streamed (data.streaming), whose rows are not all "
            "known up front to group by length: set one of them false"
        )
    if limit is not None:
        raise ConfigError(
            f"key '{key}.limit' is set, but a stream has no first N rows to keep (its shards are read in a shuffled "
            f"order by several readers): leave it unset, and give fewer shards or set train.max_steps instead"
        )
    stream, num_rows = open_stream(source, split=split, subset=subset)
    state = process_state()
    return StreamedBatches(
        stream,
        decode,
        train.batch_size,
        seed=train.seed,
        shuffle_buffer=data.shuffle_buffer,
        duplicate_keys=duplicate_keys,
        num_rows=num_rows,
        num_workers=train.num_workers,
        rank=state.process_index,
        num_processes=state.num_processes,
        source=f"{key}.train ({source})",
    )


def grouped_batch_sampler(train: TrainingConfig, groups: Sequence[Any]) -> GroupedBatchSampler:
    """Seeded batch sampler sharded over the processes whose batches each hold rows of one group (a speaker)."""
    if train.group_by_length:
        raise ConfigError("key 'train.group_by_length' is true, but this recipe batches rows by speaker: set it false")
    return GroupedBatchSampler(groups, train.batch_size, **sampler_sharding(train))


def transformers_config(options: dict[str, Any], key: str) -> Any:
    """The transformers config a recipe's `KEY: {model_type: ..., sizes...}` section describes."""
    from transformers import AutoConfig

    options = dict(options)
    model_type = options.pop("model_type", None)
    if model_type is None:
        raise ValueError(f"{key} needs a model_type (e.g. clip_vision_model, clip_text_model, vit, bert)")
    return AutoConfig.for_model(model_type, **options)


def effective_recipe(recipe: RecipeBase) -> dict[str, Any]:
    """The recipe a run trains: every key with its value after overrides and defaults, local paths relative to
    the run folder (:func:`~mmcontrast.hub.portable_paths.portable_paths`). What model cards, model configs and
    trackers record."""
    run_dir = Path(recipe.output_dir)
    return portable_paths({key: value for key, value in asdict(recipe).items() if key != "output_dir"}, run_dir)
