"""``benchmarks/gpu_suite.sh --cpu-smoke``: the GPU suite's parts run on the CPU at tiny sizes (the same scripts and
code paths as on a GPU) and write every result file with sane numbers; without a GPU the CUDA tests are skipped."""

from __future__ import annotations

import json
import math
import os
import subprocess
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("gpu_suite")
    environment = {**os.environ, "GPU_TESTS": "tests/test_gpu.py", "OMP_NUM_THREADS": "1"}
    completed = subprocess.run(
        [str(ROOT / "benchmarks" / "gpu_suite.sh"), "--cpu-smoke", str(folder)],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    return folder


def test_every_part_ran_and_is_recorded(results):
    rows = [line.split("\t") for line in (results / "parts.tsv").read_text().splitlines()]
    assert rows[0] == ["part", "exit", "seconds", "budget"]
    assert {row[0]: row[1] for row in rows[1:]} == {"pytest_gpu": "0", "loss_bench": "0", "clip_bench": "0"}
    environment = (results / "environment.txt").read_text()
    assert f"torch {torch.__version__}" in environment
    assert "nvidia-smi: not available" in environment or "memory.total [MiB]" in environment  # the card, if any
    summary = (results / "summary.md").read_text()
    assert summary.startswith("# GPU suite") and "speed ratio mmcontrast / open_clip" in summary


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only outcome")
def test_cuda_tests_are_skipped_not_failed_without_a_gpu(results):
    suite = ElementTree.parse(results / "pytest_gpu.xml").getroot().find("testsuite")
    counts = {key: int(suite.get(key)) for key in ("tests", "failures", "errors", "skipped")}
    assert counts["tests"] >= 8 and counts["skipped"] == counts["tests"] and counts["failures"] == counts["errors"] == 0
    reasons = {case.find("skipped").get("message") for case in suite.iter("testcase")}
    assert all("needs a CUDA device" in reason for reason in reasons)


def test_the_loss_benchmark_sides_agree(results):
    run = json.loads((results / "loss_bench.json").read_text())
    assert run["dtype"] == "bf16" and run["device"] == "cpu"
    records = run["records"]
    assert {(r["implementation"], r["N"]) for r in records} == {
        (name, size) for name in ("mmcontrast tiled", "mmcontrast plain", "open_clip ClipLoss") for size in (128, 300)
    }
    for size in (128, 300):
        by_name = {r["implementation"]: r for r in records if r["N"] == size}
        assert all(r["status"] == "ok" and r["median_s"] > 0 and r["logits_dtype"] == "float32" for r in records)
        # the same bf16 inputs and float32 logits: the three compute one number, up to float32 summation order
        reference = by_name["open_clip ClipLoss"]["loss"]
        assert reference > math.log(size) - 1  # random embeddings: near chance
        for record in by_name.values():
            assert record["loss"] == pytest.approx(reference, rel=1e-5)
    assert "| 300 |" in (results / "loss_bench.md").read_text()


def test_the_clip_benchmark_trained_both_sides(results):
    run = json.loads((results / "clip" / "results.json").read_text())
    assert (run["device"], run["precision"], run["batch_size"], run["epochs"]) == ("cpu", "bf16", 256, 1)
    sides = run["results"]
    assert sides["open_clip"]["steps"] == sides["mmcontrast"]["steps"] == math.ceil(1437 / 256)
    for side in sides.values():
        assert side["pairs_per_second"] > 0 and side["device"] == "cpu" and side["precision"] == "bf16"
        assert math.isfinite(side["last_logged_loss"]) and 0 <= side["zero_shot_top1"] <= 1
    assert run["speed_ratio"] > 0
