"""The one-screen summary of a ``benchmarks/gpu_suite.sh`` results folder (markdown, printed and kept as
``summary.md``): the card, each part's status and time, the test counts, the loss table and the CLIP throughput.

    python benchmarks/gpu_suite_summary.py RESULTS_DIR
"""

from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path


def parts(folder: Path) -> list[str]:
    """One line per part: ok, failed (exit status) or out of time."""
    lines = ["| part | result | seconds (budget) |", "|---|---|---:|"]
    table = folder / "parts.tsv"
    rows = [line.split("\t") for line in table.read_text().splitlines()[1:]] if table.is_file() else []
    for name, status, seconds, budget in rows:
        result = {"0": "ok", "124": "OUT OF TIME", "137": "OUT OF TIME (killed)"}.get(status, f"FAILED (exit {status})")
        lines.append(f"| {name} | {result} | {seconds} ({budget}) |")
    return lines


def tests(folder: Path) -> list[str]:
    """The pytest counts from the junit XML, with the names of failed tests."""
    report = folder / "pytest_gpu.xml"
    if not report.is_file():
        return ["CUDA tests: no report (see pytest_gpu.log)"]
    suites = ElementTree.parse(report).getroot()
    suite = suites if suites.tag == "testsuite" else suites.find("testsuite")
    total, failures, errors, skipped = (int(suite.get(key, 0)) for key in ("tests", "failures", "errors", "skipped"))
    passed = total - failures - errors - skipped
    line = f"CUDA tests (pytest -m gpu): {passed} passed, {failures} failed, {errors} errors, {skipped} skipped"
    failed = [
        f"  - {case.get('classname')}::{case.get('name')}"
        for case in suite.iter("testcase")
        if case.find("failure") is not None or case.find("error") is not None
    ]
    return [line, *failed]


def loss(folder: Path) -> list[str]:
    """The loss benchmark's table."""
    table = folder / "loss_bench.md"
    if table.is_file():
        return table.read_text().strip().splitlines()
    return ["loss benchmark: no table (see loss_bench.log)"]


def clip(folder: Path) -> list[str]:
    """CLIP training throughput of both sides and their ratio."""
    result = folder / "clip" / "results.json"
    if not result.is_file():
        return ["CLIP throughput: no results (see clip_bench.log)"]
    run = json.loads(result.read_text())
    setup = f"{run.get('model', '?')} model, {run.get('precision', '?')}, batch {run.get('batch_size', '?')}"
    lines = [f"CLIP training ({setup}, {run['epochs']} epochs):", "", "| side | pairs/s | train s | zero-shot top-1 |"]
    lines.append("|---|---:|---:|---:|")
    for side, r in run["results"].items():
        lines.append(f"| {side} | {r['pairs_per_second']:.1f} | {r['train_seconds']:.1f} | {r['zero_shot_top1']:.3f} |")
    lines.append(f"\nspeed ratio mmcontrast / open_clip: {run['speed_ratio']:.3f}x")
    return lines


def main(folder: Path) -> int:
    environment = folder / "environment.txt"
    sections = [
        ["# GPU suite", "", *(environment.read_text().strip().splitlines() if environment.is_file() else [])],
        parts(folder),
        tests(folder),
        loss(folder),
        clip(folder),
    ]
    print("\n\n".join("\n".join(section) for section in sections))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(Path(sys.argv[1])))
