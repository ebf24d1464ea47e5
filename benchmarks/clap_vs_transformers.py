"""CLAP training: mmcontrast's engine vs a plain PyTorch loop over transformers' ``ClapModel``, same model, same data.

The model is the tiny CLAP of ``recipes/clap_fsdd.yaml`` (HTSAT audio tower on 16-bin log-mels of 8 kHz audio, a
2-layer RoBERTa text tower with a byte-level tokenizer, CLAP's projection layers, embed dim 64), built once from the
recipe with its seed. The data are the real Free Spoken Digit recordings (training takes 5-49, 2250 clips) with the
recipe's captions generated from the digit labels.

- mmcontrast: the recipe's CLAP method (``build_parts``, as ``mmcontrast train`` builds it) trained by
  ``mmcontrast.engine.Trainer`` (the same ``Trainer`` the CLI runs; no evaluator, no checkpoint, logging every 20
  steps as in the recipe).
- transformers: the same weights exported with :func:`mmcontrast.hub.transformers_clap.export_transformers_clap`
  and loaded back with ``ClapModel.from_pretrained`` / ``ClapProcessor.from_pretrained``; a plain loop: a
  ``DataLoader`` whose collate runs the ``ClapProcessor`` (feature extractor + tokenizer), ``ClapModel`` forward
  (audio / text embeddings, ``logit_scale_a``), the core's symmetric InfoNCE (``mmcontrast.losses.info_nce``),
  ``backward``, ``torch.optim.AdamW.step``. Run twice: with ``torch.optim.AdamW``'s defaults (what such a loop
  writes; on the CPU that is the per-tensor update) and with ``AdamW(fused=True)`` (the engine's optimizer), which
  isolates the engine's own cost.

Same on every side: initial weights, batches (the recipe's seeded sampler, same order, ``drop_last``; the same
random 1 s crops of the few longer clips from a generator seeded alike), AdamW (lr 1e-3, betas (0.9, 0.999),
eps 1e-8, weight decay 0.05 on matrices only), constant learning rate, no clipping, fp32, same-digit clips masked
out of each other's negatives (``labels=``), the same dropout seed. The loss of the first batch before training
(eval mode) must agree on both sides: that checks same model, same batch, same loss.

Throughput: a timestamp after every optimizer step (an optimizer step hook, the same on every side); samples/s =
rows of the steps after the first ``--warmup`` / their wall seconds (data loading, forward, backward, step and
whatever the loop does besides). The sides run interleaved in one process, the order reversed every repeat; the
median over ``--repeats`` is reported. Final loss: mean over the last 10 steps.

Acceptance (default settings only): mmcontrast samples/s >= 1.0x the plain loop's (``torch.optim.AdamW``
defaults), and final losses within 0.05. The script exits 1 and names the failed check otherwise.

    python benchmarks/clap_vs_transformers.py [--steps N] [--batch-size B] [--repeats R] [--warmup W] [--output F]
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import itertools
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from side_by_side import TrainTimer, busy_warning, cores, load_average

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes" / "clap_fsdd.yaml"
FSDD = REPO.parent / "shared" / "data" / "fsdd" / "recordings"
RESULT_FILE = REPO / "benchmarks" / "results" / "clap_vs_transformers.json"

STEPS = 75  # a little over 2 epochs of the 2250 training clips at batch 64 (35 steps each): crosses epoch ends
BATCH_SIZE = 64
REPEATS = 4
WARMUP = 5
LAST = 10  # final loss: mean over this many last steps

MIN_SPEED_RATIO = 1.0
LOSS_TOLERANCE = 0.05  # final losses
INITIAL_LOSS_TOLERANCE = 1e-4  # the same model on the same batch: equal up to float rounding

SIDES = ("mmcontrast", "transformers", "transformers_fused")
LABELS = {
    "mmcontrast": "mmcontrast (`Trainer`)",
    "transformers": "plain loop over `ClapModel`",
    "transformers_fused": "plain loop over `ClapModel`, fused AdamW",
}


def _recipe(data_dir: Path, batch_size: int, steps: int, limit: int | None):
    from mmcontrast.recipe import load_recipe

    overrides = [
        f"data.train={data_dir}",
        f"train.batch_size={batch_size}",
        f"train.max_steps={steps}",
        "train.drop_last=true",
        "train.scheduler=constant",
        "train.warmup_ratio=0",
        "train.max_grad_norm=0",
        "train.eval_steps=0",
        "train.save_steps=0",
        "train.progress_bar=false",
        "eval.zero_shot=null",
    ]
    if limit is not None:
        overrides.append(f"data.limit={limit}")
    return load_recipe(RECIPE, overrides)


@dataclasses.dataclass
class Setup:
    """What every run starts from: the recipe's parts, the exported ClapModel, and both initial states."""

    recipe: Any
    parts: Any
    method_state: dict[str, Any]
    model: Any  # transformers ClapModel
    processor: Any  # transformers ClapProcessor
    model_state: dict[str, Any]
    folder: tempfile.TemporaryDirectory = dataclasses.field(repr=False)

    @property
    def audio_tower(self):
        return self.parts.method.tower("audio").tower  # the AudioTower inside CLAP's ProjectedTower

    def close(self) -> None:
        self.folder.cleanup()


def prepare(data_dir: Path, batch_size: int, steps: int, limit: int | None = None) -> Setup:
    """Build the recipe's CLAP method and data once, and its transformers ClapModel twin (the same weights)."""
    from transformers import ClapModel, ClapProcessor

    from mmcontrast.hub.transformers_clap import export_transformers_clap
    from mmcontrast.recipe import build_parts

    recipe = _recipe(data_dir, batch_size, steps, limit)
    parts = build_parts(recipe)
    if len(parts.batch_sampler) == 0:
        raise SystemExit(f"fewer than {batch_size} training clips in {data_dir}: lower --batch-size")
    method_state = {k: v.detach().clone() for k, v in parts.method.state_dict().items()}
    folder = tempfile.TemporaryDirectory(prefix="clap_vs_transformers_")
    export_transformers_clap(parts.method.eval(), folder.name)
    parts.method.train()
    model = ClapModel.from_pretrained(folder.name)
    processor = ClapProcessor.from_pretrained(folder.name)
    model_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return Setup(recipe, parts, method_state, model, processor, model_state, folder)


class PlainCollate:
    """The plain loop's collate: crop clips longer than the model's input (random 1 s crops in training, from a
    seeded generator; centred in eval mode) and run the ``ClapProcessor``; the digit labels ride along."""

    def __init__(self, processor: Any, max_samples: int | None, seed: int, train: bool = True) -> None:
        import torch

        self.processor, self.max_samples, self.train = processor, max_samples, train
        self.rate = int(processor.feature_extractor.sampling_rate)
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        from mmcontrast.modalities.audio import crop_or_pad

        clips = [
            crop_or_pad(row["audio"], self.max_samples, train=self.train, generator=self.generator).numpy()
            for row in rows
        ]
        inputs = self.processor(
            text=[row["caption"] for row in rows],
            audio=clips,
            sampling_rate=self.rate,
            return_tensors="pt",
            padding=True,
        )
        inputs["labels"] = torch.tensor([row["label"] for row in rows])
        return dict(inputs)


def _clap_loss(model: Any, inputs: dict[str, Any]):
    """ClapModel forward -> normalised audio / text embeddings and its audio logit scale -> the core's symmetric
    InfoNCE (audio -> text and text -> audio), clips of the same digit masked out of each other's negatives."""
    from mmcontrast.losses import info_nce

    labels = inputs.pop("labels")
    output = model(**inputs)
    scale = model.logit_scale_a.exp()
    return info_nce(
        output.audio_embeds, output.text_embeds, scale=scale, symmetric=True, normalize=False, labels=labels
    )


def initial_losses(setup: Setup) -> dict[str, float]:
    """The loss of the first training batch (epoch 0) before training, eval mode (no dropout, centred crops)."""
    import torch

    method, model, sampler = setup.parts.method, setup.model, setup.parts.batch_sampler
    method.load_state_dict(setup.method_state)
    model.load_state_dict(setup.model_state)
    sampler.set_epoch(0)
    rows = [setup.parts.dataset[i] for i in next(iter(sampler))]
    method.eval()
    model.eval()
    collate = PlainCollate(setup.processor, setup.audio_tower.max_samples, setup.recipe.train.seed, train=False)
    with torch.no_grad():
        ours = float(method(method.collate(rows)).loss)
        theirs = float(_clap_loss(model, collate(rows)))
    method.train()
    model.train()
    return {"mmcontrast": ours, "transformers": theirs}


@dataclasses.dataclass
class Run:
    """One side's run: (wall, process CPU) seconds after each optimizer step, the loss of each step, the whole
    call's wall seconds and the other processes' load meanwhile."""

    stamps: list[tuple[float, float]]
    losses: list[float]
    seconds: float
    other_cores: float | None
    optimizer: str

    def samples_per_second(self, batch_size: int, warmup: int) -> float:
        steps = len(self.stamps) - warmup
        return batch_size * steps / (self.stamps[-1][0] - self.stamps[warmup - 1][0])

    def ms_per_step(self, warmup: int) -> float:
        """Median wall milliseconds per step after the warm-up."""
        times = [wall for wall, _ in self.stamps[warmup - 1 :]]
        return 1000 * statistics.median(b - a for a, b in itertools.pairwise(times))

    def cpu_ms_per_step(self, warmup: int) -> float:
        """Mean CPU milliseconds (this process, all threads) per step after the warm-up: less sensitive than wall
        time to other processes on the machine (with one torch thread)."""
        return 1000 * (self.stamps[-1][1] - self.stamps[warmup - 1][1]) / (len(self.stamps) - warmup)


def _stamp(stamps: list[tuple[float, float]]):
    """An optimizer step hook recording (wall, process CPU) seconds after each step."""
    return lambda *_: stamps.append((time.perf_counter(), time.process_time()))


def _optimizer_name(optimizer) -> str:
    mode = next((m for m in ("fused", "foreach") if optimizer.defaults.get(m)), "per-tensor")
    return f"AdamW ({mode})"


def run_mmcontrast(setup: Setup, steps: int) -> Run:
    """The recipe's CLAP method trained for ``steps`` by mmcontrast's engine from the initial weights."""
    from mmcontrast.engine.trainer import Trainer
    from mmcontrast.recipes.base import effective_recipe

    method, config = setup.parts.method, dataclasses.replace(setup.recipe.train, max_steps=steps)
    method.load_state_dict(setup.method_state)
    setup.audio_tower.generator.manual_seed(config.seed)  # the training crops' generator, as freshly built
    losses: list[float] = []
    hook = method.register_forward_hook(lambda module, args, output: losses.append(float(output.loss.detach())))
    stamps: list[tuple[float, float]] = []
    with tempfile.TemporaryDirectory(prefix="clap_mmcontrast_") as output_dir:
        trainer = Trainer(
            method,
            setup.parts.dataset,
            setup.parts.batch_sampler,
            config,
            output_dir,
            run_config=effective_recipe(setup.recipe),
            overwrite_output_dir=True,
        )
        optimizer = trainer.optimizer.optimizer  # the torch AdamW inside Accelerate's wrapper
        timer_hook = optimizer.register_step_post_hook(_stamp(stamps))
        try:
            with TrainTimer() as timer:
                result = trainer.train()
        finally:
            hook.remove()
            timer_hook.remove()
    if result.global_step != steps or len(stamps) != steps:
        raise RuntimeError(f"the engine ran {result.global_step} steps ({len(stamps)} timed), not {steps}")
    return Run(stamps, losses, timer.seconds, timer.other_cores, _optimizer_name(optimizer))


def plain_loop(
    model: Any,
    processor: Any,
    dataset: Any,
    batch_sampler: Any,
    steps: int,
    *,
    lr: float,
    weight_decay: float,
    betas: tuple[float, float],
    eps: float,
    seed: int,
    max_samples: int | None,
    fused: bool = False,
    step_hook: Any = None,
) -> tuple[list[float], Any]:
    """The plain PyTorch training loop over a transformers ``ClapModel``; returns each step's loss and the
    optimizer. ``step_hook`` is registered as an optimizer step post-hook (the timing)."""
    import torch
    from accelerate.utils import set_seed
    from torch.utils.data import DataLoader

    set_seed(seed)
    matrices = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
    others = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
    groups = [{"params": matrices, "weight_decay": weight_decay}, {"params": others, "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, fused=True if fused else None)
    if step_hook is not None:
        optimizer.register_step_post_hook(step_hook)
    collate = PlainCollate(processor, max_samples, seed)
    losses: list[float] = []
    model.train()
    epoch = 0
    while len(losses) < steps:
        batch_sampler.set_epoch(epoch)
        if hasattr(dataset, "set_epoch"):  # the recipe's training crops, seeded by (seed, epoch, row), as the engine
            dataset.set_epoch(epoch)
        # its own generator, so that the loader leaves the global RNG (dropout) alone, as the engine's does
        loader = DataLoader(dataset, batch_sampler=batch_sampler, collate_fn=collate, generator=torch.Generator())
        for inputs in loader:
            loss = _clap_loss(model, inputs)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            with torch.no_grad():  # CLIP's clamp of the logit scale to [1, 100]
                model.logit_scale_a.clamp_(0, math.log(100))
            losses.append(loss.item())
            if len(losses) == steps:
                break
        epoch += 1
    return losses, optimizer


def run_transformers(setup: Setup, steps: int, fused: bool) -> Run:
    """The exported ClapModel trained for ``steps`` by the plain loop from the initial weights."""
    config = setup.recipe.train
    setup.model.load_state_dict(setup.model_state)
    stamps: list[tuple[float, float]] = []
    with TrainTimer() as timer:
        losses, optimizer = plain_loop(
            setup.model,
            setup.processor,
            setup.parts.dataset,
            setup.parts.batch_sampler,
            steps,
            lr=config.lr,
            weight_decay=config.weight_decay,
            betas=(config.adam_betas[0], config.adam_betas[1]),
            eps=config.adam_eps,
            seed=config.seed,
            max_samples=setup.audio_tower.max_samples,
            fused=fused,
            step_hook=_stamp(stamps),
        )
    return Run(stamps, losses, timer.seconds, timer.other_cores, _optimizer_name(optimizer))


def benchmark(
    steps: int = STEPS,
    batch_size: int = BATCH_SIZE,
    repeats: int = REPEATS,
    warmup: int = WARMUP,
    *,
    data_dir: Path = FSDD,
    limit: int | None = None,
    sides: tuple[str, ...] = SIDES,
    log=print,
) -> dict[str, Any]:
    """Run every side ``repeats`` times, interleaved; return the result dict the script prints and saves."""
    import torch
    import transformers

    if not 1 <= warmup < steps:
        raise ValueError(f"--warmup must be at least 1 and below --steps ({steps}), got {warmup}")
    setup = prepare(data_dir, batch_size, steps, limit)
    try:
        initial = initial_losses(setup)
        runs: dict[str, list[Run]] = {side: [] for side in sides}
        load_before = load_average()
        for repeat in range(repeats):
            order = sides if repeat % 2 == 0 else tuple(reversed(sides))
            for side in order:
                gc.collect()
                if side == "mmcontrast":
                    run = run_mmcontrast(setup, steps)
                else:
                    run = run_transformers(setup, steps, fused=side == "transformers_fused")
                runs[side].append(run)
                log(
                    f"repeat {repeat + 1}/{repeats} {side}: {run.samples_per_second(batch_size, warmup):.1f} "
                    f"samples/s, {run.ms_per_step(warmup):.1f} ms/step ({run.cpu_ms_per_step(warmup):.1f} CPU ms), "
                    f"final loss {statistics.fmean(run.losses[-LAST:]):.4f}, other load {cores(run.other_cores)} cores"
                )
        load_after = load_average()
    finally:
        setup.close()

    results: dict[str, Any] = {}
    for side, side_runs in runs.items():
        speeds = [r.samples_per_second(batch_size, warmup) for r in side_runs]
        results[side] = {
            "samples_per_second_median": statistics.median(speeds),
            "samples_per_second": speeds,
            "ms_per_step_median": statistics.median(r.ms_per_step(warmup) for r in side_runs),
            "cpu_ms_per_step": [r.cpu_ms_per_step(warmup) for r in side_runs],
            "call_seconds": [r.seconds for r in side_runs],
            "other_cores_busy": [r.other_cores for r in side_runs],
            "optimizer": side_runs[0].optimizer,
            "first_step_loss": side_runs[0].losses[0],
            "final_loss": statistics.fmean(side_runs[0].losses[-LAST:]),
            "losses": side_runs[0].losses,
            "losses_same_every_repeat": all(r.losses == side_runs[0].losses for r in side_runs),
        }
    summary: dict[str, Any] = {
        "settings": {
            "steps": steps,
            "batch_size": batch_size,
            "repeats": repeats,
            "warmup": warmup,
            "limit": limit,
            "lr": setup.recipe.train.lr,
            "weight_decay": setup.recipe.train.weight_decay,
            "seed": setup.recipe.train.seed,
            "training_clips": len(setup.parts.dataset),
        },
        "machine": {
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
        },
        "initial_loss": initial,
        "results": results,
        "load_average_before": load_before,
        "load_average_after": load_after,
        "date": time.strftime("%Y-%m-%d"),
    }
    if "mmcontrast" in results:
        for peer in ("transformers", "transformers_fused"):
            if peer in results:
                summary[f"speed_ratio_vs_{peer}"] = (
                    results["mmcontrast"]["samples_per_second_median"] / results[peer]["samples_per_second_median"]
                )
    return summary


def table(summary: dict[str, Any]) -> str:
    """The markdown table of a :func:`benchmark` result."""
    lines = [
        "| side | samples/s (median) | per repeat | ms/step (median) | CPU ms/step (median) | loss of step 1 | "
        "final loss (last 10 steps) | optimizer | other load (cores) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for side, r in summary["results"].items():
        busy = [b for b in r["other_cores_busy"] if b is not None]
        lines.append(
            f"| {LABELS[side]} | {r['samples_per_second_median']:.1f} | "
            f"{', '.join(f'{s:.1f}' for s in r['samples_per_second'])} | {r['ms_per_step_median']:.1f} | "
            f"{statistics.median(r['cpu_ms_per_step']):.1f} | "
            f"{r['first_step_loss']:.4f} | {r['final_loss']:.4f} | {r['optimizer']} | "
            f"{cores(max(busy) if busy else None)} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=STEPS, help=f"optimizer steps per run (default {STEPS})")
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE, help=f"clips per step (default {BATCH_SIZE})")
    parser.add_argument("--repeats", type=int, default=REPEATS, help=f"runs per side, interleaved (default {REPEATS})")
    parser.add_argument("--warmup", type=int, default=WARMUP, help=f"first steps left out of the timing ({WARMUP})")
    parser.add_argument("--data", type=Path, default=FSDD, help="the FSDD recordings folder")
    parser.add_argument("--output", type=Path, default=RESULT_FILE, help="the JSON result file")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    parser.add_argument(
        "--fused-peer",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also run the plain loop with fused AdamW (the engine's optimizer)",
    )
    args = parser.parse_args(argv)
    if not args.data.is_dir():
        print(f"SKIP: FSDD recordings not found in {args.data}")
        return 0
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    sides = SIDES if args.fused_peer else SIDES[:2]
    summary = benchmark(args.steps, args.batch_size, args.repeats, args.warmup, data_dir=args.data, sides=sides)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(summary, indent=1) + "\n")

    results, initial = summary["results"], summary["initial_loss"]
    print()
    print(table(summary))
    print()
    print(
        f"loss of the first batch before training (eval mode): mmcontrast {initial['mmcontrast']:.6f}, "
        f"transformers {initial['transformers']:.6f}"
    )
    for peer in ("transformers", "transformers_fused"):
        if f"speed_ratio_vs_{peer}" in summary:
            print(f"speed ratio mmcontrast / {LABELS[peer]}: {summary[f'speed_ratio_vs_{peer}']:.3f}x")
    print(
        f"load average (1, 5, 15 min) before: {summary['load_average_before']}; after: {summary['load_average_after']}"
    )
    print(f"results: {args.output}")
    warning = busy_warning({side: max((b or 0) for b in r["other_cores_busy"]) for side, r in results.items()})
    if warning:
        print(warning)

    failures = []
    if abs(initial["mmcontrast"] - initial["transformers"]) > INITIAL_LOSS_TOLERANCE:
        failures.append(
            f"initial loss: mmcontrast {initial['mmcontrast']:.6f} != transformers {initial['transformers']:.6f}"
        )
    defaults = (args.steps, args.batch_size, args.repeats, args.warmup) == (STEPS, BATCH_SIZE, REPEATS, WARMUP)
    if defaults:
        mm, peer = results["mmcontrast"], results["transformers"]
        ratio = summary["speed_ratio_vs_transformers"]
        if ratio < MIN_SPEED_RATIO:
            failures.append(
                f"throughput: mmcontrast {mm['samples_per_second_median']:.1f} samples/s < {MIN_SPEED_RATIO}x the "
                f"plain loop's {peer['samples_per_second_median']:.1f} samples/s ({ratio:.3f}x)"
            )
        if abs(mm["final_loss"] - peer["final_loss"]) > LOSS_TOLERANCE:
            failures.append(
                f"final loss: mmcontrast {mm['final_loss']:.4f} vs the plain loop's {peer['final_loss']:.4f} "
                f"(tolerance {LOSS_TOLERANCE})"
            )
    else:
        print("not the default settings: the throughput and final-loss checks are skipped")
    for failure in failures:
        print(f"CHECK FAILED: {failure}")
    if failures:
        return 1
    print("PASS" + (": throughput and loss checks" if defaults else ": initial-loss check"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
