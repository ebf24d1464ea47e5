"""CLIP training: mmcontrast's engine vs open_clip's own training step, the same tiny open_clip model and data.

The model is the tiny open_clip ViT of ``recipes/clip_open_clip_digits.yaml`` (built from its ``model_cfg``, the
same seed, so both sides start from identical weights); the data are sklearn's digits (train split, 1437 images)
with the recipe's generated captions, in the same batch order on both sides (mmcontrast's seeded sampler).
Both sides use AdamW (lr 2e-3, betas (0.9, 0.98), eps 1e-6, weight decay 0.05 on matrices only), cosine
schedule with 10% warm-up, no gradient clipping, fp32, batch 64, 15 epochs, and treat every other pair of the
batch as a negative (mmcontrast: ``model.mask_positives=false``).

- open_clip: ``open_clip_train.train.train_one_epoch`` itself (forward, ``ClipLoss``, backward, ``AdamW.step``,
  logit-scale clamp) with ``open_clip_train.scheduler.cosine_lr``, the parameter groups of open_clip_train's
  ``main``, open_clip's own image transform and tokenizer.
- mmcontrast: the CLIP recipe's method (open_clip towers) trained by ``mmcontrast.engine.Trainer``.

Each side runs in a fresh subprocess (open_clip first). Throughput is training pairs / wall seconds of the
training call only. Both trained models are saved as open_clip folders and scored by the same zero-shot code
(``OpenClipDualEncoder``: open_clip's ``local-dir:`` loader, transform and tokenizer) on the 360 held-out
digits with the recipe's three prompt templates.

Acceptance (full run only): mmcontrast samples/s >= 1.0x open_clip's, and zero-shot top-1 >= open_clip's - 0.02.
The script exits 1 and names the failed check otherwise.

    python benchmarks/clip_vs_open_clip.py [--epochs N] [--output-dir DIR]

GPU mode (the GPU suite, ``benchmarks/gpu_suite.sh``): ``--device cuda --precision bf16 --model base`` trains a
ViT-B-sized open_clip model (``BASE_MODEL_CFG``: 12 layers of width 768 on 64 x 64 digits in 8 x 8 patches, a
12-layer text tower of width 512) under bf16 autocast on both sides (open_clip: ``precision=amp_bf16``; mmcontrast:
``train.mixed_precision=bf16``), with ``--batch-size`` pairs per step. Data, order and optimiser are as above.

    python benchmarks/clip_vs_open_clip.py --device cuda --precision bf16 --model base --batch-size 256 --epochs 15
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

from side_by_side import TrainTimer, busy_warning, cores, run_sides

os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes" / "clip_open_clip_digits.yaml"

SEED = 0
EPOCHS = 15
BATCH_SIZE = 64
LR = 2e-3
WEIGHT_DECAY = 0.05
BETAS = (0.9, 0.98)
EPS = 1e-6
WARMUP_RATIO = 0.1

TOP1_TOLERANCE = 0.02
MIN_SPEED_RATIO = 1.0

SIDES = ("open_clip", "mmcontrast")

BASE_IMAGE_SIZE = 64
BASE_MODEL_CFG = {
    "embed_dim": 512,
    "vision_cfg": {"image_size": BASE_IMAGE_SIZE, "patch_size": 8, "width": 768, "layers": 12, "head_width": 64},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 512, "heads": 8, "layers": 12},
}


def _recipe(output_dir: Path, epochs: int, setup: argparse.Namespace):
    from mmcontrast.recipe import load_recipe

    overrides = [
        f"output_dir={output_dir}",
        "model.mask_positives=false",
        f"train.epochs={epochs}",
        f"train.batch_size={setup.batch_size}",
        f"train.lr={LR}",
        f"train.weight_decay={WEIGHT_DECAY}",
        f"train.adam_betas=[{BETAS[0]}, {BETAS[1]}]",
        f"train.adam_eps={EPS}",
        f"train.warmup_ratio={WARMUP_RATIO}",
        "train.scheduler=cosine",
        "train.max_grad_norm=0",
        f"train.seed={SEED}",
        "train.drop_last=false",
        "train.save_steps=0",
        "train.eval_steps=0",
        "train.logging_steps=10",
        "train.progress_bar=false",
    ]
    if setup.precision == "bf16":
        overrides.append("train.mixed_precision=bf16")
    if setup.model == "base":
        overrides += [f"model.open_clip.model_cfg={json.dumps(BASE_MODEL_CFG)}", f"data.image_size={BASE_IMAGE_SIZE}"]
    return load_recipe(RECIPE, overrides)


def _optimizer_name(optimizer) -> str:
    mode = next((m for m in ("fused", "foreach") if optimizer.defaults.get(m)), "per-tensor")
    return f"{type(optimizer).__name__} ({mode})"


def _device_name(device: str) -> str:
    import torch

    return torch.cuda.get_device_name() if device == "cuda" else "cpu"


def _run_mmcontrast(output_dir: Path, epochs: int, setup: argparse.Namespace) -> dict:
    import torch
    from accelerate.utils import send_to_device, set_seed

    from mmcontrast.engine.trainer import Trainer
    from mmcontrast.hub.open_clip_folder import save_open_clip
    from mmcontrast.recipe import build_parts
    from mmcontrast.recipes.base import effective_recipe

    recipe = _recipe(output_dir, epochs, setup)
    set_seed(SEED)
    parts = build_parts(recipe)
    parts.batch_sampler.set_epoch(0)
    first = [parts.dataset[i] for i in next(iter(parts.batch_sampler))]
    with torch.no_grad():
        batch = send_to_device(parts.method.collate(first), setup.device)
        initial_loss = float(parts.method.to(setup.device)(batch).loss)
    trainer = Trainer(
        parts.method,
        parts.dataset,
        parts.batch_sampler,
        recipe.train,
        output_dir,
        run_config=effective_recipe(recipe),
        overwrite_output_dir=True,  # the benchmark owns its folder: a rerun replaces it
    )
    with TrainTimer() as timer:
        result = trainer.train()
    method = trainer.method
    model_cfg = recipe.model.open_clip.model_cfg
    model_dir = save_open_clip(
        method.image_encoder, method.text_encoder, method.logit_scale.log_scale, model_cfg, output_dir / "model"
    )
    losses = [row["loss"] for row in result.log_history if "loss" in row]
    return {
        "pairs": len(parts.dataset) * epochs,
        "steps": result.global_step,
        **timer.record(),
        "threads": torch.get_num_threads(),
        "device": _device_name(str(trainer.accelerator.device.type)),
        "precision": setup.precision,
        "optimizer": _optimizer_name(trainer.optimizer.optimizer),
        "initial_loss": initial_loss,
        "last_logged_loss": losses[-1],
        "model_dir": str(model_dir),
    }


class _Batches:
    """The same batches as mmcontrast's sampler gives, through open_clip's transform and tokenizer, with what
    open_clip_train's loop reads (``data["train"].set_epoch``, ``.dataloader.num_batches`` / ``num_samples``)."""

    def __init__(self, rows, sampler, preprocess, tokenizer) -> None:
        self.rows, self.sampler, self.preprocess, self.tokenizer = rows, sampler, preprocess, tokenizer
        self.num_batches = len(sampler)
        self.num_samples = len(rows)
        self.dataloader = self

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return self.num_batches

    def __iter__(self):
        import torch

        for indices in self.sampler:
            rows = [self.rows[i] for i in indices]
            images = torch.stack([self.preprocess(row["image"]) for row in rows])
            yield images, self.tokenizer([row["caption"] for row in rows])


def _run_open_clip(output_dir: Path, epochs: int, setup: argparse.Namespace) -> dict:
    import open_clip
    import torch
    from open_clip.model import CustomTextCLIP
    from open_clip_train.scheduler import cosine_lr
    from open_clip_train.train import train_one_epoch

    from mmcontrast.data.images import DecodedImages, caption_rows, load_image_rows
    from mmcontrast.data.samplers import ShuffledBatchSampler

    recipe = _recipe(output_dir, epochs, setup)
    torch.manual_seed(SEED)
    model_cfg = dict(recipe.model.open_clip.model_cfg)
    model = CustomTextCLIP(**model_cfg, output_dict=True).to(setup.device)  # as open_clip_train creates it
    size = model.visual.image_size[0] if isinstance(model.visual.image_size, tuple) else model.visual.image_size
    preprocess = open_clip.image_transform(size, is_train=False)
    tokenizer = open_clip.SimpleTokenizer(context_length=model_cfg["text_cfg"]["context_length"])
    data = recipe.data
    rows = load_image_rows(data.train, split=data.split, image_size=data.image_size)
    dataset = DecodedImages(caption_rows(rows, data.captions).rows)
    sampler = ShuffledBatchSampler(len(dataset), setup.batch_size, seed=SEED, drop_last=False)

    # open_clip_train/main.py: no weight decay on gains, biases and the logit scale
    def exclude(name, parameter):
        return parameter.ndim < 2 or "bn" in name or "ln" in name or "bias" in name or "logit_scale" in name

    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        [
            {"params": [p for n, p in named if exclude(n, p)], "weight_decay": 0.0},
            {"params": [p for n, p in named if not exclude(n, p)], "weight_decay": WEIGHT_DECAY},
        ],
        lr=LR,
        betas=BETAS,
        eps=EPS,
    )
    total_steps = len(sampler) * epochs
    scheduler = cosine_lr(optimizer, LR, math.ceil(WARMUP_RATIO * total_steps), total_steps)
    args = argparse.Namespace(
        device=setup.device,
        precision="amp_bf16" if setup.precision == "bf16" else "fp32",
        distill=False,
        accum_freq=1,
        skip_scheduler=False,
        horovod=False,
        grad_clip_norm=None,
        batch_size=setup.batch_size,
        world_size=1,
        rank=0,
        local_rank=0,
        log_every_n_steps=10,
        wandb=False,
    )
    loss = open_clip.ClipLoss()
    batches = _Batches(dataset, sampler, preprocess, tokenizer)
    images, texts = next(iter(batches))
    with torch.no_grad():
        initial_loss = float(loss(**model(images.to(setup.device), texts.to(setup.device))))
    losses: list[float] = []

    class _Losses:  # collects the losses the loop logs (a TensorBoard writer's interface)
        def add_scalar(self, name, value, step):
            if name == "train/contrastive_loss":
                losses.append(float(value))

    with TrainTimer() as timer:
        for epoch in range(epochs):
            train_one_epoch(model, {"train": batches}, loss, epoch, optimizer, None, scheduler, None, args, _Losses())
    model_dir = output_dir / "model"
    model_dir.mkdir(parents=True, exist_ok=True)
    from safetensors.torch import save_file

    weights = {k: v.contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(weights, model_dir / "open_clip_model.safetensors")
    preprocess_cfg = {"size": size, "interpolation": "bicubic", "resize_mode": "shortest"}
    config = {"model_cfg": {**model_cfg, "custom_text": True}, "preprocess_cfg": preprocess_cfg}
    (model_dir / "open_clip_config.json").write_text(json.dumps(config))
    return {
        "pairs": len(dataset) * epochs,
        "steps": total_steps,
        **timer.record(),
        "threads": torch.get_num_threads(),
        "device": _device_name(setup.device),
        "precision": setup.precision,
        "optimizer": _optimizer_name(optimizer),
        "initial_loss": initial_loss,
        "last_logged_loss": losses[-1],
        "model_dir": str(model_dir),
    }


def _zero_shot(model_dir: Path) -> dict[str, float]:
    """Zero-shot top-1 / top-5 on the held-out digits, the same code for both sides."""
    from mmcontrast.data.images import DIGIT_NAMES, digits
    from mmcontrast.evaluation.zero_shot import zero_shot_classifier, zero_shot_metrics
    from mmcontrast.hub.open_clip_folder import OpenClipDualEncoder
    from mmcontrast.recipe import load_recipe

    recipe = load_recipe(RECIPE, [])
    encoder = OpenClipDualEncoder(model_dir)
    rows = digits(recipe.eval.split, image_size=recipe.data.image_size).rows
    classifier = zero_shot_classifier(encoder, recipe.eval.classes or list(DIGIT_NAMES), recipe.eval.templates)
    images = [row["image"] for row in rows]
    metrics, _ = zero_shot_metrics(encoder.encode_images(images), [row["label"] for row in rows], classifier)
    return metrics


def _side(side: str, output_dir: Path, epochs: int, result_file: Path, setup: argparse.Namespace) -> None:
    output_dir.mkdir(parents=True, exist_ok=True)
    if setup.device == "cpu":  # both sides on the CPU, also on a machine with a GPU
        os.environ["ACCELERATE_USE_CPU"] = "true"
    run = _run_open_clip if side == "open_clip" else _run_mmcontrast
    result = run(output_dir, epochs, setup)
    result |= {f"zero_shot_{k}": v for k, v in _zero_shot(Path(result["model_dir"])).items()}
    result["pairs_per_second"] = result["pairs"] / result["train_seconds"]
    result_file.write_text(json.dumps(result, indent=1))


def _table(results: dict[str, dict]) -> str:
    lines = [
        "| side | zero-shot top-1 | top-5 | samples/s | train seconds | steps | loss before training | "
        "last logged loss | optimizer | torch threads | other load (cores) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for side in SIDES:
        r = results[side]
        lines.append(
            f"| {side} | {r['zero_shot_top1']:.4f} | {r['zero_shot_top5']:.4f} | {r['pairs_per_second']:.1f} | "
            f"{r['train_seconds']:.1f} | {r['steps']} | {r['initial_loss']:.4f} | {r['last_logged_loss']:.3f} | "
            f"{r['optimizer']} | {r['threads']} | {cores(r['other_cores_busy'])} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=EPOCHS, help="epochs per side (acceptance needs the default)")
    parser.add_argument("--output-dir", type=Path, default=None, help="keep models and results here")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where both sides train")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32", help="bf16: autocast, both sides")
    parser.add_argument("--model", choices=("tiny", "base"), default="tiny", help="tiny: the recipe's; base: ViT-B")
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE)
    parser.add_argument("--side", choices=SIDES, help=argparse.SUPPRESS)
    parser.add_argument("--result-file", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.side:
        _side(args.side, args.output_dir, args.epochs, args.result_file, args)
        return 0

    setup = ["--device", args.device, "--precision", args.precision, "--model", args.model]
    setup += ["--batch-size", str(args.batch_size), "--epochs", str(args.epochs)]
    results, load_before, load_after = run_sides(__file__, SIDES, args.output_dir, setup)
    oc, mm = results["open_clip"], results["mmcontrast"]
    speed_ratio = mm["pairs_per_second"] / oc["pairs_per_second"]
    if args.output_dir is not None:
        summary = {"results": results, "speed_ratio": speed_ratio, "epochs": args.epochs}
        summary |= {"device": args.device, "precision": args.precision, "model": args.model}
        summary |= {"batch_size": args.batch_size}
        summary |= {"load_average_before": load_before, "load_average_after": load_after}
        (args.output_dir / "results.json").write_text(
            json.dumps(summary | {"date": time.strftime("%Y-%m-%d")}, indent=1)
        )
    print()
    print(_table(results))
    print()
    print(f"speed ratio mmcontrast / open_clip: {speed_ratio:.3f}x")
    print(f"load average (1, 5, 15 min) before: {load_before}; after: {load_after}")
    warning = busy_warning({s: r["other_cores_busy"] for s, r in results.items()})
    if warning:
        print(warning)
    if args.epochs != EPOCHS:
        print(f"short run (--epochs {args.epochs}): acceptance checks skipped")
        return 0
    if (args.device, args.precision, args.model, args.batch_size) != ("cpu", "fp32", "tiny", BATCH_SIZE):
        print("not the published CPU set-up: acceptance checks skipped")
        return 0
    failures = []
    if mm["zero_shot_top1"] < oc["zero_shot_top1"] - TOP1_TOLERANCE:
        failures.append(
            f"zero-shot top-1: mmcontrast {mm['zero_shot_top1']:.4f} < open_clip {oc['zero_shot_top1']:.4f} - "
            f"{TOP1_TOLERANCE}"
        )
    if speed_ratio < MIN_SPEED_RATIO:
        failures.append(
            f"throughput: mmcontrast {mm['pairs_per_second']:.1f} samples/s < {MIN_SPEED_RATIO}x open_clip "
            f"{oc['pairs_per_second']:.1f} samples/s ({speed_ratio:.3f}x)"
        )
    for failure in failures:
        print(f"CHECK FAILED: {failure}")
    if failures:
        return 1
    print("PASS: zero-shot accuracy and throughput checks")
    return 0


if __name__ == "__main__":
    sys.exit(main())
