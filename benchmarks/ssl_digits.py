"""Every one-tower method on the same budget: sklearn's digits, one backbone, one set of views, one schedule.

Trains the shipped recipes one after the other (``recipes/simclr_digits.yaml``, ``moco_digits.yaml``, ...: the
same tiny ViT, views, batch 256 with AdamW at lr 2e-3; only the heads and the loss differ, as each paper builds
them) for the same budget, 20 epochs (100 steps; the recipes train 30), each in its own ``mmcontrast train`` process.
Each exported backbone is scored on the held-out 20% of the digits with the probes of the recipes: cosine kNN
(k = 20, majority vote) and a logistic-regression probe fit on the frozen features of the training split. The
baselines are scored in the same run: the backbone at its initialisation (the recipes' seed) and the raw pixels
(the 32x32 RGB inputs, normalised). SupCon uses the training labels; every other method does not.

Collapse check: the std over the test digits of the L2-normalised backbone features, averaged over dimensions
(SimSiam's check; :func:`mmcontrast.methods.views.normalised_std`): isotropic features of dimension ``d`` give about
``1 / sqrt(d)`` (0.125 for d = 64), fully collapsed ones 0. Backbone features are far from isotropic: they share a
dominant direction, and the untrained backbone gives 0.008, the raw pixels 0.010. The floor is therefore stated
against the baseline: **half the randomly initialised backbone's std** (a first floor of ``0.25 / sqrt(d)`` flagged
MoCo v3 at 0.016 with 85% kNN accuracy, and both baselines). Beside it, the effective rank of the test features
(RankMe, Garrido et al. 2023: ``exp`` of the entropy of the normalised singular values; 1 when collapsed to a line).

Checks (exit 1 on a failure): every method beats random init on kNN accuracy, no method's std is below the floor,
and the whole run takes at most 30 minutes. Writes ``benchmarks/results/ssl_digits.json``, the
table (stdout; copied into ``docs/benchmarks.md``) and ``docs/img/ssl_digits.png``.

    python benchmarks/ssl_digits.py                       # all methods, 20 epochs each (about 13 minutes here)
    python benchmarks/ssl_digits.py --methods BYOL SimSiam --epochs 5
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
METHODS = {
    "SimCLR": "simclr_digits.yaml",
    "MoCo v2": "moco_digits.yaml",
    "MoCo v3": "mocov3_digits.yaml",
    "BYOL": "byol_digits.yaml",
    "SimSiam": "simsiam_digits.yaml",
    "Barlow Twins": "barlow_twins_digits.yaml",
    "VICReg": "vicreg_digits.yaml",
    "DCL": "dcl_digits.yaml",
    "SupCon (labels)": "supcon_digits.yaml",
    "Memory bank": "memory_bank_digits.yaml",
}
BUDGET_SECONDS = 30 * 60
EPOCHS = 20
FLOOR = 0.5  # times the random-init backbone's std


def train(recipe: str, output_dir: Path, overrides: list[str]) -> float:
    """Run ``mmcontrast train`` in a subprocess (probes off: the benchmark scores the export); its wall time."""
    command = [sys.executable, "-m", "mmcontrast.cli", "train", str(ROOT / "recipes" / recipe)]
    command += [f"output_dir={output_dir}", "overwrite_output_dir=true", "eval.train=null", "train.eval_steps=0"]
    command += ["train.progress_bar=false", *overrides]
    start = time.perf_counter()
    subprocess.run(command, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def digits_split(split: str) -> tuple[list, list[int]]:
    from mmcontrast.data.images import DecodedImages, digits

    rows = DecodedImages(digits(split).rows)
    return [rows[i]["image"] for i in range(len(rows))], [row["label"] for row in rows.rows]


def scores(train_x: torch.Tensor, train_y: list[int], test_x: torch.Tensor, test_y: list[int]) -> dict[str, float]:
    """kNN and linear-probe accuracy on the test split, and the collapse check of the test features."""
    from mmcontrast.evaluation.probe import knn_accuracy, linear_probe_accuracy
    from mmcontrast.methods.views import normalised_std

    return {
        "knn": knn_accuracy(train_x, train_y, test_x, test_y, k=20),
        "linear": linear_probe_accuracy(train_x, train_y, test_x, test_y),
        "std": float(normalised_std(test_x)),
        "effective_rank": effective_rank(test_x),
    }


def effective_rank(features: torch.Tensor) -> float:
    """RankMe: ``exp`` of the entropy of the singular values of the features, normalised to sum to 1."""
    singular = torch.linalg.svdvals(features.double())
    p = singular / singular.sum() + 1e-12
    return float(torch.exp(-(p * torch.log(p)).sum()))


def encoder_scores(encoder, data: dict) -> dict[str, float]:
    from mmcontrast.evaluation.probe import encode_images

    train_x, test_x = encode_images(encoder, data["train"][0]), encode_images(encoder, data["test"][0])
    return scores(train_x, data["train"][1], test_x, data["test"][1])


def baselines(data: dict) -> dict[str, dict[str, float]]:
    """Random init (the recipes' backbone, built with their seed, no step taken) and raw pixels."""
    from accelerate.utils import set_seed

    from mmcontrast.recipe import build_parts, load_recipe

    recipe = load_recipe(ROOT / "recipes" / METHODS["SimCLR"], ["eval.train=null"])
    set_seed(recipe.train.seed)  # as mmcontrast train does before building the parts
    encoder = build_parts(recipe).method.image_encoder
    pixels = {split: encoder.preprocess(images).flatten(1) for split, (images, _) in data.items()}
    return {
        "random init": encoder_scores(encoder, data),
        "raw pixels": scores(pixels["train"], data["train"][1], pixels["test"], data["test"][1]),
    }


def plot(results: dict, floor: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [name for name in results if name not in ("random init", "raw pixels")]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4), gridspec_kw={"width_ratios": [3, 1.2]})
    x = range(len(names))
    axes[0].bar([i - 0.2 for i in x], [results[n]["knn"] for n in names], 0.4, label="kNN (k=20)")
    axes[0].bar([i + 0.2 for i in x], [results[n]["linear"] for n in names], 0.4, label="linear probe")
    for name, style in (("random init", ":"), ("raw pixels", "--")):
        axes[0].axhline(results[name]["knn"], color="grey", linestyle=style, label=f"{name} kNN")
    axes[0].set_xticks(list(x), names, rotation=30, ha="right")
    axes[0].set_ylim(0.0, 1.15)
    axes[0].set_ylabel("test accuracy (held-out digits)")
    axes[0].legend(fontsize=8, loc="upper center", ncol=4)
    axes[0].set_title("Same backbone, views and budget")
    everything = list(results)
    axes[1].barh(everything, [results[n]["std"] for n in everything], color="tab:green")
    axes[1].axvline(floor, color="red", linestyle="--", label="collapse floor")
    axes[1].set_xlabel("std of normalised features")
    axes[1].legend(fontsize=8)
    axes[1].invert_yaxis()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def table(results: dict) -> str:
    lines = [
        "| method | kNN acc | linear probe | std of normalised features | effective rank | train s |",
        "|---|---|---|---|---|---|",
    ]
    for name, row in results.items():
        seconds = f"{row['train_seconds']:.0f}" if "train_seconds" in row else ""
        lines.append(
            f"| {name} | {row['knn']:.3f} | {row['linear']:.3f} | {row['std']:.4f} | {row['effective_rank']:.1f} "
            f"| {seconds} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), help=f"of {list(METHODS)}")
    parser.add_argument("--epochs", type=int, default=EPOCHS, help=f"train.epochs of every method ({EPOCHS})")
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "ssl_digits")
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results" / "ssl_digits.json")
    parser.add_argument("--plot", type=Path, default=ROOT / "docs" / "img" / "ssl_digits.png")
    args = parser.parse_args()
    unknown = sorted(set(args.methods) - set(METHODS))
    if unknown:
        parser.error(f"unknown methods {unknown}; choose from {list(METHODS)}")
    from mmcontrast.modalities.image import ImageEncoder

    start = time.perf_counter()
    data = {"train": digits_split("train"), "test": digits_split("test")}
    results: dict[str, dict] = {}
    failures = []
    overrides = [f"train.epochs={args.epochs}"]
    for name in args.methods:
        recipe = METHODS[name]
        output_dir = args.runs / recipe.removesuffix(".yaml")
        seconds = train(recipe, output_dir, overrides)
        results[name] = {**encoder_scores(ImageEncoder.from_pretrained(output_dir / "model"), data)}
        results[name]["train_seconds"] = seconds
        print(f"{name}: {results[name]}", flush=True)
    results.update(baselines(data))
    total = time.perf_counter() - start
    floor = FLOOR * results["random init"]["std"]
    for name in args.methods:
        row = results[name]
        if not row["knn"] > results["random init"]["knn"]:
            failures.append(
                f"{name}: kNN {row['knn']:.3f} does not beat random init {results['random init']['knn']:.3f}"
            )
        if not row["std"] >= floor:
            failures.append(f"{name}: std {row['std']:.4f} below the collapse floor {floor:.4f}")
    if total > BUDGET_SECONDS and args.epochs == EPOCHS and set(args.methods) == set(METHODS):
        failures.append(f"the benchmark took {total:.0f} s > {BUDGET_SECONDS} s")
    print(table(results))
    print(f"total {total:.0f} s; collapse floor {floor:.4f}")
    plot(results, floor, args.plot)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "results": results,
        "collapse_floor": floor,
        "total_seconds": total,
        "epochs": args.epochs,
        "failures": failures,
    }
    args.output.write_text(json.dumps(report, indent=1))
    for failure in failures:
        print(f"FAILED: {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
