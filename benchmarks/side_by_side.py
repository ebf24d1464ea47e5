"""What the side-by-side benchmarks share: each side in a fresh subprocess, wall seconds of the training call,
and how busy the rest of the machine was meanwhile."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

BUSY_CORES = 0.2  # other processes' average CPU use during training above which timings are flagged


def _busy_cpu_seconds() -> float | None:
    """CPU seconds all processes of the machine have used so far (Linux ``/proc/stat``), or None."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _own_cpu_seconds() -> float:
    """CPU seconds of this process and its child processes (DataLoader workers, compile workers), live or ended."""
    import psutil

    times = os.times()
    total = times.user + times.system + times.children_user + times.children_system
    for child in psutil.Process().children(recursive=True):
        try:
            child_times = child.cpu_times()
            total += child_times.user + child_times.system
        except psutil.Error:  # it ended meanwhile: counted in children_* once reaped
            pass
    return total


class TrainTimer:
    """Wall seconds of a block, and how many cores other processes kept busy meanwhile (machine noise); the block's
    own child processes (DataLoader workers) count as its own."""

    def __enter__(self) -> TrainTimer:
        self.busy, self.own, self.start = _busy_cpu_seconds(), _own_cpu_seconds(), time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = time.perf_counter() - self.start
        busy, own = _busy_cpu_seconds(), _own_cpu_seconds()
        self.other_cores = None
        if busy is not None and self.busy is not None:
            self.other_cores = max(0.0, (busy - self.busy) - (own - self.own)) / self.seconds

    def record(self) -> dict:
        return {"train_seconds": self.seconds, "other_cores_busy": self.other_cores}


def load_average() -> str:
    """The machine's 1, 5 and 15 minute load averages."""
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def cores(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def busy_warning(other_cores: dict[str, float | None]) -> str | None:
    """A warning naming the sides during which other processes kept the machine busy, or None."""
    busy = {side: v for side, v in other_cores.items() if (v or 0) > BUSY_CORES}
    if not busy:
        return None
    return (
        "WARNING: other processes kept the machine busy during training ("
        + ", ".join(f"{side}: {v:.2f} cores" for side, v in busy.items())
        + f" of {os.cpu_count()}): the throughput comparison is unreliable; rerun on a quiet machine"
    )


def run_sides(
    script: str | Path, sides: Sequence[str], output_dir: Path | None, extra_args: Sequence[str] = ()
) -> tuple[dict[str, dict], str, str]:
    """Run ``script --side SIDE --output-dir DIR/SIDE --result-file DIR/SIDE.json [extra_args]`` for each side in
    turn, each in a fresh Python process; return the sides' result dicts and the load averages before and after.

    ``output_dir`` keeps the models and results; without it a temporary folder is used and removed. A side that
    fails ends the benchmark with its exit status.
    """
    root = output_dir or Path(tempfile.mkdtemp(prefix=f"{Path(script).stem}_"))
    root.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict] = {}
    before = load_average()
    try:
        for side in sides:
            result_file = root / f"{side}.json"
            command = [sys.executable, str(Path(script).resolve()), "--side", side, "--output-dir", str(root / side)]
            command += ["--result-file", str(result_file), *extra_args]
            print(f"== {side}: {' '.join(command)}", flush=True)
            completed = subprocess.run(command, cwd=Path(script).resolve().parents[1], check=False)
            if completed.returncode != 0:
                print(f"FAILED: the {side} side exited with {completed.returncode}")
                raise SystemExit(completed.returncode or 1)
            results[side] = json.loads(result_file.read_text())
    finally:
        after = load_average()
        if output_dir is None:
            shutil.rmtree(root, ignore_errors=True)
    return results, before, after
