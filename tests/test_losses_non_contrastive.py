"""Non-contrastive objectives: negative cosine (BYOL / SimSiam), Barlow Twins and VICReg.

* value and gradient against a float64 re-derivation that loops over the features;
* the stop-gradient of ``negative_cosine`` (no gradient reaches the targets);
* parity with lightly and pytorch-metric-learning (value and gradients, fp32, 1e-5);
* ``gather=True`` on 2 and 3 gloo processes, each with different rows, against one process on the
  concatenated batch (float64, 1e-6), and a per-rank computation that does not match.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from loss_checks import assert_same_value_and_grads, leaf
from test_losses_distributed import LOCAL_BATCH, check_against_single_process, free_port, global_tensor
from torch import Tensor, nn

from mmcontrast.losses.non_contrastive import (
    BarlowTwinsLoss,
    NegativeCosineLoss,
    VICRegLoss,
    barlow_twins,
    negative_cosine,
    vicreg,
)

F64 = {"rtol": 1e-10, "atol": 1e-10}


def leaf64(*shape: int, seed: int, scale: float = 1.0, shift: float = 0.0) -> Tensor:
    generator = torch.Generator().manual_seed(seed)
    x = scale * torch.randn(*shape, generator=generator, dtype=torch.float64) + shift
    return x.requires_grad_()


def assert_value_and_grads(actual: Tensor, expected: Tensor, inputs: list[Tensor], tol: dict) -> None:
    torch.testing.assert_close(actual, expected, **tol)
    actual_grads = torch.autograd.grad(actual, inputs, retain_graph=True)
    expected_grads = torch.autograd.grad(expected, inputs)
    for got, want in zip(actual_grads, expected_grads, strict=True):
        torch.testing.assert_close(got, want, **tol)


# ---------------------------------------------------------------------------------------------
# Brute-force re-derivations (one feature / one pair of features at a time)


def loop_negative_cosine(p: Tensor, z: Tensor) -> Tensor:
    z = z.detach()
    total = 0.0
    for k in range(p.shape[0]):
        total = total + (p[k] * z[k]).sum() / (p[k].pow(2).sum().sqrt() * z[k].pow(2).sum().sqrt())
    return -total / p.shape[0]


def loop_standardised_column(column: Tensor, eps: float, unbiased: bool) -> tuple[Tensor, Tensor]:
    """(centred column, variance) of one feature over the batch."""
    n = column.shape[0]
    mean = column.sum() / n
    centred = column - mean
    variance = centred.pow(2).sum() / (n - 1 if unbiased else n)
    return centred, variance


def loop_barlow_twins(z1: Tensor, z2: Tensor, lam: float, eps: float = 1e-5) -> Tensor:
    n, d = z1.shape
    a, b = [], []
    for i in range(d):
        centred, variance = loop_standardised_column(z1[:, i], eps, unbiased=False)
        a.append(centred / (variance + eps).sqrt())
        centred, variance = loop_standardised_column(z2[:, i], eps, unbiased=False)
        b.append(centred / (variance + eps).sqrt())
    loss = 0.0
    for i in range(d):
        for j in range(d):
            c_ij = (a[i] * b[j]).sum() / n
            loss = loss + ((1 - c_ij) ** 2 if i == j else lam * c_ij**2)
    return loss


def loop_variance_covariance(z: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    n, d = z.shape
    columns = [loop_standardised_column(z[:, i], eps, unbiased=True)[0] for i in range(d)]
    hinge, off_diagonal = 0.0, 0.0
    for i in range(d):
        for j in range(d):
            cov_ij = (columns[i] * columns[j]).sum() / (n - 1)
            if i == j:
                hinge = hinge + torch.relu(1 - (cov_ij + eps).sqrt())
            else:
                off_diagonal = off_diagonal + cov_ij**2
    return hinge / d, off_diagonal / d


def loop_vicreg(z1: Tensor, z2: Tensor, sim: float, var: float, cov: float, eps: float = 1e-4) -> Tensor:
    n, d = z1.shape
    invariance = sum((z1[k, i] - z2[k, i]) ** 2 for k in range(n) for i in range(d)) / (n * d)
    v1, c1 = loop_variance_covariance(z1, eps)
    v2, c2 = loop_variance_covariance(z2, eps)
    return sim * invariance + var * (v1 + v2) / 2 + cov * (c1 + c2)


# ---------------------------------------------------------------------------------------------
# Against the loops (float64)


@pytest.mark.parametrize("batch, dim, seed", [(2, 3, 0), (7, 5, 1), (16, 4, 2)])
def test_negative_cosine_matches_loop(batch, dim, seed):
    p, z = leaf64(batch, dim, seed=seed), leaf64(batch, dim, seed=seed + 10)
    assert_value_and_grads(negative_cosine(p, z), loop_negative_cosine(p, z), [p], F64)
    assert NegativeCosineLoss()(p, z).item() == pytest.approx(negative_cosine(p, z).item())


def test_negative_cosine_gradient_flows_only_through_p():
    p, z = leaf(6, 4, seed=0), leaf(6, 4, seed=1)
    loss = negative_cosine(p, z)
    loss.backward()
    assert p.grad is not None and p.grad.abs().sum() > 0
    assert z.grad is None
    # Identical views are the minimum, -1.
    x = leaf(5, 3, seed=2)
    assert negative_cosine(x, x).item() == pytest.approx(-1.0, abs=1e-6)


@pytest.mark.parametrize("batch, dim, seed", [(2, 3, 0), (7, 5, 1), (12, 6, 2)])
@pytest.mark.parametrize("lam", [5e-3, 0.5, 0.0])
def test_barlow_twins_matches_loop(batch, dim, seed, lam):
    z1, z2 = leaf64(batch, dim, seed=seed, scale=2.0, shift=1.0), leaf64(batch, dim, seed=seed + 10)
    expected = loop_barlow_twins(z1, z2, lam)
    assert_value_and_grads(barlow_twins(z1, z2, lambda_offdiag=lam), expected, [z1, z2], F64)
    module = BarlowTwinsLoss(lambda_offdiag=lam)
    torch.testing.assert_close(module(z1, z2), expected.detach(), **F64)
    assert "lambda_offdiag" in repr(module)


@pytest.mark.parametrize("batch, dim, seed", [(2, 3, 0), (7, 5, 1), (12, 6, 2)])
@pytest.mark.parametrize("weights", [(25.0, 25.0, 1.0), (1.0, 0.5, 3.0), (0.0, 1.0, 0.0)])
def test_vicreg_matches_loop(batch, dim, seed, weights):
    # Scales around 1 so that some features are under the variance hinge and some are not.
    scale = torch.linspace(0.3, 2.0, dim, dtype=torch.float64)
    z1 = (scale * leaf64(batch, dim, seed=seed).detach()).requires_grad_()
    z2 = (scale.flip(0) * leaf64(batch, dim, seed=seed + 10).detach()).requires_grad_()
    sim, var, cov = weights
    expected = loop_vicreg(z1, z2, sim, var, cov)
    actual = vicreg(z1, z2, sim_weight=sim, var_weight=var, cov_weight=cov)
    assert_value_and_grads(actual, expected, [z1, z2], F64)
    module = VICRegLoss(sim_weight=sim, var_weight=var, cov_weight=cov)
    torch.testing.assert_close(module(z1, z2), expected.detach(), **F64)


def test_float32_under_autocast():
    z1, z2 = leaf(8, 6, seed=0).bfloat16(), leaf(8, 6, seed=1).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        values = [negative_cosine(z1, z2), barlow_twins(z1, z2), vicreg(z1, z2)]
    references = [negative_cosine(z1.float(), z2.float()), barlow_twins(z1.float(), z2.float())]
    references.append(vicreg(z1.float(), z2.float()))
    for got, want in zip(values, references, strict=True):
        assert got.dtype == torch.float32
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: negative_cosine(torch.randn(4, 3), torch.randn(4, 2)), "negative_cosine: p has shape"),
        (lambda: negative_cosine(torch.randn(4), torch.randn(4)), "negative_cosine: p must have shape"),
        (lambda: barlow_twins(torch.randn(1, 3), torch.randn(1, 3)), "barlow_twins: z1 has 1 row"),
        (lambda: barlow_twins(torch.randn(4, 3), torch.randn(4, 3), lambda_offdiag=-1.0), "lambda_offdiag"),
        (lambda: barlow_twins(torch.randn(4, 3), torch.randn(4, 3), eps=0.0), "barlow_twins: eps"),
        (lambda: vicreg(torch.randn(4, 3), torch.randn(5, 3)), "vicreg: z1 has shape"),
        (lambda: vicreg(torch.randn(4, 3), torch.full((4, 3), math.nan)), "vicreg: z2 contains NaN"),
        (lambda: vicreg(torch.randn(4, 3), torch.randn(4, 3), var_weight=math.inf), "vicreg: var_weight"),
        (lambda: VICRegLoss(cov_weight=-0.1), "VICRegLoss: cov_weight"),
        (lambda: BarlowTwinsLoss(lambda_offdiag=math.nan), "BarlowTwinsLoss: lambda_offdiag"),
    ],
)
def test_errors_name_the_argument(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_gather_is_a_no_op_without_process_group():
    z1, z2 = global_tensor(6, 4, seed=0), global_tensor(6, 4, seed=1)
    torch.testing.assert_close(barlow_twins(z1, z2, gather=True), barlow_twins(z1, z2))
    torch.testing.assert_close(vicreg(z1, z2, gather=True), vicreg(z1, z2))


# ---------------------------------------------------------------------------------------------
# Peers


def test_negative_cosine_matches_lightly():
    lightly_loss = pytest.importorskip("lightly.loss")
    for batch, dim, seed in [(2, 4, 0), (8, 16, 1)]:
        p, z = leaf(batch, dim, seed=seed), leaf(batch, dim, seed=seed + 1)
        # lightly does not detach its second argument; the stop-gradient is the caller's.
        expected = lightly_loss.NegativeCosineSimilarity()(p, z.detach())
        assert_same_value_and_grads(negative_cosine(p, z), expected, [p])


@pytest.mark.parametrize("batch, dim, seed", [(4, 8, 0), (16, 32, 1)])
@pytest.mark.parametrize("lam", [5e-3, 0.1])
def test_barlow_twins_matches_lightly(batch, dim, seed, lam):
    lightly_loss = pytest.importorskip("lightly.loss")
    z1, z2 = leaf(batch, dim, seed=seed), leaf(batch, dim, seed=seed + 1, scale=3.0)
    expected = lightly_loss.BarlowTwinsLoss(lambda_param=lam)(z1, z2)
    assert_same_value_and_grads(barlow_twins(z1, z2, lambda_offdiag=lam), expected, [z1, z2])


VICREG_WEIGHTS = [(25.0, 25.0, 1.0), (1.0, 5.0, 0.5)]


@pytest.mark.parametrize("batch, dim, seed", [(4, 8, 0), (16, 32, 1)])
@pytest.mark.parametrize("weights", VICREG_WEIGHTS)
def test_vicreg_matches_lightly(batch, dim, seed, weights):
    lightly_loss = pytest.importorskip("lightly.loss")
    sim, var, cov = weights
    z1, z2 = leaf(batch, dim, seed=seed, scale=0.5), leaf(batch, dim, seed=seed + 1, scale=1.5)
    peer = lightly_loss.VICRegLoss(lambda_param=sim, mu_param=var, nu_param=cov, eps=1e-4)
    actual = vicreg(z1, z2, sim_weight=sim, var_weight=var, cov_weight=cov)
    assert_same_value_and_grads(actual, peer(z1, z2), [z1, z2])


@pytest.mark.parametrize("batch, dim, seed", [(4, 8, 0), (16, 32, 1)])
@pytest.mark.parametrize("weights", VICREG_WEIGHTS)
def test_vicreg_matches_pytorch_metric_learning(batch, dim, seed, weights):
    pml_losses = pytest.importorskip("pytorch_metric_learning.losses")
    sim, var, cov = weights
    z1, z2 = leaf(batch, dim, seed=seed, scale=0.5), leaf(batch, dim, seed=seed + 1, scale=1.5)
    peer = pml_losses.VICRegLoss(invariance_lambda=sim, variance_mu=var, covariance_v=cov, eps=1e-4)
    actual = vicreg(z1, z2, sim_weight=sim, var_weight=var, cov_weight=cov)
    # pytorch-metric-learning: embeddings is the first view, ref_emb the second; no labels.
    assert_same_value_and_grads(actual, peer(z1, ref_emb=z2), [z1, z2])


# ---------------------------------------------------------------------------------------------
# gather=True on 2 and 3 processes


def distributed_inputs(world_size: int, seed: int) -> list[Tensor]:
    total = world_size * LOCAL_BATCH
    # Different means and scales per feature, so that local statistics differ from global ones.
    scale = torch.linspace(0.5, 2.0, 6, dtype=torch.float64)
    z1 = scale * global_tensor(total, 6, seed=seed).double() + torch.arange(total, dtype=torch.float64)[:, None] / 4
    z2 = scale.flip(0) * global_tensor(total, 6, seed=seed + 1).double()
    return [z1, z2]


LOSSES = {
    "barlow_twins": lambda a, b, gather: barlow_twins(a, b, lambda_offdiag=0.05, gather=gather),
    "vicreg": lambda a, b, gather: vicreg(a, b, sim_weight=2.0, var_weight=3.0, cov_weight=0.5, gather=gather),
}


def check_gather(world_size: int) -> None:
    for name, loss_fn in LOSSES.items():
        inputs = distributed_inputs(world_size, seed=len(name))
        check_against_single_process(loss_fn, inputs, [], f"{name} gather=True")

        # Per-rank batch statistics (no gather) are a different loss: the same check must fail.
        def per_rank(a: Tensor, b: Tensor, gather: bool, loss_fn=loss_fn) -> Tensor:
            return loss_fn(a, b, gather=False)

        with pytest.raises(AssertionError):
            check_against_single_process(per_rank, inputs, [], f"{name} per rank")


def check_ddp(world_size: int) -> None:
    """A DDP-wrapped encoder trained with gather=True gets exactly the single-process gradients."""
    rank = dist.get_rank()
    images = distributed_inputs(world_size, seed=20)[0]

    class Model(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.first, self.second = nn.Linear(6, 5).double(), nn.Linear(6, 5).double()

        def forward(self, x: Tensor, gather: bool) -> Tensor:
            z1, z2 = self.first(x), self.second(x)
            return barlow_twins(z1, z2, lambda_offdiag=0.1, gather=gather) + vicreg(z1, z2, gather=gather)

    reference = Model()
    reference(images, gather=False).backward()
    model = nn.parallel.DistributedDataParallel(Model())
    model(images[rank * LOCAL_BATCH : (rank + 1) * LOCAL_BATCH], gather=True).backward()
    for (name, got), want in zip(model.module.named_parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(got.grad, want.grad, rtol=1e-6, atol=1e-6, msg=lambda m, n=name: f"DDP {n}\n{m}")


def worker(rank: int, world_size: int, port: int) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    try:
        check_gather(world_size)
        if world_size == 2:
            check_ddp(world_size)
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("world_size", [2, 3])
def test_gather_matches_single_process(world_size):
    mp.spawn(worker, args=(world_size, free_port()), nprocs=world_size, join=True)
