r"""A FIFO memory queue of past keys, used as extra negatives (MoCo).

MoCo decouples the number of negatives from the batch size: the keys of the last :math:`M / B`
batches, encoded by a slowly moving momentum encoder (:class:`~mmcontrast.losses.EMA`), are kept in
a queue of size :math:`M` and scored as negatives of the current queries:

.. math::

    \ell_i = -\log \frac{\exp(q_i \cdot k_i / \tau)}
        {\exp(q_i \cdot k_i / \tau) + \sum_{m=1}^{M} \exp(q_i \cdot u_m / \tau)}

(plus the other in-batch keys, with :func:`~mmcontrast.losses.info_nce`). After each step the
current keys are enqueued and the oldest ones dropped. Usage::

    loss = info_nce(q, k, shared_negatives=queue.negatives(), scale=1 / 0.2)
    ...  # backward, optimizer step, EMA update of the key encoder
    queue.enqueue(k)

The queue is an ``nn.Module`` whose state (keys, write position, fill count) lives in buffers, so it
is saved and restored with the model's ``state_dict`` and checkpoints. With an initialised process
group, :meth:`MemoryQueue.enqueue` gathers the keys of all ranks (without gradient) first, so every
rank's queue holds the same keys in the same order; that is why the queue goes into ``info_nce`` as
``shared_negatives`` (never gathered) rather than as per-sample ``negatives``.

Reference:
    He, Fan, Wu, Xie, Girshick. "Momentum Contrast for Unsupervised Visual Representation
    Learning", CVPR 2020. https://arxiv.org/abs/1911.05722
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mmcontrast.losses.distributed import gather_rows, rank_and_world_size
from mmcontrast.losses.similarity import check_embeddings


class MemoryQueue(nn.Module):
    """A first-in first-out queue of ``size`` key embeddings of dimension ``dim``.

    Args:
        dim: embedding dimension ``d``.
        size: number of keys kept (MoCo uses 65536).
        dtype: storage dtype of the keys (float32 by default).
        gather: gather the keys of all ranks before enqueueing when a process group of several
            ranks is initialised (the default), so that every rank holds the same queue.
    """

    keys: Tensor
    position: Tensor
    filled: Tensor

    def __init__(self, dim: int, size: int, dtype: torch.dtype = torch.float32, gather: bool = True) -> None:
        super().__init__()
        for name, value in (("dim", dim), ("size", size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"MemoryQueue: {name} must be a positive int, got {value!r}")
        self.gather = gather
        self.register_buffer("keys", torch.zeros(size, dim, dtype=dtype))
        self.register_buffer("position", torch.zeros((), dtype=torch.long))
        self.register_buffer("filled", torch.zeros((), dtype=torch.long))

    @property
    def size(self) -> int:
        """Capacity of the queue."""
        return self.keys.shape[0]

    def negatives(self) -> Tensor:
        """The stored keys, ``[min(enqueued, size), dim]``, in storage order (not oldest-first).

        The result shares storage with the queue and carries no gradient: pass it as
        ``info_nce(..., shared_negatives=queue.negatives())`` before calling :meth:`enqueue`.
        """
        return self.keys[: int(self.filled)]

    @torch.no_grad()
    def enqueue(self, keys: Tensor) -> None:
        """Append ``keys`` (``[B, dim]``, detached), overwriting the oldest entries once full.

        With ``gather`` and several ranks, the keys of all ranks are enqueued, in rank order (every
        rank must pass the same number of keys). If more than ``size`` keys arrive at once, only the
        last ``size`` are kept.
        """
        check_embeddings("MemoryQueue.enqueue", "keys", keys)
        if keys.shape[1] != self.keys.shape[1]:
            raise ValueError(
                f"MemoryQueue.enqueue: keys has shape {tuple(keys.shape)} but the queue holds "
                f"{self.keys.shape[1]}-dimensional keys"
            )
        keys = keys.detach()
        _, world_size = rank_and_world_size(self.gather)
        if world_size > 1:
            (keys,) = gather_rows("MemoryQueue.enqueue", ("keys",), (keys,), world_size)
        keys = keys[-self.size :]
        count = keys.shape[0]
        start = int(self.position)
        slots = (torch.arange(count, device=self.keys.device) + start) % self.size
        self.keys[slots] = keys.to(device=self.keys.device, dtype=self.keys.dtype)
        self.position.fill_((start + count) % self.size)
        self.filled.fill_(min(int(self.filled) + count, self.size))

    def extra_repr(self) -> str:
        return f"dim={self.keys.shape[1]}, size={self.size}, gather={self.gather}"
