"""benchmarks/clap_vs_transformers.py on a few steps: mmcontrast's engine and the plain loop over transformers'
ClapModel start from the same model and see the same batches (same loss on the same first batch)."""

from __future__ import annotations

import importlib
import math
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FSDD = ROOT.parent / "shared" / "data" / "fsdd" / "recordings"


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        yield importlib.import_module("clap_vs_transformers")
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))


def test_both_sides_train_the_same_model_on_the_same_batches(bench):
    if not FSDD.is_dir():
        pytest.skip(f"shared FSDD data not found at {FSDD}")
    summary = bench.benchmark(steps=3, batch_size=8, repeats=1, warmup=1, limit=32, log=lambda *_: None)

    initial = summary["initial_loss"]  # eval mode, first batch of epoch 0, before any step
    assert math.isfinite(initial["mmcontrast"])
    assert initial["transformers"] == pytest.approx(initial["mmcontrast"], abs=1e-5)
    results = summary["results"]
    assert set(results) == set(bench.SIDES)
    first = results["mmcontrast"]["losses"][0]  # training mode: same crops and dropout on every side
    for side, result in results.items():
        assert len(result["losses"]) == 3, side
        assert all(math.isfinite(loss) for loss in result["losses"]), side
        assert result["losses"][0] == pytest.approx(first, abs=1e-4), side
        assert result["samples_per_second_median"] > 0, side
    assert results["mmcontrast"]["optimizer"] == "AdamW (fused)"
    assert summary["speed_ratio_vs_transformers"] > 0
    assert bench.table(summary).count("\n") == 1 + len(bench.SIDES)


def test_missing_data_skips_with_a_message(bench, tmp_path, capsys):
    assert bench.main(["--data", str(tmp_path / "missing"), "--output", str(tmp_path / "out.json")]) == 0
    assert "SKIP: FSDD recordings not found" in capsys.readouterr().out
    assert not (tmp_path / "out.json").exists()
