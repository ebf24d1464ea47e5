"""Batch samplers: a seeded order per epoch, sharded across processes, optionally with no duplicate texts.

The order of epoch ``e`` depends only on ``(seed, e)``, so a resumed run replays exactly the batches an
uninterrupted run would have seen. With several processes each *global* batch of
``batch_size * num_replicas`` rows is cut into equal consecutive slices, one per rank: rank ``r`` sees rows
``[r * batch_size, (r + 1) * batch_size)`` of every global batch, and the last incomplete global batch is
dropped so that every rank holds the same number of rows (exact cross-process negatives need that).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator, Sequence

import torch
from torch.utils.data import Sampler


class ShuffledBatchSampler(Sampler[list[int]]):
    """Shuffled batches of row indices, reproducible from ``(seed, epoch)``.

    Args:
        num_rows: rows in the dataset.
        batch_size: rows per batch on one process.
        seed: base seed of the shuffle.
        shuffle: shuffle rows (``False`` keeps the dataset order).
        drop_last: drop the last incomplete batch (always done when ``num_replicas > 1``).
        num_replicas: number of processes.
        rank: this process.
    """

    def __init__(
        self,
        num_rows: int,
        batch_size: int,
        *,
        seed: int = 0,
        shuffle: bool = True,
        drop_last: bool = False,
        num_replicas: int = 1,
        rank: int = 0,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is outside 0..{num_replicas - 1}")
        global_size = batch_size * num_replicas
        if num_rows < global_size and (drop_last or num_replicas > 1):
            raise ValueError(
                f"the dataset has {num_rows} rows, fewer than one global batch of {global_size} "
                f"({batch_size} per process x {num_replicas} processes); use a smaller batch_size"
            )
        self.num_rows = num_rows
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle = shuffle
        self.drop_last = drop_last or num_replicas > 1
        self.num_replicas = num_replicas
        self.rank = rank
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order ``__iter__`` yields."""
        self.epoch = epoch

    def _order(self) -> list[int]:
        if not self.shuffle:
            return list(range(self.num_rows))
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return torch.randperm(self.num_rows, generator=generator).tolist()

    def global_batches(self) -> list[list[int]]:
        """Every process's rows of each step of this epoch, in order."""
        order = self._order()
        size = self.batch_size * self.num_replicas
        batches = [order[i : i + size] for i in range(0, len(order), size)]
        if batches and len(batches[-1]) < size and self.drop_last:
            batches.pop()
        return batches

    def _local(self, global_batch: list[int]) -> list[int]:
        if self.num_replicas == 1:
            return global_batch
        return global_batch[self.rank * self.batch_size : (self.rank + 1) * self.batch_size]

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.global_batches():
            yield self._local(batch)

    def __len__(self) -> int:
        size = self.batch_size * self.num_replicas
        return self.num_rows // size if self.drop_last else -(-self.num_rows // size)


class NoDuplicatesBatchSampler(ShuffledBatchSampler):
    """Like :class:`ShuffledBatchSampler`, but no text appears twice within one global batch.

    With in-batch negatives a repeated text would be its own negative. Rows are taken in the shuffled order;
    a row sharing a text with the batch being filled waits for the next batch.

    Args:
        keys: for each row, the texts (or any hashable values) that must not repeat within a batch.
        batch_size, seed, drop_last, num_replicas, rank: as in :class:`ShuffledBatchSampler`.
    """

    def __init__(
        self,
        keys: Sequence[Sequence[Hashable]],
        batch_size: int,
        *,
        seed: int = 0,
        drop_last: bool = False,
        num_replicas: int = 1,
        rank: int = 0,
    ) -> None:
        super().__init__(len(keys), batch_size, seed=seed, drop_last=drop_last, num_replicas=num_replicas, rank=rank)
        self.keys = [tuple(k) for k in keys]

    def global_batches(self) -> list[list[int]]:
        size = self.batch_size * self.num_replicas
        pending = self._order()
        batches: list[list[int]] = []
        while pending:
            batch: list[int] = []
            seen: set[Hashable] = set()
            deferred: list[int] = []
            for position, row in enumerate(pending):
                if len(batch) == size:
                    deferred.extend(pending[position:])
                    break
                if seen.isdisjoint(self.keys[row]):
                    batch.append(row)
                    seen.update(self.keys[row])
                else:
                    deferred.append(row)
            batches.append(batch)
            pending = deferred
        if self.drop_last:  # incomplete batches can only come last, once duplicates are all that remain
            batches = [batch for batch in batches if len(batch) == size]
        return batches

    def __len__(self) -> int:
        return len(self.global_batches())
