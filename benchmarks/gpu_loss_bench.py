"""Symmetric InfoNCE (CLIP loss) forward + backward on a GPU: mmcontrast tiled vs plain vs open_clip ``ClipLoss``.

The GPU counterpart of ``loss_bench.py``: bf16 embeddings (what a bf16 autocast tower hands the loss), float32
logits on every side, N up to 65536, d = 768, cosine similarity, scale 20.

* ``mmcontrast tiled``: ``info_nce(a, b, symmetric=True, chunk_size=C)``: the logits in ``C x C`` tiles,
  recomputed in the backward pass; it computes in float32 whatever the input dtype;
* ``mmcontrast plain``: ``info_nce(a, b, symmetric=True)``, the ``N x N`` float32 logits materialised;
* ``open_clip ClipLoss``: ``open_clip.loss.ClipLoss()`` on the normalised features cast to float32 (its logits
  are in the features' dtype, so this is its float32-logits form).

Each case: one warm-up call at the same size, then ``--repeats`` timed calls (median reported), each bracketed by
``torch.cuda.synchronize()``. Peak memory is ``torch.cuda.max_memory_allocated()`` after the timed calls minus
``torch.cuda.memory_allocated()`` once the inputs exist (``reset_peak_memory_stats`` in between): what the loss
allocates on top of its inputs, their gradients included. A case that runs out of GPU memory is recorded as
``"OOM"`` and the run goes on. Each record also holds the loss value, so the sides can be checked against each
other (they compute the same number).

``--device cpu`` runs the same code on the CPU (no peak memory there: ``null``); the GPU suite's CPU smoke test
uses it with tiny sizes.

    python benchmarks/gpu_loss_bench.py --output results/loss.json                 # the GPU suite's run
    python benchmarks/gpu_loss_bench.py --device cpu --sizes 256 512 --dim 64 --output /tmp/loss.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

IMPLEMENTATIONS = ("mmcontrast tiled", "mmcontrast plain", "open_clip ClipLoss")
SCALE = 20.0
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def build_loss(name: str, chunk_size: int, device: torch.device):
    """A function ``(a, b) -> loss`` computing the symmetric InfoNCE of ``name`` with float32 logits."""
    if name == "open_clip ClipLoss":
        from open_clip.loss import ClipLoss

        loss = ClipLoss()
        scale = torch.tensor(SCALE, device=device)
        return lambda a, b: loss(F.normalize(a.float(), dim=-1), F.normalize(b.float(), dim=-1), scale)
    from mmcontrast.losses import info_nce

    chunk = chunk_size if name == "mmcontrast tiled" else None
    return lambda a, b: info_nce(a, b, scale=SCALE, symmetric=True, chunk_size=chunk)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_case(name: str, size: int, dim: int, dtype: torch.dtype, chunk_size: int, repeats: int, device) -> dict:
    """Time one forward + backward case; the record holds ``"status": "OOM"`` when the GPU ran out of memory."""
    record = {"implementation": name, "N": size, "d": dim, "chunk_size": chunk_size if "tiled" in name else None}
    loss_fn = build_loss(name, chunk_size, device)
    generator = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(size, dim, generator=generator, device=device).to(dtype).requires_grad_()
    b = torch.randn(size, dim, generator=generator, device=device).to(dtype).requires_grad_()
    cuda = device.type == "cuda"
    try:
        if cuda:
            torch.cuda.reset_peak_memory_stats(device)
            baseline = torch.cuda.memory_allocated(device)
        times, value = [], None
        for call in range(repeats + 1):  # call 0 warms up (kernels, allocator)
            a.grad = b.grad = None
            _synchronize(device)
            start = time.perf_counter()
            loss = loss_fn(a, b)
            loss.backward()
            _synchronize(device)
            if call:
                times.append(time.perf_counter() - start)
            value = float(loss.detach())
        peak_mb = (torch.cuda.max_memory_allocated(device) - baseline) / 2**20 if cuda else None
        record |= {"status": "ok", "times_s": times, "median_s": statistics.median(times), "peak_mb": peak_mb}
        record |= {"loss": value, "logits_dtype": str(loss.dtype).removeprefix("torch.")}
    except torch.OutOfMemoryError as error:
        record |= {"status": "OOM", "error": str(error).split("\n")[0][:300]}
    finally:
        del a, b
        if cuda:
            torch.cuda.empty_cache()
    return record


def markdown(records: list[dict]) -> str:
    """Time and peak memory per (N, implementation), with tiled / open_clip ratios."""
    by_key = {(r["implementation"], r["N"]): r for r in records}
    sizes = sorted({r["N"] for r in records})
    names = " | ".join(f"{name} time (s) / peak (MB)" for name in IMPLEMENTATIONS)
    header = f"| N | {names} | tiled / open_clip |"
    lines = [header, "|---:|" + "---:|" * (len(IMPLEMENTATIONS) + 1)]
    for size in sizes:
        cells = []
        for name in IMPLEMENTATIONS:
            record = by_key.get((name, size))
            if record is None:
                cells.append("-")
            elif record["status"] != "ok":
                cells.append(record["status"])
            else:
                peak = "n/a" if record["peak_mb"] is None else f"{record['peak_mb']:.0f}"
                cells.append(f"{record['median_s']:.4g} / {peak}")
        tiled, open_clip = by_key.get(("mmcontrast tiled", size)), by_key.get(("open_clip ClipLoss", size))
        ratio = "-"
        if tiled and open_clip and tiled["status"] == open_clip["status"] == "ok":
            ratio = f"{tiled['median_s'] / open_clip['median_s']:.2f}x time"
            if tiled["peak_mb"] is not None and open_clip["peak_mb"]:
                ratio += f", {tiled['peak_mb'] / open_clip['peak_mb']:.2f}x memory"
        lines.append(f"| {size} | " + " | ".join(cells) + f" | {ratio} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu (the smoke test)")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="bf16", help="dtype of the embeddings")
    parser.add_argument("--sizes", type=int, nargs="+", default=[4096, 16384, 32768, 65536])
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--chunk-size", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--implementations", nargs="+", default=list(IMPLEMENTATIONS), choices=IMPLEMENTATIONS)
    parser.add_argument("--output", type=Path, required=True, help="the JSON results (a .md table beside it)")
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device here (use --device cpu for the smoke run)")
    run = {
        "command": "python benchmarks/gpu_loss_bench.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "dtype": args.dtype,
        "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
        "records": [],
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    for size in args.sizes:
        for name in args.implementations:
            record = run_case(name, size, args.dim, DTYPES[args.dtype], args.chunk_size, args.repeats, device)
            run["records"].append(record)
            summary = record["status"] if record["status"] != "ok" else f"{record['median_s']:.4f} s"
            if record.get("peak_mb") is not None:
                summary += f", peak {record['peak_mb']:.0f} MB"
            print(f"{name:22s} N={size:6d} d={args.dim}: {summary}", flush=True)
            args.output.write_text(json.dumps(run, indent=1) + "\n")  # partial results survive a timeout
    table = markdown(run["records"])
    args.output.with_suffix(".md").write_text(
        f"# GPU loss benchmark ({run['device']}, torch {run['torch']}, {args.dtype} inputs, fp32 logits, "
        f"d = {args.dim})\n\n{table}"
    )
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
