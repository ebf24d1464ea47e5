"""Sharded models under the engine: FSDP2 (also on CPU processes) and DeepSpeed ZeRO-3, through Accelerate.

Under FSDP2 (``accelerate launch --config_file recipes/accelerate/fsdp2.yaml``) every process holds a shard of
each parameter, so no process can run the model alone; the engine's evaluators and the export run on the main
process only. :class:`FullCopy` keeps an unsharded copy of the method in the main process's CPU memory, refreshed
from the sharded model (a collective ``accelerator.get_state_dict``) whenever the engine evaluates or finishes;
evaluation moves it to the device for the time it runs.

Accelerate 1.15 routes CPU processes to DDP and drops an FSDP config without a word; PyTorch's FSDP2 runs on CPU
tensors over gloo, so :func:`enable_fsdp_on_cpu` switches Accelerate's state to FSDP when the launch asked for it.
That is how the engine's FSDP2 path is tested on CPU, and how a CPU cluster shards a model.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from accelerate import Accelerator, PartialState
from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

from mmcontrast.engine.config import TrainingConfig
from mmcontrast.methods.base import Method
from mmcontrast.typed_config import ConfigError


def fsdp_requested() -> bool:
    """The launch asked for FSDP (``distributed_type: FSDP`` in the Accelerate config sets ACCELERATE_USE_FSDP)."""
    return os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"


def enable_fsdp_on_cpu(accelerator: Accelerator) -> None:
    """Turn a multi-process CPU (gloo) run launched with an FSDP config into an FSDP run, as it would be on GPUs.

    Accelerate picks DDP for CPU processes whatever the config says; the FSDP plugin is built from the same
    environment the launcher set (``FSDP_*``), so the CPU run shards exactly as the GPU run would.
    """
    state = accelerator.state
    if not (fsdp_requested() and state.distributed_type == DistributedType.MULTI_CPU):
        return
    plugin = FullyShardedDataParallelPlugin()
    if plugin.fsdp_version != 2:
        raise ValueError(
            "the Accelerate config asks for FSDP version 1 on CPU processes; mmcontrast runs FSDP on the CPU with "
            "fsdp_version: 2 only (see recipes/accelerate/fsdp2.yaml)"
        )
    if accelerator.mixed_precision != "no":
        plugin.set_mixed_precision(accelerator.mixed_precision)
    # AcceleratorState copies the process state in again whenever it is constructed (set_seed does): both say FSDP
    PartialState().distributed_type = state.distributed_type = DistributedType.FSDP
    state.fsdp_plugin = plugin


def declare_layers(method: Method) -> None:
    """Name the towers' transformer layers on the method (``_no_split_modules``, read by Accelerate's
    ``TRANSFORMER_BASED_WRAP``), so that FSDP2 makes one unit per layer of any transformers tower without the
    Accelerate config naming the classes; a config that names them (``fsdp_transformer_layer_cls_to_wrap``) wins."""
    towers = (module for module in method.modules() if module is not method)
    layers = {name for tower in towers for name in getattr(tower, "_no_split_modules", None) or ()}
    if layers and getattr(method, "_no_split_modules", None) is None:
        method._no_split_modules = sorted(layers)


def check_sharded_settings(accelerator: Accelerator, config: TrainingConfig) -> None:
    """Refuse the `train:` settings that Accelerate's DeepSpeed integration would silently get wrong.

    Accelerate's DeepSpeed wrapper runs the optimizer step inside ``accelerator.backward``: the cached large batch
    (several backward passes per step) and the engine's own gradient accumulation would step too often.
    """
    if accelerator.distributed_type != DistributedType.DEEPSPEED:
        return
    if config.cache_chunk_size:
        raise ConfigError(
            "key 'train.cache_chunk_size' is set, but the run is launched with DeepSpeed, whose engine steps the "
            "optimizer inside every backward pass: set train.cache_chunk_size=null (or launch with FSDP2 or DDP)"
        )
    if config.gradient_accumulation_steps > 1:
        raise ConfigError(
            "key 'train.gradient_accumulation_steps' is above 1, but under DeepSpeed the accumulation belongs to "
            "DeepSpeed's config: set train.gradient_accumulation_steps=1 and gradient_accumulation_steps in the "
            "DeepSpeed config"
        )


def shards_parameters(accelerator: Accelerator) -> bool:
    """Whether no process holds whole parameters: FSDP, or DeepSpeed ZeRO stage 3."""
    if accelerator.distributed_type == DistributedType.FSDP:
        return True
    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        return accelerator.state.deepspeed_plugin.zero_stage == 3
    return False


def fill_optimizer_state(optimizer: torch.optim.Optimizer) -> None:
    """Give every trainable parameter its optimizer state now, as it is before its first update (step 0, zero
    moments), so that a sharded checkpoint holds state for all of them.

    ``torch.distributed.checkpoint`` refuses to load an optimizer checkpoint that lacks the state of a parameter
    (one a method never used, such as a text model's pooler under mean pooling). The state comes from one step
    of the optimizer itself with zero gradients and learning rate 0 (parameters unchanged), its step counts then
    set back to 0: the later updates are the same as with state made at a parameter's first gradient.
    """
    parameters = [p for group in optimizer.param_groups for p in group["params"] if p.requires_grad]
    if all(p in optimizer.state for p in parameters):
        return
    rates = [group["lr"] for group in optimizer.param_groups]
    for group in optimizer.param_groups:
        group["lr"] = 0.0
    for parameter in parameters:
        parameter.grad = torch.zeros_like(parameter)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    for group, rate in zip(optimizer.param_groups, rates, strict=True):
        group["lr"] = rate
    for state in optimizer.state.values():
        if torch.is_tensor(state.get("step")):
            state["step"].zero_()
        elif "step" in state:
            state["step"] = 0


def wraps_in_ddp(accelerator: Accelerator) -> bool:
    """Whether ``accelerator.prepare`` wraps the model in DDP: several processes, neither FSDP nor DeepSpeed."""
    return accelerator.num_processes > 1 and accelerator.distributed_type in _DDP_TYPES


_DDP_TYPES = {
    DistributedType.MULTI_CPU,
    DistributedType.MULTI_GPU,
    DistributedType.MULTI_NPU,
    DistributedType.MULTI_XPU,
    DistributedType.MULTI_MLU,
    DistributedType.MULTI_MUSA,
    DistributedType.MULTI_HPU,
}


class FullCopy:
    """An unsharded copy of the method on the main process (CPU memory), for evaluation and export.

    Made before the method is sharded; :meth:`refresh` must be called on every process (it gathers the shards).
    """

    def __init__(self, method: Method, accelerator: Accelerator) -> None:
        self.accelerator = accelerator
        self.method = copy.deepcopy(method).cpu() if accelerator.is_main_process else None
        self.step: int | None = None  # the step whose weights the copy holds

    def refresh(self, model: torch.nn.Module, step: int) -> None:
        """Gather the sharded ``model``'s full weights into the copy (collective: call it on every process); a
        second call at the same step keeps the copy as it is (a callback may have loaded other weights into it)."""
        if self.step == step:
            return
        state = self.accelerator.get_state_dict(model)  # full, on the main process's CPU
        if self.method is not None:
            self.method.load_state_dict(state)
        self.step = step

    @contextmanager
    def on(self, device: torch.device) -> Iterator[None]:
        """Keep the copy on ``device`` for the time of the block (evaluation), then back in CPU memory."""
        assert self.method is not None, "the full copy lives on the main process only"
        self.method.to(device)
        try:
            yield
        finally:
            self.method.cpu()
