"""CLIP training augmentation (`data.augment`): seeded per (seed, epoch, row) like the SimCLR views, open_clip's
options mapped onto torchvision's transforms, off by default, applied to training rows only, and refused with the
key named when malformed."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mmcontrast.cli import main
from mmcontrast.data.images import DecodedImages, digits
from mmcontrast.typed_config import ConfigError
from mmcontrast.views.simclr import AugmentedDataset, image_augmentation

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "clip_digits.yaml"


@pytest.fixture(scope="module")
def digit_rows() -> list[dict]:
    return [{**row, "caption": "a digit"} for row in digits("train").rows[:4]]


def test_augmentation_is_a_function_of_seed_epoch_and_row(digit_rows):
    transform = image_augmentation(32, crop_scale=(0.3, 1.0), color_jitter_prob=0.8, grayscale_prob=0.2)
    dataset = AugmentedDataset(digit_rows, transform, seed=7)
    first = dataset[2]
    assert first["image"].dtype == torch.uint8 and first["image"].shape == (3, 32, 32)
    assert first["caption"] == "a digit" and first["label"] == digit_rows[2]["label"]  # other fields kept
    state = torch.get_rng_state()
    again = AugmentedDataset(digit_rows, transform, seed=7)[2]  # another instance, as in a resumed run
    assert torch.equal(torch.get_rng_state(), state)  # the caller's random stream is left alone
    assert torch.equal(first["image"], again["image"])
    dataset.set_epoch(1)
    assert not torch.equal(dataset[2]["image"], first["image"])  # a new crop of the same row each epoch
    dataset.set_epoch(0)
    assert torch.equal(dataset[2]["image"], first["image"])
    assert not torch.equal(AugmentedDataset(digit_rows, transform, seed=8)[2]["image"], first["image"])


def test_augmentation_steps_follow_the_options():
    default = image_augmentation(64)
    names = [type(step).__name__ for step in default.transforms]
    assert "RandomHorizontalFlip" not in names and "RandomGrayscale" not in names and "RandomApply" not in names
    crop = default.transforms[names.index("RandomResizedCrop")]
    assert tuple(crop.size) == (64, 64) and crop.scale == (0.9, 1.0)  # open_clip's default scale
    jitter = (0.1, 0.2, 0.3, 0.05)
    options = {"color_jitter": jitter, "color_jitter_prob": 0.6, "grayscale_prob": 0.3}
    everything = image_augmentation(32, crop_scale=(0.5, 0.8), flip=True, **options)
    steps = {type(step).__name__: step for step in everything.transforms}
    assert steps["RandomResizedCrop"].scale == (0.5, 0.8) and "RandomHorizontalFlip" in steps
    assert steps["RandomApply"].p == 0.6 and steps["RandomGrayscale"].p == 0.3
    jitter = steps["RandomApply"].transforms[0]
    assert jitter.brightness == pytest.approx((0.9, 1.1)) and jitter.saturation == pytest.approx((0.7, 1.3))
    assert jitter.hue == pytest.approx((-0.05, 0.05))
    gray = image_augmentation(16, crop_scale=(1.0, 1.0), grayscale_prob=1.0)(digits("train").rows[0]["image"])
    assert torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])


def test_augmentation_is_off_by_default_and_only_for_training_rows(tmp_path):
    from mmcontrast.recipe import build_parts, load_recipe

    overrides = [f"output_dir={tmp_path}", "data.limit=8"]
    plain = build_parts(load_recipe(RECIPE, overrides))
    assert isinstance(plain.dataset, DecodedImages)
    augment = ["data.augment.enabled=true", "data.augment.crop_scale=[0.2, 0.5]"]
    parts = build_parts(load_recipe(RECIPE, [*overrides, *augment]))
    assert isinstance(parts.dataset, AugmentedDataset) and len(parts.dataset) == 8
    row = parts.dataset[0]
    assert row["image"].shape == (3, 32, 32) and row["caption"] == plain.dataset[0]["caption"]
    batch = parts.method.collate([parts.dataset[i] for i in range(4)])
    unaugmented = plain.method.collate([plain.dataset[i] for i in range(4)])
    assert batch["pixel_values"].shape == unaugmented["pixel_values"].shape
    assert not torch.allclose(batch["pixel_values"], unaugmented["pixel_values"])
    zero_shot = parts.evaluators["zero_shot"]  # evaluation reads its own rows, never augmented
    assert all(image.size == (32, 32) for image in zero_shot.images)
    test_images = [row["image"] for row in digits("test").rows]
    assert all(a.tobytes() == b.tobytes() for a, b in zip(zero_shot.images, test_images, strict=True))


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("data.augment.crop_scale=[0.5, 0.6, 0.7]", "data.augment.crop_scale"),
        ("data.augment.crop_scale=[0.9, 0.5]", "data.augment.crop_scale"),
        ("data.augment.color_jitter=[0.4, 0.4, 0.4, 0.9]", "data.augment.color_jitter"),
        ("data.augment.color_jitter=[0.4, 0.4]", "data.augment.color_jitter"),
    ],
)
def test_malformed_augmentation_is_refused_naming_the_key(tmp_path, override, key):
    from mmcontrast.recipe import build_parts, load_recipe

    recipe = load_recipe(RECIPE, [f"output_dir={tmp_path}", "data.limit=4", "data.augment.enabled=true", override])
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        build_parts(recipe)


def test_augmentation_ranges_are_typed(tmp_path):
    from mmcontrast.recipe import load_recipe

    with pytest.raises(ConfigError, match=r"data\.augment\.grayscale_prob"):
        load_recipe(RECIPE, ["data.augment.grayscale_prob=1.5"])
    with pytest.raises(ConfigError, match=r"data\.augment\.crop_scale"):
        load_recipe(RECIPE, ["data.augment.crop_scale=[0, 1]"])


def test_clip_recipe_trains_with_augmentation(tmp_path):
    run = tmp_path / "run"
    overrides = [f"output_dir={run}", "data.augment.enabled=true", "data.augment.color_jitter_prob=0.8"]
    overrides += ["data.augment.grayscale_prob=0.2", "train.max_steps=2", "train.batch_size=16", "train.save_steps=0"]
    overrides += ["train.eval_steps=0", "train.progress_bar=false", "eval.templates=['a photo of the digit {}.']"]
    assert main(["train", str(RECIPE), *overrides]) == 0
    assert (run / "model" / "config.json").is_file()
