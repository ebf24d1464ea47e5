"""``make demo``: train a small image-text (CLIP) model on sklearn's digits offline, then classify zero-shot.

The recipe is ``recipes/clip_digits.yaml`` (shipped in the package as ``demo_data/clip_digits.yaml``): two tiny
transformers CLIP towers from random init, captions generated from the digit labels, 80% of the 1797 digits for
training and the held-out 20% for zero-shot classification with prompts built from the class names.
"""

from __future__ import annotations

import json
import shlex
from importlib import resources
from pathlib import Path

from mmcontrast.data.images import DIGIT_NAMES, digits
from mmcontrast.recipe import load_recipe
from mmcontrast.run_recipe import train_recipe

RECIPE = resources.files("mmcontrast") / "demo_data" / "clip_digits.yaml"


def run_demo(output_dir: str = "runs/demo") -> dict:
    """Train, export and evaluate the demo model; returns the run summary (with the zero-shot metrics)."""
    print(
        "mmcontrast demo: CLIP-style image-text training on sklearn's hand-written digits (1797 8x8 images).\n"
        "The captions are generated from the digit labels ('a handwritten seven.', ...): no human-written text."
    )
    # the demo owns its folder: running it again replaces the earlier demo run
    overrides = [f"output_dir={output_dir}", "train.save_steps=0", "overwrite_output_dir=true"]
    recipe = load_recipe(Path(str(RECIPE)), overrides)
    summary = train_recipe(recipe)
    output = Path(output_dir)
    metrics = json.loads((output / "zero_shot.json").read_text())
    samples = output / "samples"
    samples.mkdir(parents=True, exist_ok=True)
    held_out = digits("test", image_size=32).rows
    paths = []
    for row in held_out[:4]:
        path = samples / f"held_out_{len(paths)}_{DIGIT_NAMES[row['label']]}.png"
        row["image"].save(path)
        paths.append(str(path))
    model_dir = Path(summary["model_dir"])
    print(
        f"\nzero-shot top-1 on {len(held_out)} held-out digits: {metrics['top1']:.3f} "
        f"(top-5 {metrics['top5']:.3f}, mean per-class recall {metrics['mean_per_class_recall']:.3f})"
    )
    print(f"model folder (transformers CLIPModel): {model_dir}")
    print(f"plots: {model_dir / 'training_curve.png'}, {model_dir / 'confusion_matrix.png'}")
    templates = " ".join(shlex.quote(t) for t in recipe.eval.templates)
    print("classify new images with:")
    print(
        f"  mmcontrast zero-shot --model {model_dir} --classes {' '.join(DIGIT_NAMES)} "
        f"--templates {templates} --images {' '.join(paths)}"
    )
    return {**summary, "zero_shot": metrics}
