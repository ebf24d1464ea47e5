"""Batch samplers: a seeded order per epoch, sharded across processes, optionally with no duplicate texts.

The order of epoch ``e`` depends only on ``(seed, e)``, so a resumed run replays exactly the batches an
uninterrupted run would have seen. With several processes each *global* batch of
``batch_size * num_replicas`` rows is cut into equal consecutive slices, one per rank: rank ``r`` sees rows
``[r * batch_size, (r + 1) * batch_size)`` of every global batch, and the last incomplete global batch is
dropped so that every rank holds the same number of rows (exact cross-process negatives need that).

The no-duplicates sampler builds an epoch's batches once, in time linear in the rows. When repeated texts force
batches smaller than asked it warns with the numbers, and it refuses data so repetitive that a batch would hold a
single row (no in-batch negative).

For training on several datasets at once, :class:`MultiSourceBatchSampler` combines one sampler per dataset and
draws every batch from a single dataset (round robin or in proportion to their sizes), by the same rules.
"""

from __future__ import annotations

import warnings
from collections.abc import Hashable, Iterator, Sequence
from typing import Literal

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


class LengthGroupedBatchSampler(ShuffledBatchSampler):
    """Shuffled batches of rows of similar length, reproducible from ``(seed, epoch)``.

    Rows are shuffled as :class:`ShuffledBatchSampler` shuffles them, then taken in windows of ``window_batches``
    global batches; each window is sorted by length (longest first) and cut into global batches, so the rows of a
    batch (and of each process's slice of it) have similar lengths and need little padding. The batches are then
    drawn in a seeded random order, except that the longest batch of the epoch comes first (a batch too large for
    the device fails at the first step, not late in the epoch), as transformers' ``LengthGroupedSampler`` does,
    and an incomplete last batch stays last (or is dropped with ``drop_last``).

    Args:
        lengths: a length per row (e.g. its token count).
        batch_size, seed, drop_last, num_replicas, rank: as :class:`ShuffledBatchSampler`.
        window_batches: global batches per sorted window (transformers uses 50).
    """

    def __init__(
        self,
        lengths: Sequence[int],
        batch_size: int,
        *,
        seed: int = 0,
        drop_last: bool = False,
        num_replicas: int = 1,
        rank: int = 0,
        window_batches: int = 50,
    ) -> None:
        super().__init__(len(lengths), batch_size, seed=seed, drop_last=drop_last, num_replicas=num_replicas, rank=rank)
        if window_batches < 1:
            raise ValueError(f"window_batches must be >= 1, got {window_batches}")
        self.lengths = list(lengths)
        self.window_batches = window_batches

    def global_batches(self) -> list[list[int]]:
        order = self._order()
        size = self.batch_size * self.num_replicas
        window = size * self.window_batches
        batches = []
        for start in range(0, len(order), window):
            rows = sorted(order[start : start + window], key=lambda row: -self.lengths[row])  # stable: ties keep order
            batches += [rows[i : i + size] for i in range(0, len(rows), size)]
        partial = [batches.pop()] if batches and len(batches[-1]) < size else []
        if not batches:
            return [] if self.drop_last else partial
        longest = max(range(len(batches)), key=lambda i: self.lengths[batches[i][0]])
        rest = [batch for i, batch in enumerate(batches) if i != longest]
        generator = torch.Generator().manual_seed(self.seed + self.epoch + 1)  # not the row shuffle's stream
        shuffled = [rest[i] for i in torch.randperm(len(rest), generator=generator).tolist()]
        return [batches[longest], *shuffled, *([] if self.drop_last else partial)]  # an incomplete batch last


class NoDuplicatesBatchSampler(ShuffledBatchSampler):
    """Like :class:`ShuffledBatchSampler`, but no key (text) appears twice within one global batch.

    With in-batch negatives a repeated text would be its own negative. An epoch's batches are built once, in one
    pass over the rows (plus two sorts done by torch):

    1. a seeded order of the rows in which the rows sharing a key are spread evenly over the epoch: the ``j``-th of
       the ``c`` rows whose most shared key is ``k`` goes to ``(j + offset_k) / c``, so rows with unique keys are
       simply shuffled;
    2. in that order each row joins the earliest batch that has room and holds none of its keys, at or after the
       last batch holding one of its keys (found in amortised constant time);
    3. without ``drop_last``, a batch that duplicates left with a single row takes a row from a batch of three or
       more.

    Batches hold ``batch_size * num_replicas`` rows unless duplicates forbid it: when a key is held by more rows
    than the epoch has batches, there must be a batch per such row, and (without ``drop_last``) the rows are
    spread evenly over those batches. That is warned about once per epoch, with the numbers. Data in which more
    than half of the rows share one key is refused: some batch would hold a single row, and so no negative.

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
        ids: dict[Hashable, int] = {}
        self._rows = [tuple(ids.setdefault(key, len(ids)) for key in dict.fromkeys(row)) for row in keys]
        self._key_names = list(ids)  # key id -> key
        self._counts = [0] * len(ids)  # key id -> rows holding it
        for row in self._rows:
            for key in row:
                self._counts[key] += 1
        most_shared = [max(row, key=self._counts.__getitem__) if row else len(ids) for row in self._rows]
        self._spread_key = torch.tensor(most_shared, dtype=torch.long)
        self._spread_count = torch.tensor([*self._counts, 1], dtype=torch.float64)[self._spread_key]
        self._cache: tuple[int, list[list[int]]] | None = None
        if ids and self.batch_size * self.num_replicas > 1:
            key, count = self._most_shared()
            if count > self.num_rows - count:
                raise ValueError(
                    f"{count} of {self.num_rows} rows share the text {_shown(key)}: no two of them may be in one "
                    f"batch, and the other {self.num_rows - count} rows are too few to give each a batch partner, "
                    f"so {_SINGLE_ROW}"
                )

    def global_batches(self) -> list[list[int]]:
        """Every process's rows of each step of this epoch, in order (built once per epoch)."""
        if self._cache is None or self._cache[0] != self.epoch:
            self._cache = (self.epoch, self._build())
        return self._cache[1]

    def __len__(self) -> int:
        return len(self.global_batches())

    def _most_shared(self) -> tuple[Hashable, int]:
        """The key held by the most rows, and how many rows hold it."""
        key = max(range(len(self._counts)), key=self._counts.__getitem__)
        return self._key_names[key], self._counts[key]

    def _spread_order(self) -> list[int]:
        """The rows in a seeded order of this epoch, the rows sharing a key spread evenly over it."""
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        shuffled = torch.randperm(self.num_rows, generator=generator)
        offsets = torch.rand(len(self._key_names) + 1, generator=generator, dtype=torch.float64)
        # j: how many rows of the same spread key come before each row in the shuffled order
        grouped = shuffled[torch.argsort(self._spread_key[shuffled], stable=True)]
        keys = self._spread_key[grouped]
        positions = torch.arange(self.num_rows)
        starts = torch.ones(self.num_rows, dtype=torch.bool)
        starts[1:] = keys[1:] != keys[:-1]
        occurrence = torch.empty(self.num_rows, dtype=torch.float64)
        occurrence[grouped] = (positions - torch.cummax(positions * starts, dim=0).values).double()
        place = (occurrence + offsets[self._spread_key]) / self._spread_count
        return torch.argsort(place, stable=True).tolist()

    def _build(self) -> list[list[int]]:
        size = self.batch_size * self.num_replicas
        needed = -(-self.num_rows // size)
        most = max(self._counts, default=1)
        capacity = size if self.drop_last or most <= needed else -(-self.num_rows // most)
        batches: list[list[int]] = []
        after = [0] * len(self._counts)  # key id -> the first batch after every batch holding it
        room: list[int] = []  # room[b] == b while batch b has room, else a later batch (union-find, path halving)
        for row in self._spread_order():
            keys = self._rows[row]
            batch = 0
            for key in keys:
                batch = max(batch, after[key])
            while batch < len(room) and room[batch] != batch:
                if room[batch] < len(room):
                    room[batch] = room[room[batch]]
                batch = room[batch]
            if batch == len(batches):
                batches.append([])
                room.append(batch)
            batches[batch].append(row)
            for key in keys:
                after[key] = batch + 1
            if len(batches[batch]) == capacity:
                room[batch] = batch + 1
        if not self.drop_last and size > 1 and len(batches) > needed:
            self._pair_single_rows(batches)
        self._report_short(batches, size, needed)
        return [batch for batch in batches if len(batch) == size] if self.drop_last else batches

    def _pair_single_rows(self, batches: list[list[int]]) -> None:
        """Give each batch of a single row (forced by duplicates) a second row, taken from the last batch of three
        or more that holds a row sharing none of its keys."""
        for lone in (batch for batch in batches if len(batch) == 1):
            keys = set(self._rows[lone[0]])
            for donor in reversed(batches):
                if len(donor) < 3:
                    continue
                row = next((row for row in reversed(donor) if keys.isdisjoint(self._rows[row])), None)
                if row is not None:
                    donor.remove(row)
                    lone.append(row)
                    break
            else:
                key, count = self._most_shared()
                raise ValueError(
                    f"row {lone[0]} shares a text with every row that could join its batch ({count} of "
                    f"{self.num_rows} rows share the text {_shown(key)}), so {_SINGLE_ROW}"
                )

    def _report_short(self, batches: list[list[int]], size: int, needed: int) -> None:
        """Warn when duplicates left batches short of ``size`` rows (more batches than ``needed``), or, with
        ``drop_last``, cost full batches; refuse when no full batch is left to train on."""
        full = sum(len(batch) == size for batch in batches)
        if (len(batches) <= needed) if not self.drop_last else (full >= self.num_rows // size):
            return
        short = [len(batch) for batch in batches if len(batch) < size]
        key, count = self._most_shared()
        asked = f"{size} rows" + (
            f" ({self.batch_size} per process x {self.num_replicas} processes)" if self.num_replicas > 1 else ""
        )
        what = (
            f"{len(short)} of {len(batches)} batches hold fewer than the requested {asked} (the smallest "
            f"{min(short)}), since no text may repeat within a batch and {count} rows share the text {_shown(key)}"
        )
        if self.drop_last and full == 0:
            raise ValueError(
                f"{what}; with drop_last no batch is left to train on. Deduplicate the data, use a smaller "
                "batch_size, or set data.no_duplicates=false."
            )
        dropped = f"; drop_last leaves out their {sum(short)} rows" if self.drop_last else ""
        warnings.warn(
            f"epoch {self.epoch}: {what}{dropped}. Deduplicate the data or use a smaller batch_size for full batches.",
            stacklevel=5,
        )


_SINGLE_ROW = (
    "some batch would hold a single row (no in-batch negative: a loss of 0 that teaches nothing). Deduplicate the "
    "data, set data.no_duplicates=false, or use a loss without in-batch negatives."
)


def _shown(key: Hashable, limit: int = 60) -> str:
    text = repr(key)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class GroupedBatchSampler(ShuffledBatchSampler):
    """Batches whose rows all share one group (a speaker, a sequence), shuffled, reproducible from ``(seed, epoch)``.

    CPC draws negatives from the same speaker (CPC_audio's ``samespeaker`` sampling), which needs batches made of
    one speaker's windows. Each epoch the rows of every group are shuffled and cut into global batches of
    ``batch_size * num_replicas`` rows; the batches of all groups are then shuffled together. A group's last
    incomplete batch is kept with one process (as CPC_audio does) and dropped with ``drop_last`` or several
    processes, which need equal batches.

    Args:
        groups: the group of each row.
        batch_size, seed, drop_last, num_replicas, rank: as in :class:`ShuffledBatchSampler`.
    """

    def __init__(
        self,
        groups: Sequence[Hashable],
        batch_size: int,
        *,
        seed: int = 0,
        drop_last: bool = False,
        num_replicas: int = 1,
        rank: int = 0,
    ) -> None:
        super().__init__(len(groups), batch_size, seed=seed, drop_last=drop_last, num_replicas=num_replicas, rank=rank)
        members: dict[Hashable, list[int]] = {}
        for row, group in enumerate(groups):
            members.setdefault(group, []).append(row)
        self.members = list(members.values())
        size = batch_size * num_replicas
        if self.drop_last and not any(len(rows) >= size for rows in self.members):
            largest = max(len(rows) for rows in self.members)
            raise ValueError(
                f"no group has {size} rows for one global batch ({batch_size} per process x {num_replicas} "
                f"processes; the largest group has {largest}): use a smaller batch_size"
            )

    def global_batches(self) -> list[list[int]]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        size = self.batch_size * self.num_replicas
        batches = []
        for rows in self.members:
            order = [rows[i] for i in torch.randperm(len(rows), generator=generator).tolist()]
            batches += [order[i : i + size] for i in range(0, len(order), size)]
        if self.drop_last:
            batches = [batch for batch in batches if len(batch) == size]
        return [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]

    def __len__(self) -> int:
        size = self.batch_size * self.num_replicas
        if self.drop_last:
            return sum(len(rows) // size for rows in self.members)
        return sum(-(-len(rows) // size) for rows in self.members)


MultiSourceStrategy = Literal["round_robin", "proportional"]


class MultiSourceBatchSampler(Sampler[list[int]]):
    """Batches over several datasets concatenated into one, each batch drawn from a single source.

    Every source has its own batch sampler over its own rows (``0 .. n_i - 1``, any sampler of this module, with
    its own batch size and no-duplicates rule); a batch of source ``i`` is shifted by ``offsets[i]`` into the
    concatenated dataset. Keeping each batch in one source keeps in-batch negatives within one dataset and lets
    each source have its own columns and loss (sentence-transformers' multi-dataset training). Which source gives
    each step is decided as sentence-transformers does:

    - ``round_robin``: the sources in turn (0, 1, ..., 0, 1, ...), stopping at the first source that has no batch
      left, so every source gives about as many batches as the smallest one;
    - ``proportional``: every batch of every source once per epoch, in an order shuffled from ``(seed, epoch)``,
      so each step's source is drawn in proportion to the source's number of batches.

    The order depends only on ``(seed, epoch)`` and on the sources' numbers of batches, which every process
    shares, so all processes take the same source at each step; each source's sampler gives this process its
    shard of the source's global batch (build them with the same ``num_replicas`` and this ``rank``).

    Args:
        samplers: one batch sampler per source, each over that source's rows.
        offsets: the index of each source's first row in the concatenated dataset.
        strategy: ``round_robin`` or ``proportional``.
        seed: base seed of the proportional order.
    """

    def __init__(
        self,
        samplers: Sequence[ShuffledBatchSampler],
        offsets: Sequence[int],
        strategy: MultiSourceStrategy = "round_robin",
        seed: int = 0,
    ) -> None:
        if not samplers:
            raise ValueError("MultiSourceBatchSampler needs at least one source sampler")
        if len(offsets) != len(samplers):
            raise ValueError(f"{len(offsets)} offsets for {len(samplers)} samplers; give one offset per source")
        if strategy not in ("round_robin", "proportional"):
            raise ValueError(f"strategy must be 'round_robin' or 'proportional', got {strategy!r}")
        self.samplers = list(samplers)
        self.offsets = list(offsets)
        self.strategy = strategy
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose batches ``__iter__`` yields (every source's sampler too)."""
        self.epoch = epoch
        for sampler in self.samplers:
            sampler.set_epoch(epoch)

    def source_order(self) -> list[int]:
        """The source of each step of this epoch."""
        counts = [len(sampler) for sampler in self.samplers]
        if self.strategy == "round_robin":
            rounds = min(counts)
            first_empty = counts.index(rounds)
            return list(range(len(counts))) * rounds + list(range(first_empty))
        order = torch.tensor([source for source, count in enumerate(counts) for _ in range(count)], dtype=torch.long)
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return order[torch.randperm(len(order), generator=generator)].tolist()

    def __iter__(self) -> Iterator[list[int]]:
        batches = [iter(sampler) for sampler in self.samplers]
        for source in self.source_order():
            offset = self.offsets[source]
            yield [offset + row for row in next(batches[source])]

    def __len__(self) -> int:
        counts = [len(sampler) for sampler in self.samplers]
        if self.strategy == "round_robin":
            return len(counts) * min(counts) + counts.index(min(counts))
        return sum(counts)
