"""Matryoshka training: the loss is the weighted sum of the base loss at each normalised prefix (value and
gradient), bad dimensions are refused naming the key, STS is reported per dimension, and the export truncates in
sentence-transformers."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from huggingface_hub import ModelCard
from sentence_transformers import SentenceTransformer

from mmcontrast.cli import main
from mmcontrast.losses import CoSENTLoss, cosent_loss, info_nce
from mmcontrast.losses.matryoshka import MatryoshkaLoss, matryoshka_loss
from mmcontrast.modalities.text import TextEncoder
from mmcontrast.recipe import build_parts, load_recipe


def _leaves(*shapes):
    generator = torch.Generator().manual_seed(0)
    return [torch.randn(*shape, generator=generator, dtype=torch.float64).requires_grad_() for shape in shapes]


def test_info_nce_with_negatives_equals_the_weighted_sum():
    anchors, positives, negatives = _leaves((6, 16), (6, 16), (6, 2, 16))
    dims, weights = [16, 8, 4], [1.0, 0.5, 2.0]

    def base(a, p, n):
        return info_nce(a, p, n, scale=20.0)

    ours = matryoshka_loss(base, [anchors, positives, negatives], dims, weights)
    ours_grads = torch.autograd.grad(ours, [anchors, positives, negatives])
    by_hand = sum(
        w * info_nce(F.normalize(anchors[:, :d], dim=-1), F.normalize(positives[:, :d], dim=-1),
                     F.normalize(negatives[..., :d], dim=-1), scale=20.0)
        for d, w in zip(dims, weights, strict=True)
    )  # fmt: skip
    by_hand_grads = torch.autograd.grad(by_hand, [anchors, positives, negatives])
    torch.testing.assert_close(ours, by_hand)
    for mine, theirs in zip(ours_grads, by_hand_grads, strict=True):
        torch.testing.assert_close(mine, theirs)
    # the truncation changes the value: the smaller prefixes are really used
    assert not torch.isclose(ours, base(anchors, positives, negatives) * sum(weights))


def test_module_form_passes_keyword_arguments_and_defaults_to_unit_weights():
    a, b = _leaves((8, 12), (8, 12))
    scores = torch.linspace(0, 1, 8, dtype=torch.float64)
    loss = MatryoshkaLoss(CoSENTLoss(scale=20.0), [12, 6, 3], embedding_dim=12)(a, b, scores=scores)
    by_hand = sum(
        cosent_loss(F.normalize(a[:, :d], dim=-1), F.normalize(b[:, :d], dim=-1), scores, scale=20.0)
        for d in (12, 6, 3)
    )
    torch.testing.assert_close(loss, by_hand)
    grads = torch.autograd.grad(loss, [a, b])
    by_hand_grads = torch.autograd.grad(by_hand, [a, b])
    for mine, theirs in zip(grads, by_hand_grads, strict=True):
        torch.testing.assert_close(mine, theirs)


@pytest.mark.parametrize(
    ("dims", "weights", "message"),
    [
        ([], None, "dims is empty"),
        ([8, 16], None, "strictly descending"),
        ([8, 8], None, "strictly descending"),
        ([24, 8], None, "more than the embedding dimension 16"),
        ([16, 8], [1.0], "weights has 1 values for 2 dimensions"),
        ([16, 8], [1.0, 0.0], "positive finite"),
    ],
)
def test_loss_core_refuses_bad_dims(dims, weights, message):
    a, b = _leaves((4, 16), (4, 16))
    with pytest.raises(ValueError, match=message):
        matryoshka_loss(lambda x, y: (x * y).sum(), [a, b], dims, weights)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["loss.matryoshka_dims=[]"], "loss.matryoshka_dims is empty"),
        (["loss.matryoshka_dims=[64, 16]"], "loss.matryoshka_dims holds 64, more than the embedding dimension 32"),
        (["loss.matryoshka_dims=[8, 16]"], "loss.matryoshka_dims must be strictly descending"),
        (["loss.matryoshka_dims=[32, 8]", "loss.matryoshka_weights=[1.0]"], "loss.matryoshka_weights has 1 values"),
        (["loss.matryoshka_weights=[1.0]"], "loss.matryoshka_weights is set without loss.matryoshka_dims"),
        (["loss.matryoshka_dims=[32, 0]"], "key 'loss.matryoshka_dims\\[1\\]' must be >= 1"),
    ],
)
def test_recipe_refuses_bad_dims_naming_the_key(tiny_bert_path, pairs_csv, overrides, message):
    with pytest.raises(ValueError, match=message):
        recipe = load_recipe(
            "recipes/sbert_pairs.yaml", [f"model.name_or_path={tiny_bert_path}", f"data.train={pairs_csv}", *overrides]
        )
        build_parts(recipe)


def test_train_reports_sts_per_dim_and_export_truncates(tiny_bert_path, stsb_dir, tmp_path):
    run = tmp_path / "run"
    args = [
        "train",
        "recipes/sbert_stsb.yaml",
        f"model.name_or_path={tiny_bert_path}",
        f"data.train={stsb_dir / 'sts-train.csv'}",
        "data.limit=64",
        f"eval.sts={stsb_dir / 'sts-dev.csv'}",
        "eval.limit=40",
        "loss.matryoshka_dims=[32, 16, 8]",
        "loss.matryoshka_weights=[1.0, 1.0, 0.5]",
        f"output_dir={run}",
        "train.batch_size=16",
        "train.max_steps=2",
        "train.progress_bar=false",
    ]
    assert main(args) == 0
    metrics = json.loads((run / "summary.json").read_text())["metrics"]
    assert {"sts/spearman_cosine", "sts/spearman_cosine@16", "sts/spearman_cosine@8"} <= set(metrics)
    assert "sts/spearman_cosine@32" not in metrics  # the full dimension is reported without a suffix

    model_dir = run / "model"
    ours = TextEncoder.from_pretrained(model_dir)
    sentences = ["A man plays a guitar.", "A woman is slicing an onion.", "Two dogs run on the grass."]
    full = ours.encode(sentences)
    truncated = SentenceTransformer(str(model_dir), device="cpu", truncate_dim=8)
    assert truncated.get_embedding_dimension() == 8
    theirs = truncated.encode(sentences, convert_to_tensor=True)
    assert theirs.shape == (3, 8)
    torch.testing.assert_close(theirs, full[:, :8], atol=1e-5, rtol=1e-4)

    card = ModelCard.load(model_dir / "README.md")
    assert "matryoshka" in card.data.tags
    assert "[32, 16, 8]" in card.text and "truncate_dim=8" in card.text
    reported = {r.metric_type: r.metric_value for r in card.data.eval_results}
    assert reported["spearman_cosine@8"] == pytest.approx(metrics["sts/spearman_cosine@8"])


def test_matches_sentence_transformers_matryoshka_loss(tiny_bert_path):
    """sentence-transformers' MatryoshkaLoss around its CoSENTLoss, on a real (tiny) model: the same value and the
    same gradients on every weight as mmcontrast's matryoshka_loss around cosent_loss on the model's embeddings."""
    from sentence_transformers.sentence_transformer.losses import CoSENTLoss as STCoSENTLoss
    from sentence_transformers.sentence_transformer.losses import MatryoshkaLoss as STMatryoshkaLoss

    model = SentenceTransformer(tiny_bert_path, device="cpu")
    model.eval()  # no dropout: both computations see the same embeddings
    first = ["a man plays a guitar", "a dog runs", "the sun is hot", "two kids read a book", "rain falls"]
    second = ["someone plays music", "an animal moves", "it is warm", "children read", "a cat sleeps"]
    scores = torch.tensor([0.9, 0.7, 0.5, 0.8, 0.1])
    dims, weights = [32, 16, 8], [1.0, 0.5, 0.25]
    parameters = [p for p in model.parameters() if p.requires_grad]

    def gradients(loss):
        model.zero_grad()
        loss.backward()
        return [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in parameters]

    features = [model.tokenize(first), model.tokenize(second)]
    theirs = STMatryoshkaLoss(model, STCoSENTLoss(model, scale=20.0), dims, weights)(features, scores)
    their_grads = gradients(theirs)

    a, b = (model(model.tokenize(texts))["sentence_embedding"] for texts in (first, second))
    ours = matryoshka_loss(lambda x, y: cosent_loss(x, y, scores, scale=20.0), [a, b], dims, weights)
    our_grads = gradients(ours)

    torch.testing.assert_close(ours, theirs.float(), atol=1e-5, rtol=1e-5)
    assert any(g.abs().sum() > 0 for g in our_grads)
    for mine, reference in zip(our_grads, their_grads, strict=True):
        torch.testing.assert_close(mine, reference, atol=1e-5, rtol=1e-4)
