"""End to end through the CLI: train Sentence-BERT, export a sentence-transformers folder with a model card."""

from __future__ import annotations

import json

import pytest
import torch
from huggingface_hub import ModelCard
from sentence_transformers import SentenceTransformer

from mmcontrast.cli import main
from mmcontrast.evaluation.retrieval import RetrievalEvaluator
from mmcontrast.modalities.text import TextEncoder


def _train(tiny_bert_path, data, output_dir, *extra):
    return main(
        [
            "train",
            "recipes/sbert_pairs.yaml",
            f"model.name_or_path={tiny_bert_path}",
            f"data.train={data}",
            "data.format=auto",
            "data.columns=[anchor, positive]",
            "data.min_score=null",
            f"eval.retrieval={data}",
            "eval.retrieval_format=auto",
            "eval.retrieval_columns=[anchor, positive]",
            "eval.retrieval_min_score=null",
            "eval.sts=null",
            f"output_dir={output_dir}",
            "train.batch_size=16",
            "train.epochs=8",
            "train.lr=3e-3",
            "train.logging_steps=4",
            "train.progress_bar=false",
            *extra,
        ]
    )


def test_train_export_and_load_in_sentence_transformers(tiny_bert_path, pairs_csv, tmp_path):
    evaluator = RetrievalEvaluator.from_pairs(str(pairs_csv))
    before = evaluator(TextEncoder.from_pretrained(tiny_bert_path).encode)

    assert _train(tiny_bert_path, pairs_csv, tmp_path / "run") == 0
    model_dir = tmp_path / "run" / "model"
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    after = {k.split("/", 1)[1]: v for k, v in summary["metrics"].items()}
    assert after["recall@1"] > before["recall@1"] + 0.2, (before, after)

    ours = TextEncoder.from_pretrained(model_dir)
    sentences = evaluator.queries[:10] + evaluator.corpus[:10]
    theirs = SentenceTransformer(str(model_dir), device="cpu").encode(sentences, convert_to_tensor=True)
    assert (ours.encode(sentences) - theirs).abs().max().item() < 1e-5
    assert evaluator(ours.encode)["recall@1"] == pytest.approx(after["recall@1"])

    card = ModelCard.load(model_dir / "README.md")
    assert card.data.library_name == "sentence-transformers"
    assert card.data.pipeline_tag == "sentence-similarity"
    recall = [r for r in card.data.eval_results if r.metric_type == "recall@1"]
    assert recall and recall[0].metric_value == pytest.approx(after["recall@1"])
    assert "loss:" in card.text and "info_nce" in card.text  # the recipe is in the card
    assert (model_dir / "training_curve.png").stat().st_size > 0
    history = json.loads((tmp_path / "run" / "training_log.json").read_text())
    losses = [r["loss"] for r in history if "loss" in r]
    assert losses[-1] < losses[0]


def test_empty_text_row_stops_with_its_index(tiny_bert_path, tmp_path, capsys):
    data = tmp_path / "pairs.csv"
    data.write_text("anchor,positive\nhello there,hi there\ngood morning,\nsee you,bye\n")
    assert _train(tiny_bert_path, data, tmp_path / "run") == 2
    error = capsys.readouterr().err
    assert "row 1: text column 'positive' is missing" in error and str(data) in error


def test_bad_rows_skipped_when_asked(tiny_bert_path, pairs_csv, tmp_path, capsys):
    data = tmp_path / "bad_pairs.csv"
    data.write_text(pairs_csv.read_text() + '"",orphan\nlonely,"  "\n')
    assert _train(tiny_bert_path, data, tmp_path / "run", "data.skip_bad_rows=true", "train.max_steps=2") == 2
    assert "row 96" in capsys.readouterr().err  # the evaluation data has the same bad rows and is not skipped
    assert (
        _train(
            tiny_bert_path,
            data,
            tmp_path / "run2",
            "data.skip_bad_rows=true",
            "train.max_steps=2",
            f"eval.retrieval={pairs_csv}",
        )
        == 0
    )
    assert "skipped 2 bad rows" in capsys.readouterr().out


def test_nan_free_bf16_autocast_step(tiny_bert_path, pairs_csv, tmp_path):
    assert _train(tiny_bert_path, pairs_csv, tmp_path / "run", "train.mixed_precision=bf16", "train.max_steps=3") == 0
    assert torch.isfinite(
        SentenceTransformer(str(tmp_path / "run" / "model")).encode(["x"], convert_to_tensor=True)
    ).all()
