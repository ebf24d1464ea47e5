"""DCL / DCLW, SupCon, N-pairs and alignment / uniformity.

* each loss against a brute-force float64 loop over rows (value and gradient);
* parity with the peers: lightly's ``DCLLoss``, ``DCLWLoss`` and ``HypersphereLoss``,
  pytorch-metric-learning's ``SupConLoss`` and ``NPairsLoss`` (value and gradient, fp32);
* SupCon is ``multi_positive_info_nce`` with ``label_masks`` over the flattened views;
* ``gather=True`` on 2 and 3 gloo processes, each with different rows, against one process.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F
from loss_checks import TOL, assert_same_value_and_grads, leaf
from test_losses_distributed import LOCAL_BATCH, check_against_single_process, free_port, global_tensor, row_range
from torch import Tensor

from mmcontrast.losses import label_masks, multi_positive_info_nce
from mmcontrast.losses.decoupled import DCLLoss, DCLWLoss, dcl
from mmcontrast.losses.hypersphere import HypersphereLoss, alignment, hypersphere_loss, uniformity
from mmcontrast.losses.npairs import NPairsLoss, npairs
from mmcontrast.losses.supcon import SupConLoss, supcon


def assert_matches_loop(actual: Tensor, expected: Tensor, inputs: list[Tensor]) -> None:
    """A float32 loss against a float64 loop on the same (float32) leaves: value and gradients, 1e-5."""
    assert actual.dtype == torch.float32
    torch.testing.assert_close(actual.double(), expected, **TOL)
    actual_grads = torch.autograd.grad(actual, inputs, retain_graph=True)
    expected_grads = torch.autograd.grad(expected, inputs)
    for got, want in zip(actual_grads, expected_grads, strict=True):
        torch.testing.assert_close(got.double(), want.double(), **TOL)


def unit(x: Tensor) -> Tensor:
    return x.double() / x.double().norm()


# ---------------------------------------------------------------------------------------------
# Brute-force loops (float64)


def loop_dcl(z1: Tensor, z2: Tensor, temperature: float, sigma: float | None) -> Tensor:
    n = z1.shape[0]
    views = [unit(z1[k]) for k in range(n)] + [unit(z2[k]) for k in range(n)]
    sample = [k % n for k in range(2 * n)]
    cos = [(views[k] * views[(k + n) % (2 * n)]).sum() for k in range(n)]
    weights = [1.0] * n
    if sigma is not None:
        exps = [math.exp(c.item() / sigma) for c in cos]
        weights = [2 - n * e / sum(exps) for e in exps]
    total = 0.0
    for i in range(2 * n):
        positive = weights[sample[i]] * cos[sample[i]] / temperature
        negatives = [(views[i] * views[j]).sum() / temperature for j in range(2 * n) if sample[j] != sample[i]]
        total = total - positive + torch.logsumexp(torch.stack(negatives), dim=0)
    return total / (2 * n)


def loop_supcon(features: Tensor, labels: list[int], temperature: float) -> Tensor:
    n, v, _ = features.shape
    views = [unit(features[s, k]) for s in range(n) for k in range(v)]
    view_labels = [labels[s] for s in range(n) for _ in range(v)]
    total, anchors = 0.0, 0
    for a in range(n * v):
        others = [b for b in range(n * v) if b != a]
        positives = [p for p in others if view_labels[p] == view_labels[a]]
        if not positives:
            continue
        log_denominator = torch.logsumexp(torch.stack([(views[a] * views[b]).sum() / temperature for b in others]), 0)
        terms = [log_denominator - (views[a] * views[p]).sum() / temperature for p in positives]
        total = total + sum(terms) / len(positives)
        anchors += 1
    return total / anchors


def loop_npairs(anchors: Tensor, positives: Tensor, l2_penalty: float) -> Tensor:
    n = anchors.shape[0]
    a, p = anchors.double(), positives.double()
    total = 0.0
    for i in range(n):
        logits = torch.stack([(a[i] * p[j]).sum() for j in range(n)])
        total = total + torch.logsumexp(logits, 0) - logits[i]
    squared = sum((a[i] ** 2).sum() + (p[i] ** 2).sum() for i in range(n))
    return total / n + l2_penalty * squared / (2 * n)


def loop_alignment(x: Tensor, y: Tensor, alpha: float) -> Tensor:
    n = x.shape[0]
    return sum((unit(x[i]) - unit(y[i])).norm() ** alpha for i in range(n)) / n


def loop_uniformity(x: Tensor, t: float) -> Tensor:
    n = x.shape[0]
    pairs = [torch.exp(-t * ((unit(x[i]) - unit(x[j])) ** 2).sum()) for i in range(n) for j in range(n) if i != j]
    return torch.log(sum(pairs) / len(pairs))


# ---------------------------------------------------------------------------------------------
# Against the loops


@pytest.mark.parametrize("temperature", [0.1, 0.5])
@pytest.mark.parametrize("sigma", [None, 0.5, 2.0])
@pytest.mark.parametrize("batch, seed", [(2, 0), (6, 1)])
def test_dcl_matches_loop(temperature, sigma, batch, seed):
    z1, z2 = leaf(batch, 5, seed=seed), leaf(batch, 5, seed=seed + 10)
    actual = dcl(z1, z2, temperature=temperature, weight_sigma=sigma)
    assert_matches_loop(actual, loop_dcl(z1, z2, temperature, sigma), [z1, z2])


@pytest.mark.parametrize(
    "labels, views",
    [(None, 2), (None, 3), ([0, 1, 0, 2, 1], 2), ([0, 0, 1, 2, 3], 1), ([3, 3, 3, 1, 1], 3)],
)
@pytest.mark.parametrize("temperature", [0.1, 0.7])
def test_supcon_matches_loop(labels, views, temperature):
    features = leaf(5, views, 4, seed=2)
    tensor_labels = None if labels is None else torch.tensor(labels)
    actual = supcon(features, tensor_labels, temperature=temperature)
    expected = loop_supcon(features, list(range(5)) if labels is None else labels, temperature)
    assert_matches_loop(actual, expected, [features])


@pytest.mark.parametrize("l2_penalty", [0.0, 0.02, 1.0])
@pytest.mark.parametrize("batch, seed", [(1, 0), (7, 3)])
def test_npairs_matches_loop(l2_penalty, batch, seed):
    anchors, positives = leaf(batch, 6, seed=seed, scale=0.5), leaf(batch, 6, seed=seed + 1, scale=0.5)
    actual = npairs(anchors, positives, l2_penalty=l2_penalty)
    assert_matches_loop(actual, loop_npairs(anchors, positives, l2_penalty), [anchors, positives])


@pytest.mark.parametrize("alpha", [2.0, 1.0, 3.0])
@pytest.mark.parametrize("t", [2.0, 0.5])
def test_alignment_uniformity_match_loop(alpha, t):
    x, y = leaf(6, 4, seed=4), leaf(6, 4, seed=5)
    assert_matches_loop(alignment(x, y, alpha), loop_alignment(x, y, alpha), [x, y])
    assert_matches_loop(uniformity(x, t), loop_uniformity(x, t), [x])
    expected = loop_alignment(x, y, alpha) + 0.3 * (loop_uniformity(x, t) + loop_uniformity(y, t)) / 2
    actual = hypersphere_loss(x, y, alpha=alpha, t=t, uniformity_weight=0.3)
    assert_matches_loop(actual, expected, [x, y])


def test_alignment_of_identical_views_is_zero_with_finite_gradient():
    x = leaf(3, 4, seed=6)
    for alpha in (2.0, 1.0):
        loss = alignment(x, 2 * x.detach(), alpha)
        (grad,) = torch.autograd.grad(loss, x)
        assert loss.item() == pytest.approx(0.0, abs=1e-6)
        assert torch.isfinite(grad).all()


def test_supcon_equals_multi_positive_with_label_masks():
    features, labels = leaf(6, 2, 5, seed=7), torch.tensor([0, 1, 0, 2, 2, 1])
    views = features.reshape(12, 5)
    positive, negative = label_masks(labels.repeat_interleave(2))
    expected = multi_positive_info_nce(views, positive_mask=positive, negative_mask=negative, scale=1 / 0.2)
    assert_same_value_and_grads(supcon(features, labels, temperature=0.2), expected, [features])


def test_modules_match_functions():
    z1, z2 = leaf(4, 3, seed=8), leaf(4, 3, seed=9)
    torch.testing.assert_close(DCLLoss(0.2)(z1, z2), dcl(z1, z2, temperature=0.2))
    torch.testing.assert_close(DCLWLoss(0.2)(z1, z2), dcl(z1, z2, temperature=0.2, weight_sigma=0.5))
    features = torch.stack([z1, z2], dim=1)
    torch.testing.assert_close(SupConLoss(0.3)(features), supcon(features, temperature=0.3))
    torch.testing.assert_close(NPairsLoss(0.1)(z1, z2), npairs(z1, z2, l2_penalty=0.1))
    torch.testing.assert_close(HypersphereLoss(t=1.0)(z1, z2), hypersphere_loss(z1, z2, t=1.0))
    assert "weight_sigma=0.5" in repr(DCLWLoss())


def test_float32_under_bf16_autocast():
    z1, z2 = leaf(4, 8, seed=10), leaf(4, 8, seed=11)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        a, b = z1 @ torch.eye(8), z2 @ torch.eye(8)  # bf16 activations, as from a model under autocast
        assert a.dtype == torch.bfloat16
        values = {
            "dcl": dcl(a, b, weight_sigma=0.5),
            "supcon": supcon(torch.stack([a, b], dim=1)),
            "npairs": npairs(a, b, l2_penalty=0.1),
            "hypersphere": hypersphere_loss(a, b),
        }
    for name, value in values.items():
        assert value.dtype == torch.float32, name
        assert torch.isfinite(value), name


def test_temperature_tensor_keeps_its_gradient():
    z1, z2 = leaf(4, 3, seed=12), leaf(4, 3, seed=13)
    temperature = torch.tensor(0.3, requires_grad=True)
    for loss in (dcl(z1, z2, temperature=temperature), supcon(torch.stack([z1, z2], 1), temperature=temperature)):
        (grad,) = torch.autograd.grad(loss, temperature)
        assert torch.isfinite(grad) and grad != 0


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda: dcl(torch.randn(3, 4), torch.randn(2, 4)), ValueError, r"dcl: z1 has shape \(3, 4\) but z2"),
        (lambda: dcl(torch.randn(1, 4), torch.randn(1, 4)), ValueError, "dcl: z1 has 1 row"),
        (lambda: dcl(torch.randn(2, 4), torch.randn(2, 4), temperature=0), ValueError, "dcl: temperature"),
        (lambda: dcl(torch.randn(2, 4), torch.randn(2, 4), weight_sigma=-1.0), ValueError, "dcl: weight_sigma"),
        (lambda: dcl(torch.randn(2, 4), torch.randn(2, 4), weight_sigma="a"), TypeError, "dcl: weight_sigma"),
        (lambda: supcon(torch.randn(3, 4)), ValueError, r"supcon: features must have shape \[N, V, d\]"),
        (lambda: supcon(torch.randn(3, 2, 4), torch.tensor([0, 1])), ValueError, "supcon: labels has shape"),
        (lambda: supcon(torch.randn(3, 2, 4), torch.zeros(3)), TypeError, "supcon: labels must hold integer"),
        (lambda: npairs(torch.randn(3, 4), torch.randn(3, 5)), ValueError, "npairs: anchors has shape"),
        (lambda: npairs(torch.randn(3, 4), torch.randn(3, 4), l2_penalty=-1), ValueError, "npairs: l2_penalty"),
        (lambda: npairs(torch.ones(3, 4, dtype=torch.long), torch.randn(3, 4)), TypeError, "npairs: anchors"),
        (lambda: uniformity(torch.randn(1, 4)), ValueError, "uniformity: x has 1 row"),
        (lambda: uniformity(torch.randn(3, 4), t=0), ValueError, "uniformity: t must be"),
        (lambda: alignment(torch.randn(3, 4), torch.randn(3, 4), alpha=0), ValueError, "alignment: alpha"),
        (lambda: hypersphere_loss(torch.randn(3, 4), torch.randn(2, 4)), ValueError, "hypersphere_loss: x has"),
        (
            lambda: hypersphere_loss(torch.randn(3, 4), torch.randn(3, 4), uniformity_weight=-1),
            ValueError,
            "hypersphere_loss: uniformity_weight",
        ),
        (lambda: DCLLoss(temperature=-1), ValueError, "DCLLoss: temperature"),
        (lambda: DCLWLoss(sigma=0), ValueError, "DCLWLoss: sigma"),
        (lambda: HypersphereLoss(t=-1), ValueError, "HypersphereLoss: t"),
        (lambda: dcl(torch.tensor([[0.0, math.nan]] * 2), torch.randn(2, 2)), ValueError, "dcl: z1 contains NaN"),
    ],
)
def test_errors_name_the_argument(call, error, message):
    with pytest.raises(error, match=message):
        call()


# ---------------------------------------------------------------------------------------------
# Peers


@pytest.mark.parametrize("batch, dim, seed", [(2, 4, 0), (8, 16, 1)])
@pytest.mark.parametrize("temperature", [0.1, 0.5])
def test_dcl_matches_lightly(batch, dim, seed, temperature):
    lightly_loss = pytest.importorskip("lightly.loss", reason="lightly is not installed")
    z1, z2 = leaf(batch, dim, seed=seed), leaf(batch, dim, seed=seed + 1)
    expected = lightly_loss.DCLLoss(temperature=temperature)(z1, z2)
    assert_same_value_and_grads(dcl(z1, z2, temperature=temperature), expected, [z1, z2])


@pytest.mark.filterwarnings("ignore:To copy construct from a tensor")  # lightly's torch.tensor(tensor)
@pytest.mark.parametrize("batch, dim, seed", [(2, 4, 2), (8, 16, 3)])
@pytest.mark.parametrize("temperature, sigma", [(0.1, 0.5), (0.5, 0.2)])
def test_dclw_matches_lightly(batch, dim, seed, temperature, sigma):
    lightly_loss = pytest.importorskip("lightly.loss", reason="lightly is not installed")
    z1, z2 = leaf(batch, dim, seed=seed), leaf(batch, dim, seed=seed + 1)
    expected = lightly_loss.DCLWLoss(temperature=temperature, sigma=sigma)(z1, z2)
    assert_same_value_and_grads(dcl(z1, z2, temperature=temperature, weight_sigma=sigma), expected, [z1, z2])


@pytest.mark.parametrize("t, alpha, lam", [(2.0, 2.0, 1.0), (1.0, 1.0, 0.5), (0.5, 3.0, 2.0)])
def test_hypersphere_matches_lightly(t, alpha, lam):
    hypersphere = pytest.importorskip("lightly.loss.hypersphere_loss", reason="lightly is not installed")
    x, y = leaf(7, 5, seed=4), leaf(7, 5, seed=5)
    expected = hypersphere.HypersphereLoss(t=t, lam=lam, alpha=alpha)(x, y)
    actual = hypersphere_loss(x, y, alpha=alpha, t=t, uniformity_weight=lam)
    assert_same_value_and_grads(actual, expected, [x, y])


@pytest.mark.parametrize("labels, views", [(None, 2), ([0, 1, 0, 2, 1, 3], 2), ([0, 0, 1, 1, 2, 3], 3)])
@pytest.mark.parametrize("temperature", [0.1, 0.5])
def test_supcon_matches_pytorch_metric_learning(labels, views, temperature):
    pml_losses = pytest.importorskip("pytorch_metric_learning.losses", reason="pytorch-metric-learning missing")
    features = leaf(6, views, 8, seed=6)
    tensor_labels = torch.arange(6) if labels is None else torch.tensor(labels)
    # PML takes the flattened views with one label per view.
    expected = pml_losses.SupConLoss(temperature=temperature)(
        features.reshape(6 * views, 8), tensor_labels.repeat_interleave(views)
    )
    actual = supcon(features, None if labels is None else tensor_labels, temperature=temperature)
    assert_same_value_and_grads(actual, expected, [features])


@pytest.mark.parametrize("l2_penalty", [0.0, 0.05])
@pytest.mark.parametrize("batch, seed", [(3, 7), (8, 8)])
def test_npairs_matches_pytorch_metric_learning(l2_penalty, batch, seed):
    pml_losses = pytest.importorskip("pytorch_metric_learning.losses", reason="pytorch-metric-learning missing")
    pml_regularizers = pytest.importorskip("pytorch_metric_learning.regularizers")
    pml_distances = pytest.importorskip("pytorch_metric_learning.distances")
    anchors, positives = leaf(batch, 6, seed=seed, scale=0.5), leaf(batch, 6, seed=seed + 1, scale=0.5)
    # PML's default DotProductSimilarity normalises the embeddings (cosine logits, no temperature);
    # Sohn's loss uses raw dot products.
    options = {"distance": pml_distances.DotProductSimilarity(normalize_embeddings=False)}
    if l2_penalty:
        options["embedding_regularizer"] = pml_regularizers.LpRegularizer(p=2, power=2)
        options["embedding_reg_weight"] = l2_penalty
    labels = torch.arange(batch).repeat(2)
    expected = pml_losses.NPairsLoss(**options)(torch.cat([anchors, positives]), labels)
    assert_same_value_and_grads(npairs(anchors, positives, l2_penalty=l2_penalty), expected, [anchors, positives])


# ---------------------------------------------------------------------------------------------
# Cross-process (gather=True) on 2 and 3 gloo processes


def check_dcl(world_size: int) -> None:
    total = world_size * LOCAL_BATCH
    z1, z2 = global_tensor(total, 6, seed=40), global_tensor(total, 6, seed=41)
    temperature = torch.tensor(0.3, requires_grad=True)
    for sigma in (None, 0.5):

        def loss_fn(a: Tensor, b: Tensor, gather: bool, sigma=sigma) -> Tensor:
            return dcl(a, b, temperature=temperature, weight_sigma=sigma, gather=gather)

        check_against_single_process(loss_fn, [z1, z2], [temperature], f"dcl sigma={sigma}")


def check_supcon(world_size: int) -> None:
    total = world_size * LOCAL_BATCH
    labels = torch.tensor([0, 1, 2, 0, 1, 3, 2, 3, 4, 4, 0, 1])[:total]
    for views in (1, 2, 3):
        features = global_tensor(total, views, 6, seed=42 + views)
        for with_labels in (False, True):
            if views == 1 and not with_labels:
                continue

            def loss_fn(f: Tensor, gather: bool, with_labels=with_labels) -> Tensor:
                rows = slice(*row_range(f)) if gather else slice(None)
                return supcon(f, labels[rows] if with_labels else None, temperature=0.2, gather=gather)

            check_against_single_process(loss_fn, [features], [], f"supcon views={views} labels={with_labels}")


def check_npairs(world_size: int) -> None:
    total = world_size * LOCAL_BATCH
    anchors, positives = 0.5 * global_tensor(total, 6, seed=46), 0.5 * global_tensor(total, 6, seed=47)
    for l2_penalty in (0.0, 0.1):

        def loss_fn(a: Tensor, p: Tensor, gather: bool, l2_penalty=l2_penalty) -> Tensor:
            return npairs(a, p, l2_penalty=l2_penalty, gather=gather)

        check_against_single_process(loss_fn, [anchors, positives], [], f"npairs l2={l2_penalty}")


def check_hypersphere(world_size: int) -> None:
    total = world_size * LOCAL_BATCH
    x, y = global_tensor(total, 6, seed=48), global_tensor(total, 6, seed=49)
    for t in (2.0, 6.0):

        def unif(a: Tensor, gather: bool, t=t) -> Tensor:
            return uniformity(a, t, gather=gather)

        def both(a: Tensor, b: Tensor, gather: bool, t=t) -> Tensor:
            return hypersphere_loss(a, b, t=t, alpha=1.5, uniformity_weight=0.7, gather=gather)

        check_against_single_process(unif, [x], [], f"uniformity t={t}")
        check_against_single_process(both, [x, y], [], f"hypersphere t={t}")


def worker(rank: int, world_size: int, port: int) -> None:
    from datetime import timedelta

    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size, timeout=timedelta(seconds=60)
    )
    try:
        for check in (check_dcl, check_supcon, check_npairs, check_hypersphere):
            check(world_size)
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("world_size", [2, 3])
def test_family_gather_matches_single_process(world_size):
    mp.spawn(worker, args=(world_size, free_port()), nprocs=world_size, join=True)


def test_gather_is_a_no_op_without_process_group():
    z1, z2 = global_tensor(4, 5, seed=50), global_tensor(4, 5, seed=51)
    torch.testing.assert_close(dcl(z1, z2, gather=True), dcl(z1, z2))
    torch.testing.assert_close(npairs(z1, z2, gather=True), npairs(z1, z2))
    torch.testing.assert_close(uniformity(z1, gather=True), uniformity(z1))
    features = torch.stack([z1, z2], dim=1)
    torch.testing.assert_close(supcon(features, gather=True), supcon(features))


def test_unit_helper_is_normalize():
    x = torch.randn(5)
    torch.testing.assert_close(unit(x).float(), F.normalize(x, dim=0))
