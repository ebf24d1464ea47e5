"""Run safety through `mmcontrast train` (Sentence-BERT on a tiny BERT): each refusal is one line on stderr,
exit 2, naming what is wrong; nothing of the earlier run is lost."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import pairs_training_args
from safetensors.torch import load_file

from mmcontrast.cli import main

ROOT = Path(__file__).resolve().parents[1]


def _args(tiny_bert_path, data, output_dir, *extra):
    return [
        *pairs_training_args(tiny_bert_path, data, output_dir),
        "train.batch_size=8",
        "train.max_steps=4",
        "train.save_steps=2",
        "train.logging_steps=2",
        "train.progress_bar=false",
        *extra,
    ]


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("mmcontrast train: error:")]
    assert len(errors) == 1 and "Traceback" not in "\n".join(err), err
    return errors[0]


def test_second_run_into_a_used_folder_refuses_and_keeps_the_first(tiny_bert_path, pairs_csv, tmp_path, capsys):
    assert main(_args(tiny_bert_path, pairs_csv, tmp_path)) == 0
    first = load_file(tmp_path / "model" / "model.safetensors")
    assert main(_args(tiny_bert_path, pairs_csv, tmp_path, "train.lr=1e-3")) == 2
    line = _one_line_error(capsys)
    assert f"output_dir '{tmp_path}' holds another run" in line and "resume_from=latest" in line
    kept = load_file(tmp_path / "model" / "model.safetensors")
    assert all((first[k] == kept[k]).all() for k in first)
    assert main(_args(tiny_bert_path, pairs_csv, tmp_path, "train.lr=1e-3", "overwrite_output_dir=true")) == 0


def test_resume_with_another_learning_rate_names_the_key(tiny_bert_path, pairs_csv, tmp_path, capsys):
    assert main(_args(tiny_bert_path, pairs_csv, tmp_path, "train.max_steps=2")) == 0
    capsys.readouterr()
    extended = ["train.max_steps=4", "resume_from=latest"]
    assert main(_args(tiny_bert_path, pairs_csv, tmp_path, *extended, "train.lr=1e-3")) == 2
    line = _one_line_error(capsys)
    assert "cannot resume from" in line and "train.lr: checkpoint 2e-05, now 0.001" in line
    # extending the same run is allowed
    assert main(_args(tiny_bert_path, pairs_csv, tmp_path, *extended)) == 0
    assert "resumed from" in capsys.readouterr().out


def test_diverging_run_stops_with_the_step_and_exports_nothing(tiny_bert_path, pairs_csv, tmp_path, capsys):
    assert main(_args(tiny_bert_path, pairs_csv, tmp_path, "train.lr=1e6", "train.warmup_ratio=0.0")) == 2
    line = _one_line_error(capsys)
    assert "training diverged" in line and "Lower train.lr" in line
    assert not (tmp_path / "model").exists()


def test_two_runs_at_once_the_second_refuses(tiny_bert_path, pairs_csv, tmp_path):
    long_run = [
        sys.executable,
        "-m",
        "mmcontrast.cli",
        *_args(tiny_bert_path, pairs_csv, tmp_path, "train.max_steps=5000"),
    ]
    first = subprocess.Popen(long_run, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not list((tmp_path / "checkpoints").glob("checkpoint-*")):
            assert first.poll() is None and time.monotonic() < deadline, "the first run made no checkpoint"
            time.sleep(0.05)
        second = subprocess.run(
            [sys.executable, "-m", "mmcontrast.cli", *_args(tiny_bert_path, pairs_csv, tmp_path)],
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        assert second.returncode == 2
        assert "is in use by another run (pid" in second.stderr and "Traceback" not in second.stderr
        assert first.poll() is None, "the first run was disturbed"
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
