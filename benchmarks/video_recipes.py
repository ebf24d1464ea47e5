"""The video recipes end to end, each trained (timed) and scored against its baselines in the same run.

- ``tcn_multiview``: ``recipes/tcn_multiview_digits.yaml`` (multi-view TCN on generated moving digits, 2 cameras);
  held-out synchronised views: the alignment error must be at most half of the random-init encoder's and below raw
  pixels', Kendall's tau above both; training within 10 minutes.
- ``tcn_videos``: ``recipes/tcn_videos.yaml`` (single-view TCN on the three shared camera clips); two differently
  augmented views of each clip (the recipe's augmentation): alignment error below, Kendall's tau above random init
  and raw pixels (means over five seeds of the evaluation views' augmentations).
- ``video_text``: ``recipes/video_text_digits.yaml`` with the temporal transformer and with mean pooling of frames;
  zero-shot direction accuracy (chance 0.25) must be clearly above mean pooling's (by 0.2) and above chance, digit
  accuracy at least 0.8.

Writes a table to stdout and ``benchmarks/results/video_recipes.json``; exits 1 when a check fails.

    python benchmarks/video_recipes.py                      # all three (about 15 minutes here)
    python benchmarks/video_recipes.py --parts tcn_multiview
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VIDEOS = ROOT.parent / "shared" / "data" / "video"
TRAIN_BUDGET_SECONDS = 600
PARTS = ("tcn_multiview", "tcn_videos", "video_text")
SEEDS = (1000, 1001, 1002, 1003, 1004)


def train(recipe: str, output_dir: Path, *overrides: str) -> float:
    """Run ``mmcontrast train`` in a subprocess; its wall time in seconds."""
    command = [sys.executable, "-m", "mmcontrast.cli", "train", str(ROOT / "recipes" / recipe)]
    command += [f"output_dir={output_dir}", "overwrite_output_dir=true", *overrides]
    start = time.perf_counter()
    subprocess.run(command, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def tcn_multiview(runs: Path) -> tuple[dict, list[str]]:
    seconds = train("tcn_multiview_digits.yaml", runs / "tcn_multiview_digits")
    scores = json.loads((runs / "tcn_multiview_digits" / "video_eval.json").read_text())
    model, init, pixels = scores["model"], scores["random_init"], scores["pixels"]
    failures = []
    if not model["alignment_error"] <= 0.5 * init["alignment_error"]:
        failures.append("multi-view TCN: alignment error is not at most half of random init's")
    if not model["alignment_error"] < pixels["alignment_error"]:
        failures.append("multi-view TCN: alignment error not below raw pixels'")
    if not model["kendall_tau"] > max(init["kendall_tau"], pixels["kendall_tau"]):
        failures.append("multi-view TCN: Kendall's tau not above random init and raw pixels")
    if seconds > TRAIN_BUDGET_SECONDS:
        failures.append(f"multi-view TCN: training took {seconds:.0f} s > {TRAIN_BUDGET_SECONDS} s")
    return {"train_seconds": seconds, **scores}, failures


def tcn_videos(runs: Path) -> tuple[dict, list[str]]:
    if not VIDEOS.is_dir():
        return {"skipped": f"no shared clips at {VIDEOS}"}, []
    import torch

    from mmcontrast.data.video import load_video_rows
    from mmcontrast.evaluation.video_views import compare_on_views
    from mmcontrast.modalities.video import load_video_encoder
    from mmcontrast.recipe import load_recipe
    from mmcontrast.recipes.video_tower import build_video_tower
    from mmcontrast.views.video import views_from_rows

    output = runs / "tcn_videos"
    seconds = train("tcn_videos.yaml", output, f"data.train={VIDEOS}", f"data.cache={output / 'frame_cache'}")
    encoder = load_video_encoder(output / "model")
    rows = load_video_rows(VIDEOS)[0].rows
    recipe = load_recipe(ROOT / "recipes" / "tcn_videos.yaml")
    torch.manual_seed(recipe.train.seed)  # the recipe's own untrained tower is the random-init baseline
    untrained = build_video_tower(recipe.model.video)
    data, augment = recipe.data, recipe.augment.build()
    per_seed = []
    for seed in SEEDS:  # the views' random crops move the raw-pixel baseline a lot: averaged over seeds
        views, _ = views_from_rows(
            rows, num_views=2, augment=augment, fps=data.fps, size=data.frame_size, max_frames=64, seed=seed
        )
        per_seed.append(compare_on_views(encoder, views, baseline=untrained))
    scores = {
        name: {key: sum(s[name][key] for s in per_seed) / len(per_seed) for key in per_seed[0][name]}
        for name in per_seed[0]
    }
    scores["per_seed"] = {
        name: {key: [s[name][key] for s in per_seed] for key in ("alignment_error", "kendall_tau")}
        for name in per_seed[0]
    }
    model, init, pixels = scores["model"], scores["random_init"], scores["pixels"]
    failures = []
    if not model["alignment_error"] < min(init["alignment_error"], pixels["alignment_error"]):
        failures.append("single-view TCN: alignment error not below random init and raw pixels")
    if not model["kendall_tau"] > max(init["kendall_tau"], pixels["kendall_tau"]):
        failures.append("single-view TCN: Kendall's tau not above random init and raw pixels")
    return {"train_seconds": seconds, **scores}, failures


def video_text(runs: Path) -> tuple[dict, list[str]]:
    results = {}
    for pooling in ("transformer", "mean"):
        output = runs / f"video_text_digits_{pooling}"
        seconds = train("video_text_digits.yaml", output, f"model.video.pooling={pooling}")
        results[pooling] = {"train_seconds": seconds, **json.loads((output / "zero_shot.json").read_text())}
    transformer, mean = results["transformer"], results["mean"]
    failures = []
    if not transformer["direction_accuracy"] >= mean["direction_accuracy"] + 0.2:
        failures.append("video-text: direction accuracy of the temporal transformer not 0.2 above mean pooling's")
    if not transformer["direction_accuracy"] > 0.25 + 0.2:
        failures.append("video-text: direction accuracy not clearly above chance (0.25)")
    if not transformer["digit_accuracy"] >= 0.8:
        failures.append("video-text: digit accuracy below 0.8")
    return results, failures


def table(results: dict) -> str:
    lines = ["| part | features | alignment error | Kendall's tau | recall@1 | train s |", "|---|---|---|---|---|---|"]
    for part in ("tcn_multiview", "tcn_videos"):
        scores = results.get(part, {})
        for name in ("model", "random_init", "pixels"):
            if name in scores:
                s = scores[name]
                seconds = f"{scores['train_seconds']:.0f}" if name == "model" else ""
                lines.append(
                    f"| {part} | {name} | {s['alignment_error']:.3f} | {s['kendall_tau']:.3f} | "
                    f"{s['retrieval/recall@1']:.3f} | {seconds} |"
                )
    if "video_text" in results:
        lines += ["", "| video-text pooling | direction accuracy | digit accuracy | train s |", "|---|---|---|---|"]
        for pooling, r in results["video_text"].items():
            lines.append(
                f"| {pooling} | {r['direction_accuracy']:.3f} | {r['digit_accuracy']:.3f} | {r['train_seconds']:.0f} |"
            )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    parser.add_argument("--runs", default=str(ROOT / "runs" / "video_benchmarks"))
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "video_recipes.json"))
    args = parser.parse_args()
    runs = Path(args.runs)
    functions = {"tcn_multiview": tcn_multiview, "tcn_videos": tcn_videos, "video_text": video_text}
    output = Path(args.output)
    results = json.loads(output.read_text()) if output.is_file() else {}
    failures: list[str] = []
    for part in args.parts:
        results[part], failed = functions[part](runs)
        failures += failed
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=1) + "\n")
    print(table(results))
    for failure in failures:
        print(f"FAIL: {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
