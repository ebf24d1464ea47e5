"""The non-finite checks of the training loop, without making the host wait for the device at every step.

Reading a tensor's value on the host (``float(loss)``, ``if not torch.isfinite(loss)``) waits until the device has
computed it: on a GPU that stalls the loop once per step, where the host could otherwise queue the next step's
work. On the CPU host and device are one and a check costs nothing, so :class:`DivergenceWatch` checks at once
there. On an accelerator it folds each step's check into two device tensors, the first bad step and what went bad,
and the engine reads them (one wait) at each logging interval, before a checkpoint is written and at the end: the
run then stops naming the first bad step, a few steps later than it went bad, and nothing written after that step
is kept (no checkpoint, no export).
"""

from __future__ import annotations

import torch

WHAT = ("the loss is not finite", "the gradient norm is not finite")


class DivergenceWatch:
    """Watch the loss and the gradient norm of each step for NaN / Inf.

    Args:
        device: where the watched tensors live.
        deferred: fold the checks into device tensors and read them on :meth:`flush`; default: on any device
            but the CPU.
    """

    def __init__(self, device: torch.device, deferred: bool | None = None) -> None:
        self.deferred = device.type != "cpu" if deferred is None else deferred
        self.first_step = torch.full((), -1, dtype=torch.long, device=device)
        self.what = torch.zeros((), dtype=torch.long, device=device)

    def check(self, value: torch.Tensor, step: int, what: int) -> str | None:
        """Check one value of ``step`` (``what``: 0 the loss, 1 the gradient norm). Returns what is wrong when it
        can tell at once (not deferred), else None (deferred: see :meth:`flush`)."""
        if not self.deferred:
            return None if bool(torch.isfinite(value)) else f"{WHAT[what].removesuffix(' not finite')} {float(value)}"
        new = ~torch.isfinite(value.detach()).all() & (self.first_step < 0)
        self.first_step = torch.where(new, torch.full_like(self.first_step, step), self.first_step)
        self.what = torch.where(new, torch.full_like(self.what, what), self.what)
        return None

    def flush(self) -> tuple[int, str] | None:
        """The first bad step and what went bad since the run started, or None (reads the device: one wait)."""
        step = int(self.first_step)
        return None if step < 0 else (step, WHAT[int(self.what)])
