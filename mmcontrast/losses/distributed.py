r"""Cross-process negatives: gather the batch from every rank, keep the local rows ("local loss").

With ``gather=True`` under an initialised ``torch.distributed`` process group of ``W > 1`` ranks,
each rank holding ``B`` rows, a loss gathers the embeddings of all ranks with
:func:`torch.distributed.nn.functional.all_gather` (which keeps the gradient) and scores its ``B``
local rows against all ``N = W B`` gathered columns, the positive of local row ``i`` being global
column ``rank * B + i``. Labels are gathered too (without gradient). This is exact and linear in
memory: the ``W`` ranks together compute each row of the full ``N x N`` problem once.

**Gradient convention.** Rank ``r`` returns :math:`\mathcal{L}_r`, the mean of its local rows'
terms, so that :math:`\frac{1}{W}\sum_r \mathcal{L}_r = \mathcal{L}`, the single-process loss on the
concatenated batch. The backward pass of ``all_gather`` sums over ranks (a reduce-scatter with
``SUM``), so the gradient reaching rank ``r``'s local inputs :math:`x_r` is
:math:`\partial(\sum_s \mathcal{L}_s)/\partial x_r = W\,\partial\mathcal{L}/\partial x_r`, and a
parameter used directly by the loss on every rank (a logit scale or bias) gets
:math:`\partial\mathcal{L}_r/\partial t`. DistributedDataParallel averages parameter gradients over
the ranks, so every parameter ends up with exactly the single-process gradient
:math:`\partial\mathcal{L}/\partial\theta` of the full batch: the encoder through
:math:`\frac{1}{W}\sum_r J_r^\top W\,\partial\mathcal{L}/\partial x_r`, the scale through
:math:`\frac{1}{W}\sum_r \partial\mathcal{L}_r/\partial t`. (If you sum instead of averaging
gradients across ranks, divide the loss by ``W``.) This is open_clip's
``ClipLoss(local_loss=True, gather_with_grad=True)``. Never gather a loss's inputs with
``accelerator.gather``: it has no gradient.

Every rank must hold the same number of rows (use ``drop_last=True``); the shapes are compared
first (one small ``all_gather``) and a mismatch raises ``ValueError`` on every rank, naming the
shapes. Without an initialised process group, or with one rank, ``gather=True`` changes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_nn
from torch import Tensor

# Shapes are exchanged as fixed-width int rows: [ndim, size_0, ..., size_{_MAX_DIMS - 1}].
_MAX_DIMS = 3


def rank_and_world_size(gather: bool) -> tuple[int, int]:
    """``(rank, world_size)`` of the default process group if ``gather`` and it is initialised, else ``(0, 1)``."""
    if gather and dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _encode_shapes(tensors: Sequence[Tensor | None]) -> list[int]:
    row = []
    for tensor in tensors:
        shape = [] if tensor is None else list(tensor.shape)
        row += [-1 if tensor is None else len(shape)] + shape + [0] * (_MAX_DIMS - len(shape))
    return row


def _all_gather_no_grad(tensor: Tensor, world_size: int) -> list[Tensor]:
    parts = [torch.empty_like(tensor) for _ in range(world_size)]
    dist.all_gather(parts, tensor.contiguous())
    return parts


def check_same_shapes(fn: str, names: Sequence[str], tensors: Sequence[Tensor | None], world_size: int) -> None:
    """Raise ``ValueError`` on every rank unless each tensor has the same shape (or is ``None``) on all ranks."""
    device = next(t for t in tensors if t is not None).device
    local = torch.tensor(_encode_shapes(tensors), dtype=torch.long, device=device)
    ranks = [part.tolist() for part in _all_gather_no_grad(local, world_size)]
    if all(row == ranks[0] for row in ranks):
        return
    width = _MAX_DIMS + 1
    for index, name in enumerate(names):
        fields = [row[index * width : (index + 1) * width] for row in ranks]
        if any(field != fields[0] for field in fields):
            shapes = ", ".join(
                f"rank {rank}: " + ("None" if field[0] < 0 else str(tuple(field[1 : 1 + field[0]])))
                for rank, field in enumerate(fields)
            )
            raise ValueError(
                f"{fn}: gather=True needs the same local batch on every rank, but {name} differs ({shapes}); "
                "use equal per-rank batch sizes (drop_last=True)"
            )


def gather_rows(
    fn: str, names: Sequence[str], tensors: Sequence[Tensor | None], world_size: int
) -> list[Tensor | None]:
    """Each tensor concatenated over the ranks along dim 0, in rank order (``None`` stays ``None``).

    Tensors that require a gradient go through :func:`torch.distributed.nn.functional.all_gather`,
    so the gradient of the gathered copy flows back to the rank that owns the rows; the others
    (labels) through :func:`torch.distributed.all_gather`. The shapes are checked first
    (:func:`check_same_shapes`).
    """
    check_same_shapes(fn, names, tensors, world_size)
    gathered: list[Tensor | None] = []
    for tensor in tensors:
        if tensor is None:
            gathered.append(None)
        elif tensor.requires_grad:
            gathered.append(torch.cat(dist_nn.all_gather(tensor)))
        else:
            gathered.append(torch.cat(_all_gather_no_grad(tensor, world_size)))
    return gathered


def all_reduce_sum(value: Tensor) -> Tensor:
    """The sum of ``value`` over all ranks, without gradient (for normalisers such as triplet counts)."""
    total = value.detach().clone()
    dist.all_reduce(total)
    return total
