"""`recipes/clip_imagefolder.yaml` learns with its defaults: LiT (a locked all-MiniLM-L6-v2 text tower) on a folder
of 300 captioned digits reaches zero-shot top-1 >= 0.5 on 360 held-out digits in class folders (chance: 0.1)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import captioned_digits_folder

from mmcontrast.cli import main
from mmcontrast.data.images import DIGIT_NAMES, digits

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "clip_imagefolder.yaml"


def class_folders(folder: Path, split: str) -> Path:
    """sklearn digits as PNGs in one sub-folder per class, named by the digit's word."""
    for i, row in enumerate(digits(split).rows):
        (folder / DIGIT_NAMES[row["label"]]).mkdir(parents=True, exist_ok=True)
        row["image"].save(folder / DIGIT_NAMES[row["label"]] / f"{i}.png")
    return folder


@pytest.mark.slow
def test_the_recipe_defaults_learn_300_images(minilm_path, tmp_path):
    train = captioned_digits_folder(tmp_path / "train", "train", 300)  # "a handwritten seven.", ...
    held_out = class_folders(tmp_path / "held_out", "test")
    run = tmp_path / "run"
    overrides = [f"output_dir={run}", f"data.train={train}", f"eval.zero_shot={held_out}"]
    overrides += [f"model.text.name_or_path={minilm_path}", "train.progress_bar=false"]  # offline; quiet
    assert main(["train", str(RECIPE), *overrides]) == 0
    zero_shot = json.loads((run / "zero_shot.json").read_text())
    print(f"clip_imagefolder.yaml defaults, 300 training images: zero-shot top-1 {zero_shot['top1']:.3f}")
    assert zero_shot["top1"] >= 0.5, zero_shot
