"""A run killed with SIGKILL between checkpoints and resumed with resume_from=latest ends with exactly the
parameters of an uninterrupted run with the same seed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from conftest import pairs_training_args
from safetensors.torch import load_file

from mmcontrast.engine.checkpoints import checkpoint_dirs


def _command(tiny_bert_path: str, data: Path, output_dir: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "mmcontrast.cli",
        *pairs_training_args(tiny_bert_path, data, output_dir),
        "train.batch_size=8",
        "train.max_steps=120",
        "train.save_steps=10",
        "train.save_total_limit=3",
        "train.lr=1e-3",
        "train.logging_steps=5",
        "train.progress_bar=false",
        *extra,
    ]


def _environment() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}


def test_sigkill_then_resume_matches_uninterrupted(tiny_bert_path, pairs_csv, tmp_path):
    root = Path(__file__).resolve().parents[1]
    reference, interrupted = tmp_path / "reference", tmp_path / "interrupted"
    subprocess.run(
        _command(tiny_bert_path, pairs_csv, reference),
        cwd=root,
        env=_environment(),
        check=True,
        capture_output=True,
    )

    process = subprocess.Popen(
        _command(tiny_bert_path, pairs_csv, interrupted),
        cwd=root,
        env=_environment(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 300
    while not checkpoint_dirs(interrupted / "checkpoints") and process.poll() is None:
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (interrupted / "model").exists()
    saved_steps = [int(p.name.split("-")[1]) for p in checkpoint_dirs(interrupted / "checkpoints")]
    assert saved_steps and max(saved_steps) < 120

    resumed = subprocess.run(
        _command(tiny_bert_path, pairs_csv, interrupted, "resume_from=latest"),
        cwd=root,
        env=_environment(),
        check=True,
        capture_output=True,
        text=True,
    )
    assert f"resumed from {interrupted / 'checkpoints'}" in resumed.stdout + resumed.stderr

    expected = load_file(reference / "model" / "model.safetensors")
    actual = load_file(interrupted / "model" / "model.safetensors")
    assert expected.keys() == actual.keys()
    for name, tensor in expected.items():
        assert torch.equal(tensor, actual[name]), f"parameter {name} differs after resume"
    # the learning really moved the parameters, so equality is not trivial
    initial = load_file(Path(tiny_bert_path) / "model.safetensors")
    moved = [n for n in expected if n in initial and not torch.equal(expected[n], initial[n])]
    assert len(moved) > len(expected) // 2
