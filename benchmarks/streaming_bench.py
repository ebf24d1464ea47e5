"""Streamed vs map-style training data: rows/s of CLIP epochs read from webdataset tar shards and from the same
images as an image folder, in the same run.

The data: sklearn's 1797 digits rendered at 32x32, four copies (7188 samples), written once as PNG files with a
``metadata.csv`` of captions (the map-style image folder of ``recipes/clip_imagefolder.yaml``) and as 8 webdataset
tar shards of the same PNG bytes and captions (``KEY.png`` + ``KEY.txt``). Each side trains the tiny CLIP of
``recipes/clip_digits.yaml`` for 2 epochs (batch 64) in a fresh subprocess, with ``train.num_workers`` 0 and 2:

* ``map``: ``data.train=FOLDER`` (every image checked once before training, then decoded per row);
* ``stream``: ``data.train=SHARDS data.streaming=true`` (rows read from the tars, decoded as they arrive).

Throughput is training rows / wall seconds of the ``train()`` call (DataLoader workers started inside it); the
preparation (reading the folder and checking its images, or opening the stream and counting the tar members) is
timed apart. No evaluation or checkpoint is written during training.

    python benchmarks/streaming_bench.py [--output-dir DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from side_by_side import TrainTimer, busy_warning, cores, run_sides

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes" / "clip_digits.yaml"
RESULT = REPO / "benchmarks" / "results" / "streaming_bench.json"
COPIES, SHARDS, EPOCHS, BATCH_SIZE = 4, 8, 2, 64
SIDES = ("map_w0", "stream_w0", "map_w2", "stream_w2")


def write_data(root: Path) -> tuple[Path, Path]:
    """The digits as an image folder and as tar shards of the same PNG bytes; returns (folder, shards)."""
    from mmcontrast.data.images import DIGIT_NAMES, digits

    folder, shards = root / "folder", root / "shards"
    folder.mkdir(parents=True, exist_ok=True)
    shards.mkdir(parents=True, exist_ok=True)
    rows = digits("all", image_size=32).rows * COPIES
    lines = ["file_name,text"]
    with contextlib.ExitStack() as stack:
        archives = [stack.enter_context(tarfile.open(shards / f"digits-{i:03d}.tar", "w")) for i in range(SHARDS)]
        for index, row in enumerate(rows):
            buffer = io.BytesIO()
            row["image"].save(buffer, format="PNG")
            caption = f"a handwritten {DIGIT_NAMES[row['label']]}."
            (folder / f"{index:05d}.png").write_bytes(buffer.getvalue())
            lines.append(f"{index:05d}.png,{caption}")
            for extension, data in (("png", buffer.getvalue()), ("txt", caption.encode())):
                info = tarfile.TarInfo(f"{index:05d}.{extension}")
                info.size = len(data)
                archives[index % SHARDS].addfile(info, io.BytesIO(data))
    (folder / "metadata.csv").write_text("\n".join(lines) + "\n")
    return folder, shards


def run_side(side: str, data_root: Path, output_dir: Path, result_file: Path) -> None:
    from mmcontrast.engine.trainer import Trainer
    from mmcontrast.recipe import build_parts, load_recipe

    kind, workers = side.split("_w")
    source = data_root / ("shards" if kind == "stream" else "folder")
    overrides = [
        f"output_dir={output_dir}",
        f"data.train={source}",
        f"data.streaming={'true' if kind == 'stream' else 'false'}",
        "eval.zero_shot=null",
        f"train.epochs={EPOCHS}",
        f"train.batch_size={BATCH_SIZE}",
        f"train.num_workers={workers}",
        "train.save_steps=0",
        "train.eval_steps=0",
        "train.logging_steps=1000",
        "train.progress_bar=false",
        "train.report_to=[]",
        "overwrite_output_dir=true",
    ]
    recipe = load_recipe(RECIPE, overrides)
    start = time.perf_counter()
    parts = build_parts(recipe)
    trainer = Trainer(parts.method, parts.dataset, parts.batch_sampler, recipe.train, output_dir)
    prepare = time.perf_counter() - start
    with TrainTimer() as timer:
        result = trainer.train()
    rows = result.global_step * BATCH_SIZE
    record = {
        "side": side,
        "steps": result.global_step,
        "rows": rows,
        "prepare_seconds": prepare,
        "rows_per_second": rows / timer.seconds,
        "final_loss": [r["loss"] for r in result.log_history if "loss" in r][-1],
        **timer.record(),
    }
    result_file.write_text(json.dumps(record, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--side", choices=SIDES)
    parser.add_argument("--data-root", type=Path)
    parser.add_argument("--output-dir", type=Path)
    parser.add_argument("--result-file", type=Path)
    args = parser.parse_args()
    if args.side:
        run_side(args.side, args.data_root, args.output_dir, args.result_file)
        return
    with tempfile.TemporaryDirectory(prefix="streaming_bench_") as scratch:
        data_root = Path(scratch) / "data"
        write_data(data_root)
        results, before, after = run_sides(__file__, SIDES, args.output_dir, ["--data-root", str(data_root)])
    print(f"\n{COPIES * 1797} samples, {SHARDS} tar shards, {EPOCHS} epochs, batch {BATCH_SIZE}")
    print(f"load averages {before} -> {after}")
    print("| workers | side | prepare s | train s | rows/s | stream / map | other cores busy |")
    print("|---|---|---|---|---|---|---|")
    for workers in ("0", "2"):
        map_side, stream_side = results[f"map_w{workers}"], results[f"stream_w{workers}"]
        for name, side in (("map-style (image folder)", map_side), ("streamed (tar shards)", stream_side)):
            ratio = side["rows_per_second"] / map_side["rows_per_second"]
            print(
                f"| {workers} | {name} | {side['prepare_seconds']:.1f} | {side['train_seconds']:.1f} | "
                f"{side['rows_per_second']:.0f} | {ratio:.2f}x | {cores(side['other_cores_busy'])} |"
            )
    warning = busy_warning({side: results[side]["other_cores_busy"] for side in SIDES})
    if warning:
        print(warning)
    RESULT.write_text(json.dumps({"load_before": before, "load_after": after, "sides": results}, indent=1))
    print(f"results: {RESULT}")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
