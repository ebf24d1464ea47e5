"""Lifted structured, soft nearest neighbour, debiased (DCL) and hard-negative (HCL) losses.

* each loss against a float64 re-derivation: a loop over the formula (lifted, soft-NN) or the
  authors' reference code transcribed (chingyaoc/DCL, joshr17/HCL), value and gradient;
* parity with pytorch-metric-learning's ``LiftedStructureLoss`` and ``NCALoss``;
* labels vs ``label_masks`` for the lifted loss, special cases (``tau_plus=0`` / ``beta=0``);
* ``gather=True`` on 2 and 3 gloo processes, each with different rows, against one process.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from loss_checks import assert_same_value_and_grads, leaf
from test_losses_distributed import LOCAL_BATCH, check_against_single_process, free_port, global_tensor, row_range
from torch import Tensor

from mmcontrast.losses import label_masks, nt_xent, time_masks
from mmcontrast.losses.debiased import (
    DebiasedNTXentLoss,
    HardNegativeNTXentLoss,
    debiased_nt_xent,
    hard_negative_nt_xent,
)
from mmcontrast.losses.lifted import LiftedStructureLoss, lifted_structure_loss
from mmcontrast.losses.soft_nn import SoftNearestNeighbourLoss, soft_nearest_neighbour_loss

LABELS = {
    "pairs": torch.tensor([0, 0, 1, 1, 2, 2, 3, 3]),
    "mixed": torch.tensor([0, 1, 0, 2, 1, 0, 3, 2]),  # label 3 has a single row
    "two_classes": torch.tensor([0, 1, 1, 0, 1, 0, 0, 1]),
}


def label_mask_pair(labels: Tensor) -> tuple[Tensor, Tensor]:
    same = labels[:, None] == labels[None, :]
    return same & ~torch.eye(len(labels), dtype=torch.bool), ~same


# ---------------------------------------------------------------------------------------------
# float64 re-derivations


def loop_lifted(x: Tensor, positive: Tensor, negative: Tensor, margin: float) -> Tensor:
    """1/(2|P|) sum over ordered positive pairs of relu(J_ij)^2, straight from the paper."""
    x = x.double()
    batch = x.shape[0]

    def dist(i: int, j: int) -> Tensor:
        return (x[i] - x[j]).square().sum().sqrt()

    terms = []
    for i in range(batch):
        for j in range(batch):
            if i == j or not positive[i, j]:
                continue
            exps = [torch.exp(margin - dist(i, k)) for k in range(batch) if k != i and negative[i, k]]
            exps += [torch.exp(margin - dist(j, k)) for k in range(batch) if k != j and negative[j, k]]
            if not exps:
                terms.append(x.sum() * 0.0)
                continue
            joint = torch.log(torch.stack(exps).sum()) + dist(i, j)
            terms.append(torch.relu(joint) ** 2)
    if not terms:
        return x.sum() * 0.0
    return torch.stack(terms).sum() / (2 * len(terms))


def loop_soft_nn(x: Tensor, labels: Tensor, temperature: float) -> Tensor:
    x = x.double()
    losses = []
    for i in range(x.shape[0]):
        numerator, denominator = [], []
        for j in range(x.shape[0]):
            if j == i:
                continue
            term = torch.exp(-(x[i] - x[j]).square().sum() / temperature)
            denominator.append(term)
            if labels[j] == labels[i]:
                numerator.append(term)
        if numerator:
            losses.append(-torch.log(torch.stack(numerator).sum() / torch.stack(denominator).sum()))
    return torch.stack(losses).mean() if losses else x.sum() * 0.0


def get_negative_mask(batch_size: int) -> Tensor:
    """chingyaoc/DCL ``get_negative_mask``: drop the self and positive columns."""
    negative_mask = torch.ones((batch_size, 2 * batch_size), dtype=bool)
    for i in range(batch_size):
        negative_mask[i, i] = 0
        negative_mask[i, i + batch_size] = 0
    negative_mask = torch.cat((negative_mask, negative_mask), 0)
    return negative_mask


def reference_criterion(out_1, out_2, tau_plus, batch_size, beta, estimator, temperature):
    """chingyaoc/DCL and joshr17/HCL ``criterion``, transcribed (features normalised first, float64)."""
    out_1 = torch.nn.functional.normalize(out_1.double(), dim=-1)
    out_2 = torch.nn.functional.normalize(out_2.double(), dim=-1)
    out = torch.cat([out_1, out_2], dim=0)
    neg = torch.exp(torch.mm(out, out.t().contiguous()) / temperature)
    mask = get_negative_mask(batch_size)
    neg = neg.masked_select(mask).view(2 * batch_size, -1)
    pos = torch.exp(torch.sum(out_1 * out_2, dim=-1) / temperature)
    pos = torch.cat([pos, pos], dim=0)
    N = batch_size * 2 - 2
    if estimator == "hard":
        imp = (beta * neg.log()).exp()
        reweight_neg = (imp * neg).sum(dim=-1) / imp.mean(dim=-1)
        Ng = (-tau_plus * N * pos + reweight_neg) / (1 - tau_plus)
        Ng = torch.clamp(Ng, min=N * np.e ** (-1 / temperature))
    elif estimator == "easy":
        Ng = (-tau_plus * N * pos + neg.sum(dim=-1)) / (1 - tau_plus)
        Ng = torch.clamp(Ng, min=N * np.e ** (-1 / temperature))
    else:
        raise ValueError(estimator)
    return (-torch.log(pos / (pos + Ng))).mean()


# ---------------------------------------------------------------------------------------------
# lifted structured loss


@pytest.mark.parametrize("labels_name", list(LABELS))
@pytest.mark.parametrize("margin, scale", [(1.0, 1.0), (0.5, 0.3), (2.0, 0.1)])
def test_lifted_matches_loop(labels_name, margin, scale):
    labels = LABELS[labels_name]
    x = leaf(len(labels), 6, seed=list(LABELS).index(labels_name) + int(10 * margin), scale=scale)
    positive, negative = label_mask_pair(labels)
    assert_same_value_and_grads(
        lifted_structure_loss(x, labels, margin=margin), loop_lifted(x, positive, negative, margin).float(), [x]
    )
    assert_same_value_and_grads(
        LiftedStructureLoss(margin=margin)(x, labels), loop_lifted(x, positive, negative, margin).float(), [x]
    )


@pytest.mark.parametrize("seed", [0, 1])
def test_lifted_time_masks_match_loop(seed):
    x = leaf(10, 5, seed=seed, scale=0.5)
    times = torch.tensor([0, 1, 2, 3, 5, 0, 1, 4, 6, 2])
    groups = torch.tensor([0, 0, 0, 0, 0, 1, 1, 1, 1, 2])
    positive, negative = time_masks(times, groups, pos_radius=1, neg_radius=2, other_groups="ignore")
    expected = loop_lifted(x, positive, negative, 1.0).float()
    actual = lifted_structure_loss(x, positive_mask=positive, negative_mask=negative, margin=1.0)
    assert_same_value_and_grads(actual, expected, [x])


@pytest.mark.parametrize("labels_name", list(LABELS))
def test_lifted_labels_equal_label_masks(labels_name):
    labels = LABELS[labels_name]
    x = leaf(len(labels), 6, seed=3)
    positive, negative = label_masks(labels)
    with_labels = lifted_structure_loss(x, labels)
    with_masks = lifted_structure_loss(x, positive_mask=positive, negative_mask=negative)
    assert torch.equal(with_labels, with_masks)
    (grad_labels,) = torch.autograd.grad(with_labels, x)
    (grad_masks,) = torch.autograd.grad(with_masks, x)
    assert torch.equal(grad_labels, grad_masks)


def test_lifted_pair_without_negatives_costs_zero():
    x = leaf(4, 3, seed=4)
    positive = torch.tensor([[False, True, False, False]] + [[False] * 4] * 3)
    negative = torch.zeros(4, 4, dtype=torch.bool)
    loss = lifted_structure_loss(x, positive_mask=positive, negative_mask=negative)
    (grad,) = torch.autograd.grad(loss, x)
    assert loss.item() == 0.0 and torch.equal(grad, torch.zeros_like(grad))
    # No positive pair at all: 0, attached to the graph.
    loss = lifted_structure_loss(x, torch.arange(4))
    assert loss.item() == 0.0 and loss.requires_grad


# ---------------------------------------------------------------------------------------------
# soft nearest neighbour loss


@pytest.mark.parametrize("labels_name", list(LABELS))
@pytest.mark.parametrize("temperature, scale", [(1.0, 0.5), (0.3, 0.3), (10.0, 1.0)])
def test_soft_nn_matches_loop(labels_name, temperature, scale):
    labels = LABELS[labels_name]
    x = leaf(len(labels), 6, seed=7, scale=scale)
    actual = soft_nearest_neighbour_loss(x, labels, temperature=temperature)
    assert_same_value_and_grads(actual, loop_soft_nn(x, labels, temperature).float(), [x])
    module = SoftNearestNeighbourLoss(temperature)
    assert_same_value_and_grads(module(x, labels), loop_soft_nn(x, labels, temperature).float(), [x])


def test_soft_nn_temperature_tensor_gradient():
    labels = LABELS["mixed"]
    x = leaf(8, 4, seed=8, scale=0.5)
    t64 = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    t32 = torch.tensor(0.7, requires_grad=True)
    actual = soft_nearest_neighbour_loss(x, labels, temperature=t32)
    expected = loop_soft_nn(x, labels, t64)
    torch.testing.assert_close(actual, expected.float(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(
        torch.autograd.grad(actual, t32)[0], torch.autograd.grad(expected, t64)[0].float(), rtol=1e-5, atol=1e-5
    )


def test_soft_nn_far_rows_stay_finite():
    """Large distances over a small temperature: the log-sum-exp form stays finite (exp would underflow)."""
    x = leaf(6, 3, seed=9, scale=30.0)
    loss = soft_nearest_neighbour_loss(x, torch.tensor([0, 0, 1, 1, 2, 2]), temperature=0.01)
    (grad,) = torch.autograd.grad(loss, x)
    assert torch.isfinite(loss) and loss.item() > 0 and torch.isfinite(grad).all()


# ---------------------------------------------------------------------------------------------
# peer parity: pytorch-metric-learning


@pytest.mark.parametrize("labels_name", list(LABELS))
@pytest.mark.parametrize("margin, scale", [(1.0, 1.0), (0.5, 0.3)])
def test_lifted_matches_pytorch_metric_learning(labels_name, margin, scale):
    pml_losses = pytest.importorskip("pytorch_metric_learning.losses")
    pml_distances = pytest.importorskip("pytorch_metric_learning.distances")
    labels = LABELS[labels_name]
    x = leaf(len(labels), 6, seed=11, scale=scale)
    peer = pml_losses.LiftedStructureLoss(
        neg_margin=margin, pos_margin=0, distance=pml_distances.LpDistance(normalize_embeddings=False)
    )
    assert_same_value_and_grads(lifted_structure_loss(x, labels, margin=margin), peer(x, labels), [x])


@pytest.mark.parametrize("labels_name", list(LABELS))
@pytest.mark.parametrize("temperature, scale", [(1.0, 0.5), (0.5, 0.3), (4.0, 1.0)])
def test_soft_nn_matches_pytorch_metric_learning_nca(labels_name, temperature, scale):
    pml_losses = pytest.importorskip("pytorch_metric_learning.losses")
    pml_distances = pytest.importorskip("pytorch_metric_learning.distances")
    labels = LABELS[labels_name]
    x = leaf(len(labels), 6, seed=12, scale=scale)
    peer = pml_losses.NCALoss(
        softmax_scale=1.0 / temperature, distance=pml_distances.LpDistance(power=2, normalize_embeddings=False)
    )
    actual = soft_nearest_neighbour_loss(x, labels, temperature=temperature)
    assert_same_value_and_grads(actual, peer(x, labels), [x])


# ---------------------------------------------------------------------------------------------
# debiased (DCL) and hard-negative (HCL)


@pytest.mark.parametrize("batch, seed", [(2, 0), (8, 1)])
@pytest.mark.parametrize("temperature", [0.5, 0.1])
@pytest.mark.parametrize("tau_plus", [0.0, 0.1, 0.4])
def test_debiased_matches_reference_code(batch, seed, temperature, tau_plus):
    z1, z2 = leaf(batch, 5, seed=seed), leaf(batch, 5, seed=seed + 100)

    def expected() -> Tensor:
        return reference_criterion(z1, z2, tau_plus, batch, 0.0, "easy", temperature).float()

    actual = debiased_nt_xent(z1, z2, temperature=temperature, tau_plus=tau_plus)
    assert_same_value_and_grads(actual, expected(), [z1, z2])
    module = DebiasedNTXentLoss(temperature=temperature, tau_plus=tau_plus)
    assert_same_value_and_grads(module(z1, z2), expected(), [z1, z2])


@pytest.mark.parametrize("batch, seed", [(2, 0), (8, 1)])
@pytest.mark.parametrize("temperature", [0.5, 0.2])
@pytest.mark.parametrize("tau_plus", [0.0, 0.1, 0.4])
@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0, 3.0])
def test_hard_negative_matches_reference_code(batch, seed, temperature, tau_plus, beta):
    z1, z2 = leaf(batch, 5, seed=seed), leaf(batch, 5, seed=seed + 100)

    def expected() -> Tensor:
        return reference_criterion(z1, z2, tau_plus, batch, beta, "hard", temperature).float()

    actual = hard_negative_nt_xent(z1, z2, temperature=temperature, tau_plus=tau_plus, beta=beta)
    assert_same_value_and_grads(actual, expected(), [z1, z2])
    module = HardNegativeNTXentLoss(temperature=temperature, tau_plus=tau_plus, beta=beta)
    assert_same_value_and_grads(module(z1, z2), expected(), [z1, z2])


def test_clamp_binds():
    """Views with near-identical positives and a large tau_plus: the floor M e^{-1/t} is active."""
    base = leaf(4, 3, seed=20)
    z1 = base.detach().clone().requires_grad_()
    z2 = (base.detach() + 1e-3 * torch.randn(4, 3, generator=torch.Generator().manual_seed(0))).requires_grad_()
    for estimator, fn in (("easy", debiased_nt_xent), ("hard", hard_negative_nt_xent)):
        expected = reference_criterion(z1, z2, 0.9, 4, 1.0, estimator, 0.5).float()
        options = {"beta": 1.0} if estimator == "hard" else {}
        assert_same_value_and_grads(fn(z1, z2, temperature=0.5, tau_plus=0.9, **options), expected, [z1, z2])
    # The floor M e^{-1/t} then fixes N_g: loss = mean log(1 + M e^{-1/t} / pos).
    out = torch.nn.functional.normalize(torch.cat([z1, z2]).detach(), dim=-1)
    pos = torch.exp((out[:4] * out[4:]).sum(-1) / 0.5).repeat(2)
    floor = torch.log1p(6 * math.exp(-2.0) / pos).mean()
    torch.testing.assert_close(debiased_nt_xent(z1, z2, temperature=0.5, tau_plus=0.9), floor)


@pytest.mark.parametrize("temperature", [0.5, 0.1])
def test_special_cases_reduce_to_nt_xent(temperature):
    z1, z2 = leaf(6, 4, seed=30), leaf(6, 4, seed=31)
    actual = debiased_nt_xent(z1, z2, temperature=temperature, tau_plus=0.0)
    assert_same_value_and_grads(actual, nt_xent(z1, z2, temperature=temperature), [z1, z2])
    actual = hard_negative_nt_xent(z1, z2, temperature=temperature, tau_plus=0.0, beta=0.0)
    assert_same_value_and_grads(actual, nt_xent(z1, z2, temperature=temperature), [z1, z2])
    # beta = 0 with tau_plus > 0 is DCL.
    assert_same_value_and_grads(
        hard_negative_nt_xent(z1, z2, temperature=temperature, tau_plus=0.2, beta=0.0),
        debiased_nt_xent(z1, z2, temperature=temperature, tau_plus=0.2),
        [z1, z2],
    )


def test_debiased_temperature_tensor_gradient():
    z1, z2 = leaf(5, 4, seed=40), leaf(5, 4, seed=41)
    t32, t64 = torch.tensor(0.3, requires_grad=True), torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    actual = hard_negative_nt_xent(z1, z2, temperature=t32, tau_plus=0.1, beta=1.0)
    expected = reference_criterion(z1, z2, 0.1, 5, 1.0, "hard", t64)
    torch.testing.assert_close(actual, expected.float(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(
        torch.autograd.grad(actual, t32)[0], torch.autograd.grad(expected, t64)[0].float(), rtol=1e-5, atol=1e-5
    )


# ---------------------------------------------------------------------------------------------
# float32 under autocast, errors


def test_float32_under_autocast():
    x, labels = leaf(8, 6, seed=50), LABELS["mixed"]
    z1, z2 = leaf(4, 6, seed=51), leaf(4, 6, seed=52)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        losses = [
            lifted_structure_loss(x.bfloat16(), labels),
            soft_nearest_neighbour_loss(x.bfloat16(), labels),
            debiased_nt_xent(z1.bfloat16(), z2.bfloat16()),
            hard_negative_nt_xent(z1.bfloat16(), z2.bfloat16()),
        ]
    assert all(loss.dtype == torch.float32 for loss in losses)
    grads = torch.autograd.grad(sum(losses), [x, z1, z2])
    assert all(torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: lifted_structure_loss(torch.randn(4, 3)), "lifted_structure_loss: labels is missing"),
        (
            lambda: lifted_structure_loss(torch.randn(4, 3), positive_mask=torch.ones(4, 4, dtype=torch.bool)),
            "lifted_structure_loss: negative_mask is missing",
        ),
        (
            lambda: lifted_structure_loss(torch.randn(4, 3), torch.zeros(3, dtype=torch.long)),
            "lifted_structure_loss: labels has shape",
        ),
        (
            lambda: lifted_structure_loss(torch.randn(4, 3), torch.zeros(4, dtype=torch.long), margin=math.nan),
            "lifted_structure_loss: margin must be a finite number",
        ),
        (
            lambda: soft_nearest_neighbour_loss(torch.randn(4, 3), torch.zeros(4, dtype=torch.long), temperature=0),
            "soft_nearest_neighbour_loss: temperature must be a positive",
        ),
        (
            lambda: soft_nearest_neighbour_loss(torch.randn(4, 3), torch.zeros(4)),
            "soft_nearest_neighbour_loss: labels must hold integer class ids",
        ),
        (
            lambda: debiased_nt_xent(torch.randn(4, 3), torch.randn(4, 3), tau_plus=1.0),
            r"debiased_nt_xent: tau_plus must be a number in \[0, 1\)",
        ),
        (
            lambda: debiased_nt_xent(torch.randn(4, 3), torch.randn(5, 3)),
            "debiased_nt_xent: z1 has shape",
        ),
        (
            lambda: debiased_nt_xent(torch.randn(1, 3), torch.randn(1, 3)),
            "debiased_nt_xent: z1 has 1 row",
        ),
        (
            lambda: hard_negative_nt_xent(torch.randn(4, 3), torch.randn(4, 3), beta=-1.0),
            "hard_negative_nt_xent: beta must be a finite number >= 0",
        ),
        (
            lambda: HardNegativeNTXentLoss(temperature=-1.0),
            "HardNegativeNTXentLoss: temperature must be a positive",
        ),
    ],
)
def test_errors_name_the_argument(call, message):
    with pytest.raises(ValueError if "integer" not in message else TypeError, match=message):
        call()


# ---------------------------------------------------------------------------------------------
# gather=True on 2 and 3 gloo processes


def check_soft_nn(world_size: int) -> None:
    total = world_size * LOCAL_BATCH
    embeddings = 0.5 * global_tensor(total, 6, seed=60)
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 3, 5, 0, 4, 4, 1])[:total]  # label 5 occurs once
    temperature = torch.tensor(0.8, requires_grad=True)

    def loss_fn(x: Tensor, gather: bool) -> Tensor:
        rows = slice(*row_range(x)) if gather else slice(None)
        return soft_nearest_neighbour_loss(x, labels[rows], temperature=temperature, gather=gather)

    check_against_single_process(loss_fn, [embeddings], [temperature], "soft-NN")


def check_debiased(world_size: int) -> None:
    total = world_size * LOCAL_BATCH
    z1, z2 = global_tensor(total, 6, seed=61), global_tensor(total, 6, seed=62)
    temperature = torch.tensor(0.5, requires_grad=True)
    for tau_plus in (0.0, 0.1):
        for beta in (None, 0.0, 1.0):

            def loss_fn(a: Tensor, b: Tensor, gather: bool, options=(tau_plus, beta)) -> Tensor:
                tau_plus, beta = options
                if beta is None:
                    return debiased_nt_xent(a, b, temperature=temperature, tau_plus=tau_plus, gather=gather)
                return hard_negative_nt_xent(a, b, temperature=temperature, tau_plus=tau_plus, beta=beta, gather=gather)

            what = f"debiased tau_plus={tau_plus} beta={beta}"
            check_against_single_process(loss_fn, [z1, z2], [temperature], what)


def check_lifted(world_size: int) -> None:
    total = world_size * LOCAL_BATCH
    embeddings = 0.5 * global_tensor(total, 6, seed=63)
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 3, 5, 0, 4, 4, 1])[:total]
    times = torch.tensor([0, 1, 2, 5, 0, 3, 1, 7, 2, 4, 6, 9])[:total]
    groups = torch.tensor([0, 0, 0, 0, 1, 0, 1, 1, 0, 1, 1, 2])[:total]

    def label_loss(x: Tensor, gather: bool) -> Tensor:
        rows = slice(*row_range(x)) if gather else slice(None)
        return lifted_structure_loss(x, labels[rows], margin=1.0, gather=gather)

    def mask_loss(x: Tensor, gather: bool) -> Tensor:
        rows = slice(*row_range(x)) if gather else slice(None)
        positive, negative = time_masks(
            times[rows], groups[rows], pos_radius=1, neg_radius=2, other_groups="ignore", gather=gather
        )
        return lifted_structure_loss(x, positive_mask=positive, negative_mask=negative, margin=1.0, gather=gather)

    check_against_single_process(label_loss, [embeddings], [], "lifted labels")
    check_against_single_process(mask_loss, [embeddings], [], "lifted time masks")


def worker(rank: int, world_size: int, port: int) -> None:
    from datetime import timedelta

    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size, timeout=timedelta(seconds=60)
    )
    try:
        for check in (check_soft_nn, check_debiased, check_lifted):
            check(world_size)
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("world_size", [2, 3])
def test_gather_matches_single_process(world_size):
    mp.spawn(worker, args=(world_size, free_port()), nprocs=world_size, join=True)


def test_gather_is_a_no_op_without_process_group():
    x, labels = leaf(8, 4, seed=70), LABELS["mixed"]
    z1, z2 = leaf(4, 4, seed=71), leaf(4, 4, seed=72)
    assert torch.equal(lifted_structure_loss(x, labels, gather=True), lifted_structure_loss(x, labels))
    assert torch.equal(soft_nearest_neighbour_loss(x, labels, gather=True), soft_nearest_neighbour_loss(x, labels))
    assert torch.equal(debiased_nt_xent(z1, z2, gather=True), debiased_nt_xent(z1, z2))
    assert torch.equal(hard_negative_nt_xent(z1, z2, gather=True), hard_negative_nt_xent(z1, z2))
