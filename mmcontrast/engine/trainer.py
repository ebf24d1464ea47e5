"""One Accelerate training loop for every method.

The loop knows the :class:`~mmcontrast.methods.base.Method` interface only: ``collate`` runs in the
DataLoader, ``forward`` (= ``loss(embed(batch))``) gives a :class:`LossOutput`. It handles distribution and
mixed precision (Accelerate), AdamW + a transformers schedule, gradient accumulation and clipping, cached large
batches (GradCache, through the ``embed`` / ``loss`` split), gradient checkpointing of the towers, a progress
bar with loss and throughput (or one line per logging interval on stderr), Accelerate's experiment trackers
(TensorBoard by default), periodic evaluation (also before training), callbacks (early stopping, keeping the best
model: :mod:`mmcontrast.engine.callbacks`), atomic checkpoints and exact resume.

Resume is exact: the data order of an epoch is a function of ``(seed, epoch)`` (the batch sampler), the
RNG states, optimizer and scheduler come back from the checkpoint, and the loop skips the batches already
seen in the interrupted epoch. Streamed data (:class:`~mmcontrast.data.streaming.StreamedBatches`) is read by
torchdata's ``StatefulDataLoader``, whose state (every worker's position in the stream) goes into the
checkpoint. Resume is also checked: the checkpoint must be valid (its manifest), must come from the same recipe
(its fingerprint, see :mod:`mmcontrast.engine.fingerprint`) and must not lie beyond the run's last step. The run
folder is locked for the run's lifetime (:mod:`mmcontrast.engine.run_folder`).

Divergence is caught by the engine: non-finite embeddings, loss or gradients stop the run with the step and
the learning rate, and a run whose weights end non-finite or exploded is refused before anything is exported.
The hot loop does not make the host wait for the device: the logged loss is summed on the device and read at the
logging interval, and on an accelerator the finiteness checks are read there too
(:mod:`mmcontrast.engine.divergence`).
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.tracking import GeneralTracker, get_available_trackers
from accelerate.utils import (
    DistributedDataParallelKwargs,
    DistributedType,
    LoggerType,
    ProjectConfiguration,
    broadcast_object_list,
    find_batch_size,
    gather_object,
    send_to_device,
    set_seed,
)
from torch.utils.data import DataLoader
from torchdata.stateful_dataloader import StatefulDataLoader
from tqdm.auto import tqdm
from transformers import get_scheduler

from mmcontrast.data.samplers import ShuffledBatchSampler
from mmcontrast.data.streaming import StreamedBatches
from mmcontrast.engine.callbacks import EarlyStopping, KeepBest, TrainerCallback
from mmcontrast.engine.checkpoints import CheckpointError, load_checkpoint, read_state, resolve_resume, save_checkpoint
from mmcontrast.engine.config import TrainingConfig, check_hardware, sampler_sharding
from mmcontrast.engine.divergence import DivergenceWatch
from mmcontrast.engine.fingerprint import RESUMABLE_TRAIN_KEYS, differences, run_fingerprint
from mmcontrast.engine.processes import use_cpu
from mmcontrast.engine.run_folder import RunFolder, prepare_run_folder
from mmcontrast.engine.sharding import (
    FullCopy,
    check_sharded_settings,
    declare_layers,
    enable_fsdp_on_cpu,
    fill_optimizer_state,
    shards_parameters,
    wraps_in_ddp,
)
from mmcontrast.methods.base import LossOutput, Method, NonFiniteError
from mmcontrast.typed_config import ConfigError, check_ranges

EXPLODED = 1e4  # a weight this large (and 100x its initial scale) means the run diverged


class TrainingDivergedError(FloatingPointError):
    """The loss, the gradients, the embeddings or the weights became non-finite or exploded."""


class ResumeError(ValueError):
    """A checkpoint cannot continue this run (another recipe, or beyond the last step)."""


Evaluator = Callable[[Method], dict[str, float]]


@dataclass
class TrainingResult:
    """What a run did: steps taken, the logged history, the last evaluation, with `train.keep_best` the step
    whose model was kept (its metrics are then ``final_metrics``), and the bad samples a stream skipped."""

    global_step: int
    log_history: list[dict[str, Any]] = field(default_factory=list)
    final_metrics: dict[str, float] = field(default_factory=dict)
    best_step: int | None = None
    skipped_samples: int = 0


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
            any, is called before each epoch (the DataLoader is rebuilt per epoch, so workers see it). Or streamed
            batches (:class:`~mmcontrast.data.streaming.StreamedBatches`, built for ``config.num_workers``): the
            run then lasts ``config.max_steps``, or ``config.epochs`` when the stream knows its rows.
        batch_sampler: yields lists of row indices for this process and has ``set_epoch(epoch)``
            (see :mod:`mmcontrast.data.samplers`); default: rows shuffled by ``(seed, epoch)`` into batches of
            ``config.batch_size``, sharded over the processes. None for streamed data.
        config: training settings (default: :class:`TrainingConfig`'s defaults); checked like a recipe's
            `train:` section.
        output_dir: run folder: ``checkpoints/``, ``logs/`` (trackers), ``training_log.json``.
        evaluators: name -> callable(method) -> metrics, run every ``eval_steps`` and at the end.
        run_config: the recipe as a dict, stored with the tracked run.
        fingerprint: the recipe's keys that decide the trajectory (flat, see
            :func:`~mmcontrast.engine.fingerprint.recipe_fingerprint`); a resume with other values refuses.
        overwrite_output_dir: start afresh even when ``output_dir`` holds another run's checkpoints or model
            (they are deleted); without it such a folder is refused unless the run resumes.
        callbacks: hooks into the loop (:class:`~mmcontrast.engine.callbacks.TrainerCallback`), after those that
            `config.early_stopping` and `config.keep_best` switch on.
        trackers: Accelerate tracker objects (``accelerate.tracking.GeneralTracker``) used beside
            `config.report_to`.
        evaluate_before_training: run the evaluators once before the first step (the baseline, logged at step 0).
    """

    def __init__(
        self,
        method: Method,
        dataset: Sequence[Any],
        batch_sampler: Any | None = None,
        config: TrainingConfig | None = None,
        output_dir: str | Path = "runs/run",
        evaluators: dict[str, Evaluator] | None = None,
        run_config: dict[str, Any] | None = None,
        fingerprint: dict[str, Any] | None = None,
        overwrite_output_dir: bool = False,
        callbacks: Sequence[TrainerCallback] = (),
        trackers: Sequence[GeneralTracker] = (),
        evaluate_before_training: bool = False,
    ) -> None:
        config = config if config is not None else TrainingConfig()
        check_ranges(config, "train config", prefix="train.")  # the recipe path checked them already; Python did not
        check_hardware(config)
        self.evaluators = evaluators or {}
        self.callbacks = [*_configured_callbacks(config, bool(self.evaluators)), *callbacks]
        self.evaluate_before_training = evaluate_before_training
        self.should_stop = False
        self.config = config
        self.overwrite_output_dir = overwrite_output_dir
        self.output_dir = Path(output_dir)
        self.checkpoint_root = self.output_dir / "checkpoints"
        # Accelerate keeps precision settings in a process-wide singleton; a new run in the same Python
        # process (a notebook, a test) may ask for other settings, so start it afresh (the process group stays).
        AcceleratorState._reset_state(reset_partial_state=False)
        ddp_options = DistributedDataParallelKwargs(find_unused_parameters=bool(config.find_unused_parameters))
        self.accelerator = Accelerator(
            cpu=use_cpu(),
            mixed_precision=config.mixed_precision,
            kwargs_handlers=[ddp_options],
            log_with=[*_tracker_names(config.report_to), *trackers] or None,
            project_config=ProjectConfiguration(
                project_dir=str(self.output_dir), logging_dir=str(self.output_dir / "logs")
            ),
        )
        enable_fsdp_on_cpu(self.accelerator)
        check_sharded_settings(self.accelerator, config)
        set_seed(config.seed)
        self.dataset = dataset
        self.streamed = isinstance(dataset, StreamedBatches)
        if self.streamed:
            if batch_sampler is not None:
                raise ValueError("streamed data comes in batches already: give no batch_sampler with it")
        elif batch_sampler is None:  # rows shuffled by (seed, epoch), sharded over the processes
            batch_sampler = ShuffledBatchSampler(len(dataset), config.batch_size, **sampler_sharding(config))
        self.batch_sampler = batch_sampler
        if config.gradient_checkpointing:
            _enable_gradient_checkpointing(method)
        if config.compile:
            _compile_towers(method, config)
        self.collate = (
            _ChunkedCollate(method.collate, config.cache_chunk_size) if config.cache_chunk_size else method.collate
        )
        optimizer = _adamw(method, config)
        self.skipped_samples = 0  # bad samples the stream passed over in this process
        if self.streamed:
            self.stream_loader = _stream_loader(dataset, self.collate, config, self.accelerator.device)
            self.steps_per_epoch = _stream_steps_per_epoch(dataset, config, self.accelerator.num_processes)
        else:
            self.steps_per_epoch = math.ceil(len(self.batch_sampler) / config.gradient_accumulation_steps)
        if self.steps_per_epoch == 0:
            raise ValueError("the training data gives no batch: add rows or lower train.batch_size")
        self.total_steps = config.max_steps or config.epochs * self.steps_per_epoch
        self.num_warmup_steps = math.ceil(config.warmup_ratio * self.total_steps)
        self.scheduler = get_scheduler(
            config.scheduler,
            optimizer,
            num_warmup_steps=self.num_warmup_steps,
            num_training_steps=self.total_steps,
        )
        self.fingerprint = run_fingerprint(
            config,
            fingerprint or {},
            num_rows=dataset.num_rows if self.streamed else len(dataset),
            num_processes=self.accelerator.num_processes,
        )
        if self.streamed:  # each worker reads its own shards: another count would read other parts of the stream
            self.fingerprint["streamed data workers"] = config.num_workers
        self.run_id = uuid.uuid4().hex
        # the weights' scale at the start, to tell a diverged run from a trained one at the end
        self.initial_scale = {name: float(p.detach().abs().max()) for name, p in method.named_parameters() if p.numel()}
        if config.find_unused_parameters is None and wraps_in_ddp(self.accelerator):
            # DDP's search for unused parameters costs every step: only when the method leaves some unused
            ddp_options.find_unused_parameters = bool(self._unused_parameters(method))
        self.full_copy = FullCopy(method, self.accelerator) if shards_parameters(self.accelerator) else None
        if self.full_copy is not None and config.keep_best.metric is not None:
            raise ConfigError(
                "key 'train.keep_best.metric' is set, but the model is sharded (FSDP / DeepSpeed ZeRO-3), whose best "
                "weights cannot be put back into the shards yet: leave train.keep_best unset (train.early_stopping "
                "works), or train without sharding"
            )
        if self.accelerator.distributed_type == DistributedType.FSDP:
            declare_layers(method)
        self.model, self.optimizer = self.accelerator.prepare(method, optimizer)
        if self.full_copy is not None and self.accelerator.distributed_type == DistributedType.FSDP:
            fill_optimizer_state(optimizer)
        self._trainable: list[torch.nn.Parameter] | None = None  # set at the first gradient-norm check
        # the scheduler's state goes into trainer_state.json (not a pickle registered with Accelerate)
        self.accelerator.init_trackers("mmcontrast", config=_flat_scalars(run_config or {}))
        self.log_history: list[dict[str, Any]] = []
        self.divergence = DivergenceWatch(self.accelerator.device)
        self._rates: dict[int, float] = {}  # learning rate of each step since the last divergence check

    @property
    def method(self) -> Method:
        """The trained method, unwrapped from any distributed wrapper; with sharded parameters (FSDP, ZeRO-3), the
        main process's full copy, as of the last evaluation (:class:`~mmcontrast.engine.sharding.FullCopy`)."""
        if self.full_copy is not None and self.full_copy.method is not None:
            return self.full_copy.method
        return self.accelerator.unwrap_model(self.model)

    def _unused_parameters(self, method: Method) -> list[str]:
        """The trainable parameters that get no gradient from one forward and backward of this process's first
        batch (before DDP wraps the method); RNG states, buffers and gradients are left as they were."""
        if self.streamed:  # a loader of its own: the training loader's position stays at the stream's start
            batch = next(iter(_stream_loader(self.dataset, self.collate, self.config, self.accelerator.device)))[
                "batch"
            ]
        else:
            batch = next(iter(self._batches(0, skip=0)))
        batch = send_to_device(batch["chunks"][0] if "chunks" in batch else batch, self.accelerator.device)
        rng, buffers = _rng_state(), {name: b.clone() for name, b in method.named_buffers()}
        python_rng, numpy_rng = random.getstate(), np.random.get_state()
        method.to(self.accelerator.device)
        with self.accelerator.autocast():
            method(batch).loss.backward()
        unused = [name for name, p in method.named_parameters() if p.requires_grad and p.grad is None]
        method.zero_grad(set_to_none=True)
        with torch.no_grad():
            for name, buffer in method.named_buffers():
                buffer.copy_(buffers[name])
        _set_rng_state(rng)
        random.setstate(python_rng)
        np.random.set_state(numpy_rng)
        if unused:
            self.accelerator.print(
                f"train.find_unused_parameters: {len(unused)} trainable parameters get no gradient (first: "
                f"{unused[0]}), so DDP searches for unused parameters at every step"
            )
        return unused

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
            pin_memory=self.accelerator.device.type == "cuda",  # page-locked batches copy to the GPU asynchronously
            generator=torch.Generator(),  # keeps the global RNG (dropout) untouched by the loader
        )

    def evaluate(self, step: int, notify: bool = True) -> dict[str, float]:
        """Run the evaluators on the main process, log the metrics at ``step`` and return them on every process
        (broadcast, so callbacks decide alike everywhere); ``notify=False`` leaves the log and callbacks alone."""
        metrics: dict[str, float] = {}
        if self.full_copy is not None:  # every process sends its shards
            self.full_copy.refresh(self.model, step)
        if self.accelerator.is_main_process:
            was_training = self.model.training
            with self.full_copy.on(self.accelerator.device) if self.full_copy else contextlib.nullcontext():
                for name, evaluator in self.evaluators.items():
                    for key, value in evaluator(self.method).items():
                        metrics[f"{name}/{key}"] = float(value)
            self.model.train(was_training)  # evaluators may switch the method to eval mode
            if metrics and notify:
                self.accelerator.log({f"eval/{k}": v for k, v in metrics.items()}, step=step)
                self.log_history.append({"step": step, **metrics})
        if self.accelerator.num_processes > 1:
            shared = [metrics]
            broadcast_object_list(shared, from_process=0)
            metrics = shared[0]
        if notify:
            for callback in self.callbacks:
                callback.on_evaluate(self, step, metrics)
        return metrics

    def _save(self, step: int) -> None:
        state = {
            "global_step": step,
            "run_id": self.run_id,
            "fingerprint": self.fingerprint,
            "num_warmup_steps": self.num_warmup_steps,
            "total_steps": self.total_steps,
            "scheduler": self.scheduler.state_dict(),
            "log_history": self.log_history,
        }
        if self.streamed:  # every process's position in the stream (gathered: one trainer_state.json)
            position = {"loader": self.stream_loader.state_dict(), "skipped_samples": self.skipped_samples}
            state["stream"] = gather_object([position]) if self.accelerator.num_processes > 1 else [position]
        save_checkpoint(self.accelerator, self.checkpoint_root, step, state, self.config.save_total_limit)
        for callback in self.callbacks:
            callback.on_save(self, step)

    def _resume(self, checkpoint: Path) -> int:
        """Check that ``checkpoint`` continues this run, restore it, and return its step."""
        try:
            state = read_state(checkpoint)
        except (OSError, ValueError) as error:
            raise CheckpointError(f"cannot read the trainer state of {checkpoint}: {error}") from error
        changed = differences(state.get("fingerprint", {}), self.fingerprint)
        if changed:
            safe = ", ".join(f"train.{k}" for k in sorted(RESUMABLE_TRAIN_KEYS))
            raise ResumeError(
                f"cannot resume from {checkpoint}: the recipe differs from the run that wrote it in "
                f"{'; '.join(changed)}. Restore those values to continue that run, or start a new one "
                f"(overwrite_output_dir=true or another output_dir). Safe to change on resume: {safe}, eval"
            )
        step = int(state["global_step"])
        if step > self.total_steps:
            raise ResumeError(
                f"cannot resume from {checkpoint}: it is at step {step}, beyond this run's {self.total_steps} steps "
                "(train.max_steps / train.epochs); raise them to continue the run"
            )
        warmup = int(state["num_warmup_steps"])
        if warmup != self.num_warmup_steps:  # the run was extended or shortened: warm-up stays as it was
            self.num_warmup_steps = warmup
            self.scheduler = get_scheduler(
                self.config.scheduler,
                self.optimizer.optimizer,
                num_warmup_steps=warmup,
                num_training_steps=self.total_steps,
            )
        load_checkpoint(self.accelerator, checkpoint)
        self.scheduler.load_state_dict(state["scheduler"])
        if int(state["total_steps"]) != self.total_steps:  # the next steps follow the schedule of the new total
            last, scheduler = self.scheduler.last_epoch, self.scheduler
            rates = [base * fn(last) for base, fn in zip(scheduler.base_lrs, scheduler.lr_lambdas, strict=True)]
            for group, rate in zip(self.optimizer.param_groups, rates, strict=True):
                group["lr"] = rate
            self.scheduler._last_lr = rates
        self.run_id, self.log_history = state["run_id"], state["log_history"]
        if self.streamed:
            position = state["stream"][self.accelerator.process_index]
            self.stream_loader.load_state_dict(position["loader"])
            self.skipped_samples = int(position["skipped_samples"])
        return step

    def _gradient_norm(self, accelerator: Accelerator, config: TrainingConfig) -> torch.Tensor | None:
        """The total gradient norm, clipped to ``max_grad_norm`` when it is set; None under fp16 (the grad scaler
        skips non-finite steps itself). Without clipping, a DDP / single-process run only measures the norm of its
        (already reduced) gradients, leaving them untouched; FSDP's sharded norm goes through Accelerate."""
        if config.mixed_precision == "fp16" and not config.max_grad_norm:
            return None
        if config.max_grad_norm or accelerator.distributed_type == DistributedType.FSDP:
            norm = accelerator.clip_grad_norm_(self.model.parameters(), config.max_grad_norm or math.inf)
            return None if config.mixed_precision == "fp16" else norm
        if self._trainable is None:  # walking the module tree every step costs about a millisecond
            self._trainable = [p for p in self.model.parameters() if p.requires_grad]
        gradients = [p.grad for p in self._trainable if p.grad is not None]
        return torch.nn.utils.get_total_norm(gradients) if gradients else None

    def _diverged(self, step: int, what: str) -> TrainingDivergedError:
        rate = self._rates.get(step, self.scheduler.get_last_lr()[0])
        return TrainingDivergedError(
            f"training diverged at step {step} (learning rate {rate:.3g}): {what}. Lower train.lr (or raise "
            "train.warmup_ratio), check the data for degenerate rows, or use mixed_precision=bf16 instead of fp16"
        )

    def check_weights(self) -> None:
        """Refuse weights that are non-finite or exploded (> 1e4 and 100x their initial scale): such a model is
        not worth exporting, and a user would not notice from the exit code alone. The main process checks (the
        full copy of a sharded model) and tells the others."""
        problem = [self._weight_problem() if self.accelerator.is_main_process else None]
        if self.accelerator.num_processes > 1:
            broadcast_object_list(problem, from_process=0)
        if problem[0] is not None:
            raise TrainingDivergedError(problem[0])

    def _weight_problem(self) -> str | None:
        for name, parameter in self.method.named_parameters():
            if name not in self.initial_scale:
                continue
            scale = float(parameter.detach().abs().max())
            if not math.isfinite(scale) or (scale > EXPLODED and scale > 100 * max(self.initial_scale[name], 1.0)):
                return (
                    f"training diverged: parameter '{name}' ends with values up to {scale:.3g} (it started at "
                    f"{self.initial_scale[name]:.3g}), so no model is exported. Lower train.lr (or raise "
                    "train.warmup_ratio) and train again with overwrite_output_dir=true"
                )
        return None

    def backward(
        self, batch: dict[str, Any], scale: float = 1.0, step: int = 0, sync_gradients: bool = True
    ) -> LossOutput:
        """Forward and backward of one (micro-)batch; gradients of ``scale * loss`` accumulate in ``.grad``."""
        try:
            if self.config.cache_chunk_size:
                return self._cached_backward(batch, scale, step, sync_gradients)
            output = self.model(batch)
        except NonFiniteError as error:  # raised between embed and loss, before the loss core sees the input
            self._check_divergence()  # an earlier step that went bad is the one to report
            raise self._diverged(step, str(error)) from error
        except RuntimeError as error:
            if "find_unused_parameters" in str(error):  # DDP met parameters the previous step left unused
                raise ConfigError(
                    f"step {step}: some trainable parameters of {type(self.method).__name__} got no gradient in the "
                    "previous step, which DDP cannot reduce: set train.find_unused_parameters=true (or leave it "
                    f"null, to let the engine decide)\n{str(error).splitlines()[0]}"
                ) from error
            raise
        self._check_loss(output.loss, step)
        self.accelerator.backward(output.loss * scale)
        return output

    def _check_loss(self, loss: torch.Tensor, step: int) -> None:
        problem = self.divergence.check(loss, step, 0)
        if problem:
            raise self._diverged(step, problem)

    def _check_divergence(self) -> None:
        """Raise for the first non-finite loss or gradient norm the deferred checks saw (one device wait)."""
        if self.divergence.deferred:
            found = self.divergence.flush()
            if found is not None:
                raise self._diverged(*found)
        self._rates.clear()

    def _cached_backward(self, batch: dict[str, Any], scale: float, step: int, sync_gradients: bool) -> LossOutput:
        """GradCache (Gao et al. 2021): embed chunks without grad, loss on the cache, re-embed with grad.

        Under DDP the passes run without gradient synchronisation and the summed gradients are averaged once at
        the end; FSDP reduce-scatters the gradients of each backward pass into the sharded ones."""
        chunks, states, cached = batch["chunks"], [], []
        sharded = self.full_copy is not None
        with contextlib.nullcontext() if sharded else self.accelerator.no_sync(self.model):
            with torch.no_grad():
                for chunk in chunks:
                    states.append(_rng_state())
                    cached.append(self.model(chunk, embed_only=True))
            embeddings = {key: torch.cat([c[key] for c in cached]).detach().requires_grad_() for key in cached[0]}
            output = self.model(batch["batch"], embeddings=embeddings)
            self._check_loss(output.loss, step)
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
        if sync_gradients and self.accelerator.num_processes > 1 and not sharded:
            for parameter in self.model.parameters():
                if parameter.grad is not None:
                    torch.distributed.all_reduce(parameter.grad)
                    parameter.grad /= self.accelerator.num_processes
        return output

    def train(self, resume_from: str | None = None) -> TrainingResult:
        """Run to ``total_steps`` holding the run folder's lock; ``resume_from`` is ``latest`` or a checkpoint
        folder. Raises :class:`TrainingDivergedError` when the weights end non-finite or exploded."""
        with RunFolder(self.output_dir):
            checkpoint = resolve_resume(resume_from, self.checkpoint_root) if resume_from else None
            prepare_run_folder(self.output_dir, resuming=checkpoint is not None, overwrite=self.overwrite_output_dir)
            step = 0
            if checkpoint is not None:
                step = self._resume(checkpoint)
                self.accelerator.print(f"resumed from {checkpoint} at step {step}")
            result = self._train_from(step)
            self.check_weights()
            return result

    def _train_from(self, step: int) -> TrainingResult:
        config, accelerator = self.config, self.accelerator
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
        for callback in self.callbacks:
            callback.on_train_begin(self, step)
        if self.evaluate_before_training and not any(r["step"] == step and "loss" not in r for r in self.log_history):
            self.evaluate(step)  # the baseline (once: a resumed run that already has it does not repeat it)
        while step < self.total_steps and not self.should_stop:
            epoch = step // self.steps_per_epoch
            if self.streamed:  # one pass to the end of the run: the stream cycles through its epochs by itself
                last = (self.total_steps - step) * accumulation
                loader: Any = islice(self.stream_loader, last)
            else:
                loader = self._batches(epoch, skip=(step - epoch * self.steps_per_epoch) * accumulation)
                last = len(loader)
            seen = 0
            for index, batch in enumerate(loader, 1):
                seen = index
                if self.streamed:
                    self.skipped_samples += batch["skipped"]
                    epoch, batch = batch["epoch"], batch["batch"]
                boundary = index % accumulation == 0 or index == last
                batch = send_to_device(batch, accelerator.device, non_blocking=True)  # pinned: no wait
                sync = contextlib.nullcontext() if boundary else accelerator.no_sync(self.model)
                with sync:
                    output = self.backward(batch, 1.0 / accumulation, step + 1, sync_gradients=boundary)
                window_loss = window_loss + output.loss.detach().float()  # on the device: no wait
                window_batches += 1
                window_rows += _rows(batch)
                if not boundary:
                    continue
                norm = self._gradient_norm(accelerator, config)
                if norm is not None and (problem := self.divergence.check(norm, step + 1, 1)):
                    raise self._diverged(step + 1, problem)
                self._rates[step + 1] = self.scheduler.get_last_lr()[0]
                self.optimizer.step()
                self.scheduler.step()
                self.optimizer.zero_grad(set_to_none=True)
                step += 1
                # EMA targets, queues (checkpointed state), on the trained (under FSDP sharded) method
                self.accelerator.unwrap_model(self.model).after_optimizer_step(step, self.total_steps)
                progress.update(1)
                if step % config.logging_steps == 0 or step == self.total_steps:
                    elapsed = time.perf_counter() - window_start
                    self._check_divergence()
                    loss = accelerator.reduce(torch.as_tensor(window_loss / window_batches, device=accelerator.device))
                    record = {
                        "step": step,
                        "epoch": epoch,
                        "loss": float(loss) / accelerator.num_processes,
                        "lr": self.scheduler.get_last_lr()[0],
                        "rows_per_second": window_rows * accelerator.num_processes / max(elapsed, 1e-9),
                        **{name: float(value) for name, value in (output.metrics or {}).items()},
                    }
                    self.log_history.append(record)
                    accelerator.log({f"train/{k}": v for k, v in record.items() if k != "step"}, step=step)
                    progress.set_postfix(loss=f"{record['loss']:.4f}", rows_s=f"{record['rows_per_second']:.1f}")
                    if progress.disable and accelerator.is_local_main_process:  # no bar: one line per interval
                        print(_progress_line(record, self.total_steps), file=sys.stderr, flush=True)
                    for callback in self.callbacks:
                        callback.on_log(self, record)
                    window_loss, window_batches, window_rows, window_start = 0.0, 0, 0, time.perf_counter()
                if config.eval_steps and step % config.eval_steps == 0 and step < self.total_steps:
                    self.evaluate(step)
                if config.save_steps and step % config.save_steps == 0:
                    self._check_divergence()  # never a checkpoint of a diverged run
                    self._save(step)
                if step >= self.total_steps or self.should_stop:
                    break
            if self.streamed and seen < last and not self.should_stop:
                raise ValueError(
                    f"the streamed data ran dry after {seen} of {last} batches: a DataLoader worker's part of the "
                    "stream has no row (lower train.num_workers, or check the data)"
                )
        progress.close()
        self._check_divergence()
        final = self.evaluate(step)
        result = TrainingResult(step, self.log_history, final, skipped_samples=self._total_skipped())
        for callback in self.callbacks:
            callback.on_train_end(self, result)
        if accelerator.is_main_process:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            (self.output_dir / "training_log.json").write_text(json.dumps(self.log_history, indent=1))
        for tracker in accelerator.trackers:  # not end_training(): it would take down the process group
            tracker.finish()
        return result

    def _total_skipped(self) -> int:
        """Bad samples the stream skipped, over all processes (and their workers), reported once."""
        if not self.streamed:
            return 0
        total = int(self.accelerator.reduce(torch.tensor(self.skipped_samples, device=self.accelerator.device)))
        if total:
            self.accelerator.print(f"skipped {total} bad samples of the streamed data (see the messages above)")
        return total


def _stream_loader(
    dataset: StreamedBatches, collate: Callable, config: TrainingConfig, device: torch.device
) -> StatefulDataLoader:
    """The loader of streamed batches: its state (each worker's position) is part of every checkpoint."""
    if dataset.num_workers != config.num_workers:
        raise ValueError(
            f"the streamed data was split for {dataset.num_workers} DataLoader workers, but train.num_workers is "
            f"{config.num_workers}: build it with num_workers=train.num_workers"
        )
    return StatefulDataLoader(
        dataset,
        batch_size=None,  # StreamedBatches yields whole batches
        collate_fn=_StreamCollate(collate),
        num_workers=config.num_workers,
        pin_memory=device.type == "cuda",  # page-locked batches copy to the GPU asynchronously
        generator=torch.Generator(),  # keeps the global RNG (dropout) untouched by the loader
    )


def _stream_steps_per_epoch(dataset: StreamedBatches, config: TrainingConfig, num_processes: int) -> int:
    """Optimizer steps per epoch of a stream: its rows over the global batch, when they are known."""
    if dataset.num_rows is None:
        if config.max_steps is None:
            raise ConfigError(
                "key 'train.max_steps' is not set, but the streamed data cannot say how many rows it has (a hub "
                "dataset, csv or json shards): set train.max_steps (an epoch of a stream needs a known length)"
            )
        return config.max_steps
    rows_per_step = config.batch_size * num_processes * config.gradient_accumulation_steps
    return dataset.num_rows // rows_per_step


class _StreamCollate:
    """Collate a streamed batch's rows, keeping its bookkeeping (bad samples skipped, the worker's epoch) beside."""

    def __init__(self, collate: Callable[[list[Any]], dict[str, Any]]) -> None:
        self.collate = collate

    def __call__(self, item: dict[str, Any]) -> dict[str, Any]:
        return {"batch": self.collate(item["rows"]), "skipped": item["skipped"], "epoch": item["epoch"]}


class _ChunkedCollate:
    """Collate the whole batch (for the loss) and its row chunks (for the cached embedding passes)."""

    def __init__(self, collate: Callable[[list[Any]], dict[str, Any]], chunk_size: int) -> None:
        self.collate, self.chunk_size = collate, chunk_size

    def __call__(self, rows: list[Any]) -> dict[str, Any]:
        chunks = [self.collate(rows[i : i + self.chunk_size]) for i in range(0, len(rows), self.chunk_size)]
        return {"batch": self.collate(rows), "chunks": chunks}


def _configured_callbacks(config: TrainingConfig, has_evaluators: bool) -> list[TrainerCallback]:
    """The callbacks `train.early_stopping` and `train.keep_best` switch on (both watch evaluations)."""
    stopping, best = config.early_stopping, config.keep_best
    for key, section in (("early_stopping", stopping), ("keep_best", best)):
        if section.metric is not None and not (config.eval_steps and has_evaluators):
            raise ConfigError(
                f"key 'train.{key}.metric' is set, but the run evaluates only at the end: set train.eval_steps > 0 "
                "and an evaluation (the recipe's eval section) to measure it during training"
            )
    callbacks: list[TrainerCallback] = []
    if stopping.metric is not None:
        callbacks.append(EarlyStopping(stopping.metric, stopping.patience, stopping.mode, stopping.min_delta))
    if best.metric is not None:
        callbacks.append(KeepBest(best.metric, best.mode))
    return callbacks


def _tracker_names(names: Sequence[str]) -> list[str]:
    """`train.report_to`, checked: each a tracker Accelerate knows, with its package installed (Accelerate itself
    would drop a missing one silently)."""
    known = [str(kind.value) for kind in LoggerType if kind != LoggerType.ALL]
    available = {str(kind.value) for kind in get_available_trackers()}
    for name in names:
        if name not in known:
            raise ConfigError(f"key 'train.report_to' holds {name!r}; Accelerate's trackers are: {', '.join(known)}")
        if name not in available:
            raise ConfigError(
                f"key 'train.report_to' asks for {name!r}, whose package is not installed: pip install {name} "
                "(or leave it out of train.report_to)"
            )
    return list(dict.fromkeys(names))


def _enable_gradient_checkpointing(method: Method) -> None:
    """Switch on activation checkpointing in every tower that offers it: transformers models
    (``activation_checkpointing_enable``, non-reentrant), timm and open_clip models (``set_grad_checkpointing``)."""
    switched = []
    for name, module in method.named_modules():
        if getattr(module, "supports_gradient_checkpointing", False):
            module.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
            switched.append(name)
        elif hasattr(module, "set_grad_checkpointing") and not any(name.startswith(f"{s}.") for s in switched):
            module.set_grad_checkpointing(True)
            switched.append(name)
    if not switched:
        raise ConfigError(
            f"key 'train.gradient_checkpointing' is true, but no tower of {type(method).__name__} supports it "
            "(transformers, timm and open_clip towers do): set it to false"
        )


def _compile_towers(method: Method, config: TrainingConfig) -> None:
    """`train.compile`: compile the forward of each tower in place (``nn.Module.compile``, so parameter names and
    therefore checkpoints and exported models stay as they are). The towers are the outermost modules with a
    ``preprocess`` method: the modality adapters, whose forward maps a batch's tensors to embeddings. The loss
    stays eager. ``dynamic`` is left to torch: a second input shape (another text length) recompiles once with
    that dimension dynamic."""
    if config.compile_backend not in torch._dynamo.list_backends(exclude_tags=()):
        raise ConfigError(
            f"key 'train.compile_backend' is {config.compile_backend!r}, which torch.compile does not know: use one "
            f"of {', '.join(torch._dynamo.list_backends())} (or, to debug, aot_eager or eager)"
        )
    if config.compile_backend != "inductor" and config.compile_mode != "default":
        raise ConfigError(
            f"key 'train.compile_mode' is {config.compile_mode!r}, a mode of the inductor backend only, but "
            f"train.compile_backend is {config.compile_backend!r}: set train.compile_mode=default"
        )
    towers: list[str] = []
    for name, module in method.named_modules():
        inside = any(name.startswith(f"{t}.") for t in towers)
        if name and callable(getattr(module, "preprocess", None)) and not inside:
            module.compile(backend=config.compile_backend, mode=config.compile_mode)
            towers.append(name)
    if not towers:
        raise ConfigError(
            f"key 'train.compile' is true, but {type(method).__name__} holds no tower (a module with a preprocess "
            "method, as the text, image, audio and video encoders have): set it to false"
        )


def _progress_line(record: dict[str, Any], total_steps: int) -> str:
    """``step 20/100 | loss 0.4312 | lr 1.8e-05 | 123.4 rows/s``: the progress bar's news, as one log line."""
    return (
        f"step {record['step']}/{total_steps} | epoch {record['epoch']} | loss {record['loss']:.4f} | "
        f"lr {record['lr']:.3g} | {record['rows_per_second']:.1f} rows/s"
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
    return int(find_batch_size(batch))  # the first tensor's rows, however deep the batch nests its tensors


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
