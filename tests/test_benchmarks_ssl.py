"""benchmarks/ssl_digits.py end to end on one epoch of one method: it trains the shipped recipe, scores the export
and both baselines with the same probes, applies its checks, and writes its JSON and plot."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        yield importlib.import_module("ssl_digits")
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))


def test_one_epoch_of_one_method_is_scored_beside_the_baselines(bench, tmp_path, monkeypatch):
    output, plot = tmp_path / "ssl.json", tmp_path / "ssl.png"
    argv = ["ssl_digits.py", "--methods", "MoCo v2", "--epochs", "1", "--runs", str(tmp_path / "runs")]
    monkeypatch.setattr(sys, "argv", [*argv, "--output", str(output), "--plot", str(plot)])
    code = bench.main()
    report = json.loads(output.read_text())
    results = report["results"]
    assert set(results) == {"MoCo v2", "random init", "raw pixels"}
    for name, row in results.items():
        assert 0.0 < row["knn"] <= 1.0 and 0.0 < row["linear"] <= 1.0, name
        assert 1.0 <= row["effective_rank"] <= 64 * 3 * 32 * 32, name
    assert results["MoCo v2"]["train_seconds"] > 0 and plot.stat().st_size > 0
    assert report["collapse_floor"] == pytest.approx(0.5 * results["random init"]["std"])
    assert code == (1 if report["failures"] else 0)  # the exit code follows the checks


def test_effective_rank(bench):
    assert bench.effective_rank(torch.ones(50, 8)) == pytest.approx(1.0, abs=1e-6)  # collapsed to one direction
    assert bench.effective_rank(torch.eye(8)) == pytest.approx(8.0, abs=1e-6)  # eight equal singular values
