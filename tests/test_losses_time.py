"""Masks from time (Time-Contrastive Networks) and the mask-based losses.

* ``time_masks`` / ``label_masks`` against a double loop over (row, column);
* ``triplet_margin_loss`` with explicit masks against a loop over (anchor, positive, negative),
  value and gradient, and ``label_masks`` reproducing the labels result exactly;
* ``multi_positive_info_nce`` against a loop over (query, positive), and its special cases
  ``info_nce`` and ``nt_xent``;
* ``gather=True`` on 2 and 3 gloo processes, each with different rows, against one process.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from loss_checks import TOL, assert_same_value_and_grads, leaf
from test_losses_distributed import LOCAL_BATCH, check_against_single_process, free_port, global_tensor, row_range
from torch import Tensor

from mmcontrast.losses import (
    MultiPositiveInfoNCELoss,
    TripletMarginLoss,
    info_nce,
    label_masks,
    multi_positive_info_nce,
    nt_xent,
    time_masks,
    triplet_margin_loss,
)


def value(x: Tensor) -> float:
    return x.detach().item()


# ---------------------------------------------------------------------------------------------
# time_masks / label_masks


def loop_time_masks(times, groups, pos_radius, neg_radius, other_groups):
    batch = len(times)
    positive = [[False] * batch for _ in range(batch)]
    negative = [[False] * batch for _ in range(batch)]
    for i, j in itertools.product(range(batch), repeat=2):
        same = groups is None or groups[i] == groups[j]
        gap = abs(times[i] - times[j])
        if same:
            positive[i][j] = gap <= pos_radius and i != j
            negative[i][j] = gap > neg_radius
        else:
            negative[i][j] = other_groups == "negative"
    return torch.tensor(positive), torch.tensor(negative)


TIMES = {
    "int": torch.tensor([0, 1, 2, 3, 5, 8, 9, 12, 2, 0]),
    "float": torch.tensor([0.0, 0.25, 0.5, 1.0, 1.5, 1.75, 3.0, 0.1, 0.6, 2.5]),
}
GROUPS = torch.tensor([0, 0, 0, 0, 0, 1, 1, 1, 1, 2])


@pytest.mark.parametrize("kind", ["int", "float"])
@pytest.mark.parametrize("with_groups", [False, True])
@pytest.mark.parametrize("other_groups", ["negative", "ignore"])
@pytest.mark.parametrize("radii", [(1, 3), (0.5, 1.0), (0, 0), (2.5, 2.5), (1.0, 100.0)])
def test_time_masks_match_loop(kind, with_groups, other_groups, radii):
    times = TIMES[kind]
    groups = GROUPS if with_groups else None
    positive, negative = time_masks(times, groups, pos_radius=radii[0], neg_radius=radii[1], other_groups=other_groups)
    expected = loop_time_masks(times.tolist(), None if groups is None else groups.tolist(), *radii, other_groups)
    assert positive.shape == negative.shape == (10, 10)
    assert positive.dtype == negative.dtype == torch.bool
    assert torch.equal(positive, expected[0])
    assert torch.equal(negative, expected[1])
    assert not (positive & negative).any()
    assert not positive.diagonal().any() and not negative.diagonal().any()


def test_time_masks_gather_is_a_no_op_without_process_group():
    times = TIMES["float"]
    assert all(
        torch.equal(a, b)
        for a, b in zip(
            time_masks(times, GROUPS, pos_radius=0.3, neg_radius=1.0, gather=True),
            time_masks(times, GROUPS, pos_radius=0.3, neg_radius=1.0),
            strict=True,
        )
    )


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda: time_masks(TIMES["int"], pos_radius=3, neg_radius=2), ValueError, "pos_radius \\(3\\) must not"),
        (lambda: time_masks(TIMES["int"], pos_radius=-1, neg_radius=2), ValueError, "pos_radius must be a finite"),
        (lambda: time_masks(TIMES["int"], pos_radius=1, neg_radius=math.inf), ValueError, "neg_radius must be"),
        (lambda: time_masks(TIMES["int"], pos_radius=1, neg_radius=2, other_groups="x"), ValueError, "other_groups"),
        (lambda: time_masks(TIMES["int"][:, None], pos_radius=1, neg_radius=2), ValueError, "times must be a non"),
        (lambda: time_masks(TIMES["int"], GROUPS[:3], pos_radius=1, neg_radius=2), ValueError, "groups has shape"),
        (lambda: time_masks(TIMES["int"], GROUPS.float(), pos_radius=1, neg_radius=2), TypeError, "groups must"),
        (lambda: time_masks(torch.tensor([0.0, math.nan]), pos_radius=1, neg_radius=2), ValueError, "NaN or Inf"),
        (lambda: label_masks(torch.zeros(2, 2, dtype=torch.long)), ValueError, "labels must be a non-empty 1-D"),
        (lambda: label_masks(torch.zeros(3)), TypeError, "label_masks: labels must hold integer"),
    ],
)
def test_time_masks_errors(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_label_masks():
    labels = [0, 1, 0, 2, 1, 0]
    positive, negative = label_masks(torch.tensor(labels))
    for i, j in itertools.product(range(6), repeat=2):
        assert bool(positive[i, j]) == (labels[i] == labels[j] and i != j)
        assert bool(negative[i, j]) == (labels[i] != labels[j])


# ---------------------------------------------------------------------------------------------
# Triplet margin with masks


def distance(x: Tensor, y: Tensor, metric: str) -> Tensor:
    if metric == "cosine":
        return 1 - torch.dot(x, y) / (x.norm() * y.norm())
    return (x - y).norm()


def loop_masked_triplet(embeddings, positive_mask, negative_mask, margin, mining, metric) -> Tensor:
    batch = len(embeddings)

    def dist(i, j):
        return distance(embeddings[i], embeddings[j], metric)

    def positives(a):
        return [p for p in range(batch) if p != a and positive_mask[a][p]]

    def negatives(a):
        return [n for n in range(batch) if n != a and negative_mask[a][n]]

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


MASK_SETTINGS = {
    "frames": ({"pos_radius": 1, "neg_radius": 3}, False, "negative"),
    "videos": ({"pos_radius": 2, "neg_radius": 3}, True, "negative"),
    "videos_ignored": ({"pos_radius": 2, "neg_radius": 2}, True, "ignore"),
}


def masks_for(setting: str) -> tuple[Tensor, Tensor]:
    radii, with_groups, other_groups = MASK_SETTINGS[setting]
    return time_masks(TIMES["int"], GROUPS if with_groups else None, **radii, other_groups=other_groups)


@pytest.mark.parametrize("setting", sorted(MASK_SETTINGS))
@pytest.mark.parametrize("mining", ["batch_all", "batch_hard", "semi_hard"])
@pytest.mark.parametrize("metric, margin, spread", [("euclidean", 1.0, 0.5), ("cosine", 0.3, 1.0)])
@pytest.mark.parametrize("seed", [0, 1])
def test_triplet_time_masks_match_loop(setting, mining, metric, margin, spread, seed):
    positive, negative = masks_for(setting)
    embeddings = leaf(len(TIMES["int"]), 6, seed=seed, scale=spread)
    actual = triplet_margin_loss(
        embeddings, positive_mask=positive, negative_mask=negative, margin=margin, mining=mining, distance=metric
    )
    expected = loop_masked_triplet(embeddings, positive.tolist(), negative.tolist(), margin, mining, metric)
    assert value(expected) > 0
    assert_same_value_and_grads(actual, expected, [embeddings])
    module = TripletMarginLoss(margin=margin, mining=mining, distance=metric)
    torch.testing.assert_close(module(embeddings, positive_mask=positive, negative_mask=negative), actual)


@pytest.mark.parametrize("mining", ["batch_all", "batch_hard", "semi_hard"])
@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
@pytest.mark.parametrize("labels", [[0, 0, 1, 1, 2, 2, 0, 1], [0, 0, 0, 1, 1, 2, 3, 3], [5] * 8])
def test_triplet_label_masks_equal_labels_exactly(mining, metric, labels):
    embeddings = leaf(len(labels), 6, seed=3)
    labels_tensor = torch.tensor(labels)
    positive, negative = label_masks(labels_tensor)
    options = {"margin": 0.4, "mining": mining, "distance": metric}
    with_labels = triplet_margin_loss(embeddings, labels_tensor, **options)
    with_masks = triplet_margin_loss(embeddings, positive_mask=positive, negative_mask=negative, **options)
    assert torch.equal(with_masks, with_labels)
    (grad_labels,) = torch.autograd.grad(with_labels, embeddings)
    (grad_masks,) = torch.autograd.grad(with_masks, embeddings)
    assert torch.equal(grad_masks, grad_labels)


@pytest.mark.parametrize("mining", ["batch_all", "batch_hard", "semi_hard"])
def test_triplet_ignored_columns_are_ignored(mining):
    # Row 4 is ignored by every anchor except itself (neither positive nor negative of any other row).
    positive, negative = masks_for("frames")
    positive[:, 4] = False
    negative[:, 4] = False
    positive[4], negative[4] = False, False
    embeddings = leaf(len(TIMES["int"]), 6, seed=5)
    loss = triplet_margin_loss(embeddings, positive_mask=positive, negative_mask=negative, margin=1.0, mining=mining)
    moved = embeddings.detach().clone()
    moved[4] = 0.01 * moved[0] + 0.001  # right next to anchor 0: the hardest negative, were it one
    moved_loss = triplet_margin_loss(moved, positive_mask=positive, negative_mask=negative, margin=1.0, mining=mining)
    assert value(loss) > 0
    torch.testing.assert_close(moved_loss, loss.detach(), rtol=0, atol=0)
    (grad,) = torch.autograd.grad(loss, embeddings)
    assert torch.equal(grad[4], torch.zeros_like(grad[4]))


def test_triplet_self_column_is_dropped_from_the_masks():
    embeddings = leaf(6, 4, seed=7)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    positive, negative = label_masks(labels)
    for mining in ("batch_all", "batch_hard", "semi_hard"):
        expected = triplet_margin_loss(embeddings, labels, mining=mining, margin=1.0)
        actual = triplet_margin_loss(
            embeddings,
            positive_mask=positive | torch.eye(6, dtype=torch.bool),
            negative_mask=negative,
            margin=1.0,
            mining=mining,
        )
        assert torch.equal(actual, expected)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({}, "triplet_margin_loss: labels is missing; pass labels, or both positive_mask and negative_mask"),
        ({"positive_mask": torch.eye(4, dtype=torch.bool)}, "triplet_margin_loss: negative_mask is missing"),
        ({"negative_mask": torch.eye(4, dtype=torch.bool)}, "triplet_margin_loss: positive_mask is missing"),
        (
            {"labels": torch.zeros(4, dtype=torch.long), "positive_mask": torch.eye(4, dtype=torch.bool)},
            "pass either labels or positive_mask and negative_mask, not both",
        ),
        (
            {"positive_mask": torch.eye(4, dtype=torch.bool), "negative_mask": torch.zeros(4, 5, dtype=torch.bool)},
            r"negative_mask has shape \(4, 5\) but must be \[B, W\*B\] = \(4, 4\)",
        ),
        (
            {"positive_mask": torch.eye(4), "negative_mask": torch.zeros(4, 4, dtype=torch.bool)},
            "positive_mask must be a bool tensor, got dtype torch.float32",
        ),
        (
            {"positive_mask": torch.ones(4, 4, dtype=torch.bool), "negative_mask": torch.ones(4, 4, dtype=torch.bool)},
            "positive_mask and negative_mask are both true at row 0, column 0",
        ),
    ],
)
def test_triplet_mask_errors(kwargs, message):
    with pytest.raises((ValueError, TypeError), match=message):
        triplet_margin_loss(torch.randn(4, 3), **kwargs)


# ---------------------------------------------------------------------------------------------
# Multi-positive InfoNCE


def loop_multi_positive(queries, keys, positive_mask, negative_mask, scale, normalize) -> Tensor:
    self_keys = keys is None
    keys = queries if keys is None else keys

    def logit(i, j):
        q, k = queries[i], keys[j]
        dot = torch.dot(q, k)
        return scale * (dot / (q.norm() * k.norm()) if normalize else dot)

    total, count = queries.sum() * 0, 0
    for i in range(len(queries)):
        columns = range(len(keys))
        positives = [j for j in columns if positive_mask[i][j] and not (self_keys and j == i)]
        negatives = [j for j in columns if negative_mask[i][j] and not (self_keys and j == i)]
        if not positives:
            continue
        denominator = torch.logsumexp(torch.stack([logit(i, j) for j in positives + negatives]), dim=0)
        total = total + sum(denominator - logit(i, p) for p in positives) / len(positives)
        count += 1
    return total / max(count, 1)


@pytest.mark.parametrize("setting", sorted(MASK_SETTINGS))
@pytest.mark.parametrize("with_keys", [False, True])
@pytest.mark.parametrize("scale, normalize", [(20.0, True), (2.0, True), (0.7, False)])
def test_multi_positive_matches_loop(setting, with_keys, scale, normalize):
    positive, negative = masks_for(setting)
    batch = len(TIMES["int"])
    queries = leaf(batch, 5, seed=11)
    keys = leaf(batch, 5, seed=12) if with_keys else None
    inputs = [queries] + ([keys] if with_keys else [])
    actual = multi_positive_info_nce(
        queries, keys, positive_mask=positive, negative_mask=negative, scale=scale, normalize=normalize
    )
    expected = loop_multi_positive(queries, keys, positive.tolist(), negative.tolist(), scale, normalize)
    assert_same_value_and_grads(actual, expected, inputs)
    module = MultiPositiveInfoNCELoss(scale=scale, normalize=normalize)
    torch.testing.assert_close(module(queries, keys, positive_mask=positive, negative_mask=negative), actual)


def test_multi_positive_learnable_scale_gradient():
    positive, negative = masks_for("videos")
    queries = leaf(len(TIMES["int"]), 5, seed=13)
    scale = torch.tensor(5.0, requires_grad=True)
    actual = multi_positive_info_nce(queries, positive_mask=positive, negative_mask=negative, scale=scale)
    expected = loop_multi_positive(queries, None, positive.tolist(), negative.tolist(), scale, True)
    assert_same_value_and_grads(actual, expected, [queries, scale])


@pytest.mark.parametrize("labels", [[0, 1, 2, 3, 4, 5], [0, 1, 0, 2, 1, 0], [3, 3, 3, 3, 3, 3]])
@pytest.mark.parametrize("scale", [20.0, 3.0])
def test_multi_positive_equals_info_nce_with_labels(labels, scale):
    anchors, positives = leaf(6, 5, seed=14), leaf(6, 5, seed=15)
    labels_tensor = torch.tensor(labels)
    eye = torch.eye(6, dtype=torch.bool)
    negative = labels_tensor[:, None] != labels_tensor[None, :]
    actual = multi_positive_info_nce(anchors, positives, positive_mask=eye, negative_mask=negative, scale=scale)
    expected = info_nce(anchors, positives, labels=labels_tensor, scale=scale)
    assert_same_value_and_grads(actual, expected, [anchors, positives])


@pytest.mark.parametrize("labels", [None, [0, 1, 0, 2, 1], [4, 4, 4, 4, 4]])
@pytest.mark.parametrize("temperature", [0.1, 0.5])
def test_multi_positive_equals_nt_xent(labels, temperature):
    z1, z2 = leaf(5, 6, seed=16), leaf(5, 6, seed=17)
    count = 5
    views = torch.arange(2 * count)
    partner = (views + count) % (2 * count)
    positive = partner[:, None] == views[None, :]
    sample_labels = torch.arange(count) if labels is None else torch.tensor(labels)
    view_labels = torch.cat([sample_labels, sample_labels])
    negative = view_labels[:, None] != view_labels[None, :]
    actual = multi_positive_info_nce(
        torch.cat([z1, z2]), positive_mask=positive, negative_mask=negative, scale=1 / temperature
    )
    expected = nt_xent(z1, z2, temperature=temperature, labels=None if labels is None else sample_labels)
    assert_same_value_and_grads(actual, expected, [z1, z2])


def test_multi_positive_skips_rows_without_positives_and_survives_empty_rows():
    queries = leaf(4, 3, seed=18)
    positive = torch.zeros(4, 4, dtype=torch.bool)
    negative = torch.zeros(4, 4, dtype=torch.bool)
    positive[0, 1], negative[0, 2] = True, True  # row 0: one positive, one negative
    negative[1, 0] = True  # row 1: only a negative -> skipped
    # rows 2 and 3: every column ignored -> skipped, without NaN
    loss = multi_positive_info_nce(queries, positive_mask=positive, negative_mask=negative, scale=4.0)
    expected = loop_multi_positive(queries, None, positive.tolist(), negative.tolist(), 4.0, True)
    assert_same_value_and_grads(loss, expected, [queries])
    (grad,) = torch.autograd.grad(
        multi_positive_info_nce(queries, positive_mask=positive, negative_mask=negative, scale=4.0), queries
    )
    assert torch.isfinite(grad).all()
    # A row whose only positive is itself (dropped) and nothing else: no positive at all -> 0, attached.
    nothing = multi_positive_info_nce(
        queries, positive_mask=torch.eye(4, dtype=torch.bool), negative_mask=torch.zeros(4, 4, dtype=torch.bool)
    )
    assert nothing.item() == 0.0
    (grad,) = torch.autograd.grad(nothing, queries)
    assert torch.equal(grad, torch.zeros_like(grad))


def test_multi_positive_ignored_keys_are_ignored():
    positive, negative = masks_for("videos_ignored")
    queries, keys = leaf(10, 4, seed=19), leaf(10, 4, seed=20)
    ignored = ~(positive | negative).any(dim=0)
    assert ignored.any()
    loss = multi_positive_info_nce(queries, keys, positive_mask=positive, negative_mask=negative)
    moved = keys.detach().clone()
    moved[ignored] = queries.detach()[ignored]
    moved_loss = multi_positive_info_nce(queries, moved, positive_mask=positive, negative_mask=negative)
    torch.testing.assert_close(moved_loss, loss.detach(), rtol=0, atol=0)


def test_multi_positive_float32_under_bf16_autocast():
    positive, negative = masks_for("videos")
    queries = leaf(10, 8, seed=21)
    reference = multi_positive_info_nce(queries, positive_mask=positive, negative_mask=negative)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = multi_positive_info_nce(queries, positive_mask=positive, negative_mask=negative)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, reference, **TOL)


@pytest.mark.parametrize(
    "call, error, message",
    [
        (
            lambda: multi_positive_info_nce(
                torch.randn(4, 3), positive_mask=torch.eye(3, dtype=torch.bool), negative_mask=torch.eye(3) > 0
            ),
            ValueError,
            r"multi_positive_info_nce: positive_mask has shape \(3, 3\) but must be \[B, W\*B\] = \(4, 4\)",
        ),
        (
            lambda: multi_positive_info_nce(
                torch.randn(4, 3),
                torch.randn(5, 3),
                positive_mask=torch.zeros(4, 4, dtype=torch.bool),
                negative_mask=torch.zeros(4, 5, dtype=torch.bool),
            ),
            ValueError,
            r"positive_mask has shape \(4, 4\) but must be \[B, W\*K\] = \(4, 5\)",
        ),
        (
            lambda: multi_positive_info_nce(
                torch.randn(4, 3), torch.randn(4, 2), positive_mask=torch.eye(4) > 0, negative_mask=torch.eye(4) < 0
            ),
            ValueError,
            "keys must be",
        ),
        (
            lambda: multi_positive_info_nce(
                torch.randn(4, 3), positive_mask=torch.eye(4) > 0, negative_mask=torch.eye(4) < 0, scale=0.0
            ),
            ValueError,
            "multi_positive_info_nce: scale must be a positive finite number",
        ),
        (lambda: MultiPositiveInfoNCELoss(scale=-1.0), ValueError, "MultiPositiveInfoNCELoss: scale must be"),
    ],
)
def test_multi_positive_errors(call, error, message):
    with pytest.raises(error, match=message):
        call()


# ---------------------------------------------------------------------------------------------
# gather=True on 2 and 3 gloo processes


def check_time_triplet(world_size: int) -> None:
    total = world_size * LOCAL_BATCH
    embeddings = global_tensor(total, 6, seed=30)
    times = torch.tensor([0, 1, 2, 5, 0, 3, 1, 7, 2, 4, 6, 9])[:total]
    groups = torch.tensor([0, 0, 0, 0, 1, 0, 1, 1, 0, 1, 1, 2])[:total]
    for mining in ("semi_hard", "batch_hard", "batch_all"):
        for other_groups in ("negative", "ignore"):

            def loss_fn(x: Tensor, gather: bool, options=(mining, other_groups)) -> Tensor:
                mining, other_groups = options
                rows = slice(*row_range(x)) if gather else slice(None)
                positive, negative = time_masks(
                    times[rows], groups[rows], pos_radius=1, neg_radius=2, other_groups=other_groups, gather=gather
                )
                return triplet_margin_loss(
                    x, positive_mask=positive, negative_mask=negative, margin=1.0, mining=mining, gather=gather
                )

            check_against_single_process(loss_fn, [embeddings], [], f"time triplet {mining} {other_groups}")


def check_time_multi_positive(world_size: int) -> None:
    total = world_size * LOCAL_BATCH
    queries, keys = global_tensor(total, 6, seed=31), global_tensor(total, 6, seed=32)
    times = torch.tensor([0.0, 0.5, 1.0, 2.5, 0.0, 1.5, 0.25, 3.5, 1.0, 2.0, 3.0, 4.5])[:total]
    groups = torch.tensor([0, 0, 0, 0, 1, 0, 1, 1, 0, 1, 1, 2])[:total]
    scale = torch.tensor(5.0, requires_grad=True)
    for with_keys in (False, True):
        for other_groups in ("negative", "ignore"):

            def loss_fn(*inputs: Tensor, gather: bool, other_groups=other_groups) -> Tensor:
                rows = slice(*row_range(inputs[0])) if gather else slice(None)
                positive, negative = time_masks(
                    times[rows], groups[rows], pos_radius=0.6, neg_radius=1.2, other_groups=other_groups, gather=gather
                )
                q, *rest = inputs
                return multi_positive_info_nce(
                    q,
                    rest[0] if rest else None,
                    positive_mask=positive,
                    negative_mask=negative,
                    scale=scale,
                    gather=gather,
                )

            inputs = [queries, keys] if with_keys else [queries]
            check_against_single_process(loss_fn, inputs, [scale], f"multi-positive keys={with_keys} {other_groups}")
    # Labels as masks, gathered: the gathered label masks give the single-process label result.
    labels = torch.arange(total) % 3

    def label_loss(q: Tensor, gather: bool) -> Tensor:
        rows = slice(*row_range(q)) if gather else slice(None)
        positive, negative = label_masks(labels[rows], gather=gather)
        return multi_positive_info_nce(q, positive_mask=positive, negative_mask=negative, gather=gather)

    check_against_single_process(label_loss, [queries], [], "multi-positive label masks")


def check_mask_columns(world_size: int) -> None:
    rank = dist.get_rank()
    times = torch.arange(LOCAL_BATCH) + 10 * rank
    positive, negative = time_masks(times, pos_radius=1, neg_radius=2, gather=True)
    assert positive.shape == negative.shape == (LOCAL_BATCH, world_size * LOCAL_BATCH)
    with pytest.raises(ValueError, match=r"positive_mask has shape \(4, 4\) but must be \[B, W\*B\]"):
        local = time_masks(times, pos_radius=1, neg_radius=2)
        multi_positive_info_nce(
            torch.randn(LOCAL_BATCH, 3), positive_mask=local[0], negative_mask=local[1], gather=True
        )


def worker(rank: int, world_size: int, port: int, checks: tuple[str, ...]) -> None:
    from datetime import timedelta

    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size, timeout=timedelta(seconds=60)
    )
    try:
        for check in checks:
            globals()[check](world_size)
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize(
    "world_size, checks",
    [
        (2, ("check_time_triplet", "check_time_multi_positive", "check_mask_columns")),
        (3, ("check_time_multi_positive", "check_mask_columns")),
    ],
)
def test_time_masks_gather_matches_single_process(world_size, checks):
    mp.spawn(worker, args=(world_size, free_port(), checks), nprocs=world_size, join=True)
