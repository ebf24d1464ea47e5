"""One Accelerate training loop for every method.

The loop knows the :class:`~mmcontrast.methods.base.Method` interface only: ``collate`` runs in the
DataLoader, ``forward`` (= ``loss(embed(batch))``) gives a :class:`LossOutput`. It handles distribution and
mixed precision (Accelerate), AdamW + a transformers schedule, gradient accumulation and clipping, cached large
batches (GradCache, through the ``embed`` / ``loss`` split), a progress bar with loss and throughput,
TensorBoard logging, periodic evaluation, atomic checkpoints and exact resume.

Resume is exact: the data order of an epoch is a function of ``(seed, epoch)`` (the batch sampler), the
RNG states, optimizer and scheduler come back from the checkpoint, and the loop skips the batches already
seen in the interrupted epoch.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import DistributedDataParallelKwargs, ProjectConfiguration, send_to_device, set_seed
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import get_scheduler

from mmcontrast.engine.checkpoints import load_checkpoint, resolve_resume, save_checkpoint
from mmcontrast.engine.processes import use_cpu
from mmcontrast.methods.base import LossOutput, Method

Evaluator = Callable[[Method], dict[str, float]]


@dataclass
class TrainingConfig:
    """How to train (the ``train:`` section of a recipe).

    Attributes:
        epochs: passes over the data (ignored when ``max_steps`` is set).
        max_steps: optimizer steps to run; overrides ``epochs``.
        batch_size: rows per process per step (the global batch is this x processes).
        lr: peak learning rate of AdamW.
        weight_decay: AdamW weight decay (not applied to biases and norm weights).
        adam_betas: AdamW's (beta1, beta2); CLIP / open_clip training of ViTs uses (0.9, 0.98).
        adam_eps: AdamW's epsilon; CLIP / open_clip use 1e-6.
        warmup_ratio: fraction of the steps with linear warm-up.
        scheduler: a transformers scheduler name (linear, cosine, constant_with_warmup, ...).
        max_grad_norm: gradient clipping norm (0 disables).
        mixed_precision: ``no``, ``bf16`` or ``fp16`` (losses keep their logits in fp32 regardless).
        gradient_accumulation_steps: micro-batches per optimizer step.
        cache_chunk_size: cached large batch (GradCache): embed the batch in chunks of this many rows without
            gradient, compute the loss once over all cached embeddings, then re-embed chunk by chunk with
            gradient. Exact for every method (same gradients as the whole batch, up to dropout masks drawn per
            chunk and batch-norm statistics computed per chunk); memory is that of one chunk plus the loss.
        seed: seed of the initialisation, the data order and dropout.
        save_steps: write a checkpoint every N steps (0: none during training).
        save_total_limit: checkpoints kept (oldest removed first).
        eval_steps: run the evaluators every N steps (0: only at the end).
        logging_steps: log loss, learning rate and throughput every N steps.
        num_workers: DataLoader worker processes.
        drop_last: drop the last incomplete batch of each epoch.
        progress_bar: show a progress bar.
    """

    epochs: int = 1
    max_steps: int | None = None
    batch_size: int = 16
    lr: float = 2e-5
    weight_decay: float = 0.01
    adam_betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    adam_eps: float = 1e-8
    warmup_ratio: float = 0.1
    scheduler: str = "linear"
    max_grad_norm: float = 1.0
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    gradient_accumulation_steps: int = 1
    cache_chunk_size: int | None = None
    seed: int = 42
    save_steps: int = 0
    save_total_limit: int = 2
    eval_steps: int = 0
    logging_steps: int = 10
    num_workers: int = 0
    drop_last: bool = False
    progress_bar: bool = True


@dataclass
class TrainingResult:
    """What a run did: steps taken, the logged history, and the last evaluation."""

    global_step: int
    log_history: list[dict[str, Any]] = field(default_factory=list)
    final_metrics: dict[str, float] = field(default_factory=dict)


def _parameter_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Decay matrices only: biases and normalisation weights (1-d tensors) are not decayed."""
    decay, no_decay = [], []
    for parameter in model.parameters():
        if parameter.requires_grad:
            (decay if parameter.ndim >= 2 else no_decay).append(parameter)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _adamw(model: torch.nn.Module, config: TrainingConfig) -> torch.optim.AdamW:
    """AdamW with one fused kernel for all parameters (much faster on CPU than per-tensor updates); the
    multi-tensor ``foreach`` form where the fused one is not available for the parameters' device or dtype."""
    if len(config.adam_betas) != 2:
        raise ValueError(f"train.adam_betas must be two numbers [beta1, beta2], got {config.adam_betas}")
    groups = _parameter_groups(model, config.weight_decay)
    options = {"lr": config.lr, "betas": tuple(config.adam_betas), "eps": config.adam_eps}
    try:
        return torch.optim.AdamW(groups, fused=True, **options)
    except RuntimeError:
        return torch.optim.AdamW(groups, foreach=True, **options)


class Trainer:
    """Train a :class:`Method` on a dataset with a seeded batch sampler.

    Args:
        method: what to train.
        dataset: rows indexable by integer (a ``datasets.Dataset`` or a list); its ``set_epoch(epoch)``, if
            any, is called before each epoch (the DataLoader is rebuilt per epoch, so workers see it).
        batch_sampler: yields lists of row indices for this process and has ``set_epoch(epoch)``
            (see :mod:`mmcontrast.data.samplers`).
        config: training settings.
        output_dir: run folder: ``checkpoints/``, ``logs/`` (TensorBoard), ``training_log.json``.
        evaluators: name -> callable(method) -> metrics, run every ``eval_steps`` and at the end.
        run_config: the recipe as a dict, stored with the TensorBoard run.
    """

    def __init__(
        self,
        method: Method,
        dataset: Sequence[Any],
        batch_sampler: Any,
        config: TrainingConfig,
        output_dir: str | Path,
        evaluators: dict[str, Evaluator] | None = None,
        run_config: dict[str, Any] | None = None,
    ) -> None:
        self.config = config
        self.output_dir = Path(output_dir)
        self.checkpoint_root = self.output_dir / "checkpoints"
        self.evaluators = evaluators or {}
        # Accelerate keeps precision settings in a process-wide singleton; a new run in the same Python
        # process (a notebook, a test) may ask for other settings, so start it afresh (the process group stays).
        AcceleratorState._reset_state(reset_partial_state=False)
        self.accelerator = Accelerator(
            cpu=use_cpu(),
            mixed_precision=config.mixed_precision,
            # towers may hold weights a method does not use (a text model's unused pooler, for one)
            kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
            log_with="tensorboard",
            project_config=ProjectConfiguration(
                project_dir=str(self.output_dir), logging_dir=str(self.output_dir / "logs")
            ),
        )
        set_seed(config.seed)
        self.dataset = dataset
        self.batch_sampler = batch_sampler
        self.collate = (
            _ChunkedCollate(method.collate, config.cache_chunk_size) if config.cache_chunk_size else method.collate
        )
        optimizer = _adamw(method, config)
        self.steps_per_epoch = math.ceil(len(batch_sampler) / config.gradient_accumulation_steps)
        if self.steps_per_epoch == 0:
            raise ValueError("the training data gives no batch: add rows or lower train.batch_size")
        self.total_steps = config.max_steps or config.epochs * self.steps_per_epoch
        self.scheduler = get_scheduler(
            config.scheduler,
            optimizer,
            num_warmup_steps=math.ceil(config.warmup_ratio * self.total_steps),
            num_training_steps=self.total_steps,
        )
        self.model, self.optimizer = self.accelerator.prepare(method, optimizer)
        self.accelerator.register_for_checkpointing(self.scheduler)
        self.accelerator.init_trackers("mmcontrast", config=_flat_scalars(run_config or {}))
        self.log_history: list[dict[str, Any]] = []

    @property
    def method(self) -> Method:
        """The trained method, unwrapped from any distributed wrapper."""
        return self.accelerator.unwrap_model(self.model)

    def _batches(self, epoch: int, skip: int) -> DataLoader:
        self.batch_sampler.set_epoch(epoch)
        if hasattr(self.dataset, "set_epoch"):  # e.g. augmented views seeded by (seed, epoch, row)
            self.dataset.set_epoch(epoch)
        batches = list(self.batch_sampler)[skip:]
        return DataLoader(
            self.dataset,  # type: ignore[arg-type]
            batch_sampler=batches,
            collate_fn=self.collate,
            num_workers=self.config.num_workers,
            generator=torch.Generator(),  # keeps the global RNG (dropout) untouched by the loader
        )

    def _evaluate(self, step: int) -> dict[str, float]:
        metrics: dict[str, float] = {}
        if self.accelerator.is_main_process:
            for name, evaluator in self.evaluators.items():
                for key, value in evaluator(self.method).items():
                    metrics[f"{name}/{key}"] = float(value)
            if metrics:
                self.accelerator.log({f"eval/{k}": v for k, v in metrics.items()}, step=step)
                self.log_history.append({"step": step, **metrics})
        self.accelerator.wait_for_everyone()
        return metrics

    def _save(self, step: int) -> None:
        state = {"global_step": step, "log_history": self.log_history}
        save_checkpoint(self.accelerator, self.checkpoint_root, step, state, self.config.save_total_limit)

    def backward(
        self, batch: dict[str, Any], scale: float = 1.0, step: int = 0, sync_gradients: bool = True
    ) -> LossOutput:
        """Forward and backward of one (micro-)batch; gradients of ``scale * loss`` accumulate in ``.grad``."""
        if self.config.cache_chunk_size:
            return self._cached_backward(batch, scale, step, sync_gradients)
        output = self.model(batch)
        _check_finite(output.loss, step)
        self.accelerator.backward(output.loss * scale)
        return output

    def _cached_backward(self, batch: dict[str, Any], scale: float, step: int, sync_gradients: bool) -> LossOutput:
        """GradCache (Gao et al. 2021): embed chunks without grad, loss on the cache, re-embed with grad."""
        chunks, states, cached = batch["chunks"], [], []
        with self.accelerator.no_sync(self.model):
            with torch.no_grad():
                for chunk in chunks:
                    states.append(_rng_state())
                    cached.append(self.model(chunk, embed_only=True))
            embeddings = {key: torch.cat([c[key] for c in cached]).detach().requires_grad_() for key in cached[0]}
            output = self.model(batch["batch"], embeddings=embeddings)
            _check_finite(output.loss, step)
            self.accelerator.backward(output.loss * scale)
            start = 0
            for chunk, state, done in zip(chunks, states, cached, strict=True):
                _set_rng_state(state)  # the same dropout masks as in the cached pass
                rows = next(iter(done.values())).shape[0]
                fresh = self.model(chunk, embed_only=True)
                # the cache gradients already carry any fp16 loss scale: plain backward, not accelerator.backward
                surrogate = sum((fresh[k] * embeddings[k].grad[start : start + rows]).sum() for k in fresh)
                surrogate.backward()
                start += rows
        if sync_gradients and self.accelerator.num_processes > 1:
            for parameter in self.model.parameters():
                if parameter.grad is not None:
                    torch.distributed.all_reduce(parameter.grad)
                    parameter.grad /= self.accelerator.num_processes
        return output

    def train(self, resume_from: str | None = None) -> TrainingResult:
        """Run to ``total_steps``; ``resume_from`` is ``latest`` or a checkpoint folder."""
        config, accelerator = self.config, self.accelerator
        step = 0
        if resume_from:
            checkpoint = resolve_resume(resume_from, self.checkpoint_root)
            if checkpoint is not None:
                state = load_checkpoint(accelerator, checkpoint)
                step, self.log_history = state["global_step"], state["log_history"]
                accelerator.print(f"resumed from {checkpoint} at step {step}")
        progress = tqdm(
            total=self.total_steps,
            initial=step,
            desc="train",
            disable=not (config.progress_bar and accelerator.is_local_main_process),
            dynamic_ncols=True,
        )
        accumulation = config.gradient_accumulation_steps
        window_loss, window_batches, window_rows, window_start = 0.0, 0, 0, time.perf_counter()
        self.model.train()
        while step < self.total_steps:
            epoch = step // self.steps_per_epoch
            loader = self._batches(epoch, skip=(step - epoch * self.steps_per_epoch) * accumulation)
            last = len(loader)
            for index, batch in enumerate(loader, 1):
                boundary = index % accumulation == 0 or index == last
                batch = send_to_device(batch, accelerator.device)
                sync = contextlib.nullcontext() if boundary else accelerator.no_sync(self.model)
                with sync:
                    output = self.backward(batch, 1.0 / accumulation, step + 1, sync_gradients=boundary)
                window_loss += output.loss.detach().float().item()
                window_batches += 1
                window_rows += _rows(batch)
                if not boundary:
                    continue
                if config.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(self.model.parameters(), config.max_grad_norm)
                self.optimizer.step()
                self.scheduler.step()
                self.optimizer.zero_grad(set_to_none=True)
                step += 1
                progress.update(1)
                if step % config.logging_steps == 0 or step == self.total_steps:
                    elapsed = time.perf_counter() - window_start
                    loss = accelerator.reduce(torch.tensor(window_loss / window_batches, device=accelerator.device))
                    record = {
                        "step": step,
                        "epoch": epoch,
                        "loss": float(loss) / accelerator.num_processes,
                        "lr": self.scheduler.get_last_lr()[0],
                        "rows_per_second": window_rows * accelerator.num_processes / max(elapsed, 1e-9),
                        **(output.metrics or {}),
                    }
                    self.log_history.append(record)
                    accelerator.log({f"train/{k}": v for k, v in record.items() if k != "step"}, step=step)
                    progress.set_postfix(loss=f"{record['loss']:.4f}", rows_s=f"{record['rows_per_second']:.1f}")
                    window_loss, window_batches, window_rows, window_start = 0.0, 0, 0, time.perf_counter()
                if config.eval_steps and step % config.eval_steps == 0 and step < self.total_steps:
                    self._evaluate(step)
                    self.model.train()
                if config.save_steps and step % config.save_steps == 0:
                    self._save(step)
                if step >= self.total_steps:
                    break
        progress.close()
        final = self._evaluate(step)
        if accelerator.is_main_process:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            (self.output_dir / "training_log.json").write_text(json.dumps(self.log_history, indent=1))
        for tracker in accelerator.trackers:  # not end_training(): it would take down the process group
            tracker.finish()
        return TrainingResult(step, self.log_history, final)


class _ChunkedCollate:
    """Collate the whole batch (for the loss) and its row chunks (for the cached embedding passes)."""

    def __init__(self, collate: Callable[[list[Any]], dict[str, Any]], chunk_size: int) -> None:
        self.collate, self.chunk_size = collate, chunk_size

    def __call__(self, rows: list[Any]) -> dict[str, Any]:
        chunks = [self.collate(rows[i : i + self.chunk_size]) for i in range(0, len(rows), self.chunk_size)]
        return {"batch": self.collate(rows), "chunks": chunks}


def _check_finite(loss: torch.Tensor, step: int) -> None:
    if not torch.isfinite(loss):
        raise FloatingPointError(
            f"the loss is {loss.item()} at step {step}. Lower train.lr, check the data for degenerate rows, "
            "or use mixed_precision=bf16 instead of fp16."
        )


def _rng_state() -> tuple[torch.Tensor, list[torch.Tensor]]:
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
    return torch.get_rng_state(), cuda


def _set_rng_state(state: tuple[torch.Tensor, list[torch.Tensor]]) -> None:
    torch.set_rng_state(state[0])
    if state[1]:
        torch.cuda.set_rng_state_all(state[1])


def _rows(batch: dict[str, Any]) -> int:
    if "chunks" in batch:
        return _rows(batch["batch"])
    if "num_rows" in batch:
        return int(batch["num_rows"])
    first = next(v for v in batch.values() if isinstance(v, torch.Tensor))
    return int(first.shape[0])


def _flat_scalars(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten a nested config to the scalar values TensorBoard's hparams accept."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flat_scalars(value, f"{name}."))
        elif isinstance(value, (int, float, str, bool)):
            flat[name] = value
        elif value is not None:
            flat[name] = str(value)
    return flat
