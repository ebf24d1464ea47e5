"""Parity with the peer libraries' losses on the same inputs: value and gradients.

Peers: open_clip's ``ClipLoss``, sentence-transformers' losses and pytorch-metric-learning's
``NTXentLoss``. The sentence-transformers losses take a model and call it on tokenised features;
:class:`Passthrough` stands in for the model and returns the embeddings it is handed.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from loss_checks import assert_same_value_and_grads, leaf
from torch import Tensor, nn

from mmcontrast.losses import (
    LogitScale,
    cosent_loss,
    cosine_similarity_loss,
    info_nce,
    nt_xent,
    pair_margin_loss,
    triplet_margin_loss,
)

open_clip_loss = pytest.importorskip("open_clip.loss")
pml_losses = pytest.importorskip("pytorch_metric_learning.losses")
st_losses = pytest.importorskip("sentence_transformers.sentence_transformer.losses")


class Passthrough(nn.Module):
    """Stands in for a SentenceTransformer: the "features" of a column are its embeddings."""

    def forward(self, features: dict[str, Tensor]) -> dict[str, Tensor]:
        return {"sentence_embedding": features["embedding"]}


def st_loss(loss_class, **options):
    """Build a sentence-transformers loss around the stand-in model; call it with embedding columns."""
    loss = loss_class(Passthrough(), **options)

    def call(*columns: Tensor, labels: Tensor | None = None) -> Tensor:
        return loss([{"embedding": column} for column in columns], labels)

    return call


# ---------------------------------------------------------------------------------------------
# InfoNCE: open_clip ClipLoss and sentence-transformers MultipleNegativesRankingLoss


@pytest.mark.parametrize("batch, dim, seed", [(2, 4, 0), (8, 16, 1)])
@pytest.mark.parametrize("init", [1 / 0.07, 100.0])
def test_info_nce_symmetric_matches_open_clip(batch, dim, seed, init):
    image, text = leaf(batch, dim, seed=seed), leaf(batch, dim, seed=seed + 1)
    logit_scale = LogitScale(init=init)
    # open_clip expects normalised features and the exponentiated scale (model.logit_scale.exp()).
    expected = open_clip_loss.ClipLoss()(
        F.normalize(image, dim=-1), F.normalize(text, dim=-1), logit_scale.log_scale.exp()
    )
    actual = info_nce(image, text, symmetric=True, scale=logit_scale())
    assert_same_value_and_grads(actual, expected, [image, text, logit_scale.log_scale])


def test_info_nce_dot_product_matches_open_clip_on_raw_features():
    image, text = leaf(6, 8, seed=2, scale=0.3), leaf(6, 8, seed=3, scale=0.3)
    expected = open_clip_loss.ClipLoss()(image, text, torch.tensor(2.5))
    actual = info_nce(image, text, symmetric=True, normalize=False, scale=2.5)
    assert_same_value_and_grads(actual, expected, [image, text])


@pytest.mark.parametrize("num_negative_columns", [0, 1, 2])
@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("batch, dim, seed", [(3, 8, 0), (8, 16, 1)])
def test_info_nce_matches_mnrl(num_negative_columns, symmetric, batch, dim, seed):
    anchors, positives = leaf(batch, dim, seed=seed), leaf(batch, dim, seed=seed + 1)
    negative_columns = [leaf(batch, dim, seed=seed + 2 + k) for k in range(num_negative_columns)]
    # MNRL defaults: scale 20, cosine similarity. Its symmetric variant scores documents
    # against the queries only, like CLIP's text -> image direction.
    options = {"directions": ("query_to_doc", "doc_to_query"), "partition_mode": "per_direction"}
    mnrl = st_loss(st_losses.MultipleNegativesRankingLoss, **(options if symmetric else {}))
    expected = mnrl(anchors, positives, *negative_columns)
    if num_negative_columns == 0:
        negatives = None
    elif num_negative_columns == 1:
        negatives = negative_columns[0]  # [B, d]
    else:
        negatives = torch.stack(negative_columns, dim=1)  # [B, K, d]
    actual = info_nce(anchors, positives, negatives, symmetric=symmetric)
    assert_same_value_and_grads(actual, expected, [anchors, positives, *negative_columns])


# ---------------------------------------------------------------------------------------------
# NT-Xent: pytorch-metric-learning


@pytest.mark.parametrize("count, dim, seed", [(2, 4, 0), (8, 16, 1)])
@pytest.mark.parametrize("temperature", [0.07, 0.5])
def test_nt_xent_matches_pytorch_metric_learning(count, dim, seed, temperature):
    z1, z2 = leaf(count, dim, seed=seed), leaf(count, dim, seed=seed + 1)
    ids = torch.arange(count)
    expected = pml_losses.NTXentLoss(temperature=temperature)(torch.cat([z1, z2]), torch.cat([ids, ids]))
    actual = nt_xent(z1, z2, temperature=temperature)
    assert_same_value_and_grads(actual, expected, [z1, z2])


# ---------------------------------------------------------------------------------------------
# Triplet: sentence-transformers BatchAll / BatchHard / BatchSemiHard triplet losses

TRIPLET_PEERS = {
    "batch_all": "BatchAllTripletLoss",
    "batch_hard": "BatchHardTripletLoss",
    "semi_hard": "BatchSemiHardTripletLoss",
}
# sentence-transformers scores anchors without a positive against a zero "self" distance, and
# anchors without a negative against an arbitrary one; with every label repeated and at least two
# labels, both definitions coincide.
TRIPLET_LABELS = [[0, 0, 1, 1, 2, 2, 3, 3], [0, 1, 0, 1, 1, 2, 2, 0, 2, 1]]


@pytest.mark.parametrize("mining", list(TRIPLET_PEERS))
@pytest.mark.parametrize(
    "metric, margin, spread", [("euclidean", 5.0, 1.0), ("euclidean", 1.0, 0.4), ("cosine", 0.3, 1.0)]
)
@pytest.mark.parametrize("labels", TRIPLET_LABELS)
@pytest.mark.parametrize("seed", [0, 1])
def test_triplet_matches_sentence_transformers(mining, metric, margin, spread, labels, seed):
    embeddings = leaf(len(labels), 8, seed=seed, scale=spread)
    labels = torch.tensor(labels)
    distances = st_losses.BatchHardTripletLossDistanceFunction
    metric_fn = distances.euclidean_distance if metric == "euclidean" else distances.cosine_distance
    peer = st_loss(getattr(st_losses, TRIPLET_PEERS[mining]), distance_metric=metric_fn, margin=margin)
    expected = peer(embeddings, labels=labels)
    actual = triplet_margin_loss(embeddings, labels, margin=margin, mining=mining, distance=metric)
    assert actual.item() > 0
    assert_same_value_and_grads(actual, expected, [embeddings])


# ---------------------------------------------------------------------------------------------
# Pair losses: sentence-transformers ContrastiveLoss, CoSENTLoss, CosineSimilarityLoss


@pytest.mark.parametrize(
    "metric, margin, spread", [("cosine", 0.5, 1.0), ("cosine", 1.1, 1.0), ("euclidean", 2.0, 0.5)]
)
@pytest.mark.parametrize("size_average, reduction", [(True, "mean"), (False, "sum")])
def test_pair_margin_matches_contrastive_loss(metric, margin, spread, size_average, reduction):
    a, b = leaf(9, 6, seed=0, scale=spread), leaf(9, 6, seed=1, scale=spread)
    labels = torch.tensor([1, 0, 0, 1, 0, 1, 1, 0, 0])
    distances = st_losses.SiameseDistanceMetric
    metric_fn = distances.COSINE_DISTANCE if metric == "cosine" else distances.EUCLIDEAN
    peer = st_loss(st_losses.ContrastiveLoss, distance_metric=metric_fn, margin=margin, size_average=size_average)
    expected = peer(a, b, labels=labels)
    actual = pair_margin_loss(a, b, labels, margin=margin, distance=metric, reduction=reduction)
    assert_same_value_and_grads(actual, expected, [a, b])


@pytest.mark.parametrize("scores", [[0.1, 0.9, 0.5, 0.3, 0.7, 0.2, 0.5, 0.0], [0, 1, 1, 0, 2, 2, 1, 0]])
@pytest.mark.parametrize("scale", [20.0, 5.0])
def test_cosent_matches_sentence_transformers(scores, scale):
    a, b = leaf(8, 6, seed=2), leaf(8, 6, seed=3)
    scores = torch.tensor(scores, dtype=torch.float32)
    expected = st_loss(st_losses.CoSENTLoss, scale=scale)(a, b, labels=scores)
    actual = cosent_loss(a, b, scores, scale=scale)
    assert_same_value_and_grads(actual, expected, [a, b])


@pytest.mark.parametrize("scores", [[0.1, 0.9, 0.5, 0.3, 0.7, 0.2], [-1.0, 0.5, 1.0, 0.0, -0.2, 0.8]])
def test_cosine_similarity_matches_sentence_transformers(scores):
    a, b = leaf(6, 6, seed=4), leaf(6, 6, seed=5)
    scores = torch.tensor(scores)
    expected = st_loss(st_losses.CosineSimilarityLoss)(a, b, labels=scores)
    actual = cosine_similarity_loss(a, b, scores)
    assert_same_value_and_grads(actual, expected, [a, b])
