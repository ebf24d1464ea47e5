"""Randomised SIGKILLs (at random moments, during checkpoint writes and during the export) and resumes with
resume_from=latest end with exactly the parameters of an uninterrupted run, and a model folder that is complete."""

from __future__ import annotations

import random
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_resume import _command, _environment

ROOT = Path(__file__).resolve().parents[1]


def _hidden(folder: Path, prefix: str) -> bool:
    try:
        return any(name.startswith(prefix) for name in (p.name for p in folder.iterdir()))
    except FileNotFoundError:
        return False


def _kill_when(process: subprocess.Popen, condition, deadline: float) -> bool:
    """SIGKILL ``process`` as soon as ``condition()`` holds; False if it exited first."""
    while process.poll() is None:
        if condition() or time.monotonic() > deadline:
            process.send_signal(signal.SIGKILL)
            process.wait()
            return True
        time.sleep(0.0005)
    return False


@pytest.mark.slow
def test_random_kills_then_resume_match_an_uninterrupted_run(tiny_bert_path, pairs_csv, tmp_path):
    reference, run = tmp_path / "reference", tmp_path / "run"
    subprocess.run(_command(tiny_bert_path, pairs_csv, reference), cwd=ROOT, env=_environment(), check=True)
    chooser = random.Random(20261127)
    moments = {
        "random": lambda start, delay: lambda: time.monotonic() - start > delay,
        "checkpoint write": lambda start, delay: lambda: _hidden(run / "checkpoints", ".tmp-checkpoint"),
        "export": lambda start, delay: lambda: _hidden(run, ".tmp-model"),
    }
    kills: list[str] = []
    # kills during the export come last: once a run reaches its export, resuming goes straight there
    for kind in ["checkpoint write", "random", "checkpoint write", "random", "random", "export", "export"]:
        command = _command(tiny_bert_path, pairs_csv, run, "resume_from=latest")
        log = tmp_path / f"attempt-{len(kills)}.log"
        with log.open("w") as output:
            process = subprocess.Popen(command, cwd=ROOT, env=_environment(), stdout=output, stderr=subprocess.STDOUT)
        start = time.monotonic()
        if _kill_when(process, moments[kind](start, chooser.uniform(3.0, 8.0)), start + 120):
            kills.append(kind)
            model = run / "model"
            assert not model.exists() or (model / "README.md").is_file(), "a model folder without its card"
        else:
            assert process.returncode == 0, log.read_text()[-3000:]
    assert len(kills) >= 5 and {"random", "checkpoint write", "export"} <= set(kills), kills
    if not (run / "summary.json").is_file():
        subprocess.run(
            _command(tiny_bert_path, pairs_csv, run, "resume_from=latest"), cwd=ROOT, env=_environment(), check=True
        )
    expected = load_file(reference / "model" / "model.safetensors")
    actual = load_file(run / "model" / "model.safetensors")
    assert expected.keys() == actual.keys()
    for name, tensor in expected.items():
        assert torch.equal(tensor, actual[name]), f"parameter {name} differs after {kills}"
