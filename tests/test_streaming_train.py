"""Recipes train on streamed shards (`data.streaming=true`): Sentence-BERT from parquet and jsonl, CLIP from
webdataset tar shards with damaged samples skipped and counted over 2 gloo processes x 2 DataLoader workers, and a
streamed run killed with SIGKILL resumes to exactly the parameters of an uninterrupted one."""

from __future__ import annotations

import io
import json
import re
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from conftest import pairs_training_args, synthetic_pairs
from safetensors.torch import load_file
from test_launch_distributed import _cpu_environment, _two_process_launch
from test_streaming_data import png_bytes

from mmcontrast.cli import main
from mmcontrast.data.images import DIGIT_NAMES, digits
from mmcontrast.engine.checkpoints import checkpoint_dirs

ROOT = Path(__file__).resolve().parents[1]
CLIP_RECIPE = ROOT / "recipes" / "clip_digits.yaml"


def pair_shards(folder: Path, shards: int, rows: int, suffix: str = ".parquet") -> Path:
    """Shards of synthetic (anchor, positive) pairs, ``rows`` per shard."""
    folder.mkdir(parents=True, exist_ok=True)
    pairs = synthetic_pairs(shards * rows)
    for shard in range(shards):
        part = pairs[shard * rows : (shard + 1) * rows]
        path = folder / f"pairs-{shard:02d}{suffix}"
        if suffix == ".parquet":
            pq.write_table(pa.table({"anchor": [a for a, _ in part], "positive": [p for _, p in part]}), path)
        else:
            path.write_text("".join(json.dumps({"anchor": a, "positive": p}) + "\n" for a, p in part))
    return folder


def digit_tar_shards(folder: Path, shards: int, rows: int, bad_per_shard: int = 0) -> Path:
    """Webdataset tar shards of sklearn digits (``KEY.png`` + ``KEY.txt``); the first ``bad_per_shard`` samples of
    each shard are damaged: a PNG cut short, then a sample whose caption member is missing."""
    folder.mkdir(parents=True, exist_ok=True)
    images = digits("train").rows
    for shard in range(shards):
        with tarfile.open(folder / f"digits-{shard:03d}.tar", "w") as archive:
            for row in range(rows):
                key, sample = f"{shard:03d}{row:05d}", images[shard * rows + row]
                buffer = io.BytesIO()
                sample["image"].save(buffer, format="PNG")
                members = {"png": buffer.getvalue(), "txt": f"a handwritten {DIGIT_NAMES[sample['label']]}.".encode()}
                if row < bad_per_shard:
                    if row % 2 == 0:
                        members["png"] = members["png"][:40]
                    else:
                        del members["txt"]
                for extension, data in members.items():
                    info = tarfile.TarInfo(f"{key}.{extension}")
                    info.size = len(data)
                    archive.addfile(info, io.BytesIO(data))
    return folder


def sbert_stream_args(model: str, shards: Path, output_dir: Path, *extra: str) -> list[str]:
    arguments = pairs_training_args(model, shards, output_dir)
    arguments.remove("data.format=csv")
    return [
        *arguments,
        "data.streaming=true",
        "data.shuffle_buffer=16",
        "train.batch_size=8",
        "train.progress_bar=false",
        "train.save_steps=0",
        *extra,
    ]


def test_sbert_trains_from_parquet_shards_for_an_epoch_of_counted_rows(tiny_bert_path, tmp_path):
    from sentence_transformers import SentenceTransformer

    shards = pair_shards(tmp_path / "shards", 4, 24)
    run = tmp_path / "run"
    assert main(sbert_stream_args(tiny_bert_path, shards, run, "train.epochs=2", "train.num_workers=2")) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["global_step"] == 2 * 96 // 8  # epochs of the rows counted from the parquet metadata
    assert summary["skipped_rows"] == 0
    log = json.loads((run / "training_log.json").read_text())
    assert [r["epoch"] for r in log if "loss" in r][-1] == 1  # the workers' epoch, as the stream reports it
    model = SentenceTransformer(str(run / "model"))
    assert model.encode(["a red fox"]).shape == (1, 32)


def test_sbert_streams_jsonl_and_a_stream_of_unknown_length_needs_max_steps(tiny_bert_path, tmp_path, capsys):
    shards = pair_shards(tmp_path / "lines", 2, 20, suffix=".jsonl")
    with (shards / "pairs-01.jsonl").open("a") as handle:  # a bad row inside a shard: skipped, counted
        handle.write(json.dumps({"anchor": "", "positive": "an empty anchor"}) + "\n")
    run = tmp_path / "run"
    assert main(sbert_stream_args(tiny_bert_path, shards, run, "train.max_steps=6")) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["global_step"] == 6 and summary["skipped_rows"] >= 1
    assert "text column 'anchor' is empty" in capsys.readouterr().err

    csv = tmp_path / "pairs.csv"
    csv.write_text("anchor,positive\n" + "".join(f"{a},{p}\n" for a, p in synthetic_pairs(16)))
    assert main(sbert_stream_args(tiny_bert_path, csv, tmp_path / "csv")) == 2
    assert "key 'train.max_steps' is not set, but the streamed data cannot say how many rows" in capsys.readouterr().err


def test_clip_trains_from_tar_shards_on_two_processes_and_counts_bad_samples(tmp_path):
    # 4 shards of 10 digits, the first 2 damaged: 2 processes x 2 workers = 4 readers, one shard each. Read in
    # shard order (shuffle_buffer=1), a batch of 8 is one reader's epoch with its 2 bad samples, so 2 steps (one
    # batch from each worker of each process) count all 8 bad samples, summed over the processes.
    shards = digit_tar_shards(tmp_path / "shards", 4, 10, bad_per_shard=2)
    run = tmp_path / "run"
    arguments = [
        "train", str(CLIP_RECIPE), f"output_dir={run}", f"data.train={shards}", "data.streaming=true",
        "data.shuffle_buffer=1", "train.batch_size=8", "train.max_steps=2", "train.num_workers=2", "train.save_steps=0",
        "train.progress_bar=false", "train.report_to=[]", "eval.zero_shot=null",
    ]  # fmt: skip
    done = subprocess.run(
        [*_two_process_launch(), *arguments], cwd=ROOT, env=_cpu_environment(), capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["global_step"] == 2 and summary["skipped_rows"] == 8
    assert "does not decode" in done.stderr and "caption 'txt' is missing or empty" in done.stderr
    assert (run / "model" / "config.json").is_file()


def test_clip_stream_from_parquet_with_image_bytes(tmp_path):
    rows = digits("train").rows[:32]
    images = []
    for row in rows:
        buffer = io.BytesIO()
        row["image"].save(buffer, format="PNG")
        images.append({"bytes": buffer.getvalue(), "path": None})
    table = pa.table({"image": images, "text": [f"a handwritten {DIGIT_NAMES[r['label']]}." for r in rows]})
    (tmp_path / "shards").mkdir()
    pq.write_table(table, tmp_path / "shards" / "part-0.parquet")
    run = tmp_path / "run"
    arguments = [
        "train", str(CLIP_RECIPE), f"output_dir={run}", f"data.train={tmp_path / 'shards'}", "data.streaming=true",
        "data.image_column=image", "train.batch_size=16", "train.epochs=1", "train.save_steps=0",
        "train.progress_bar=false", "train.report_to=[]",
    ]  # fmt: skip
    assert main(arguments) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["global_step"] == 2 and "zero_shot/top1" in summary["metrics"]


def _kill_resume_command(model: str, shards: Path, output_dir: Path, *extra: str) -> list[str]:
    arguments = sbert_stream_args(
        model, shards, output_dir, "train.max_steps=40", "train.save_steps=5", "train.num_workers=2",
        "train.lr=1e-3", "train.logging_steps=5", "train.report_to=[]", *extra,
    )  # fmt: skip
    return [sys.executable, "-m", "mmcontrast.cli", *arguments]


def _environment() -> dict[str, str]:
    import os

    return {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}


def test_a_streamed_run_killed_and_resumed_ends_with_the_uninterrupted_parameters(tiny_bert_path, tmp_path):
    # 2 shards of 36 rows, batches of 8 from 2 workers: the kill lands mid-epoch of both workers, whose
    # positions (inside a shuffle block, with rows waiting under the no-duplicates rule) the checkpoint holds
    shards = pair_shards(tmp_path / "shards", 2, 36)
    reference, run = tmp_path / "reference", tmp_path / "run"
    subprocess.run(_kill_resume_command(tiny_bert_path, shards, reference), env=_environment(), check=True, cwd=ROOT)
    process = subprocess.Popen(
        _kill_resume_command(tiny_bert_path, shards, run), env=_environment(), cwd=ROOT, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 300
    while len(checkpoint_dirs(run / "checkpoints")) < 2 and process.poll() is None:
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL, "the run finished before it could be killed"
    state = json.loads((checkpoint_dirs(run / "checkpoints")[-1] / "trainer_state.json").read_text())
    assert state["global_step"] < 40 and len(state["stream"]) == 1  # one process, its loader's state
    resumed = subprocess.run(
        _kill_resume_command(tiny_bert_path, shards, run, "resume_from=latest"),
        env=_environment(),
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    expected = load_file(reference / "model" / "model.safetensors")
    actual = load_file(run / "model" / "model.safetensors")
    for name, tensor in expected.items():
        assert torch.equal(tensor, actual[name]), name
    other_workers = subprocess.run(  # each worker reads its own shards: another count cannot continue the stream
        _kill_resume_command(tiny_bert_path, shards, run, "resume_from=latest", "train.num_workers=1"),
        env=_environment(),
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert other_workers.returncode == 2
    assert "streamed data workers: checkpoint 2, now 1" in other_workers.stderr


def test_the_streaming_tutorial_runs(tmp_path):
    """docs/streaming.md's python blocks, as one script: tar shards of the digits, then a streamed CLIP run."""
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "docs" / "streaming.md").read_text(), flags=re.S)
    recipe = (ROOT / "recipes" / "clip_webdataset.yaml").read_text().replace("runs/", f"{tmp_path}/")
    (tmp_path / "recipe.yaml").write_text(recipe)
    script = "\n".join(blocks).replace("recipes/clip_webdataset.yaml", str(tmp_path / "recipe.yaml"))
    script = script.replace("runs/", f"{tmp_path}/")
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=_environment(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    steps, metrics = done.stdout.strip().splitlines()[-1].split(" ", 1)
    assert int(steps) == 2 * (1437 // 64) and "zero_shot/top1" in metrics


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["data.limit=10"], "key 'data.limit' is set, but a stream has no first N rows"),
        (["train.group_by_length=true"], "key 'train.group_by_length' is true, but the data is streamed"),
        (["train.num_workers=3", "train.max_steps=2"], "train.num_workers is 3, but the stream has 2 shard"),
    ],
)
def test_streaming_refusals_name_the_key(tiny_bert_path, tmp_path, capsys, extra, message):
    shards = pair_shards(tmp_path / "shards", 2, 8)
    assert main(sbert_stream_args(tiny_bert_path, shards, tmp_path / "run", *extra)) == 2
    assert message in capsys.readouterr().err


def test_clap_streams_audio_tar_shards_and_skips_damaged_clips(tmp_path, capfd):
    from conftest import SHARED_DATA

    recordings = SHARED_DATA / "fsdd" / "recordings"
    if not recordings.is_dir():
        pytest.skip(f"shared spoken digits not found at {recordings}")
    clips = sorted(recordings.glob("*.wav"))[:40]
    shards = tmp_path / "shards"
    shards.mkdir()
    for shard in range(2):
        with tarfile.open(shards / f"speech-{shard}.tar", "w") as archive:
            for index, clip in enumerate(clips[shard::2]):
                audio = clip.read_bytes()
                if index == 3:
                    audio = audio[: len(audio) // 2]  # a truncated wav: its header says more samples than it holds
                digit = DIGIT_NAMES[int(clip.name.split("_")[0])]
                for name, data in (
                    (f"{clip.stem}.wav", audio),
                    (f"{clip.stem}.txt", f"someone says {digit}.".encode()),
                ):
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    archive.addfile(info, io.BytesIO(data))
    run = tmp_path / "run"
    arguments = [
        "train", str(ROOT / "recipes" / "clap_fsdd.yaml"), f"output_dir={run}", f"data.train={shards}",
        "data.streaming=true", "data.shuffle_buffer=1", "data.pattern=null", "data.test_takes=[]",
        "eval.zero_shot=null", "eval.retrieval=false", "train.batch_size=19", "train.epochs=1",
        "train.num_workers=2", "train.progress_bar=false", "train.report_to=[]",
    ]  # fmt: skip
    assert main(arguments) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["global_step"] == 40 // 19  # an epoch of the 40 counted tar samples
    assert summary["skipped_rows"] == 2  # one damaged clip per shard, each worker's batch reads its whole shard
    assert "truncated wav" in capfd.readouterr().err
    assert (run / "model" / "config.json").is_file()


def test_sbert_streams_text_pairs_from_tar_shards(tiny_bert_path, tmp_path):
    # webdataset members KEY.anchor.txt + KEY.positive.txt: the columns are the member names after the key
    shards = tmp_path / "tars"
    shards.mkdir()
    pairs = synthetic_pairs(32)
    for shard in range(2):
        with tarfile.open(shards / f"pairs-{shard}.tar", "w") as archive:
            for index in range(shard, len(pairs), 2):
                for column, text in zip(("anchor", "positive"), pairs[index], strict=True):
                    info = tarfile.TarInfo(f"{index:05d}.{column}.txt")
                    info.size = len(text.encode())
                    archive.addfile(info, io.BytesIO(text.encode()))
    run = tmp_path / "run"
    arguments = sbert_stream_args(tiny_bert_path, shards, run, "data.columns=[anchor.txt, positive.txt]")
    assert main(arguments) == 0
    assert json.loads((run / "summary.json").read_text())["global_step"] == 32 // 8


@pytest.mark.parametrize("recipe", ["simclr_digits", "moco_digits"])
def test_views_methods_stream_image_shards(tmp_path, recipe):
    shards = digit_tar_shards(tmp_path / "shards", 2, 64, bad_per_shard=1)
    run = tmp_path / "run"
    arguments = [
        "train", str(ROOT / "recipes" / f"{recipe}.yaml"), f"output_dir={run}", f"data.train={shards}",
        "data.streaming=true", "train.batch_size=32", "train.max_steps=4", "train.num_workers=2",
        "train.eval_steps=0", "train.progress_bar=false", "train.report_to=[]", "eval.random_init=false",
    ]  # fmt: skip
    assert main(arguments) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["global_step"] == 4 and summary["skipped_rows"] >= 1
    assert "probe/knn_top1" in summary["metrics"]


def test_streamed_views_are_drawn_from_seed_epoch_and_sample():
    from mmcontrast.data.images import StreamedImageRows
    from mmcontrast.views.simclr import StreamedViews, simclr_transform

    raw = {"__key__": "000001", "__url__": "/data/a.tar", "png": png_bytes(1)}
    views = StreamedViews(StreamedImageRows("image"), simclr_transform(16, [0.5] * 3, [0.5] * 3), seed=3)
    first = views(raw)["views"]
    again = views(dict(raw))["views"]
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))  # the same sample, the same views
    assert not torch.equal(first[0], first[1])
    views.set_epoch(1)
    assert not torch.equal(views(raw)["views"][0], first[0])  # another epoch, other views
    views.set_epoch(0)
    other = views({**raw, "__key__": "000002"})["views"]
    assert not torch.equal(other[0], first[0])  # another sample (the same pixels), other views
