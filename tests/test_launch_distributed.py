"""`accelerate launch` on 2 CPU processes (gloo) takes the same training step as 1 process on the whole batch:
exact cross-process negatives (InfoNCE gathered with gradient) under DDP's gradient averaging."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import pairs_training_args
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def no_dropout_bert(tiny_bert_path, tmp_path) -> str:
    from transformers import AutoModel

    model = AutoModel.from_pretrained(tiny_bert_path, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    folder = tmp_path / "bert"
    model.save_pretrained(folder)
    for name in Path(tiny_bert_path).iterdir():
        if "token" in name.name or name.name == "vocab.txt":
            (folder / name.name).write_bytes(name.read_bytes())
    return str(folder)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _cpu_environment() -> dict[str, str]:
    return {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "CUDA_VISIBLE_DEVICES": "",
        "ACCELERATE_USE_CPU": "1",
    }


def _two_process_launch() -> list[str]:
    """`accelerate launch` of 2 processes running the CLI; with no GPU visible they run on the CPU over gloo."""
    return [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu",
        "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        "--main_process_port", str(_free_port()),
        "-m", "mmcontrast.cli",
    ]  # fmt: skip


def _train_args(model: str, data: Path, output_dir: Path, batch_size: int, *extra: str) -> list[str]:
    return [
        *pairs_training_args(model, data, output_dir),
        f"train.batch_size={batch_size}",
        "train.max_steps=1",
        "train.warmup_ratio=0.0",
        # AdamW's first step is lr * g / (|g| + eps): gradients that agree to float precision can still differ
        # by ~0.3% where |g| is near eps, so the lr keeps such elements within 1e-6; a wrong gradient moves
        # parameters by up to 2 * lr = 2e-4.
        "train.lr=1e-4",
        "train.save_steps=0",
        "train.progress_bar=false",
        *extra,
    ]


@pytest.mark.parametrize("loss", ["info_nce", "info_nce_symmetric"])
def test_two_process_step_equals_one_process_step(no_dropout_bert, pairs_csv, tmp_path, loss):
    extra = ["loss.symmetric=true"] if loss == "info_nce_symmetric" else []
    env, launch = _cpu_environment(), _two_process_launch()
    two = subprocess.run(
        [*launch, *_train_args(no_dropout_bert, pairs_csv, tmp_path / "two", 4, *extra)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert two.returncode == 0, two.stderr[-3000:]
    one = subprocess.run(
        [sys.executable, "-m", "mmcontrast.cli", *_train_args(no_dropout_bert, pairs_csv, tmp_path / "one", 8, *extra)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert one.returncode == 0, one.stderr[-3000:]

    initial = load_file(Path(no_dropout_bert) / "model.safetensors")
    single = load_file(tmp_path / "one" / "model" / "model.safetensors")
    double = load_file(tmp_path / "two" / "model" / "model.safetensors")
    losses = [json.loads((tmp_path / run / "training_log.json").read_text())[0]["loss"] for run in ("one", "two")]
    assert losses[1] == pytest.approx(losses[0], abs=1e-6)
    moved = 0
    for name, tensor in single.items():
        assert torch.allclose(double[name], tensor, atol=1e-6, rtol=0), name
        moved += not torch.equal(tensor, initial[name])
    assert moved > len(single) // 2


def test_two_processes_stop_early_and_keep_the_best_model_together(tiny_bert_path, pairs_csv, tmp_path):
    """Evaluation runs on the main process only; its metrics are broadcast, so both processes stop at the same
    step (no hang, no crash) and the exported model is the kept best one."""
    env, launch = _cpu_environment(), _two_process_launch()
    control = [
        f"eval.retrieval={pairs_csv}", "eval.retrieval_format=csv", "eval.retrieval_min_score=null",
        "train.max_steps=10", "train.eval_steps=1", "train.lr=3e-3",
        # no later evaluation can beat the first by 1.0: the run stops after 2 more evaluations, at step 3
        "train.early_stopping.metric=retrieval/mrr@10", "train.early_stopping.patience=2",
        "train.early_stopping.min_delta=1.0",
        # mode min keeps the lowest score: an early step's weights, loaded back on both processes before export
        "train.keep_best.metric=retrieval/mrr@10", "train.keep_best.mode=min",
    ]  # fmt: skip
    run = subprocess.run(
        [*launch, *_train_args(tiny_bert_path, pairs_csv, tmp_path / "run", 8, *control)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["global_step"] == 3
    log = json.loads((tmp_path / "run" / "training_log.json").read_text())
    evaluations = [r for r in log if "loss" not in r]
    assert [r["step"] for r in evaluations] == [1, 2, 3, 3]
    best = min(evaluations[:3], key=lambda r: r["retrieval/mrr@10"])  # the first of equal values is kept
    assert summary["best_step"] == best["step"] < 3
    assert summary["metrics"]["retrieval/mrr@10"] == pytest.approx(best["retrieval/mrr@10"])
    exported = load_file(tmp_path / "run" / "model" / "model.safetensors")
    kept = load_file(tmp_path / "run" / "best" / "model.safetensors")
    assert all(torch.equal(kept[f"encoder.transformer.{name}"], value) for name, value in exported.items())
