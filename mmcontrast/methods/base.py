"""The Method interface the engine trains: ``embed`` and ``loss`` as two separable steps.

``embed(batch)`` maps a collated batch to a dict of per-sample embedding tensors (no cross-sample coupling),
``loss(embeddings, batch)`` turns them into a :class:`LossOutput`. Keeping them apart lets the engine compute
embeddings in chunks and the loss once over the whole batch (cached large batches) for every method.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import nn


class NonFiniteError(FloatingPointError):
    """Embeddings holding NaN or Inf; the engine reports it with the step and the learning rate."""


def check_finite_embeddings(embeddings: dict[str, torch.Tensor]) -> None:
    """Raise :class:`NonFiniteError` naming the embedding and its first bad row if any value is NaN or Inf.

    Only CPU tensors are checked: on an accelerator the check would make the host wait for the device at every
    step; there non-finite embeddings show up in the loss, which the engine watches without waiting."""
    for key, value in embeddings.items():
        if isinstance(value, torch.Tensor) and value.is_floating_point() and value.device.type == "cpu":
            bad = ~torch.isfinite(value.detach())
            if bad.any():
                row = int(bad.reshape(value.shape[0], -1).any(dim=1).nonzero()[0])
                raise NonFiniteError(f"the '{key}' embeddings hold NaN or Inf (row {row})")


class LossOutput(NamedTuple):
    """A scalar training loss and the metrics to log beside it.

    A tuple, so that DistributedDataParallel finds the loss tensor in what ``forward`` returns. Metric values are
    numbers or detached 0-dim tensors; prefer tensors for anything computed on the device: the engine reads them
    only at the logging interval, so a step never waits for the device to report a metric.
    """

    loss: torch.Tensor
    metrics: dict[str, float | torch.Tensor] | None = None


class Method(nn.Module):
    """Base class of training methods: adapters + heads + how positives and negatives are formed."""

    def collate(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        """Turn dataset rows into a batch of tensors (runs in the DataLoader)."""
        raise NotImplementedError

    def embed(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Per-sample embeddings of a batch."""
        raise NotImplementedError

    def loss(self, embeddings: dict[str, torch.Tensor], batch: dict[str, Any]) -> LossOutput:
        """The training loss over the embeddings of a whole batch."""
        raise NotImplementedError

    def after_optimizer_step(self, step: int, total_steps: int) -> None:
        """Called by the engine right after each optimizer step (once per step, not per micro-batch under gradient
        accumulation) with the new global step: where momentum methods move their EMA targets and fill their
        queues. Keep the state it changes in the method's parameters or buffers (an :class:`~mmcontrast.losses.EMA`
        target module, a :class:`~mmcontrast.losses.MemoryQueue`): checkpoints then hold it and a resumed run
        continues it exactly. Does nothing by default."""

    def forward(
        self,
        batch: dict[str, Any],
        *,
        embed_only: bool = False,
        embeddings: dict[str, torch.Tensor] | None = None,
    ) -> LossOutput | dict[str, torch.Tensor]:
        """``loss(embed(batch), batch)``; or only ``embed(batch)``; or only the loss on given embeddings.

        The engine calls the three forms through the (possibly distributed) wrapper of the method, which is
        why they share ``forward`` instead of being called as methods of the unwrapped module. Embeddings are
        checked for NaN / Inf here, before any loss sees them (:class:`NonFiniteError`).
        """
        if embeddings is None:
            embeddings = self.embed(batch)
            check_finite_embeddings(embeddings)
        if embed_only:
            return embeddings
        return self.loss(embeddings, batch)
