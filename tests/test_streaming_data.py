"""Streamed data (mmcontrast.data.streaming) read by real DataLoader worker processes: every row once per epoch
over processes x workers, an exact position to resume from, bad samples skipped and counted, no repeated text in
a batch, and errors that name what to change."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image
from torchdata.stateful_dataloader import StatefulDataLoader

from mmcontrast.data.images import StreamedImageRows
from mmcontrast.data.streaming import BadSample, StreamedBatches, count_rows, open_stream, shard_files


def parquet_shards(folder: Path, shards: int, rows: int) -> Path:
    """``shards`` parquet files of ``rows`` rows each: ``id`` (unique) and ``text``."""
    folder.mkdir(parents=True, exist_ok=True)
    for shard in range(shards):
        ids = [f"{shard}-{row}" for row in range(rows)]
        pq.write_table(pa.table({"id": ids, "text": [f"text {i}" for i in ids]}), folder / f"part-{shard:03d}.parquet")
    return folder


def png_bytes(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (8, 8, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def tar_shards(folder: Path, shards: int, rows: int, damage: dict[str, str] | None = None) -> Path:
    """Webdataset tar shards of (``KEY.png``, ``KEY.txt``) samples; ``damage`` maps a key to ``image`` (its PNG
    cut in half) or ``caption`` (its txt member left out)."""
    damage = damage or {}
    folder.mkdir(parents=True, exist_ok=True)
    for shard in range(shards):
        with tarfile.open(folder / f"shard-{shard:03d}.tar", "w") as archive:
            for row in range(rows):
                key = f"{shard:03d}{row:04d}"
                image = png_bytes(shard * 1000 + row)
                members = {f"{key}.png": image, f"{key}.txt": f"caption {key}".encode()}
                if damage.get(key) == "image":
                    members[f"{key}.png"] = image[: len(image) // 2]
                if damage.get(key) == "caption":
                    del members[f"{key}.txt"]
                for name, data in members.items():
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    archive.addfile(info, io.BytesIO(data))
    return folder


def identity(raw: dict) -> dict:
    return {"id": raw["id"]}


def loader(batches: StreamedBatches) -> StatefulDataLoader:
    return StatefulDataLoader(batches, batch_size=None, num_workers=batches.num_workers, collate_fn=lambda item: item)


def batches_of(source: Path | str, batch_size: int, *, rank: int = 0, processes: int = 1, workers: int = 2, **options):
    stream, num_rows = open_stream(str(source))
    return StreamedBatches(
        stream,
        options.pop("decode", identity),
        batch_size,
        seed=7,
        shuffle_buffer=options.pop("shuffle_buffer", 6),
        num_rows=num_rows,
        num_workers=workers,
        rank=rank,
        num_processes=processes,
        **options,
    )


@pytest.mark.parametrize(("shards", "rows_per_shard"), [(8, 12), (6, 10)])
def test_two_processes_by_two_workers_see_every_row_once_per_epoch(tmp_path, shards, rows_per_shard):
    # 8 shards: whole shards per process; 6 shards: 3 per worker, split over 2 processes by rows (3 % 2 != 0)
    folder = parquet_shards(tmp_path / "shards", shards, rows_per_shard)
    total = shards * rows_per_shard
    batch_size = 6 if shards == 8 else 5  # divides every worker's share of an epoch (24 or 15 rows)
    epochs: list[list[str]] = [[], []]
    for rank in range(2):
        batches = batches_of(folder, batch_size, rank=rank, processes=2, workers=2)
        per_epoch = total // 2 // batch_size
        items = [item for _, item in zip(range(2 * per_epoch), loader(batches), strict=False)]
        for epoch in range(2):
            for item in items[epoch * per_epoch : (epoch + 1) * per_epoch]:
                epochs[epoch] += [row["id"] for row in item["rows"]]
    everything = sorted(f"{s}-{r}" for s in range(shards) for r in range(rows_per_shard))
    for seen in epochs:
        assert sorted(seen) == everything  # every row once, none twice, none missing
    assert epochs[0] != epochs[1]  # a new order each epoch


def test_the_stream_position_resumes_exactly_across_workers_and_epochs(tmp_path):
    folder = parquet_shards(tmp_path / "shards", 4, 9)
    reference = loader(batches_of(folder, 4, workers=2))
    iterator = iter(reference)
    for _ in range(7):
        next(iterator)
    state = reference.state_dict()
    json.dumps(state)  # what the checkpoint's trainer_state.json holds
    expected = [next(iterator)["rows"] for _ in range(12)]  # runs into the next epochs of both workers
    resumed = loader(batches_of(folder, 4, workers=2))
    resumed.load_state_dict(state)
    assert [item["rows"] for _, item in zip(range(12), resumed, strict=False)] == expected


def test_bad_samples_in_tar_shards_are_skipped_and_counted(tmp_path, capfd):
    damage = {"0000002": "image", "0000005": "caption", "0010006": "image", "0010001": "caption"}
    folder = tar_shards(tmp_path / "tars", 2, 8, damage)
    decode = StreamedImageRows("file_name", "text")  # a table's columns: tar members fall back to png / txt
    batches = batches_of(folder, 6, workers=2, decode=decode)  # 6 good samples per worker (shard)
    assert batches.num_rows == 16
    items = [item for _, item in zip(range(2), loader(batches), strict=False)]
    assert [item["skipped"] for item in items] == [2, 2]  # counted in each worker, with the batch that follows
    keys = [f"{shard:03d}{row:04d}" for shard in range(2) for row in range(8)]
    captions = [row["caption"] for item in items for row in item["rows"]]
    assert sorted(captions) == [f"caption {key}" for key in keys if key not in damage]
    assert all(row["image"].mode == "RGB" and row["image"].size == (8, 8) for item in items for row in item["rows"])
    err = capfd.readouterr().err  # printed by the worker processes
    assert "skipped a bad sample (key 0000002 of shard-000.tar): image 'png' does not decode" in err
    assert "(key 0010001 of shard-001.tar): caption 'txt' is missing or empty" in err


def dedup_batches(folder: Path, texts: list[str], batch_size: int) -> list[dict]:
    folder.mkdir()
    pq.write_table(pa.table({"id": [str(i) for i in range(len(texts))], "text": texts}), folder / "a.parquet")
    batches = batches_of(
        folder, batch_size, workers=0, decode=dict, duplicate_keys=lambda row: [row["text"]], shuffle_buffer=50
    )
    return [item for _, item in zip(range(len(texts) // batch_size), loader(batches), strict=False)]


def test_no_repeated_text_within_a_batch_and_every_row_still_once(tmp_path):
    texts = [f"t{i % 20}" for i in range(60)]  # each text 3 times, as an anchor with several positives
    items = dedup_batches(tmp_path / "dups", texts, 8)
    for item in items:
        in_batch = [row["text"] for row in item["rows"]]
        assert len(set(in_batch)) == len(in_batch), in_batch
    seen = [row["id"] for item in items for row in item["rows"]]
    assert len(seen) == len(set(seen)) >= 48  # a row that waited for a later batch is not read twice


def test_the_waiting_rows_are_bounded(tmp_path):
    # two texts only: batches of 4 cannot avoid repeats; once batch_size rows wait, a repeat is let in
    items = dedup_batches(tmp_path / "dups", [f"t{i % 2}" for i in range(40)], 4)
    assert len(items) == 10 and all(len(item["rows"]) == 4 for item in items)


def test_rows_are_counted_without_decoding(tmp_path):
    assert count_rows(shard_files(str(parquet_shards(tmp_path / "p", 3, 7)))) == 21
    assert count_rows(shard_files(str(tar_shards(tmp_path / "t", 2, 5)))) == 10
    lines = tmp_path / "rows.jsonl"
    lines.write_text('{"a": 1}\n\n{"a": 2}\n')
    assert count_rows([lines]) == 2
    csv = tmp_path / "rows.csv"
    csv.write_text("a\n1\n")
    assert count_rows([csv]) is None  # a quoted cell may span lines: not counted, the run needs max_steps


def test_errors_name_what_to_change(tmp_path):
    folder = parquet_shards(tmp_path / "shards", 2, 4)
    with pytest.raises(ValueError, match=r"train\.num_workers is 3, but the stream has 2 shard"):
        batches_of(folder, 2, workers=3)
    with pytest.raises(FileNotFoundError, match="not found"):
        shard_files(str(tmp_path / "missing.parquet"))
    (tmp_path / "shards" / "extra.csv").write_text("id\n1\n")
    with pytest.raises(ValueError, match="shards of kinds"):
        shard_files(str(folder))

    def reject(raw):
        raise BadSample("no good")

    with pytest.raises(ValueError, match="the last 1000 rows of the stream were all bad"):
        next(iter(batches_of(parquet_shards(tmp_path / "big", 1, 1100), 2, workers=0, decode=reject)))


class EpochTagged:
    """A decode with a per-epoch treatment: it tags each row with the epoch the stream set."""

    def __init__(self) -> None:
        self.epoch = -1

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __call__(self, raw: dict) -> dict:
        return {"id": raw["id"], "epoch": self.epoch}


def test_a_decode_learns_each_epoch_in_the_worker(tmp_path):
    folder = parquet_shards(tmp_path / "shards", 2, 6)
    batches = batches_of(folder, 3, workers=2, decode=EpochTagged())
    items = [item for _, item in zip(range(8), loader(batches), strict=False)]
    for item in items:  # a worker's share is 6 rows: 2 batches per epoch, each batch within one epoch
        assert {row["epoch"] for row in item["rows"]} == {item["epoch"]}
    assert [item["epoch"] for item in items] == [0, 0, 0, 0, 1, 1, 1, 1]  # workers alternate batch by batch
