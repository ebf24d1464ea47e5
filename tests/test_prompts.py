"""Query / document prompts: each training column is tokenised with its prompt, the export records the prompts for
sentence-transformers, whose `encode(..., prompt_name=...)` then equals mmcontrast's encoder on the prompted text."""

from __future__ import annotations

import json

import pytest
import torch
from sentence_transformers import SentenceTransformer

from mmcontrast.cli import main
from mmcontrast.modalities.text import TextEncoder
from mmcontrast.recipe import build_parts, load_recipe

PROMPTS = [
    'model.prompts={query: "query: ", document: "passage: "}',
    "data.prompts={anchor: query, positive: document}",
]


def _overrides(model, data, *extra):
    return [f"model.name_or_path={model}", f"data.train={data}", *extra]


def test_training_batch_holds_the_prompted_texts(tiny_bert_path, pairs_csv):
    parts = build_parts(load_recipe("recipes/sbert_pairs.yaml", _overrides(tiny_bert_path, pairs_csv, *PROMPTS)))
    rows = [parts.dataset[i] for i in range(3)]
    batch = parts.method.collate(rows)
    texts = [f"query: {row['anchor']}" for row in rows] + [f"passage: {row['positive']}" for row in rows]
    expected = parts.method.encoder.preprocess(texts)
    assert torch.equal(batch["features"]["input_ids"], expected["input_ids"])
    plain = parts.method.encoder.preprocess([row["anchor"] for row in rows] + [row["positive"] for row in rows])
    assert batch["features"]["input_ids"].shape[1] > plain["input_ids"].shape[1]  # the prompt tokens are there


def test_default_prompt_goes_to_columns_without_one(tiny_bert_path, pairs_csv):
    extra = ['model.prompts={query: "query: ", document: "passage: "}', "model.default_prompt_name=document"]
    extra.append("data.prompts={anchor: query}")
    parts = build_parts(load_recipe("recipes/sbert_pairs.yaml", _overrides(tiny_bert_path, pairs_csv, *extra)))
    assert parts.method.prompts == {"anchor": "query: ", "positive": "passage: "}


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (['model.prompts={query: "q: "}', "data.prompts={anchor: question}"], "data.prompts.anchor is 'question'"),
        (['model.prompts={query: "q: "}', "data.prompts={title: query}"], "names column 'title'"),
        (['model.prompts={query: "q: "}', "model.default_prompt_name=doc"], "model.default_prompt_name is 'doc'"),
    ],
)
def test_unknown_prompt_names_are_refused(tiny_bert_path, pairs_csv, extra, message):
    with pytest.raises(ValueError, match=message):
        build_parts(load_recipe("recipes/sbert_pairs.yaml", _overrides(tiny_bert_path, pairs_csv, *extra)))


def test_export_keeps_the_prompts_for_sentence_transformers(tiny_bert_path, pairs_csv, tmp_path):
    run = tmp_path / "run"
    args = [
        "train",
        "recipes/sbert_pairs.yaml",
        *_overrides(tiny_bert_path, pairs_csv, *PROMPTS),
        "model.default_prompt_name=query",
        f"output_dir={run}",
        "train.batch_size=16",
        "train.max_steps=2",
        "train.progress_bar=false",
    ]
    assert main(args) == 0
    model_dir = run / "model"
    config = json.loads((model_dir / "config_sentence_transformers.json").read_text())
    assert config["prompts"] == {"query": "query: ", "document": "passage: "}
    assert config["default_prompt_name"] == "query"

    ours = TextEncoder.from_pretrained(model_dir)
    theirs = SentenceTransformer(str(model_dir), device="cpu")
    texts = ["how do trains work", "Trains run on rails, pulled by a locomotive."]
    for name, prompt in (("query", "query: "), ("document", "passage: ")):
        encoded = theirs.encode(texts, prompt_name=name, convert_to_tensor=True)
        torch.testing.assert_close(encoded, ours.encode([prompt + t for t in texts]), atol=1e-5, rtol=1e-4)
    default = theirs.encode(texts, convert_to_tensor=True)  # the default prompt: query
    torch.testing.assert_close(default, ours.encode(["query: " + t for t in texts]), atol=1e-5, rtol=1e-4)
    assert not torch.allclose(default, ours.encode(texts), atol=1e-4)  # the prompt changes the embedding
