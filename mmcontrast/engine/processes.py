"""The process layout of a run (one process, or several launched by ``accelerate launch`` / torchrun)."""

from __future__ import annotations

import os

import torch
from accelerate import PartialState
from accelerate.utils import parse_flag_from_env


def use_cpu() -> bool:
    """Run on the CPU: asked for (``ACCELERATE_USE_CPU``), or several processes launched with no GPU present.

    Accelerate only forms a multi-process CPU (gloo) group when told it is on the CPU; without this, processes
    launched by torchrun on a machine with no GPU would each train alone.
    """
    launched = int(os.environ.get("LOCAL_RANK", -1)) != -1
    return parse_flag_from_env("ACCELERATE_USE_CPU") or (launched and not torch.cuda.is_available())


def process_state() -> PartialState:
    """Accelerate's process state (rank, world size, device), initialising the process group if launched."""
    return PartialState(cpu=use_cpu())
