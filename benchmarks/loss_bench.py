"""Symmetric InfoNCE (CLIP loss) forward + backward: time and peak memory against the batch size.

Implementations, all on the same float32 CPU inputs (cosine similarity, scale 20):

* ``mmcontrast plain``: ``info_nce(a, b, symmetric=True)``, the ``N x N`` logits materialised;
* ``mmcontrast tiled``: ``info_nce(..., chunk_size=C)`` (``C = 2048`` by default);
* ``open_clip ClipLoss``: ``open_clip.loss.ClipLoss()`` on normalised features;
* ``sentence-transformers MNSRL``: ``MultipleNegativesSymmetricRankingLoss`` around a stand-in
  model that returns the embeddings it is handed (its own maths, at embedding level);
* ``floor``: the three ``N x d x N`` matmuls any exact implementation must do (the logits, and the
  gradients with respect to both inputs), in ``C x C`` blocks so that no ``N x N`` matrix is
  allocated. The tiled loss recomputes the logits in the backward pass, so it does four.

Each (implementation, N, d) case runs in a fresh subprocess (this script re-invokes itself with
``--case``): one warm-up call at ``N = 256``, then the timed calls at full size (median reported).
Peak memory is ``ru_maxrss`` (the process's resident-set high-water mark) after the timed calls
minus ``ru_maxrss`` just before the inputs are allocated, so it counts the inputs, their gradients
and everything the loss allocates. Cases whose ``N x N`` float32 logits alone exceed
``--max-logits-gb`` are skipped.

Usage::

    python benchmarks/loss_bench.py                 # full run, writes benchmarks/results/ and docs/
    python benchmarks/loss_bench.py --threads 1     # the published run (a shared 2-core machine)
    python benchmarks/loss_bench.py --sizes 1024 4096 --dims 256   # a quick subset
    python benchmarks/loss_bench.py --from-json benchmarks/results/loss_bench.json  # tables and plots only
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
IMPLEMENTATIONS = ("mmcontrast plain", "mmcontrast tiled", "open_clip ClipLoss", "sentence-transformers MNSRL", "floor")
MATERIALISING = ("mmcontrast plain", "open_clip ClipLoss", "sentence-transformers MNSRL")
SCALE = 20.0
WARMUP_SIZE = 256
TABLE_START, TABLE_END = "<!-- loss_bench:start -->", "<!-- loss_bench:end -->"


def repeats_for(size: int) -> int:
    """Timed calls per case: fewer for the large batches, to keep the full run near 15 minutes."""
    if size <= 4096:
        return 5
    return 3 if size <= 16384 else 1


def build_step(name: str, chunk_size: int):
    """A function ``(a, b) -> None`` running one forward + backward of ``name``."""
    import torch
    import torch.nn.functional as F

    if name == "mmcontrast plain":
        from mmcontrast.losses import info_nce

        return lambda a, b: info_nce(a, b, scale=SCALE, symmetric=True).backward()
    if name == "mmcontrast tiled":
        from mmcontrast.losses import info_nce

        return lambda a, b: info_nce(a, b, scale=SCALE, symmetric=True, chunk_size=chunk_size).backward()
    if name == "open_clip ClipLoss":
        from open_clip.loss import ClipLoss

        loss = ClipLoss()
        scale = torch.tensor(SCALE)
        return lambda a, b: loss(F.normalize(a, dim=-1), F.normalize(b, dim=-1), scale).backward()
    if name == "sentence-transformers MNSRL":
        from sentence_transformers.sentence_transformer.losses import MultipleNegativesSymmetricRankingLoss

        class Passthrough(torch.nn.Module):
            """Stands in for a SentenceTransformer: the features of a column are its embeddings."""

            def forward(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
                return {"sentence_embedding": features["embedding"]}

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # deprecated in favour of MNRL(directions=...): same maths
            loss = MultipleNegativesSymmetricRankingLoss(Passthrough(), scale=SCALE)
        return lambda a, b: loss([{"embedding": a}, {"embedding": b}], None).backward()

    def floor(a: torch.Tensor, b: torch.Tensor) -> None:
        with torch.no_grad():
            grad_a, grad_b = torch.zeros_like(a), torch.zeros_like(b)
            for i in range(0, len(a), chunk_size):
                rows = slice(i, i + chunk_size)
                for j in range(0, len(b), chunk_size):
                    columns = slice(j, j + chunk_size)
                    block = a[rows] @ b[columns].T
                    grad_a[rows].addmm_(block, b[columns])
                    grad_b[columns].addmm_(block.T, a[rows])

    return floor


def run_case(name: str, size: int, dim: int, chunk_size: int, repeats: int) -> dict:
    """Time one case in this process; returns the JSON record."""
    import torch

    step = build_step(name, chunk_size)

    def inputs(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        generator = torch.Generator().manual_seed(0)
        a = torch.randn(n, dim, generator=generator).requires_grad_()
        return a, torch.randn(n, dim, generator=generator).requires_grad_()

    step(*inputs(WARMUP_SIZE))
    baseline_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    a, b = inputs(size)
    times = []
    for _ in range(repeats):
        a.grad = b.grad = None
        start = time.perf_counter()
        step(a, b)
        times.append(time.perf_counter() - start)
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "implementation": name,
        "N": size,
        "d": dim,
        "chunk_size": chunk_size,
        "times_s": times,
        "median_s": statistics.median(times),
        "peak_mb": (peak_kb - baseline_kb) / 1024,
        "threads": torch.get_num_threads(),
        "load_average": os.getloadavg(),
    }


def skip_reason(name: str, size: int, max_logits_gb: float) -> str | None:
    logits_gb = size * size * 4 / 1e9
    if name in MATERIALISING and logits_gb > max_logits_gb:
        return f"N x N fp32 logits = {logits_gb:.1f} GB > {max_logits_gb:g} GB"
    return None


def fmt_time(record: dict | None) -> str:
    return "skipped" if record is None else f"{record['median_s']:.3g}"


def fmt_memory(record: dict | None) -> str:
    return "skipped" if record is None else f"{record['peak_mb']:.0f}"


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (Linux), else the machine type."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} ({os.cpu_count()} cores)"
    return platform.machine()


def markdown(records: list[dict], chunk_size: int, command: str) -> str:
    """The results as two markdown tables (time, memory) with tiled / open_clip ratios."""
    by_key = {(r["implementation"], r["N"], r["d"]): r for r in records}
    cases = sorted({(r["N"], r["d"]) for r in records}, key=lambda c: (c[1], c[0]))
    names = [name.replace("mmcontrast tiled", f"mmcontrast tiled (chunk {chunk_size})") for name in IMPLEMENTATIONS]
    lines = []
    for title, fmt, field in (("Median time (s)", fmt_time, "median_s"), ("Peak memory (MB)", fmt_memory, "peak_mb")):
        lines += [f"**{title}**", "", "| N | d | " + " | ".join(names) + " | tiled / open_clip |"]
        lines.append("|---:|---:|" + "---:|" * (len(names) + 1))
        for size, dim in cases:
            row = [by_key.get((name, size, dim)) for name in IMPLEMENTATIONS]
            tiled, open_clip = (
                by_key.get(("mmcontrast tiled", size, dim)),
                by_key.get(("open_clip ClipLoss", size, dim)),
            )
            ratio = f"{tiled[field] / open_clip[field]:.2f}" if tiled and open_clip and open_clip[field] > 0 else "-"
            lines.append(f"| {size} | {dim} | " + " | ".join(fmt(r) for r in row) + f" | {ratio} |")
        lines.append("")
    loads = [r["load_average"][0] for r in records]
    lines.append(
        f"Measured with `{command}` on {cpu_name()} "
        f"(torch threads: {records[0]['threads']}, torch {records[0].get('torch', '?')}), float32; "
        f"1-minute load average during the run {min(loads):.1f}-{max(loads):.1f}. "
        "`skipped`: the N x N float32 logits alone would exceed the memory limit."
    )
    return "\n".join(lines) + "\n"


def plot(records: list[dict], chunk_size: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (time_axis, memory_axis) = plt.subplots(1, 2, figsize=(12, 4.8))
    dims = sorted({r["d"] for r in records})
    styles = {dim: style for dim, style in zip(dims, ("-", "--", ":", "-."), strict=False)}
    for index, name in enumerate(IMPLEMENTATIONS):
        for dim in dims:
            rows = sorted((r for r in records if r["implementation"] == name and r["d"] == dim), key=lambda r: r["N"])
            if not rows:
                continue
            label = name.replace("mmcontrast tiled", f"mmcontrast tiled ({chunk_size})") + f", d={dim}"
            sizes = [r["N"] for r in rows]
            color = f"C{index}"
            time_axis.plot(sizes, [r["median_s"] for r in rows], styles[dim], color=color, marker="o", label=label)
            if name != "floor":
                memory_axis.plot(sizes, [r["peak_mb"] for r in rows], styles[dim], color=color, marker="o", label=label)
    for axis, ylabel in ((time_axis, "forward + backward time (s)"), (memory_axis, "peak memory above baseline (MB)")):
        axis.set_xscale("log", base=2)
        axis.set_yscale("log")
        axis.set_xlabel("batch size N")
        axis.set_ylabel(ylabel)
        axis.grid(True, which="both", alpha=0.3)
    time_axis.set_title("Symmetric InfoNCE, float32 CPU")
    memory_axis.set_title("Peak resident memory")
    time_axis.legend(fontsize=7, loc="upper left")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)


def update_docs_table(path: Path, table: str) -> None:
    """Replace the block between the loss_bench markers in ``path`` (if the file has them)."""
    if not path.is_file():
        return
    text = path.read_text()
    pattern = re.compile(re.escape(TABLE_START) + ".*?" + re.escape(TABLE_END), re.DOTALL)
    if pattern.search(text):
        path.write_text(pattern.sub(lambda _: f"{TABLE_START}\n{table}{TABLE_END}", text))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 4096, 16384, 65536])
    parser.add_argument("--dims", type=int, nargs="+", default=[256, 768])
    parser.add_argument(
        "--largest-dims",
        type=int,
        nargs="*",
        default=[256],
        help="at the largest size only these dims run (N=65536, d=768 alone would take ~10 minutes here)",
    )
    parser.add_argument("--chunk-size", type=int, default=2048)
    parser.add_argument("--threads", type=int, default=None, help="torch threads per case (default: torch's)")
    parser.add_argument("--max-logits-gb", type=float, default=16.0)
    parser.add_argument("--implementations", nargs="+", default=list(IMPLEMENTATIONS), choices=IMPLEMENTATIONS)
    parser.add_argument("--output-dir", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--docs", type=Path, default=ROOT / "docs" / "scaling.md")
    parser.add_argument("--plot", type=Path, default=ROOT / "docs" / "img" / "loss_bench.png")
    parser.add_argument(
        "--from-json", type=Path, help="rebuild the tables and plots from a previous run's loss_bench.json"
    )
    parser.add_argument("--case", nargs=3, metavar=("IMPLEMENTATION", "N", "D"), help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.case:
        import torch

        if args.threads:
            torch.set_num_threads(args.threads)
        name, size, dim = args.case[0], int(args.case[1]), int(args.case[2])
        record = run_case(name, size, dim, args.chunk_size, repeats_for(size))
        record["torch"] = torch.__version__
        print(json.dumps(record))
        return

    if args.from_json:
        run = json.loads(args.from_json.read_text())
    else:
        run = run_all(args)
        args.output_dir.mkdir(parents=True, exist_ok=True)
        (args.output_dir / "loss_bench.json").write_text(json.dumps(run, indent=1) + "\n")
    table = markdown(run["records"], args.chunk_size, run["command"])
    if run["skipped"]:
        table += "\nNot run: " + "; ".join(run["skipped"]) + ".\n"
    args.output_dir.mkdir(parents=True, exist_ok=True)
    (args.output_dir / "loss_bench.md").write_text("# Loss benchmark\n\n" + table)
    plot(run["records"], args.chunk_size, args.output_dir / "loss_bench.png")
    plot(run["records"], args.chunk_size, args.plot)
    update_docs_table(args.docs, table)
    print(table)


def run_all(args: argparse.Namespace) -> dict:
    """Run every case in its own subprocess; returns the command line, the skipped cases and the records."""
    records, skipped = [], []
    largest = max(args.sizes)
    for dim in args.dims:
        for size in args.sizes:
            if size == largest and args.largest_dims and dim not in args.largest_dims:
                skipped.append(f"N={size}, d={dim}: all implementations (time; see --largest-dims)")
                continue
            for name in args.implementations:
                reason = skip_reason(name, size, args.max_logits_gb)
                if reason:
                    skipped.append(f"N={size}, d={dim}, {name}: {reason}")
                    continue
                case = [sys.executable, __file__, "--case", name, str(size), str(dim)]
                case += ["--chunk-size", str(args.chunk_size)] + (
                    ["--threads", str(args.threads)] if args.threads else []
                )
                started = time.perf_counter()
                result = subprocess.run(case, capture_output=True, text=True, cwd=ROOT, check=False)
                if result.returncode != 0:
                    skipped.append(f"N={size}, d={dim}, {name}: failed ({result.stderr.strip().splitlines()[-1:]})")
                    print(result.stderr, file=sys.stderr)
                    continue
                record = json.loads(result.stdout.strip().splitlines()[-1])
                records.append(record)
                print(
                    f"{name:30s} N={size:6d} d={dim:4d}  median {record['median_s']:8.3f} s  "
                    f"peak {record['peak_mb']:8.0f} MB  ({time.perf_counter() - started:.0f} s wall)",
                    flush=True,
                )
    command = "python benchmarks/loss_bench.py " + " ".join(sys.argv[1:])
    return {"command": command.strip(), "skipped": skipped, "records": records}


if __name__ == "__main__":
    main()
