"""CLIP on several (image, caption) sources in one run: each with its own columns, every batch from one source."""

from __future__ import annotations

import pytest
from conftest import captioned_digits_folder

import mmcontrast
from mmcontrast.data.images import DIGIT_NAMES, digits
from mmcontrast.data.samplers import MultiSourceBatchSampler
from mmcontrast.recipe import build_parts


def _table_source(folder, count: int):
    """A csv of image paths and captions under other column names than the folder source's."""
    folder.mkdir(parents=True)
    lines = ["path,description"]
    for i, row in enumerate(digits("test").rows[:count]):
        row["image"].save(folder / f"{i}.png")
        lines.append(f"{folder / f'{i}.png'},the number {DIGIT_NAMES[row['label']]}")
    (folder / "pairs.csv").write_text("\n".join(lines) + "\n")
    return folder / "pairs.csv"


@pytest.fixture()
def two_sources(tmp_path):
    folder = captioned_digits_folder(tmp_path / "folder", "train", 40)
    table = _table_source(tmp_path / "table", 24)
    return {
        "data.train": None,
        "data.datasets": {
            "folder": {"train": str(folder)},
            "table": {"train": str(table), "image_column": "path", "caption_column": "description"},
        },
        "train.batch_size": 8,
        "train.progress_bar": False,
        "eval.zero_shot": None,
        "output_dir": str(tmp_path / "run"),
    }


@pytest.mark.parametrize("strategy, order", [("round_robin", [0, 1] * 3 + [0]), ("proportional", None)])
def test_each_batch_comes_from_one_source(two_sources, strategy, order):
    parts = build_parts(
        mmcontrast.load_recipe("recipes/clip_digits.yaml", {**two_sources, "data.multi_dataset_sampler": strategy})
    )
    sampler = parts.batch_sampler
    assert isinstance(sampler, MultiSourceBatchSampler) and sampler.offsets == [0, 40]
    batches = list(sampler)
    sources = [int(batch[0] >= 40) for batch in batches]
    assert all(
        all((row >= 40) == bool(source) for row in batch) for batch, source in zip(batches, sources, strict=True)
    )
    if order is not None:
        assert sources == order  # in turn, until the next source to draw from (the smaller: 3 batches) has none
    else:
        assert sorted(sources) == [0] * 5 + [1] * 3  # every batch of both sources once
    captions = {parts.dataset[i]["caption"] for i in range(40, 64)}
    assert all(caption.startswith("the number ") for caption in captions)  # the table's own caption column


def test_a_two_source_run_trains_and_exports(two_sources):
    summary = mmcontrast.train(
        mmcontrast.load_recipe("recipes/clip_digits.yaml", {**two_sources, "train.max_steps": 4})
    )
    assert summary["global_step"] == 4
    card = (__import__("pathlib").Path(summary["model_dir"]) / "README.md").read_text()
    assert "`../folder`, `../table/pairs.csv`" in card  # both sources, named relative to the run folder


def test_one_source_or_several_not_both(two_sources):
    recipe = mmcontrast.load_recipe("recipes/clip_digits.yaml", {**two_sources, "data.train": "sklearn:digits"})
    with pytest.raises(ValueError, match=r"data.train and data.datasets are both set"):
        build_parts(recipe)
