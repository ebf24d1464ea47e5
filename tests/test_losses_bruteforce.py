"""Each loss against an explicit loop over rows, pairs or triplets: value and gradients.

The reference implementations below spell the formulas out one scalar at a time (docs/losses.md);
the vectorised losses must agree in value and in the gradient with respect to every input.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from loss_checks import TOL, assert_same_value_and_grads, leaf
from torch import Tensor

from mmcontrast.losses import (
    CoSENTLoss,
    CosineSimilarityLoss,
    InfoNCELoss,
    LogitScale,
    NTXentLoss,
    PairMarginLoss,
    TripletMarginLoss,
    cosent_loss,
    cosine_similarity_loss,
    info_nce,
    nt_xent,
    pair_margin_loss,
    triplet_margin_loss,
)


def value(x: Tensor) -> float:
    return x.detach().item()


def similarity(x: Tensor, y: Tensor, normalize: bool = True) -> Tensor:
    dot = torch.dot(x, y)
    return dot / (x.norm() * y.norm()) if normalize else dot


def distance(x: Tensor, y: Tensor, metric: str) -> Tensor:
    return 1 - similarity(x, y) if metric == "cosine" else (x - y).norm()


def loop_cross_entropy(query: Tensor, keys: list[Tensor], target: int, scale, normalize: bool) -> Tensor:
    logits = torch.stack([scale * similarity(query, key, normalize) for key in keys])
    return torch.logsumexp(logits, dim=0) - logits[target]


# ---------------------------------------------------------------------------------------------
# InfoNCE


def loop_info_nce(anchors, positives, negatives, scale, symmetric, normalize, labels) -> Tensor:
    batch = len(anchors)
    if negatives is None:
        hard = []
    elif negatives.ndim == 2:
        hard = list(negatives)
    else:
        hard = [negatives[i, k] for i in range(batch) for k in range(negatives.shape[1])]

    def direction(queries, keys, extra):
        total = 0.0
        for i in range(batch):
            # Columns j != i sharing row i's label are false negatives: left out of the softmax.
            kept = [j for j in range(batch) if j == i or labels is None or labels[j] != labels[i]]
            columns = [keys[j] for j in kept] + extra
            total = total + loop_cross_entropy(queries[i], columns, kept.index(i), scale, normalize)
        return total / batch

    loss = direction(anchors, positives, hard)
    if symmetric:
        loss = (loss + direction(positives, anchors, [])) / 2
    return loss


@pytest.mark.parametrize("batch, dim, seed", [(1, 3, 0), (5, 8, 1), (8, 4, 2)])
@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("negatives_shape", [None, "B,d", "B,K,d"])
@pytest.mark.parametrize("normalize, scale", [(True, 20.0), (True, 1 / 0.07), (False, 1.0)])
def test_info_nce(batch, dim, seed, symmetric, negatives_shape, normalize, scale):
    anchors, positives = leaf(batch, dim, seed=seed), leaf(batch, dim, seed=seed + 100)
    inputs = [anchors, positives]
    negatives = None
    if negatives_shape == "B,d":
        negatives = leaf(batch, dim, seed=seed + 200)
    elif negatives_shape == "B,K,d":
        negatives = leaf(batch, 3, dim, seed=seed + 200)
    if negatives is not None:
        inputs.append(negatives)
    options = {"scale": scale, "symmetric": symmetric, "normalize": normalize}
    actual = info_nce(anchors, positives, negatives, **options)
    expected = loop_info_nce(anchors, positives, negatives, labels=None, **options)
    assert_same_value_and_grads(actual, expected, inputs)


@pytest.mark.parametrize("labels", [[0, 1, 2, 3, 4, 5], [0, 0, 1, 1, 2, 0], [3, 3, 3, 3, 3, 3]])
@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("num_negatives", [0, 2])
def test_info_nce_label_mask(labels, symmetric, num_negatives):
    labels = torch.tensor(labels)
    anchors, positives = leaf(6, 5, seed=3), leaf(6, 5, seed=4)
    negatives = leaf(6, num_negatives, 5, seed=5) if num_negatives else None
    inputs = [anchors, positives] + ([negatives] if num_negatives else [])
    actual = info_nce(anchors, positives, negatives, symmetric=symmetric, labels=labels)
    expected = loop_info_nce(anchors, positives, negatives, 20.0, symmetric, True, labels.tolist())
    assert_same_value_and_grads(actual, expected, inputs)


def test_info_nce_unique_labels_change_nothing():
    anchors, positives = leaf(6, 5, seed=6), leaf(6, 5, seed=7)
    torch.testing.assert_close(
        info_nce(anchors, positives, labels=torch.arange(6)), info_nce(anchors, positives), **TOL
    )


@pytest.mark.parametrize("symmetric", [False, True])
def test_info_nce_learnable_scale_gradient(symmetric):
    logit_scale = LogitScale(init=10.0)
    anchors, positives = leaf(4, 6, seed=8), leaf(4, 6, seed=9)
    inputs = [anchors, positives, logit_scale.log_scale]
    loss_module = InfoNCELoss(logit_scale=logit_scale, symmetric=symmetric)
    expected = loop_info_nce(anchors, positives, None, logit_scale.log_scale.exp(), symmetric, True, None)
    assert_same_value_and_grads(loss_module(anchors, positives), expected, inputs)


@pytest.mark.parametrize(
    "init, max_scale, expected",
    [(1 / 0.07, 100.0, 1 / 0.07), (100.0, 100.0, 100.0), (1.0, 100.0, 1.0), (50.0, 20.0, None)],
)
def test_logit_scale(init, max_scale, expected):
    if expected is None:
        with pytest.raises(ValueError, match="init"):
            LogitScale(init=init, max_scale=max_scale)
        return
    scale = LogitScale(init=init, max_scale=max_scale)
    assert math.isclose(scale().item(), expected, rel_tol=1e-6)
    assert math.isclose(scale.log_scale.item(), math.log(init), rel_tol=1e-6)
    with torch.no_grad():
        scale.log_scale.fill_(10.0)
    assert math.isclose(scale().item(), max_scale, rel_tol=1e-6)
    with torch.no_grad():
        scale.log_scale.fill_(-3.0)
    assert math.isclose(scale().item(), 1.0, rel_tol=1e-6)


def test_logit_scale_fixed_is_a_saved_buffer():
    scale = LogitScale(init=20.0, learnable=False)
    assert list(scale.parameters()) == []
    assert "log_scale" in scale.state_dict()
    assert math.isclose(scale().item(), 20.0, rel_tol=1e-6)


# ---------------------------------------------------------------------------------------------
# NT-Xent


def loop_nt_xent(z1, z2, temperature, normalize, labels) -> Tensor:
    count = len(z1)
    views = list(z1) + list(z2)
    sample = [i % count for i in range(2 * count)]
    label = sample if labels is None else [labels[s] for s in sample]
    total = 0.0
    for i in range(2 * count):
        target = (i + count) % (2 * count)
        kept = [j for j in range(2 * count) if j == target or (j != i and label[j] != label[i])]
        columns = [views[j] for j in kept]
        total = total + loop_cross_entropy(views[i], columns, kept.index(target), 1 / temperature, normalize)
    return total / (2 * count)


@pytest.mark.parametrize("count, dim, seed", [(1, 4, 0), (4, 8, 1), (7, 3, 2)])
@pytest.mark.parametrize("temperature", [0.07, 0.5, 1.0])
@pytest.mark.parametrize("normalize", [True, False])
def test_nt_xent(count, dim, seed, temperature, normalize):
    z1, z2 = leaf(count, dim, seed=seed), leaf(count, dim, seed=seed + 50)
    actual = nt_xent(z1, z2, temperature=temperature, normalize=normalize)
    expected = loop_nt_xent(z1, z2, temperature, normalize, None)
    assert_same_value_and_grads(actual, expected, [z1, z2])


@pytest.mark.parametrize("labels", [[0, 1, 0, 2, 1], [4, 4, 4, 4, 4]])
def test_nt_xent_label_mask(labels):
    z1, z2 = leaf(5, 6, seed=10), leaf(5, 6, seed=11)
    module = NTXentLoss(temperature=0.2)
    expected = loop_nt_xent(z1, z2, 0.2, True, labels)
    assert_same_value_and_grads(module(z1, z2, torch.tensor(labels)), expected, [z1, z2])


# ---------------------------------------------------------------------------------------------
# Triplet margin


def loop_triplet(embeddings, labels, margin, mining, metric) -> Tensor:
    batch = len(embeddings)

    def dist(i, j):
        return distance(embeddings[i], embeddings[j], metric)

    def positives(a):
        return [p for p in range(batch) if p != a and labels[p] == labels[a]]

    def negatives(a):
        return [n for n in range(batch) if labels[n] != labels[a]]

    anchors = [a for a in range(batch) if positives(a) and negatives(a)]
    zero = embeddings.sum() * 0
    if mining == "batch_all":
        losses = [
            torch.relu(dist(a, p) - dist(a, n) + margin)
            for a in anchors
            for p, n in itertools.product(positives(a), negatives(a))
        ]
        active = sum(1 for loss in losses if value(loss) > 0)
        return sum(losses, zero) / max(active, 1)
    if mining == "batch_hard":
        losses = [
            torch.relu(
                max((dist(a, p) for p in positives(a)), key=value)
                - min((dist(a, n) for n in negatives(a)), key=value)
                + margin
            )
            for a in anchors
        ]
        return sum(losses, zero) / max(len(anchors), 1)
    losses = []
    for a in anchors:
        for p in positives(a):
            d_ap = dist(a, p)
            d_an = [dist(a, n) for n in negatives(a)]
            farther = [d for d in d_an if value(d) > value(d_ap)]
            chosen = min(farther, key=value) if farther else max(d_an, key=value)
            losses.append(torch.relu(d_ap - chosen + margin))
    return sum(losses, zero) / max(len(losses), 1)


TRIPLET_LABELS = [
    [0, 0, 1, 1, 2, 2, 0, 1],  # every label repeated
    [0, 0, 0, 1, 1, 2, 3, 3],  # label 2 is a singleton: it is no anchor, only a negative
    [5, 5, 5, 5, 5, 5, 5, 5],  # one class: no negatives, no triplets
]


@pytest.mark.parametrize("labels", TRIPLET_LABELS)
@pytest.mark.parametrize("mining", ["batch_all", "batch_hard", "semi_hard"])
@pytest.mark.parametrize(
    "metric, margin, spread", [("euclidean", 5.0, 1.0), ("euclidean", 0.5, 0.3), ("cosine", 0.3, 1.0)]
)
@pytest.mark.parametrize("seed", [0, 1])
def test_triplet(labels, mining, metric, margin, spread, seed):
    embeddings = leaf(len(labels), 6, seed=seed, scale=spread)
    labels_tensor = torch.tensor(labels)
    actual = triplet_margin_loss(embeddings, labels_tensor, margin=margin, mining=mining, distance=metric)
    expected = loop_triplet(embeddings, labels, margin, mining, metric)
    assert_same_value_and_grads(actual, expected, [embeddings])
    module = TripletMarginLoss(margin=margin, mining=mining, distance=metric)
    torch.testing.assert_close(module(embeddings, labels_tensor), actual)


def test_triplet_without_triplets_is_zero_and_differentiable():
    embeddings = leaf(3, 4, seed=0)
    for mining in ("batch_all", "batch_hard", "semi_hard"):
        loss = triplet_margin_loss(embeddings, torch.tensor([0, 1, 2]), mining=mining)
        assert loss.item() == 0.0
        (grad,) = torch.autograd.grad(loss, embeddings)
        assert torch.equal(grad, torch.zeros_like(grad))


def test_triplet_euclidean_gradient_finite_for_duplicates():
    base = torch.randn(2, 4)
    embeddings = torch.cat([base, base]).requires_grad_()
    loss = triplet_margin_loss(embeddings, torch.tensor([0, 1, 0, 1]), mining="batch_all")
    (grad,) = torch.autograd.grad(loss, embeddings)
    assert torch.isfinite(grad).all()


# ---------------------------------------------------------------------------------------------
# Pair margin (Hadsell-Chopra-LeCun)


def loop_pair_margin(a, b, labels, margin, metric, reduction) -> Tensor:
    losses = []
    for i in range(len(a)):
        d = distance(a[i], b[i], metric)
        y = float(labels[i])
        losses.append(0.5 * (y * d**2 + (1 - y) * torch.relu(margin - d) ** 2))
    losses = torch.stack(losses)
    return {"mean": losses.mean(), "sum": losses.sum(), "none": losses}[reduction]


@pytest.mark.parametrize(
    "metric, margin, spread", [("cosine", 0.5, 1.0), ("cosine", 1.2, 1.0), ("euclidean", 2.0, 0.5)]
)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("labels_dtype", [torch.int64, torch.float32, torch.bool])
def test_pair_margin(metric, margin, spread, reduction, labels_dtype):
    a, b = leaf(7, 5, seed=1, scale=spread), leaf(7, 5, seed=2, scale=spread)
    labels = torch.tensor([1, 0, 0, 1, 0, 1, 0]).to(labels_dtype)
    actual = pair_margin_loss(a, b, labels, margin=margin, distance=metric, reduction=reduction)
    module = PairMarginLoss(margin=margin, distance=metric, reduction=reduction)
    torch.testing.assert_close(module(a, b, labels), actual)
    expected = loop_pair_margin(a, b, labels, margin, metric, reduction)
    if reduction == "none":
        assert actual.shape == (7,)
        actual, expected = actual.sum(), expected.sum()
    assert_same_value_and_grads(actual, expected, [a, b])


# ---------------------------------------------------------------------------------------------
# CoSENT and cosine-similarity regression


def loop_cosent(a, b, scores, scale) -> Tensor:
    terms = [(a.sum() + b.sum()) * 0]  # the "1 +" of the formula, kept on the graph
    for i, j in itertools.product(range(len(a)), repeat=2):
        if scores[i] > scores[j]:
            terms.append(scale * (similarity(a[j], b[j]) - similarity(a[i], b[i])))
    return torch.logsumexp(torch.stack(terms), dim=0)


@pytest.mark.parametrize(
    "scores",
    [
        [0.1, 0.9, 0.5, 0.3, 0.7, 0.2],
        [0, 1, 1, 0, 2, 2],
        [1.0, 1.0, 1.0, 1.0, 1.0, 1.0],
        [-1, 0.5, 1, 0, 0.5, 3],
    ],
)
@pytest.mark.parametrize("scale", [1.0, 20.0])
def test_cosent(scores, scale):
    a, b = leaf(6, 4, seed=3), leaf(6, 4, seed=4)
    scores = torch.tensor(scores)
    actual = cosent_loss(a, b, scores, scale=scale)
    assert_same_value_and_grads(actual, loop_cosent(a, b, scores.tolist(), scale), [a, b])
    torch.testing.assert_close(CoSENTLoss(scale=scale)(a, b, scores), actual)


@pytest.mark.parametrize("scores", [[0.1, 0.9, 0.5, 0.3, 0.7], [-1.0, 0.5, 1.0, 0.0, -0.2]])
def test_cosine_similarity_loss(scores):
    a, b = leaf(5, 4, seed=5), leaf(5, 4, seed=6)
    scores = torch.tensor(scores)
    expected = sum((similarity(a[i], b[i]) - scores[i]) ** 2 for i in range(5)) / 5
    actual = cosine_similarity_loss(a, b, scores)
    assert_same_value_and_grads(actual, expected, [a, b])
    torch.testing.assert_close(CosineSimilarityLoss()(a, b, scores), actual)


# ---------------------------------------------------------------------------------------------
# Float32 compute under bf16 autocast


def _bf16_cases():
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    scores = torch.tensor([0.1, 0.9, 0.5, 0.3, 0.7, 0.2])
    return {
        "info_nce": lambda x, y, z: info_nce(x, y, z, scale=50.0, symmetric=True),
        "nt_xent": lambda x, y, z: nt_xent(x, y, temperature=0.1),
        "triplet_euclidean": lambda x, y, z: triplet_margin_loss(x, labels, margin=1.0, mining="semi_hard"),
        "triplet_cosine": lambda x, y, z: triplet_margin_loss(x, labels, margin=0.3, distance="cosine"),
        "pair_margin": lambda x, y, z: pair_margin_loss(x, y, labels % 2, distance="euclidean", margin=9.0),
        "cosent": lambda x, y, z: cosent_loss(x, y, scores),
        "cosine_similarity": lambda x, y, z: cosine_similarity_loss(x, y, scores),
    }


@pytest.mark.parametrize("name", list(_bf16_cases()))
def test_float32_compute_under_bf16_autocast(name):
    loss_fn = _bf16_cases()[name]
    generator = torch.Generator().manual_seed(0)
    inputs = [torch.randn(6, 16, generator=generator).bfloat16().requires_grad_() for _ in range(3)]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = loss_fn(*inputs)
    assert loss.dtype == torch.float32
    # Same (bf16-representable) values in float32 without autocast: only the summation order may differ.
    reference = loss_fn(*[x.detach().float() for x in inputs])
    torch.testing.assert_close(loss, reference, **TOL)
    loss.backward()
    assert all(x.grad is None or x.grad.dtype == torch.bfloat16 for x in inputs)


def test_logit_scale_clamps_the_parameter_and_keeps_its_gradient():
    scale = LogitScale(init=50.0, max_scale=100.0)
    with torch.no_grad():
        scale.log_scale.fill_(math.log(500.0))  # an optimizer step pushed it past the bound
    value = scale()
    assert value.item() == pytest.approx(100.0)
    assert scale.log_scale.item() == pytest.approx(math.log(100.0))  # clamped in place, as CLIP does
    value.backward()
    assert scale.log_scale.grad.item() == pytest.approx(100.0)  # d exp(t)/dt: it can come back down
