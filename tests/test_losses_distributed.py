"""Cross-process negatives (``gather=True``) on 2 and 3 CPU processes (gloo) against one process.

One spawned job per world size runs every check. Each rank builds the same global batch, keeps its
slice and compares, for every loss and option, what it computes with ``gather=True`` with the
single-process loss of the concatenated batch, under the DDP convention
(``mmcontrast.losses.distributed``):

* the mean over ranks of the per-rank losses equals the single-process loss;
* the gradient reaching each rank's local inputs (after ``all_gather``'s backward, which sums over
  ranks) is ``world_size`` times the single-process gradient of those rows, so that DDP's average
  over ranks of the encoder gradients is the single-process gradient;
* the average over ranks of the gradient of a replicated scale or bias is the single-process one.

A real ``DistributedDataParallel`` model checks the last two end to end.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from datetime import timedelta

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import Tensor, nn

from mmcontrast.losses import (
    LogitScale,
    MemoryQueue,
    info_nce,
    nt_xent,
    sigmoid_loss,
    triplet_margin_loss,
)

TOL = {"rtol": 1e-6, "atol": 1e-6}
LOCAL_BATCH, DIM, NUM_HARD = 4, 8, 2


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def global_tensor(*shape: int, seed: int) -> Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def mean_over_ranks(value: Tensor) -> Tensor:
    total = value.detach().clone()
    dist.all_reduce(total)
    return total / dist.get_world_size()


def check_against_single_process(
    loss_fn: Callable[..., Tensor],
    global_inputs: list[Tensor],
    params: list[Tensor],
    what: str,
) -> None:
    """``loss_fn(*inputs, gather=...)`` on local slices vs on the concatenated batch.

    ``global_inputs`` are ``[W * B, ...]`` tensors (rows in rank order); each rank passes rows
    ``rank * B .. (rank + 1) * B``. ``params`` are replicated leaves (scale, bias) used by ``loss_fn``.
    """
    rank, world_size = dist.get_rank(), dist.get_world_size()
    full = [x.clone().requires_grad_() for x in global_inputs]
    expected = loss_fn(*full, gather=False)
    expected_grads = torch.autograd.grad(expected, full + params)
    local = [x[rank * LOCAL_BATCH : (rank + 1) * LOCAL_BATCH].clone().requires_grad_() for x in global_inputs]
    actual = loss_fn(*local, gather=True)
    actual_grads = torch.autograd.grad(actual, local + params)
    torch.testing.assert_close(mean_over_ranks(actual), expected, **TOL, msg=lambda m: f"{what}: loss\n{m}")
    for index, (got, want) in enumerate(zip(actual_grads[: len(local)], expected_grads[: len(local)], strict=True)):
        rows = want[rank * LOCAL_BATCH : (rank + 1) * LOCAL_BATCH]
        torch.testing.assert_close(got, world_size * rows, **TOL, msg=lambda m, i=index: f"{what}: input {i}\n{m}")
    for got, want in zip(actual_grads[len(local) :], expected_grads[len(local) :], strict=True):
        torch.testing.assert_close(mean_over_ranks(got), want, **TOL, msg=lambda m: f"{what}: parameter\n{m}")


def check_info_nce(world_size: int) -> None:
    total = world_size * LOCAL_BATCH
    anchors, positives = global_tensor(total, DIM, seed=0), global_tensor(total, DIM, seed=1)
    hard = global_tensor(total, NUM_HARD, DIM, seed=2)
    labels = torch.arange(total) % 3  # duplicates within and across ranks
    logit_scale = LogitScale(init=10.0)
    params = [logit_scale.log_scale]
    for symmetric in (False, True):
        for with_hard in (False, True):
            for with_labels in (False, True):
                for chunk_size in (None, 3):
                    options = {"symmetric": symmetric, "chunk_size": chunk_size}
                    what = f"info_nce {options} hard={with_hard} labels={with_labels}"

                    def loss_fn(*inputs: Tensor, gather: bool, options=options, with_labels=with_labels) -> Tensor:
                        a, p, *rest = inputs
                        rows = slice(None) if not gather else slice(*row_range(a))
                        return info_nce(
                            a,
                            p,
                            rest[0] if rest else None,
                            scale=logit_scale(),
                            labels=labels[rows] if with_labels else None,
                            gather=gather,
                            **options,
                        )

                    inputs = [anchors, positives] + ([hard] if with_hard else [])
                    check_against_single_process(loss_fn, inputs, params, what)
    # A dot-product loss with a fixed scale, and a memory queue shared by every rank (not gathered).
    queue = global_tensor(5, DIM, seed=3)
    for chunk_size in (None, 2):

        def queue_loss(a: Tensor, p: Tensor, gather: bool, chunk_size=chunk_size) -> Tensor:
            options = {"shared_negatives": queue, "normalize": False, "scale": 0.5, "chunk_size": chunk_size}
            return info_nce(a, p, gather=gather, symmetric=True, **options)

        check_against_single_process(queue_loss, [anchors, positives], [], f"info_nce queue chunk={chunk_size}")


def row_range(local: Tensor) -> tuple[int, int]:
    rank = dist.get_rank()
    return rank * local.shape[0], (rank + 1) * local.shape[0]


def check_nt_xent(world_size: int) -> None:
    total = world_size * LOCAL_BATCH
    z1, z2 = global_tensor(total, DIM, seed=4), global_tensor(total, DIM, seed=5)
    labels = torch.tensor([0, 1, 2, 0, 1, 3, 2, 3, 4, 4, 0, 1])[:total]
    temperature = torch.tensor(0.3, requires_grad=True)
    for with_labels in (False, True):
        for chunk_size in (None, 3):
            for normalize in (True, False):

                def loss_fn(a: Tensor, b: Tensor, gather: bool, options=(with_labels, chunk_size, normalize)) -> Tensor:
                    with_labels, chunk_size, normalize = options
                    rows = slice(None) if not gather else slice(*row_range(a))
                    return nt_xent(
                        a,
                        b,
                        temperature=temperature,
                        normalize=normalize,
                        labels=labels[rows] if with_labels else None,
                        gather=gather,
                        chunk_size=chunk_size,
                    )

                what = f"nt_xent labels={with_labels} chunk={chunk_size} normalize={normalize}"
                # Smaller raw embeddings for the dot product keep its logits, like the cosine ones, O(1 / temperature).
                inputs = [z1, z2] if normalize else [0.4 * z1, 0.4 * z2]
                check_against_single_process(loss_fn, inputs, [temperature], what)


def check_triplet(world_size: int) -> None:
    total = world_size * LOCAL_BATCH
    embeddings = global_tensor(total, DIM, seed=6)
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 3, 3, 0, 4, 4, 1])[:total]
    for mining in ("batch_all", "batch_hard", "semi_hard"):
        for distance, margin in (("euclidean", 5.0), ("cosine", 0.5)):

            def loss_fn(x: Tensor, gather: bool, options=(mining, distance, margin)) -> Tensor:
                mining, distance, margin = options
                rows = slice(None) if not gather else slice(*row_range(x))
                return triplet_margin_loss(
                    x, labels[rows], margin=margin, mining=mining, distance=distance, gather=gather
                )

            check_against_single_process(loss_fn, [embeddings], [], f"triplet {mining} {distance}")


def check_sigmoid(world_size: int) -> None:
    total = world_size * LOCAL_BATCH
    a, b = global_tensor(total, DIM, seed=7), global_tensor(total, DIM, seed=8)
    log_scale, bias = torch.tensor(1.5, requires_grad=True), torch.tensor(-2.0, requires_grad=True)
    for chunk_size in (None, 3):

        def loss_fn(x: Tensor, y: Tensor, gather: bool, chunk_size=chunk_size) -> Tensor:
            return sigmoid_loss(x, y, scale=log_scale.exp(), bias=bias, gather=gather, chunk_size=chunk_size)

        check_against_single_process(loss_fn, [a, b], [log_scale, bias], f"sigmoid chunk={chunk_size}")


def check_ddp(world_size: int) -> None:
    """A DDP-wrapped encoder + logit scale gets exactly the single-process gradients of the full batch."""
    rank = dist.get_rank()
    total = world_size * LOCAL_BATCH
    images, texts = global_tensor(total, 6, seed=9), global_tensor(total, 5, seed=10)

    class Model(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.image, self.text = nn.Linear(6, DIM), nn.Linear(5, DIM)
            self.logit_scale = LogitScale(init=10.0)

        def forward(self, x: Tensor, y: Tensor, gather: bool) -> Tensor:
            return info_nce(
                self.image(x), self.text(y), scale=self.logit_scale(), symmetric=True, gather=gather, chunk_size=3
            )

    reference = Model()
    reference(images, texts, gather=False).backward()
    model = nn.parallel.DistributedDataParallel(Model())
    rows = slice(rank * LOCAL_BATCH, (rank + 1) * LOCAL_BATCH)
    model(images[rows], texts[rows], gather=True).backward()
    for (name, got), want in zip(model.module.named_parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(got.grad, want.grad, **TOL, msg=lambda m, name=name: f"DDP {name}\n{m}")


def check_unequal_batches(world_size: int) -> None:
    rank = dist.get_rank()
    size = LOCAL_BATCH + rank
    sizes = ", ".join(f"rank {r}: ({LOCAL_BATCH + r}, {DIM})" for r in range(world_size))
    message = f"gather=True needs the same local batch on every rank, but anchors differs ({sizes})"
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        info_nce(torch.randn(size, DIM), torch.randn(size, DIM), symmetric=True, gather=True)
    with pytest.raises(ValueError, match="triplet_margin_loss: gather=True needs the same local batch"):
        triplet_margin_loss(torch.randn(size, DIM), torch.zeros(size, dtype=torch.long), gather=True)


def check_queue(world_size: int) -> None:
    """Every rank enqueues different keys; all queues end up identical, in rank order."""
    rank = dist.get_rank()
    queue = MemoryQueue(dim=3, size=2 * world_size + 1)
    for step in range(3):
        keys = torch.full((2, 3), float(100 * step + 10 * rank)) + torch.arange(2.0)[:, None]
        queue.enqueue(keys)
    states = [torch.empty_like(queue.keys) for _ in range(world_size)]
    dist.all_gather(states, queue.keys)
    for state in states[1:]:
        assert torch.equal(state, states[0])
    # The last 2 * world_size + 1 keys, each step's keys in rank order.
    history = [100 * step + 10 * r + i for step in range(3) for r in range(world_size) for i in range(2)]
    assert sorted(queue.negatives()[:, 0].tolist()) == sorted(history[-queue.size :])
    assert int(queue.filled) == queue.size


def worker(rank: int, world_size: int, port: int) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size, timeout=timedelta(seconds=60)
    )
    try:
        for check in (check_info_nce, check_nt_xent, check_triplet, check_sigmoid, check_queue, check_unequal_batches):
            check(world_size)
        if world_size == 2:  # building a DDP model costs ~2 s; one world size is enough for the end-to-end check
            check_ddp(world_size)
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("world_size", [2, 3])
def test_gather_matches_single_process(world_size):
    mp.spawn(worker, args=(world_size, free_port()), nprocs=world_size, join=True)


def test_gather_is_a_no_op_without_process_group():
    anchors, positives = global_tensor(6, DIM, seed=0), global_tensor(6, DIM, seed=1)
    torch.testing.assert_close(
        info_nce(anchors, positives, symmetric=True, gather=True), info_nce(anchors, positives, symmetric=True)
    )
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    torch.testing.assert_close(triplet_margin_loss(anchors, labels, gather=True), triplet_margin_loss(anchors, labels))
