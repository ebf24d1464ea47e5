"""Streamed training data: rows read from shards as training needs them, never indexed in full.

A stream is a Hugging Face ``datasets`` ``IterableDataset`` (``load_dataset(..., streaming=True)``, opened by
:func:`open_stream`) over a hub dataset or local shards: parquet, json / jsonl, csv / tsv, and webdataset-style tar
shards whose members ``KEY.EXT`` form one sample per key (``0001.jpg`` + ``0001.txt``, as open_clip's training
data is kept).

:class:`StreamedBatches` reads one process's part of it in each DataLoader worker:

* the readers (processes x workers) share the shards: whole shards each when the shards divide evenly among them
  (else each worker takes whole shards and the processes split their rows, ``split_dataset_by_node``), so every
  row is read once per epoch; each reader goes through its shards in an order drawn from ``(seed, epoch)``;
* rows are read in blocks of up to ``shuffle_buffer`` rows of one shard (one ``datasets`` batch), each block
  permuted from ``(seed, epoch, block)``. Unlike a rolling shuffle buffer (whose content ``datasets`` cannot
  checkpoint), a block can be read again from its start, which makes resume exact;
* each row goes through the recipe's ``decode``; a row it rejects with :class:`BadSample` (an unreadable image, a
  missing caption) is skipped, counted in the batch that follows it, and the first few are reported;
* with ``duplicate_keys`` (the in-batch-negative rule of Sentence-BERT), a row sharing a key with a row already in
  the batch waits for a later batch (at most ``batch_size`` rows wait: beyond that a duplicate is let in);
* the stream cycles: when a reader's share of an epoch ends, it goes on with its next epoch, so a run of any
  number of steps never runs dry.

The position (epoch, block, where the block starts: the shard and that shard's own ``state_dict``, rows used of
the block, waiting rows) is the dataset's ``state_dict``. torchdata's ``StatefulDataLoader`` snapshots it in each
worker with every batch it yields, and a checkpoint stores the loader's state, so a resumed run reads on exactly
where the interrupted one stopped, worker by worker.
"""

from __future__ import annotations

import copy
import glob
import hashlib
import re
import sys
import tarfile
from collections.abc import Callable, Hashable, Iterator, Sequence
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch
from datasets.distributed import split_dataset_by_node

STREAM_BUILDERS = {
    ".parquet": "parquet",
    ".tar": "webdataset",
    ".jsonl": "json",
    ".json": "json",
    ".csv": "csv",
    ".tsv": "csv",
}
TEXT_MEMBERS = ("txt", "text", "caption")  # tar members read as text (a sample's caption)
BAD_IN_A_ROW = 1000  # that many rejected rows in a row: the data or the columns are wrong, not a few samples
REPORTED_PER_WORKER = 5
_TAR_KEY = re.compile(r"^((?:.*/|)[^.]+)[.]([^/]*)$")  # webdataset's sample key: the path up to the first dot


class BadSample(ValueError):
    """A streamed row that cannot be trained on (an unreadable image, a missing text): skipped and counted."""


def shard_files(source: str) -> list[Path] | None:
    """The local shards ``source`` names (a file, a folder of shards or a glob pattern), sorted; None for a hub
    name. A local source with no readable shard, or with shards of several kinds, is an error."""
    path = Path(source)
    if any(char in source for char in "*?["):
        files = sorted(Path(p) for p in glob.glob(source) if Path(p).is_file())
    elif path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in STREAM_BUILDERS)
    elif path.is_file():
        files = [path]
    elif path.suffix.lower() in STREAM_BUILDERS or source.startswith((".", "/", "~")):
        raise FileNotFoundError(f"'{source}' not found: give a shard file, a folder of shards or a glob pattern")
    else:
        return None
    suffixes = {p.suffix.lower() for p in files}
    if not files:
        raise FileNotFoundError(f"'{source}' holds no shard ({', '.join(STREAM_BUILDERS)} files)")
    if len(suffixes) > 1 or not suffixes <= set(STREAM_BUILDERS):
        raise ValueError(
            f"'{source}' holds shards of kinds {sorted(suffixes)}: a stream reads one kind of "
            f"{', '.join(STREAM_BUILDERS)} files (tar shards must not be compressed)"
        )
    return files


def count_rows(files: Sequence[Path]) -> int | None:
    """Rows of local shards when they can be counted without decoding them (parquet metadata, tar member names,
    jsonl lines); None for csv and json (a run on them needs ``train.max_steps``)."""
    suffix = files[0].suffix.lower()
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        return sum(pq.ParquetFile(file).metadata.num_rows for file in files)
    if suffix == ".tar":
        return sum(_tar_samples(file) for file in files)
    if suffix == ".jsonl":
        return sum(_jsonl_records(file) for file in files)
    return None


def _jsonl_records(file: Path) -> int:
    with file.open("rb") as lines:
        return sum(1 for line in lines if line.strip())


def _tar_members(file: Path) -> Iterator[tuple[str, str]]:
    """(sample key, field) of each file member of a webdataset tar shard, in the archive's order."""
    with tarfile.open(file) as archive:
        for member in archive:
            match = _TAR_KEY.match(member.name) if member.isfile() else None
            if match:
                yield match.group(1), match.group(2)


def _tar_samples(file: Path) -> int:
    """Samples of a tar shard: runs of members sharing a key."""
    count, last = 0, None
    for key, _ in _tar_members(file):
        if key != last:
            count, last = count + 1, key
    return count


def tar_features(shard: Path, samples: int = 200) -> datasets.Features:
    """The columns of webdataset tar shards, from the member names of the first ``samples`` samples of ``shard``.

    ``datasets`` infers them from the first 5 samples and refuses shards where those differ (a sample missing its
    caption); here the members of many samples are pooled, each a column: images, audio and video as their bytes,
    ``txt`` / ``text`` / ``caption`` as text. A sample missing a member then has None there (a bad sample).
    """
    from datasets.packaged_modules.webdataset import webdataset as builder

    fields: dict[str, None] = {}
    keys: set[str] = set()
    for key, field in _tar_members(shard):
        keys.add(key)
        if len(keys) > samples:
            break
        fields[field] = None
    features = {}
    for field in fields:
        extension = field.rsplit(".", 1)[-1].lower()
        if extension in (*builder.IMAGE_EXTENSIONS, *builder.AUDIO_EXTENSIONS, *builder.VIDEO_EXTENSIONS):
            features[field] = datasets.Value("binary")  # the member's bytes, as they are
        elif extension in TEXT_MEMBERS:
            features[field] = datasets.Value("string")
        else:
            raise ValueError(
                f"{shard}: its first samples do not all have the same members, and the columns can then be named for "
                f"image, audio, video and {'/'.join(TEXT_MEMBERS)} members only, not '{field}': complete or remove "
                "the first damaged samples"
            )
    return datasets.Features({**features, "__key__": datasets.Value("string"), "__url__": datasets.Value("string")})


def _undecoded() -> dict[str, datasets.Value]:
    """The feature of a media file passed through undecoded: its bytes and its path."""
    return {"bytes": datasets.Value("binary"), "path": datasets.Value("string")}


def open_stream(
    source: str, *, split: str = "train", subset: str | None = None
) -> tuple[datasets.IterableDataset, int | None]:
    """A streamed dataset (a hub name, or local shards: :func:`shard_files`), and its rows when they can be counted.

    Image, audio and video columns come as plain ``{"bytes", "path"}`` records: the recipe decodes them, so that a
    damaged file is one skipped sample and not a stopped run (and ``datasets``' audio and video features, which
    need torchcodec even to pass bytes through, are not used).
    """
    files = shard_files(source)
    if files is None:
        stream = datasets.load_dataset(source, name=subset, split=split, streaming=True)
        num_rows = None
    else:
        builder = STREAM_BUILDERS[files[0].suffix.lower()]
        options = {"delimiter": "\t"} if files[0].suffix.lower() == ".tsv" else {}
        data_files = [str(f) for f in files]
        try:
            stream = datasets.load_dataset(builder, data_files=data_files, split="train", streaming=True, **options)
        except ValueError as error:  # datasets infers tar columns from the first 5 samples, which must all agree
            if builder != "webdataset" or "WebDataset format" not in str(error):
                raise
            features = tar_features(files[0])
            stream = datasets.load_dataset(
                builder, data_files=data_files, split="train", streaming=True, features=features
            )
        num_rows = count_rows(files)
    for name, feature in (stream.features or {}).items():
        if isinstance(feature, (datasets.Image, datasets.Audio, datasets.Video)):
            stream = stream.cast_column(name, _undecoded())
    return stream, num_rows


def reader_shards(num_shards: int, *, num_workers: int, rank: int, num_processes: int) -> tuple[list[list[int]], bool]:
    """The shards each DataLoader worker of this process reads, and whether the processes split their rows.

    With ``processes x workers`` readers, reader ``rank * workers + worker`` takes every ``readers``-th shard when
    the shards divide evenly among the readers; otherwise each worker takes every ``workers``-th shard and the
    processes split those shards' rows (each reads one row in ``num_processes``). Either way every row has one
    reader."""
    workers = max(num_workers, 1)
    if num_shards < workers:
        raise ValueError(
            f"train.num_workers is {num_workers}, but the stream has {num_shards} shard(s), and a DataLoader worker "
            f"reads whole shards: lower train.num_workers to at most {num_shards}, or split the data into more shards"
        )
    readers = workers * num_processes
    if num_shards % readers == 0:
        return [list(range(rank * workers + worker, num_shards, readers)) for worker in range(workers)], False
    return [list(range(worker, num_shards, workers)) for worker in range(workers)], num_processes > 1


Decode = Callable[[dict[str, Any]], dict[str, Any] | None]


class StreamedBatches(torch.utils.data.IterableDataset):
    """Batches of decoded rows from one process's stream, with an exact position (see the module docstring).

    Each item is ``{"rows": [...], "skipped": bad rows passed over since the worker's previous batch, "epoch":
    the worker's epoch}``. Iterate it with as many DataLoader workers as ``num_workers`` says (0: in the process).

    Args:
        stream: the whole stream (:func:`open_stream`).
        decode: raw row -> the row the method's ``collate`` takes; raises :class:`BadSample` for a row to skip,
            returns None for a row left out on purpose (not counted). Its ``set_epoch(epoch)``, if any, is called
            in the worker as the worker's stream enters an epoch.
        batch_size: rows per batch.
        seed: seed of the shard order and of the block permutations.
        shuffle_buffer: rows per shuffle block.
        duplicate_keys: row -> its keys; no key twice in one batch (rows wait for a later batch).
        num_rows: rows of the whole stream (all processes), when known: the engine's epoch length.
        num_workers: DataLoader workers that will read it (each reads its own shards: :func:`worker_parts`).
        rank: this process's index.
        num_processes: processes of the run.
        source: what the stream is, for messages (``data.train``).
    """

    def __init__(
        self,
        stream: datasets.IterableDataset,
        decode: Decode,
        batch_size: int,
        *,
        seed: int = 0,
        shuffle_buffer: int = 1000,
        duplicate_keys: Callable[[dict[str, Any]], Sequence[Hashable]] | None = None,
        num_rows: int | None = None,
        num_workers: int = 0,
        rank: int = 0,
        num_processes: int = 1,
        source: str = "data.train",
    ) -> None:
        self.stream, self.rank, self.num_processes = stream, rank, num_processes
        self.shards, self.split_rows = reader_shards(
            stream.num_shards, num_workers=num_workers, rank=rank, num_processes=num_processes
        )
        self.decode, self.batch_size, self.num_workers = decode, batch_size, num_workers
        self.seed, self.shuffle_buffer, self.duplicate_keys = seed, shuffle_buffer, duplicate_keys
        self.num_rows, self.source = num_rows, source
        self._start: dict[str, Any] | None = None
        self._position = _fresh_position()

    def state_dict(self) -> dict[str, Any]:
        """The position after the last batch yielded (JSON-plain)."""
        return copy.deepcopy(self._position)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a position :meth:`state_dict` gave."""
        self._start = copy.deepcopy(state)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        position = self._start or _fresh_position()
        self._start, self._position = None, position
        rows = self._raw_rows(position)
        waiting, reported, bad_in_a_row = position["waiting"], 0, 0
        while True:
            batch: list[dict[str, Any]] = []
            taken: set[Hashable] = set()
            skipped = 0
            for row in list(waiting):
                if self._fits(row, taken):
                    waiting.remove(row)
                    self._take(row, batch, taken)
            while len(batch) < self.batch_size:
                raw = next(rows, None)
                if raw is None:
                    return  # this worker's share of the stream is empty
                try:
                    row = self.decode(raw)
                except BadSample as error:
                    skipped, bad_in_a_row = skipped + 1, bad_in_a_row + 1
                    if reported < REPORTED_PER_WORKER:
                        reported += 1
                        print(f"{self.source}: skipped a bad sample{_where(raw)}: {error}", file=sys.stderr)
                    if bad_in_a_row >= BAD_IN_A_ROW:
                        raise ValueError(
                            f"{self.source}: the last {BAD_IN_A_ROW} rows of the stream were all bad (the last: "
                            f"{error}); check the data and the recipe's column names"
                        ) from error
                    continue
                bad_in_a_row = 0
                if row is None:
                    continue
                if not self._fits(row, taken) and len(waiting) < self.batch_size:
                    waiting.append(row)
                    continue
                self._take(row, batch, taken)
            yield {"rows": batch, "skipped": skipped, "epoch": position["epoch"]}

    def _fits(self, row: dict[str, Any], taken: set[Hashable]) -> bool:
        return self.duplicate_keys is None or taken.isdisjoint(self.duplicate_keys(row))

    def _take(self, row: dict[str, Any], batch: list[dict[str, Any]], taken: set[Hashable]) -> None:
        batch.append(row)
        if self.duplicate_keys is not None:
            taken.update(self.duplicate_keys(row))

    def _raw_rows(self, position: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """The worker's rows, block-shuffled, epoch after epoch; ``position`` follows every row handed out."""
        worker = torch.utils.data.get_worker_info()
        workers = worker.num_workers if worker else 0
        if workers != self.num_workers:
            raise ValueError(
                f"{self.source}: the stream was split for {self.num_workers} DataLoader workers but is read by "
                f"{workers}: build it with num_workers=train.num_workers"
            )
        mine = self.shards[worker.id if worker else 0]
        while True:
            epoch, resumed = position["epoch"], position["start"] is not None
            if hasattr(self.decode, "set_epoch"):  # a decode with random treatment (a crop) draws it per epoch
                self.decode.set_epoch(epoch)
            order = [mine[i] for i in np.random.default_rng([self.seed, epoch]).permutation(len(mine))]
            empty = True
            for block, end in self._blocks(order, position["start"]):
                empty = False
                permutation = np.random.default_rng([self.seed, epoch, position["block"]]).permutation(len(block))
                for index in range(position["offset"], len(block)):
                    position["offset"] = index + 1
                    yield block[permutation[index]]
                position.update(block=position["block"] + 1, start=end, offset=0)
            if empty and not resumed:
                return
            position.update(epoch=epoch + 1, block=0, start=None, offset=0)

    def _blocks(
        self, order: list[int], start: dict[str, Any] | None
    ) -> Iterator[tuple[list[dict[str, Any]], dict[str, Any]]]:
        """Blocks of up to ``shuffle_buffer`` rows of the shards in ``order`` (a block never spans two shards),
        from ``start``, each with the place where the next block starts (its place in the order and the shard's
        state after the block)."""
        first = start["shard"] if start else 0
        for place in range(first, len(order)):
            shard = self._shard(order[place])
            if start and place == first:
                shard.load_state_dict(start["state"])
            # iter(): a plain iteration would split the shard among the DataLoader workers once more
            for batch in shard.iter(batch_size=self.shuffle_buffer):
                rows = [dict(zip(batch, values, strict=True)) for values in zip(*batch.values(), strict=True)]
                yield rows, {"shard": place, "state": shard.state_dict()}

    def _shard(self, index: int) -> datasets.IterableDataset:
        """Shard ``index`` of the stream, as this process reads it (every ``num_processes``-th row, or all)."""
        shard = self.stream.shard(num_shards=self.stream.num_shards, index=index)
        if self.split_rows:
            shard = split_dataset_by_node(shard, rank=self.rank, world_size=self.num_processes)
        return shard


def stream_column(raw: dict[str, Any], column: str, fallbacks: Sequence[str], key: str) -> str:
    """``column`` if a streamed row has it, else the first of ``fallbacks`` it has (the member names of a
    webdataset sample: ``jpg``, ``flac``, ``txt``...); a row with none of them is an error naming ``key``."""
    if column in raw:
        return column
    for name in fallbacks:
        if name in raw:
            return name
    fields = sorted(name for name in raw if not name.startswith("__"))
    raise ValueError(
        f"the streamed rows have no column '{column}' (nor {', '.join(fallbacks)}): set {key} to one of {fields}"
    )


def sample_key(raw: dict[str, Any]) -> int:
    """A 63-bit number naming a streamed row by what it is, wherever and whenever it is read: a tar sample's shard
    name and key, else a digest of the row's content. Seeds per-sample treatments (views, crops) of a stream, as a
    row index seeds them in map-style data."""
    if "__key__" in raw:
        name = f"{Path(str(raw.get('__url__', ''))).name}:{raw['__key__']}".encode()
    else:
        digest = hashlib.blake2b(digest_size=16)
        for column in sorted(raw):
            value = raw[column]
            digest.update(column.encode())
            digest.update(value if isinstance(value, bytes) else repr(value).encode())
        name = digest.digest()
    return int.from_bytes(hashlib.blake2b(name, digest_size=8).digest(), "little") >> 1


def _fresh_position() -> dict[str, Any]:
    return {"epoch": 0, "block": 0, "start": None, "offset": 0, "waiting": []}


def _where(raw: dict[str, Any]) -> str:
    """`` (key K of shard S)`` for a tar sample, else nothing (other streams do not say where a row came from)."""
    if "__key__" in raw:
        return f" (key {raw['__key__']} of {Path(str(raw.get('__url__', '?'))).name})"
    return ""
