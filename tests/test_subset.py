"""`data.subset`: a dataset folder laid out as `sentence-transformers/all-nli` is on the hub (parquet files per
subset, declared in the README's `configs:` front matter) trains from the subset asked for, and a subset or split
that is not there stops with one error listing the ones that are."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import pytest
from conftest import synthetic_pairs

from mmcontrast.cli import main
from mmcontrast.recipe import build_parts, load_recipe

README = """---
configs:
- config_name: pair
  data_files:
  - split: train
    path: pair/train-*
  - split: dev
    path: pair/dev-*
- config_name: triplet
  data_files:
  - split: train
    path: triplet/train-*
---
# A two-subset dataset
"""


@pytest.fixture(scope="module")
def nli_folder(tmp_path_factory) -> Path:
    """pair: (anchor, positive) rows in train and dev splits; triplet: (anchor, positive, negative) rows."""
    root = tmp_path_factory.mktemp("all-nli")
    pairs = synthetic_pairs(40)
    anchors, positives = [a for a, _ in pairs], [p for _, p in pairs]
    negatives = [f"no {anchor}" for anchor in anchors]
    (root / "pair").mkdir()
    (root / "triplet").mkdir()
    datasets.Dataset.from_dict({"anchor": anchors, "positive": positives}).to_parquet(
        root / "pair" / "train-00000.parquet"
    )
    datasets.Dataset.from_dict({"anchor": anchors[:8], "positive": positives[:8]}).to_parquet(
        root / "pair" / "dev-00000.parquet"
    )
    datasets.Dataset.from_dict({"anchor": anchors, "positive": positives, "negative": negatives}).to_parquet(
        root / "triplet" / "train-00000.parquet"
    )
    (root / "README.md").write_text(README)
    return root


def _parts(tiny_bert_path, folder, *overrides):
    recipe = load_recipe(
        "recipes/sbert_pairs.yaml",
        [f"model.name_or_path={tiny_bert_path}", f"data.train={folder}", *overrides],
    )
    return build_parts(recipe)


def test_pair_subset_and_split(tiny_bert_path, nli_folder):
    parts = _parts(tiny_bert_path, nli_folder, "data.subset=pair")
    assert parts.dataset.column_names == ["anchor", "positive"] and len(parts.dataset) == 40
    batch = parts.method.collate([parts.dataset[i] for i in range(4)])
    assert batch["features"]["input_ids"].shape[0] == 2 * 4
    dev = _parts(tiny_bert_path, nli_folder, "data.subset=pair", "data.split=dev")
    assert len(dev.dataset) == 8


def test_triplet_subset_trains_with_three_columns(tiny_bert_path, nli_folder, tmp_path):
    parts = _parts(tiny_bert_path, nli_folder, "data.subset=triplet", "data.columns=[anchor, positive, negative]")
    assert parts.dataset.column_names == ["anchor", "positive", "negative"]
    assert parts.dataset["negative"] == [f"no {anchor}" for anchor in parts.dataset["anchor"]]
    rows = [parts.dataset[i] for i in range(4)]
    batch = parts.method.collate(rows)
    assert batch["features"]["input_ids"].shape[0] == 3 * 4
    embeddings = parts.method.embed(batch)
    assert set(embeddings) == {"anchor", "positive", "negative"}

    args = [
        "train",
        "recipes/sbert_pairs.yaml",
        f"model.name_or_path={tiny_bert_path}",
        f"data.train={nli_folder}",
        "data.subset=triplet",
        "data.columns=[anchor, positive, negative]",
        f"output_dir={tmp_path / 'run'}",
        "train.batch_size=8",
        "train.max_steps=2",
        "train.progress_bar=false",
    ]
    assert main(args) == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["global_step"] == 2
    assert (tmp_path / "run" / "model" / "modules.json").is_file()


def test_missing_subset_lists_the_subsets(tiny_bert_path, nli_folder):
    with pytest.raises(ValueError) as error:
        _parts(tiny_bert_path, nli_folder, "data.subset=pairs")
    assert "no subset 'pairs'" in str(error.value)
    assert "its subsets are pair, triplet" in str(error.value) and "data.subset" in str(error.value)


def test_no_subset_when_there_are_several_asks_for_one(tiny_bert_path, nli_folder):
    with pytest.raises(ValueError, match=r"several subsets \(pair, triplet\): choose one with data.subset"):
        _parts(tiny_bert_path, nli_folder)


def test_missing_split_lists_the_splits(tiny_bert_path, nli_folder):
    with pytest.raises(ValueError) as error:
        _parts(tiny_bert_path, nli_folder, "data.subset=pair", "data.split=test")
    assert "no split 'test'; its splits are train, dev: set data.split" in str(error.value)
