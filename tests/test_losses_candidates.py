"""Per-query candidate InfoNCE and CPC: brute-force loops, CPC_audio's criterion, the sampler, 2 gloo processes.

* :func:`candidate_info_nce` and :func:`cpc_info_nce` against loops over (query, step, candidates), value and
  gradients with respect to every input (1e-5);
* with fixed negative indices, :func:`cpc_info_nce` equals a float64 re-derivation of facebookresearch/CPC_audio's
  ``CPCUnsupersivedCriterion`` written from its formula (prediction . candidate / d, positive at candidate 0,
  cross-entropy averaged over the positions, summed over the K steps), and :func:`sample_cpc_negatives` with
  ``mode="batch"`` draws the frames that ``sampleClean`` draws from the same seed;
* at initialisation the summed loss is within 5% of ``K ln(1 + M)``;
* :func:`sample_cpc_negatives`' three modes and its determinism;
* ``gather=True`` on 2 gloo processes with different data per rank equals one process on the whole batch.
"""

from __future__ import annotations

import math
import socket
from datetime import timedelta

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from loss_checks import TOL, assert_same_value_and_grads, leaf
from torch import Tensor, nn

from mmcontrast.losses import (
    CandidateInfoNCELoss,
    CPCLoss,
    LogitScale,
    candidate_info_nce,
    cpc_info_nce,
    sample_cpc_negatives,
)


def similarity(x: Tensor, y: Tensor, kind: str, by_dim: bool) -> Tensor:
    value = torch.dot(x, y)
    if kind == "cosine":
        value = value / (x.norm() * y.norm())
    return value / x.shape[0] if by_dim else value


def loop_candidate_loss(query: Tensor, candidates: list[Tensor], scale, kind: str, by_dim: bool) -> Tensor:
    """``-log softmax`` of candidate 0 (the positive) among ``candidates``, one scalar at a time."""
    logits = torch.stack([scale * similarity(query, c, kind, by_dim) for c in candidates])
    return torch.logsumexp(logits, dim=0) - logits[0]


# ---------------------------------------------------------------------------------------------
# candidate_info_nce


def loop_candidate_info_nce(queries, positives, negatives, scale, kind, by_dim, mask, reduction) -> Tensor:
    losses = []
    for i in range(queries.shape[0]):
        kept = [negatives[i, m] for m in range(negatives.shape[1]) if mask is None or not mask[i, m]]
        losses.append(loop_candidate_loss(queries[i], [positives[i], *kept], scale, kind, by_dim))
    losses = torch.stack(losses)
    return {"mean": losses.mean(), "sum": losses.sum(), "none": losses}[reduction]


@pytest.mark.parametrize("rows, num_neg, dim, seed", [(1, 1, 3, 0), (5, 4, 8, 1), (7, 9, 16, 2)])
@pytest.mark.parametrize("kind", ["dot", "cosine"])
@pytest.mark.parametrize("by_dim", [False, True])
@pytest.mark.parametrize("masked", [False, True])
def test_candidate_info_nce_matches_loop(rows, num_neg, dim, seed, kind, by_dim, masked):
    q, p, n = leaf(rows, dim, seed=seed), leaf(rows, dim, seed=seed + 10), leaf(rows, num_neg, dim, seed=seed + 20)
    log_scale = torch.tensor(math.log(3.0), requires_grad=True)
    mask = None
    if masked:
        mask = torch.rand(rows, num_neg, generator=torch.Generator().manual_seed(seed)) < 0.4
        if rows > 1:
            mask[0] = True  # a row with every negative masked: only the positive is left, loss 0
        else:
            mask[0, 0] = False  # one row: keep a negative, or the negatives would not reach the loss at all
    options = {"similarity": kind, "normalize_by_dim": by_dim, "negative_mask": mask}
    actual = candidate_info_nce(q, p, n, scale=log_scale.exp(), **options)
    expected = loop_candidate_info_nce(q, p, n, log_scale.exp(), kind, by_dim, mask, "mean")
    assert_same_value_and_grads(actual, expected, [q, p, n, log_scale])


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_candidate_info_nce_reductions_temperature_and_accuracy(reduction):
    q, p, n = leaf(6, 5, seed=0), leaf(6, 5, seed=1), leaf(6, 3, 5, seed=2)
    actual, accuracy = candidate_info_nce(q, p, n, temperature=0.5, reduction=reduction, return_accuracy=True)
    expected = loop_candidate_info_nce(q, p, n, 2.0, "dot", False, None, reduction)
    assert_same_value_and_grads(actual.sum(), expected.sum(), [q, p, n])
    assert actual.shape == expected.shape
    # Accuracy: the positive's logit is the highest of its row.
    with torch.no_grad():
        correct = torch.tensor([float((q[i] @ p[i]) >= (n[i] @ q[i]).max()) for i in range(6)])
    torch.testing.assert_close(accuracy, correct if reduction == "none" else correct.mean())
    assert not accuracy.requires_grad


def test_copies_of_the_positive_tie_exactly_and_count_as_hits():
    """A copy of the positive gets exactly its logit; the arg-max (first index) counts it a hit, as in CPC_audio."""
    q, p = torch.randn(5, 7), torch.randn(5, 7)
    n = p[:, None].expand(5, 4, 7).clone()
    loss, accuracy = candidate_info_nce(q, p, n, normalize_by_dim=True, return_accuracy=True)
    assert accuracy.item() == 1.0
    torch.testing.assert_close(loss, torch.tensor(math.log(5.0)))
    frames = torch.randn(2, 5, 3)
    predictions = torch.randn(2, 3, 2, 3)
    output = cpc_info_nce(predictions, frames, torch.tensor([[[1], [2], [3]], [[6], [7], [8]]]) + 1)  # z[b, t + 2]
    assert output.step_accuracy[1].item() == 1.0
    torch.testing.assert_close(output.step_losses[1], torch.tensor(math.log(2.0)))


def test_candidate_module_matches_function_and_trains_its_scale():
    q, p, n = leaf(4, 6, seed=3), leaf(4, 6, seed=4), leaf(4, 5, 6, seed=5)
    module = CandidateInfoNCELoss(logit_scale=LogitScale(init=5.0), similarity="cosine")
    loss, accuracy = module(q, p, n, return_accuracy=True)
    expected = loop_candidate_info_nce(q, p, n, module.logit_scale(), "cosine", False, None, "mean")
    assert_same_value_and_grads(loss, expected, [q, p, n, module.logit_scale.log_scale])
    assert 0.0 <= accuracy.item() <= 1.0
    fixed = CandidateInfoNCELoss(temperature=0.25, normalize_by_dim=True, reduction="sum")
    torch.testing.assert_close(fixed(q, p, n), candidate_info_nce(q, p, n, scale=4.0, normalize_by_dim=True).mul(4))
    assert "normalize_by_dim=True" in repr(fixed)


# ---------------------------------------------------------------------------------------------
# cpc_info_nce against a loop over (query, step, candidates)


def loop_cpc(predictions, frames, indices, scale, kind, by_dim, exclude_positive, offset=0) -> tuple[Tensor, Tensor]:
    batch, positions, steps, _ = predictions.shape
    seq_len = frames.shape[1]
    flat = frames.reshape(-1, frames.shape[-1])
    step_losses = []
    for k in range(1, steps + 1):
        total = 0.0
        for b in range(batch):
            for t in range(positions):
                chosen = indices[b, t, k - 1] if indices.ndim == 4 else indices[b, t]
                positive_index = (offset + b) * seq_len + t + k
                negatives = [flat[j] for j in chosen.tolist() if not (exclude_positive and j == positive_index)]
                candidates = [frames[b, t + k], *negatives]
                total = total + loop_candidate_loss(predictions[b, t, k - 1], candidates, scale, kind, by_dim)
        step_losses.append(total / (batch * positions))
    step_losses = torch.stack(step_losses)
    return step_losses.sum(), step_losses


@pytest.mark.parametrize("batch, seq_len, steps, num_neg, dim", [(1, 3, 1, 1, 2), (2, 7, 3, 4, 5), (3, 6, 2, 5, 4)])
@pytest.mark.parametrize("kind, by_dim", [("dot", True), ("dot", False), ("cosine", False)])
@pytest.mark.parametrize("per_step", [False, True])
def test_cpc_info_nce_matches_loop(batch, seq_len, steps, num_neg, dim, kind, by_dim, per_step):
    positions = seq_len - steps
    predictions, frames = leaf(batch, positions, steps, dim, seed=1), leaf(batch, seq_len, dim, seed=2)
    generator = torch.Generator().manual_seed(3)
    shape = (batch, positions, steps, num_neg) if per_step else (batch, positions, num_neg)
    indices = torch.randint(0, batch * seq_len, shape, generator=generator)
    scale = torch.tensor(1.5, requires_grad=True)
    options = {"similarity": kind, "normalize_by_dim": by_dim}
    output = cpc_info_nce(predictions, frames, indices, scale=scale, **options)
    expected, expected_steps = loop_cpc(predictions, frames, indices, scale, kind, by_dim, False)
    assert_same_value_and_grads(output.loss, expected, [predictions, frames, scale])
    torch.testing.assert_close(output.step_losses, expected_steps, **TOL)
    assert output.step_accuracy.shape == (steps,)


def test_cpc_exclude_positive_drops_exactly_the_positive_frame():
    batch, seq_len, steps, dim = 2, 5, 2, 3
    predictions, frames = leaf(batch, seq_len - steps, steps, dim, seed=4), leaf(batch, seq_len, dim, seed=5)
    # Every flat frame index as a negative of every query: the positive is among them once per step.
    indices = torch.arange(batch * seq_len).expand(batch, seq_len - steps, -1)
    output = cpc_info_nce(predictions, frames, indices, exclude_positive=True)
    expected, _ = loop_cpc(predictions, frames, indices, 1.0, "dot", True, True)
    assert_same_value_and_grads(output.loss, expected, [predictions, frames])
    kept = cpc_info_nce(predictions, frames, indices).loss
    assert kept.item() > output.loss.item()  # the copy of the positive in the denominator only adds to the loss


def test_cpc_module_matches_function():
    predictions, frames = leaf(2, 4, 2, 3, seed=6), leaf(2, 6, 3, seed=7)
    indices = sample_cpc_negatives(2, 6, 3, num_positions=4, generator=torch.Generator().manual_seed(0))
    module = CPCLoss(temperature=0.5, similarity="cosine", normalize_by_dim=False)
    expected = cpc_info_nce(predictions, frames, indices, scale=2.0, similarity="cosine", normalize_by_dim=False)
    for got, want in zip(module(predictions, frames, indices), expected, strict=True):
        torch.testing.assert_close(got, want)


# ---------------------------------------------------------------------------------------------
# CPC_audio's criterion, re-derived in float64


def cpc_audio_sample(batch: int, seq_len: int, positions: int, num_neg: int, seed: int) -> Tensor:
    """The flat frame ids of CPC_audio's ``sampleClean`` negatives, ``[B, M, W]``, seeded globally.

    sampleClean draws a sequence for each of the B * M * W slots uniformly in the batch, then an offset in
    ``1 .. T - 1`` added to the slot's window position ``t`` modulo ``T``; slots are laid out as ``[B, M, W]``.
    """
    torch.manual_seed(seed)
    sequence = torch.randint(low=0, high=batch, size=(num_neg * positions * batch,))
    offset = torch.randint(low=1, high=seq_len, size=(num_neg * positions * batch,))
    window = torch.arange(positions).repeat(batch * num_neg)
    return (sequence * seq_len + (offset + window) % seq_len).view(batch, num_neg, positions)


def cpc_audio_criterion(predictions: list[Tensor], frames: Tensor, negatives: Tensor) -> tuple[Tensor, Tensor]:
    """CPC_audio's loss per step, in float64: ``predictions[k]`` is ``[B, W, d]``, ``negatives`` ``[B, M, W, d]``.

    For step k (1-based) the candidates of position t are ``[z_{t+k}, negatives[:, :, t]]`` (positive first);
    a logit is the mean over the features of prediction * candidate (the dot product / d), the loss is the
    cross-entropy with target 0 averaged over the B * W positions; training sums the K step losses.
    """
    steps, (batch, positions, _) = len(predictions), predictions[0].shape
    losses, accuracy = [], []
    for k in range(1, steps + 1):
        positive = frames[:, k : k + positions].unsqueeze(1)  # [B, 1, W, d]
        candidates = torch.cat([positive, negatives], dim=1)  # [B, 1 + M, W, d]
        logits = (predictions[k - 1].unsqueeze(1) * candidates).mean(dim=3)  # [B, 1 + M, W]
        logits = logits.permute(0, 2, 1).reshape(batch * positions, -1)
        target = torch.zeros(batch * positions, dtype=torch.long)
        losses.append(nn.functional.cross_entropy(logits, target))
        accuracy.append((logits.argmax(dim=1) == 0).double().mean())
    return torch.stack(losses), torch.stack(accuracy)


@pytest.mark.parametrize("batch, seq_len, steps, num_neg, dim", [(2, 10, 3, 4, 8), (4, 16, 5, 8, 16), (3, 9, 1, 2, 4)])
def test_cpc_matches_cpc_audio_criterion_in_float64(batch, seq_len, steps, num_neg, dim):
    seed = batch
    positions = seq_len - steps
    # Predictions correlated with their targets, so that the loss and the accuracies are not all at chance.
    frames = leaf(batch, seq_len, dim, seed=seed + 1)
    noise = leaf(batch, positions, steps, dim, seed=seed + 2)
    targets = torch.stack([frames[:, k : k + positions] for k in range(1, steps + 1)], dim=2)
    predictions = (3.0 * targets.detach() + noise).detach().requires_grad_()

    reference_ids = cpc_audio_sample(batch, seq_len, positions, num_neg, seed=seed + 3)
    indices = sample_cpc_negatives(
        batch, seq_len, num_neg, num_positions=positions, generator=torch.Generator().manual_seed(seed + 3)
    )
    # Same seed, same frames as CPC_audio's sampleClean (our layout is [B, W, M]).
    assert torch.equal(indices, reference_ids.permute(0, 2, 1))

    output = cpc_info_nce(predictions, frames, indices)
    frames64 = frames.detach().double().requires_grad_()
    predictions64 = predictions.detach().double().requires_grad_()
    negatives64 = frames64.reshape(-1, dim)[reference_ids]  # [B, M, W, d]
    step_losses, step_accuracy = cpc_audio_criterion(list(predictions64.unbind(2)), frames64, negatives64)
    expected = step_losses.sum()
    torch.testing.assert_close(output.loss.double(), expected, **TOL)
    torch.testing.assert_close(output.step_losses.double(), step_losses, **TOL)
    torch.testing.assert_close(output.step_accuracy.double(), step_accuracy)
    grads = torch.autograd.grad(output.loss, [predictions, frames])
    expected_grads = torch.autograd.grad(expected, [predictions64, frames64])
    for got, want in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(got.double(), want, **TOL)


def test_cpc_loss_at_initialisation_is_k_log_one_plus_m():
    """Random frames, a fresh GRU context and fresh linear predictors: every candidate is about equally likely."""
    torch.manual_seed(0)
    batch, seq_len, steps, num_neg, dim = 4, 48, 6, 64, 64
    positions = seq_len - steps
    frames = torch.randn(batch, seq_len, dim)  # unit scale, like channel-normalised encoder outputs
    context, _ = nn.GRU(dim, dim, batch_first=True)(frames)
    predictors = nn.ModuleList(nn.Linear(dim, dim, bias=False) for _ in range(steps))
    predictions = torch.stack([w(context[:, :positions]) for w in predictors], dim=2)
    generator = torch.Generator().manual_seed(1)
    indices = sample_cpc_negatives(batch, seq_len, num_neg, num_positions=positions, generator=generator)
    output = cpc_info_nce(predictions, frames, indices)
    expected = steps * math.log(1 + num_neg)
    assert output.loss.item() == pytest.approx(expected, rel=0.05)
    assert torch.allclose(output.step_losses, torch.full((steps,), math.log(1 + num_neg)), rtol=0.05)


# ---------------------------------------------------------------------------------------------
# Float32 under bf16 autocast


def test_float32_compute_under_bf16_autocast():
    generator = torch.Generator().manual_seed(0)

    def bf16(*shape: int) -> Tensor:
        return torch.randn(*shape, generator=generator).bfloat16().requires_grad_()

    q, p, n = bf16(6, 16), bf16(6, 16), bf16(6, 5, 16)
    predictions, frames = bf16(2, 5, 3, 16), bf16(2, 8, 16)
    indices = sample_cpc_negatives(2, 8, 4, num_positions=5, generator=generator)
    cases = {
        "candidate": (lambda *x: candidate_info_nce(*x, scale=4.0), [q, p, n]),
        "cpc": (lambda *x: cpc_info_nce(*x, indices).loss, [predictions, frames]),
    }
    for name, (loss_fn, inputs) in cases.items():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = loss_fn(*inputs)
        assert loss.dtype == torch.float32, name
        reference = loss_fn(*[x.detach().float() for x in inputs])
        torch.testing.assert_close(loss, reference, **TOL)
        loss.backward()
        assert all(x.grad.dtype == torch.bfloat16 for x in inputs), name


# ---------------------------------------------------------------------------------------------
# Input checks name the argument


def test_candidate_input_errors_name_the_argument():
    q, p, n = torch.randn(4, 3), torch.randn(4, 3), torch.randn(4, 2, 3)
    bad_nan = n.clone()
    bad_nan[2, 1, 0] = float("nan")
    cases = [
        ((q, p[:3], n), {}, ValueError, "candidate_info_nce: queries has shape .* but positives has shape"),
        ((q, p, n[:, :, :2]), {}, ValueError, "candidate_info_nce: negatives has shape"),
        ((q, p, n[0]), {}, ValueError, r"candidate_info_nce: negatives must have shape \[N, M, d\]"),
        ((q, p, bad_nan), {}, ValueError, "candidate_info_nce: negatives contains NaN or Inf at row 2"),
        ((q, p, n), {"scale": 2.0, "temperature": 0.5}, ValueError, "either scale or temperature"),
        ((q, p, n), {"temperature": 0.0}, ValueError, "candidate_info_nce: temperature must be a positive"),
        ((q, p, n), {"similarity": "l2"}, ValueError, "candidate_info_nce: similarity must be one of"),
        ((q, p, n), {"reduction": "max"}, ValueError, "candidate_info_nce: reduction must be one of"),
        ((q, p, n), {"negative_mask": torch.zeros(4, 3, dtype=torch.bool)}, ValueError, "negative_mask has shape"),
        ((q, p, n), {"negative_mask": torch.zeros(4, 2)}, TypeError, "negative_mask must be a bool tensor"),
        ((q.long(), p, n), {}, TypeError, "candidate_info_nce: queries must be a floating-point tensor"),
    ]
    for args, kwargs, error, message in cases:
        with pytest.raises(error, match=message):
            candidate_info_nce(*args, **kwargs)


def test_cpc_input_errors_name_the_argument():
    predictions, frames = torch.randn(2, 4, 2, 3), torch.randn(2, 6, 3)
    indices = torch.zeros(2, 4, 5, dtype=torch.long)
    nan_frames = frames.clone()
    nan_frames[1, 3, 2] = float("inf")
    cases = [
        ((predictions, frames[:1], indices), {}, ValueError, "cpc_info_nce: frames has shape"),
        ((predictions, frames[:, :5], indices), {}, ValueError, "W \\+ K <= T"),
        ((predictions, nan_frames, indices), {}, ValueError, "cpc_info_nce: frames contains NaN or Inf at row 1"),
        ((predictions, frames, indices[:, :3]), {}, ValueError, "cpc_info_nce: negative_indices has shape"),
        ((predictions, frames, indices + 12), {}, ValueError, r"negative_indices must lie in \[0, 12\)"),
        ((predictions, frames, indices.float()), {}, TypeError, "negative_indices must be an int64 tensor"),
        ((predictions[0], frames, indices), {}, ValueError, r"cpc_info_nce: predictions must have shape"),
    ]
    for args, kwargs, error, message in cases:
        with pytest.raises(error, match=message):
            cpc_info_nce(*args, **kwargs)


def test_sampler_input_errors_name_the_argument():
    with pytest.raises(ValueError, match="sample_cpc_negatives: mode='speaker' needs speakers"):
        sample_cpc_negatives(3, 5, 2, mode="speaker")
    with pytest.raises(ValueError, match="sample_cpc_negatives: speakers has shape"):
        sample_cpc_negatives(3, 5, 2, mode="speaker", speakers=torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="sample_cpc_negatives: seq_len must be an int >= 2"):
        sample_cpc_negatives(3, 1, 2)
    with pytest.raises(ValueError, match="sample_cpc_negatives: num_positions must be an int in"):
        sample_cpc_negatives(3, 5, 2, num_positions=6)
    with pytest.raises(ValueError, match="sample_cpc_negatives: speakers is only used by mode='speaker'"):
        sample_cpc_negatives(2, 5, 2, mode="batch", speakers=torch.tensor([0, 1]))
    with pytest.raises(TypeError, match="sample_cpc_negatives: speakers must hold integer ids"):
        sample_cpc_negatives(2, 5, 2, mode="speaker", speakers=torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="sample_cpc_negatives: mode must be one of"):
        sample_cpc_negatives(3, 5, 2, mode="uniform")


# ---------------------------------------------------------------------------------------------
# The sampler


def split(indices: Tensor, seq_len: int) -> tuple[Tensor, Tensor]:
    return indices // seq_len, indices % seq_len


@pytest.mark.parametrize("mode", ["batch", "speaker", "sequence"])
def test_sampler_never_picks_the_query_position(mode):
    batch, seq_len, positions, num_neg = 6, 9, 7, 50
    speakers = torch.tensor([3, 1, 3, 1, 1, 7]) if mode == "speaker" else None
    generator = torch.Generator().manual_seed(0)
    indices = sample_cpc_negatives(
        batch, seq_len, num_neg, num_positions=positions, mode=mode, speakers=speakers, generator=generator
    )
    assert indices.shape == (batch, positions, num_neg) and indices.dtype == torch.int64
    sequences, frames = split(indices, seq_len)
    query_position = torch.arange(positions)[None, :, None]
    assert not (frames == query_position).any()  # CPC_audio: offsets 1 .. T - 1 from the query's position
    # Every other position is reachable (350 draws per sequence over 8 positions).
    for t in range(positions):
        assert set(frames[:, t].flatten().tolist()) == set(range(seq_len)) - {t}
    own = torch.arange(batch)[:, None, None]
    if mode == "sequence":
        assert torch.equal(sequences, own.expand_as(sequences))
    elif mode == "speaker":
        assert torch.equal(speakers[sequences], speakers[:, None, None].expand_as(sequences))
        for b in range(batch):  # every sequence of the speaker, the query's own included
            assert set(sequences[b].flatten().tolist()) == set((speakers == speakers[b]).nonzero()[:, 0].tolist())
    else:
        for b in range(batch):
            assert set(sequences[b].flatten().tolist()) == set(range(batch))


def test_sampler_is_deterministic_by_seed():
    def draw(seed: int, mode: str) -> Tensor:
        speakers = torch.tensor([0, 0, 1, 1]) if mode == "speaker" else None
        generator = torch.Generator().manual_seed(seed)
        return sample_cpc_negatives(4, 12, 8, num_positions=10, mode=mode, speakers=speakers, generator=generator)

    for mode in ("batch", "speaker", "sequence"):
        assert torch.equal(draw(0, mode), draw(0, mode))
        assert not torch.equal(draw(0, mode), draw(1, mode))


def test_speaker_sampling_is_uniform_over_the_speakers_sequences():
    speakers = torch.tensor([5, 2, 5, 5, 2])
    generator = torch.Generator().manual_seed(0)
    indices = sample_cpc_negatives(5, 4, 2000, num_positions=1, mode="speaker", speakers=speakers, generator=generator)
    counts = torch.bincount((indices[0] // 4).flatten(), minlength=5).float()  # query sequence 0, speaker 5
    assert counts[1] == 0 and counts[4] == 0
    torch.testing.assert_close(counts[[0, 2, 3]] / 2000, torch.full((3,), 1 / 3), atol=0.04, rtol=0)


# ---------------------------------------------------------------------------------------------
# Distributed: 2 gloo processes with "whole batch" negatives against one process

DIST_TOL = {"rtol": 1e-6, "atol": 1e-6}
LOCAL, SEQ_LEN, STEPS, NUM_NEG, DIM = 3, 8, 3, 6, 5


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def mean_over_ranks(value: Tensor) -> Tensor:
    total = value.detach().clone()
    dist.all_reduce(total)
    return total / dist.get_world_size()


def distributed_worker(rank: int, world_size: int, port: int) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size, timeout=timedelta(seconds=60)
    )
    try:
        total, positions = world_size * LOCAL, SEQ_LEN - STEPS
        # The same global batch on every rank; each rank passes its own rows (different data per rank).
        predictions = torch.randn(total, positions, STEPS, DIM, generator=torch.Generator().manual_seed(0))
        frames = torch.randn(total, SEQ_LEN, DIM, generator=torch.Generator().manual_seed(1))
        speakers = torch.tensor([0, 1, 0, 1, 1, 0])[:total]
        rows = slice(rank * LOCAL, (rank + 1) * LOCAL)
        for mode in ("batch", "speaker"):
            for exclude_positive in (False, True):
                # Indices for the global batch from a shared seed; each rank keeps its rows (global frame ids).
                generator = torch.Generator().manual_seed(2)
                indices = sample_cpc_negatives(
                    total,
                    SEQ_LEN,
                    NUM_NEG,
                    num_positions=positions,
                    mode=mode,
                    speakers=speakers if mode == "speaker" else None,
                    generator=generator,
                )
                assert (indices[rows] // SEQ_LEN >= LOCAL).any() or world_size == 1  # draws from the other rank
                log_scale = torch.tensor(0.3, requires_grad=True)
                options = {"exclude_positive": exclude_positive, "similarity": "dot"}
                what = f"cpc mode={mode} exclude_positive={exclude_positive}"

                full = [predictions.clone().requires_grad_(), frames.clone().requires_grad_()]
                expected = cpc_info_nce(*full, indices, scale=log_scale.exp(), **options)
                expected_grads = torch.autograd.grad(expected.loss, [*full, log_scale])
                local = [predictions[rows].clone().requires_grad_(), frames[rows].clone().requires_grad_()]
                actual = cpc_info_nce(*local, indices[rows], scale=log_scale.exp(), gather=True, **options)
                actual_grads = torch.autograd.grad(actual.loss, [*local, log_scale])

                torch.testing.assert_close(mean_over_ranks(actual.loss), expected.loss, **DIST_TOL, msg=what)
                torch.testing.assert_close(mean_over_ranks(actual.step_losses), expected.step_losses, **DIST_TOL)
                for got, want in zip(actual_grads[:2], expected_grads[:2], strict=True):
                    # all_gather's backward sums over ranks: local rows get W x the single-process gradient.
                    torch.testing.assert_close(got, world_size * want[rows], **DIST_TOL, msg=what)
                torch.testing.assert_close(mean_over_ranks(actual_grads[2]), expected_grads[2], **DIST_TOL, msg=what)
        # Indices past the global batch are refused on every rank.
        with pytest.raises(ValueError, match=rf"negative_indices must lie in \[0, {total * SEQ_LEN}\)"):
            bad = torch.full((LOCAL, positions, 2), total * SEQ_LEN)
            cpc_info_nce(predictions[rows], frames[rows], bad, gather=True)
    finally:
        dist.destroy_process_group()


def test_batch_negatives_on_two_processes_match_one_process():
    mp.spawn(distributed_worker, args=(2, free_port()), nprocs=2, join=True)


def test_gather_is_a_no_op_without_process_group():
    predictions, frames = torch.randn(2, 4, 2, 3), torch.randn(2, 6, 3)
    indices = sample_cpc_negatives(2, 6, 3, num_positions=4, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(
        cpc_info_nce(predictions, frames, indices, gather=True).loss, cpc_info_nce(predictions, frames, indices).loss
    )
