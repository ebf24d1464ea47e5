"""The ``train:`` section of every recipe: how the engine trains, and the checks a run makes of it up front.

Every number carries its allowed range in its type (see :mod:`mmcontrast.typed_config`); :func:`check_hardware`
refuses a precision the machine cannot honour instead of silently training in another one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import torch

from mmcontrast.engine.processes import process_state
from mmcontrast.typed_config import (
    ConfigError,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    Range,
    Seed,
    UnitFloat,
)


@dataclass
class EarlyStoppingConfig:
    """Stop when an evaluation metric stops improving (`train.early_stopping:` section).

    Attributes:
        metric: the evaluation metric to watch, as logged (`sts/spearman_cosine`, `zero_shot/top1`...); null: off.
            Needs `train.eval_steps` > 0 (the metric is measured at each evaluation).
        patience: evaluations in a row without improvement before the run stops.
        mode: `max` (higher is better) or `min`.
        min_delta: an improvement smaller than this does not count.
    """

    metric: str | None = None
    patience: PositiveInt = 3
    mode: Literal["max", "min"] = "max"
    min_delta: NonNegativeFloat = 0.0


@dataclass
class KeepBestConfig:
    """Export the best model seen at an evaluation instead of the last one (`train.keep_best:` section).

    Attributes:
        metric: the evaluation metric that decides (as logged, e.g. `sts/spearman_cosine`); null: off (the last
            step's model is exported). Needs `train.eval_steps` > 0.
        mode: `max` (higher is better) or `min`.
    """

    metric: str | None = None
    mode: Literal["max", "min"] = "max"


@dataclass
class TrainingConfig:
    """How to train (the ``train:`` section of a recipe).

    Attributes:
        epochs: passes over the data (ignored when ``max_steps`` is set).
        max_steps: optimizer steps to run; overrides ``epochs``; null: ``epochs`` full passes.
        batch_size: rows per process per step (the global batch is this x processes).
        lr: peak learning rate of AdamW.
        weight_decay: AdamW weight decay (not applied to biases and norm weights).
        adam_betas: AdamW's (beta1, beta2); CLIP / open_clip training of ViTs uses (0.9, 0.98).
        adam_eps: AdamW's epsilon; CLIP / open_clip use 1e-6.
        warmup_ratio: fraction of the steps with linear warm-up.
        scheduler: a transformers scheduler name (linear, cosine, constant_with_warmup, ...).
        max_grad_norm: gradient clipping norm (0 disables).
        mixed_precision: ``no``, ``bf16`` or ``fp16`` (losses keep their logits in fp32 regardless); ``fp16``
            needs a GPU, ``bf16`` a GPU that supports it or the CPU (a run refuses what the machine cannot do).
        gradient_accumulation_steps: micro-batches per optimizer step.
        cache_chunk_size: cached large batch (GradCache): embed the batch in chunks of this many rows without
            gradient, compute the loss once over all cached embeddings, then re-embed chunk by chunk with
            gradient. Exact for every method (same gradients as the whole batch, up to dropout masks drawn per
            chunk and batch-norm statistics computed per chunk); memory is that of one chunk plus the loss.
            Null: the whole batch at once.
        seed: seed of the initialisation, the data order and dropout.
        save_steps: write a checkpoint every N steps (0: none during training).
        save_total_limit: checkpoints kept (oldest removed first); 0: keep every checkpoint.
        eval_steps: run the evaluators every N steps (0: only at the end).
        logging_steps: log loss, learning rate and throughput every N steps.
        num_workers: DataLoader worker processes.
        drop_last: drop the last incomplete batch of each epoch.
        progress_bar: show a progress bar; without it, one line per logging interval goes to stderr.
        group_by_length: batches of rows of similar token length (less padding, as the transformers Trainer's
            `group_by_length`): rows are shuffled from the seed, sorted by length within windows of 50 batches, cut
            into batches, and the batches drawn in a seeded random order. For text recipes (sbert); not with
            in-batch negatives that need the no-duplicates rule.
        gradient_checkpointing: recompute the towers' activations in the backward pass instead of keeping them
            (less memory, about a third more compute); for transformers, timm and open_clip towers.
        compile: compile the towers (the modality adapters: text, image, audio, video encoders with their pooling)
            with `torch.compile`, as the transformers Trainer's `torch_compile`; the losses, with their
            cross-process gathers, stay eager. The first steps pay the compilation (tens of seconds to minutes);
            texts of varying length cost one more compilation, after which the sequence length is dynamic. Pays on
            GPUs; on a small CPU it may not (docs/benchmarks.md). Checkpoints and exported models are unchanged.
        compile_backend: the `torch.compile` backend (`inductor`, or another of
            `torch._dynamo.list_backends()`, e.g. `aot_eager` to debug), as transformers' `torch_compile_backend`.
        compile_mode: the inductor mode: `default`, `reduce-overhead` (CUDA graphs: less launch overhead for
            small batches, more memory), `max-autotune` (slower compilation, faster kernels) or
            `max-autotune-no-cudagraphs`; as transformers' `torch_compile_mode`.
        find_unused_parameters: under DDP (several processes, no FSDP / DeepSpeed), search every step for
            trainable parameters that got no gradient (DDP's option of that name; it costs time on GPUs). Null: the
            engine decides by one forward and backward of the first batch before training (on only when the
            method leaves some parameters without gradient, e.g. a text model's pooler under mean pooling);
            true / false: as given (a run that needs it and has it off stops with an error naming this key).
        report_to: experiment trackers of Accelerate that receive the logs: `tensorboard` (default), `wandb`,
            `mlflow`, `comet_ml`, `aim`, `clearml`, `dvclive`, ... (each needs its package installed); `[]`: none.
        early_stopping: stop when an evaluation metric stops improving.
        keep_best: export the best evaluated model instead of the last.
    """

    epochs: PositiveInt = 1
    max_steps: PositiveInt | None = None
    batch_size: PositiveInt = 16
    lr: PositiveFloat = 2e-5
    weight_decay: NonNegativeFloat = 0.01
    adam_betas: list[Annotated[float, Range(ge=0, lt=1)]] = field(default_factory=lambda: [0.9, 0.999])
    adam_eps: PositiveFloat = 1e-8
    warmup_ratio: UnitFloat = 0.1
    scheduler: str = "linear"
    max_grad_norm: NonNegativeFloat = 1.0
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    gradient_accumulation_steps: PositiveInt = 1
    cache_chunk_size: PositiveInt | None = None
    seed: Seed = 42
    save_steps: NonNegativeInt = 0
    save_total_limit: NonNegativeInt = 2
    eval_steps: NonNegativeInt = 0
    logging_steps: PositiveInt = 10
    num_workers: NonNegativeInt = 0
    drop_last: bool = False
    progress_bar: bool = True
    group_by_length: bool = False
    gradient_checkpointing: bool = False
    compile: bool = False
    compile_backend: str = "inductor"
    compile_mode: Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"] = "default"
    find_unused_parameters: bool | None = None
    report_to: list[str] = field(default_factory=lambda: ["tensorboard"])
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)
    keep_best: KeepBestConfig = field(default_factory=KeepBestConfig)


def sampler_sharding(config: TrainingConfig) -> dict[str, Any]:
    """The seed, drop_last and process layout (``num_replicas``, ``rank``) every batch sampler of a run takes
    (:mod:`mmcontrast.data.samplers`)."""
    state = process_state()
    return {
        "seed": config.seed,
        "drop_last": config.drop_last,
        "num_replicas": state.num_processes,
        "rank": state.process_index,
    }


def check_hardware(config: TrainingConfig, source: str = "train config") -> None:
    """Refuse a ``train.mixed_precision`` that the device this process trains on cannot honour.

    Accelerate silently trains in fp32 when asked for fp16 on the CPU (no autocast, no grad scaler), and stops
    with an error naming no key when asked for bf16 on a GPU without bf16; both are refused here, before any
    data or model is loaded, with ``source`` (the recipe file) and the key named. bf16 on the CPU runs under
    CPU autocast and is accepted.
    """
    if config.mixed_precision == "no":
        return
    device = process_state().device
    if config.mixed_precision == "fp16" and device.type == "cpu":
        raise ConfigError(
            f"{source}: key 'train.mixed_precision' is fp16, which needs a GPU, but this run is on the CPU "
            "(where it would silently train in fp32): use train.mixed_precision=bf16 (CPU autocast) or no"
        )
    if config.mixed_precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError(
            f"{source}: key 'train.mixed_precision' is bf16, which {torch.cuda.get_device_name(device)} does not "
            "support: use train.mixed_precision=fp16 or no"
        )
