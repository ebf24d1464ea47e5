"""benchmarks/matryoshka_stsb.py on a tiny setting: the random small BERT is trained for two steps without and with
Matryoshka, every model is scored through `SentenceTransformer(..., truncate_dim=d)` at its full, 1/2, 1/4 and
1/8 dimension, and the results JSON, table and acceptance check say what they should."""

from __future__ import annotations

import importlib
import json
import math
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    pytest.importorskip("sentence_transformers")
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        module = importlib.import_module("matryoshka_stsb")
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    if not module.DEV_FILE.is_file():
        pytest.skip(f"shared STS-B data not found at {module.DATA_DIR}")
    return module


def test_tiny_run_reports_every_model_at_every_dim(bench, tiny_bert_path, tmp_path, capsys):
    output = tmp_path / "matryoshka.json"
    argv = ["--model", tiny_bert_path, "--train-limit", "32", "--max-steps", "2", "--dev-limit", "30"]
    assert bench.main([*argv, "--output", str(output)]) == 0
    assert "acceptance check skipped" in capsys.readouterr().out
    summary = json.loads(output.read_text())
    assert summary["dims"] == [32, 16, 8, 4]
    assert set(summary["results"]) == {"before", "plain", "matryoshka"}
    for name, result in summary["results"].items():
        assert set(result["spearman"]) == {"32", "16", "8", "4"}, name
        assert all(math.isfinite(value) for value in result["spearman"].values()), name
        assert result["retention"]["32"] == pytest.approx(1.0)
    assert summary["results"]["plain"]["train_seconds"] > 0
    # training changed the model: the trained models do not score exactly as the initial one
    assert summary["results"]["matryoshka"]["spearman"] != summary["results"]["before"]["spearman"]


def test_check_names_the_failure(bench):
    def summary(kept):
        retention = {384: 1.0, 192: 0.99, 96: kept, 48: 0.9}
        return {"dims": [384, 192, 96, 48], "results": {"matryoshka": {"retention": retention}}}

    assert bench.check(summary(0.96)) is None
    assert "keeps 94.0%" in bench.check(summary(0.94)) and "dim 96" in bench.check(summary(0.94))
    assert bench.check(summary(float("nan"))) is not None
