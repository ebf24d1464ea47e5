"""Binary NCE with a memory bank (Wu et al. 2018) and MoCHi hard-negative mixing (Kalantidis et al. 2020).

* ``binary_nce`` against a float64 transcription of lemniscate's ``NCEAverage`` scores and
  ``NCECriterion`` (value and gradient), the ``Z`` estimate of ``BinaryNCELoss``;
* ``MemoryBank``: the update rule, duplicates, uniform sampling with a generator, checkpointing, and
  identical banks on 2 gloo processes updated with different rows;
* ``mochi_info_nce`` against a float64 loop over the paper's construction (value and gradient),
  determinism with a generator, detached synthetic negatives, and ``s = s' = 0`` equal to
  ``candidate_info_nce`` over ``[k+, queue]``.
"""

from __future__ import annotations

import math
from datetime import timedelta

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from loss_checks import assert_same_value_and_grads, leaf
from test_losses_distributed import free_port
from torch import Tensor

from mmcontrast.losses.candidates import candidate_info_nce
from mmcontrast.losses.mochi import (
    MochiInfoNCELoss,
    MochiMixing,
    mochi_info_nce,
    mochi_negatives,
    sample_mochi_mixing,
)
from mmcontrast.losses.nce import BinaryNCELoss, MemoryBank, binary_nce, estimate_normaliser

# ---------------------------------------------------------------------------------------------
# float64 transcriptions


def lemniscate_scores(x: Tensor, weight: Tensor, temperature: float, z: float) -> Tensor:
    """``NCEFunction.forward``: ``out = exp(bmm(weight, x) / T) / Z`` for ``weight [B, K + 1, d]`` (float64)."""
    batch_size, input_size = x.shape
    out = torch.bmm(weight, x.reshape(batch_size, input_size, 1))
    return (out / temperature).exp().div(z).reshape(batch_size, -1)


def lemniscate_criterion(x: Tensor, n_lem: int, eps: float = 0.0) -> Tensor:
    """``NCECriterion.forward`` (lemniscate.pytorch, ``eps = 1e-7`` there; 0 here unless given)."""
    batch_size = x.size(0)
    k = x.size(1) - 1
    pnt = 1 / float(n_lem)
    pns = 1 / float(n_lem)
    pmt = x.select(1, 0)
    pmt_div = pmt.add(k * pnt + eps)
    ln_pmt = torch.div(pmt, pmt_div)
    pon_div = x.narrow(1, 1, k).add(k * pns + eps)
    pon = pon_div.clone().fill_(k * pns)
    ln_pon = torch.div(pon, pon_div)
    ln_pmt = ln_pmt.log()
    ln_pon = ln_pon.log()
    ln_pmt_sum = ln_pmt.sum(0)
    ln_pon_sum = ln_pon.view(-1, 1).sum(0)
    return (-(ln_pmt_sum + ln_pon_sum) / batch_size).squeeze()


def reference_nce(q: Tensor, pos: Tensor, neg: Tensor, temperature: float, z: float, n: int, eps: float = 0.0):
    normalize = torch.nn.functional.normalize
    x, p, m = normalize(q.double(), dim=-1), normalize(pos.double(), dim=-1), normalize(neg.double(), dim=-1)
    weight = torch.cat([p.unsqueeze(1), m], dim=1)
    return lemniscate_criterion(lemniscate_scores(x, weight, temperature, z), n, eps)


def reference_mochi(q: Tensor, k: Tensor, queue: Tensor, temperature: float, num_hard: int, mixing: MochiMixing):
    """The paper's construction, one query at a time, in float64; synthetic negatives built from detached copies."""
    normalize = torch.nn.functional.normalize
    q, k, queue = normalize(q.double(), dim=-1), normalize(k.double(), dim=-1), normalize(queue.double(), dim=-1)
    losses = []
    for b in range(q.shape[0]):
        qd, queue_d = q[b].detach(), queue.detach()
        sims = [float(qd @ queue_d[m]) for m in range(queue.shape[0])]
        hardest = sorted(range(queue.shape[0]), key=lambda m: -sims[m])[:num_hard]
        logits = [q[b] @ k[b]] + [q[b] @ queue[m] for m in range(queue.shape[0])]
        for (i, j), alpha in zip(mixing.pair_indices[b].tolist(), mixing.alphas[b].double().tolist(), strict=True):
            h = alpha * queue_d[hardest[i]] + (1 - alpha) * queue_d[hardest[j]]
            logits.append(q[b] @ (h / h.norm()))
        for j, beta in zip(mixing.query_indices[b].tolist(), mixing.betas[b].double().tolist(), strict=True):
            h = beta * qd + (1 - beta) * queue_d[hardest[j]]
            logits.append(q[b] @ (h / h.norm()))
        logits = torch.stack(logits) / temperature
        losses.append(-(logits[0].exp() / logits.exp().sum()).log())
    return torch.stack(losses).mean()


# ---------------------------------------------------------------------------------------------
# binary NCE


@pytest.mark.parametrize("temperature, num_noise, num_data", [(0.07, 4, 50), (0.5, 7, 1000), (1.0, 1, 10)])
def test_binary_nce_matches_lemniscate(temperature, num_noise, num_data):
    q, pos, neg = leaf(6, 8, seed=1), leaf(6, 8, seed=2), leaf(6, num_noise, 8, seed=3)
    with torch.no_grad():
        scores = lemniscate_scores(
            torch.nn.functional.normalize(q.double(), dim=-1),
            torch.nn.functional.normalize(torch.cat([pos.unsqueeze(1), neg], 1).double(), dim=-1),
            temperature,
            1.0,
        )
    z = estimate_normaliser(scores, num_data)
    expected = reference_nce(q, pos, neg, temperature, z, num_data).float()
    actual = binary_nce(q, pos, neg, temperature=temperature, normaliser=z, num_data=num_data)
    assert_same_value_and_grads(actual, expected, [q, pos, neg])


def test_binary_nce_lemniscate_eps_is_negligible():
    q, pos, neg = leaf(4, 8, seed=4), leaf(4, 8, seed=5), leaf(4, 16, 8, seed=6)
    z = 300.0
    actual = binary_nce(q, pos, neg, temperature=0.07, normaliser=z, num_data=100)
    with_eps = reference_nce(q, pos, neg, 0.07, z, 100, eps=1e-7)
    # each of the K + 1 terms moves by at most eps / (K P_n) = 6.25e-7 relatively.
    torch.testing.assert_close(actual.double(), with_eps, rtol=1e-5, atol=17 * 1e-7 / 0.16)


def test_binary_nce_log_space_is_stable():
    q = leaf(3, 4, seed=7)
    neg = q.detach().unsqueeze(1).repeat(1, 5, 1)
    loss = binary_nce(q, q.detach(), neg, temperature=0.001, normaliser=1.0, num_data=10**6)
    (grad,) = torch.autograd.grad(loss, q)
    assert torch.isfinite(loss) and torch.isfinite(grad).all()


def test_binary_nce_module_estimates_normaliser_once():
    q, pos, neg = leaf(5, 6, seed=8), leaf(5, 6, seed=9), leaf(5, 3, 6, seed=10)
    module = BinaryNCELoss(num_data=200, temperature=0.1)
    assert float(module.normaliser) == -1.0
    loss = module(q, pos, neg)
    normalize = torch.nn.functional.normalize
    with torch.no_grad():
        candidates = normalize(torch.cat([pos.unsqueeze(1), neg], 1).double(), dim=-1)
        scores = lemniscate_scores(normalize(q.double(), dim=-1), candidates, 0.1, 1.0)
    z = estimate_normaliser(scores, 200)
    assert math.isclose(float(module.normaliser), z, rel_tol=1e-6)
    assert_same_value_and_grads(loss, reference_nce(q, pos, neg, 0.1, float(module.normaliser), 200).float(), [q])
    module(leaf(5, 6, seed=11), pos, neg)  # a second batch does not re-estimate Z
    assert math.isclose(float(module.normaliser), z, rel_tol=1e-6)
    restored = BinaryNCELoss(num_data=200, temperature=0.1)
    restored.load_state_dict(module.state_dict())
    assert float(restored.normaliser) == float(module.normaliser)
    fixed = BinaryNCELoss(num_data=200, temperature=0.1, normaliser=42.0)
    torch.testing.assert_close(
        fixed(q, pos, neg), binary_nce(q, pos, neg, temperature=0.1, normaliser=42.0, num_data=200)
    )


def test_binary_nce_is_float32_under_autocast():
    q, pos, neg = leaf(4, 8, seed=12), leaf(4, 8, seed=13), leaf(4, 3, 8, seed=14)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = binary_nce(q.bfloat16(), pos.bfloat16(), neg.bfloat16(), normaliser=10.0, num_data=100)
    assert loss.dtype == torch.float32


def test_binary_nce_errors_name_the_argument():
    q, pos, neg = torch.randn(4, 8), torch.randn(4, 8), torch.randn(4, 3, 8)
    with pytest.raises(ValueError, match="binary_nce: negatives has shape"):
        binary_nce(q, pos, torch.randn(3, 3, 8), normaliser=1.0, num_data=10)
    with pytest.raises(ValueError, match="binary_nce: normaliser must be a positive"):
        binary_nce(q, pos, neg, normaliser=0.0, num_data=10)
    with pytest.raises(ValueError, match="binary_nce: num_data must be a positive int"):
        binary_nce(q, pos, neg, normaliser=1.0, num_data=0)
    with pytest.raises(ValueError, match="binary_nce: temperature"):
        binary_nce(q, pos, neg, temperature=-1.0, normaliser=1.0, num_data=10)
    with pytest.raises(ValueError, match="estimate_normaliser: num_data"):
        estimate_normaliser(torch.ones(3), 0)


# ---------------------------------------------------------------------------------------------
# memory bank


def test_memory_bank_update_rule_and_duplicates():
    bank = MemoryBank(10, 4, momentum=0.5, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(bank.memory.norm(dim=1), torch.ones(10))
    old = bank.memory.clone()
    features = torch.randn(3, 4, generator=torch.Generator().manual_seed(1)) * 3.0
    indices = torch.tensor([2, 7, 2])  # index 2 twice: each copy from the old entry, the last one kept
    bank.update(indices, features)
    unit = torch.nn.functional.normalize(features.double(), dim=1)
    for row, index in ((1, 7), (2, 2)):
        mixed = 0.5 * old[index].double() + 0.5 * unit[row]
        torch.testing.assert_close(bank.memory[index].double(), mixed / mixed.norm(), rtol=1e-6, atol=1e-6)
    untouched = [i for i in range(10) if i not in (2, 7)]
    assert torch.equal(bank.memory[untouched], old[untouched])
    # momentum 0 replaces the entry by the normalised feature (lemniscate's update with m = 0)
    bank = MemoryBank(5, 4, momentum=0.0)
    bank.update(torch.tensor([1]), features[:1])
    torch.testing.assert_close(bank.memory[1], unit[0].float())


def test_memory_bank_entries_sampling_and_state():
    bank = MemoryBank(20, 3)
    indices = torch.tensor([[0, 5], [19, 5]])
    assert torch.equal(bank.entries(indices), bank.memory[indices])
    assert not bank.entries(indices).requires_grad
    first = bank.sample_negatives(4, 6, generator=torch.Generator().manual_seed(3))
    again = bank.sample_negatives(4, 6, generator=torch.Generator().manual_seed(3))
    assert first.shape == (4, 6, 3) and torch.equal(first, again)
    expected = torch.randint(0, 20, (4, 6), generator=torch.Generator().manual_seed(3))
    assert torch.equal(bank.sample_indices(4, 6, generator=torch.Generator().manual_seed(3)), expected)
    draws = bank.sample_indices(200, 100, generator=torch.Generator().manual_seed(4))
    counts = torch.bincount(draws.flatten(), minlength=20).float()
    assert counts.min() > 0.8 * 1000 and counts.max() < 1.2 * 1000  # uniform: 1000 expected per entry
    bank.update(torch.tensor([3]), torch.randn(1, 3))
    restored = MemoryBank(20, 3)
    restored.load_state_dict(bank.state_dict())
    assert set(bank.state_dict()) == {"memory"} and torch.equal(restored.memory, bank.memory)
    with pytest.raises(ValueError, match=r"MemoryBank.entries: indices must lie in \[0, 20\)"):
        bank.entries(torch.tensor([20]))
    with pytest.raises(ValueError, match=r"MemoryBank\.update: features has shape"):
        bank.update(torch.tensor([1]), torch.randn(1, 4))
    with pytest.raises(ValueError, match="MemoryBank: momentum"):
        MemoryBank(4, 3, momentum=1.5)


def test_memory_bank_with_binary_nce_training_step():
    bank = MemoryBank(30, 8, generator=torch.Generator().manual_seed(0))
    loss_fn = BinaryNCELoss(num_data=30, temperature=0.07)
    features, indices = leaf(4, 8, seed=20), torch.tensor([1, 4, 9, 16])
    negatives = bank.sample_negatives(4, 5, generator=torch.Generator().manual_seed(1))
    loss = loss_fn(features, bank.entries(indices), negatives)
    loss.backward()
    bank.update(indices, features.detach())
    assert torch.isfinite(loss) and features.grad is not None


def bank_worker(rank: int, world_size: int, port: int) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size, timeout=timedelta(seconds=60)
    )
    try:
        bank = MemoryBank(12, 4, generator=torch.Generator().manual_seed(0))
        single = MemoryBank(12, 4, gather=False, generator=torch.Generator().manual_seed(0))
        indices = torch.tensor([[0, 3, 5], [5, 8, 11]])  # index 5 on both ranks: rank 1's (later) copy wins
        features = torch.randn(2, 3, 4, generator=torch.Generator().manual_seed(1))
        bank.update(indices[rank], features[rank])
        single.update(indices.flatten(), features.flatten(0, 1))
        parts = [torch.empty_like(bank.memory) for _ in range(world_size)]
        dist.all_gather(parts, bank.memory)
        assert all(torch.equal(part, parts[0]) for part in parts), "banks differ across ranks"
        assert torch.equal(bank.memory, single.memory), "gathered update differs from the single-process one"
        # BinaryNCELoss estimates one Z from the first batch of all ranks
        q = torch.randn(2, 3, 4, generator=torch.Generator().manual_seed(2))
        pos = torch.randn(2, 3, 4, generator=torch.Generator().manual_seed(3))
        noise = torch.randn(2, 3, 5, 4, generator=torch.Generator().manual_seed(4))
        module, alone = BinaryNCELoss(12, temperature=0.1), BinaryNCELoss(12, temperature=0.1, gather=False)
        module(q[rank], pos[rank], noise[rank])
        alone(q.flatten(0, 1), pos.flatten(0, 1), noise.flatten(0, 1))
        zs = [torch.empty_like(module.normaliser) for _ in range(world_size)]
        dist.all_gather(zs, module.normaliser)
        assert all(torch.equal(z, zs[0]) for z in zs), "Z differs across ranks"
        assert math.isclose(float(module.normaliser), float(alone.normaliser), rel_tol=1e-6)
    finally:
        dist.destroy_process_group()


def test_memory_bank_stays_identical_across_ranks():
    mp.spawn(bank_worker, args=(2, free_port()), nprocs=2, join=True)


# ---------------------------------------------------------------------------------------------
# MoCHi


@pytest.mark.parametrize(
    "num_hard, num_mixed, num_query_mixed, temperature",
    [(5, 4, 3, 0.2), (3, 0, 2, 0.1), (12, 6, 0, 0.5), (40, 2, 2, 1)],
)
def test_mochi_matches_loop(num_hard, num_mixed, num_query_mixed, temperature):
    q, k, queue = leaf(4, 6, seed=30), leaf(4, 6, seed=31), leaf(12, 6, seed=32)
    mixing = sample_mochi_mixing(
        4, min(num_hard, 12), num_mixed, num_query_mixed, generator=torch.Generator().manual_seed(num_hard)
    )
    actual = mochi_info_nce(q, k, queue, num_hard=num_hard, temperature=temperature, mixing=mixing)
    expected = reference_mochi(q, k, queue, temperature, num_hard, mixing).float()
    assert_same_value_and_grads(actual, expected, [q, k, queue])
    module = MochiInfoNCELoss(num_hard, num_mixed, num_query_mixed, temperature)
    expected = reference_mochi(q, k, queue, temperature, num_hard, mixing).float()
    assert_same_value_and_grads(module(q, k, queue, mixing=mixing), expected, [q, k, queue])


def test_mochi_generator_is_deterministic_and_used():
    q, k, queue = leaf(4, 6, seed=33), leaf(4, 6, seed=34), leaf(16, 6, seed=35)
    options = {"num_hard": 8, "num_mixed": 5, "num_query_mixed": 3}

    def run(seed: int) -> Tensor:
        return mochi_info_nce(q, k, queue, **options, generator=torch.Generator().manual_seed(seed))

    assert torch.equal(run(0), run(0))
    assert not torch.equal(run(0), run(1))
    mixing = sample_mochi_mixing(4, 8, 5, 3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(run(0), mochi_info_nce(q, k, queue, num_hard=8, mixing=mixing))
    assert mixing.betas.min() >= 0 and mixing.betas.max() < 0.5
    assert mixing.alphas.min() >= 0 and mixing.alphas.max() < 1
    assert int(mixing.pair_indices.max()) < 8 and int(mixing.query_indices.max()) < 8


def test_mochi_synthetic_negatives_carry_no_gradient():
    q, queue = leaf(3, 5, seed=36), leaf(10, 5, seed=37)
    mixing = sample_mochi_mixing(3, 4, 6, 6, generator=torch.Generator().manual_seed(2))
    normalize = torch.nn.functional.normalize
    synthetic = mochi_negatives(normalize(q, dim=-1), normalize(queue, dim=-1), 4, mixing)
    assert synthetic.shape == (3, 12, 5) and not synthetic.requires_grad
    torch.testing.assert_close(synthetic.norm(dim=-1), torch.ones(3, 12))
    # The gradient equals that of InfoNCE with the synthetic negatives as constants.
    k = leaf(3, 5, seed=38)
    actual = mochi_info_nce(q, k, queue, num_hard=4, temperature=0.2, mixing=mixing)
    candidates = torch.cat([normalize(queue, dim=-1).expand(3, 10, 5), synthetic], dim=1)
    expected = candidate_info_nce(q, k, candidates, similarity="cosine", temperature=0.2)
    assert_same_value_and_grads(actual, expected, [q, k, queue])


def test_mochi_without_mixing_is_plain_info_nce():
    q, k, queue = leaf(5, 7, seed=40), leaf(5, 7, seed=41), leaf(9, 7, seed=42)
    actual = mochi_info_nce(q, k, queue, num_hard=4, num_mixed=0, num_query_mixed=0, temperature=0.2)
    expected = candidate_info_nce(q, k, queue.expand(5, 9, 7), similarity="cosine", temperature=0.2)
    assert_same_value_and_grads(actual, expected, [q, k, queue])


def test_mochi_small_queue_and_autocast():
    q, k, queue = leaf(2, 4, seed=43), leaf(2, 4, seed=44), leaf(3, 4, seed=45)
    loss = mochi_info_nce(q, k, queue, generator=torch.Generator().manual_seed(0))  # N = 1024 > M = 3
    assert torch.isfinite(loss)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = mochi_info_nce(
            q.bfloat16(), k.bfloat16(), queue.bfloat16(), num_hard=2, generator=torch.Generator().manual_seed(0)
        )
    assert loss.dtype == torch.float32


def test_mochi_errors_name_the_argument():
    q, k, queue = torch.randn(2, 4), torch.randn(2, 4), torch.randn(6, 4)
    with pytest.raises(ValueError, match="mochi_info_nce: queue has shape"):
        mochi_info_nce(q, k, torch.randn(6, 5))
    with pytest.raises(ValueError, match="mochi_info_nce: num_hard must be an int >= 1"):
        mochi_info_nce(q, k, queue, num_hard=0)
    with pytest.raises(ValueError, match="mochi_info_nce: num_mixed"):
        mochi_info_nce(q, k, queue, num_mixed=-1)
    mixing = sample_mochi_mixing(2, 6, 2, 2, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match=r"mochi_info_nce: mixing.pair_indices must lie in \[0, 3\)"):
        mochi_info_nce(q, k, queue, num_hard=3, mixing=mixing._replace(pair_indices=mixing.pair_indices * 0 + 5))
    with pytest.raises(ValueError, match=r"mochi_info_nce: mixing\.betas has shape"):
        mochi_info_nce(q, k, queue, mixing=mixing._replace(betas=torch.rand(3, 2)))
