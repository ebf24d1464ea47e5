"""Tiled (``chunk_size``) evaluation against the plain form: same value and gradients, linear memory.

The plain form is itself checked against brute-force loops (``test_losses_bruteforce.py``) and the
peer libraries (``test_losses_peers.py``). The combination with ``gather=True`` is checked in
``test_losses_distributed.py``.
"""

from __future__ import annotations

import pytest
import torch
from loss_checks import TOL, assert_same_value_and_grads, leaf
from torch import Tensor

from mmcontrast.losses import InfoNCELoss, LogitScale, NTXentLoss, info_nce, nt_xent
from mmcontrast.losses.tiled import cross_entropy_terms


@pytest.mark.parametrize("chunk_size", [1, 3, 4, 64])
@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("negatives_shape", [None, "B,d", "B,K,d"])
@pytest.mark.parametrize("with_labels", [False, True])
def test_info_nce_tiled_matches_plain(chunk_size, symmetric, negatives_shape, with_labels):
    batch, dim = 7, 5
    anchors, positives = leaf(batch, dim, seed=0), leaf(batch, dim, seed=1)
    negatives = {None: None, "B,d": leaf(batch, dim, seed=2), "B,K,d": leaf(batch, 2, dim, seed=3)}[negatives_shape]
    logit_scale = LogitScale(init=30.0)
    inputs = [anchors, positives, logit_scale.log_scale] + ([negatives] if negatives is not None else [])
    labels = torch.tensor([0, 1, 0, 2, 1, 3, 0]) if with_labels else None
    options = {"symmetric": symmetric, "labels": labels}
    expected = info_nce(anchors, positives, negatives, scale=logit_scale(), **options)
    actual = info_nce(anchors, positives, negatives, scale=logit_scale(), chunk_size=chunk_size, **options)
    assert_same_value_and_grads(actual, expected, inputs)


@pytest.mark.parametrize("symmetric", [False, True])
def test_info_nce_tiled_dot_product_and_shared_negatives(symmetric):
    anchors, positives = leaf(6, 4, seed=4, scale=0.5), leaf(6, 4, seed=5, scale=0.5)
    queue = leaf(9, 4, seed=6, scale=0.5)
    options = {"symmetric": symmetric, "normalize": False, "scale": 3.0, "shared_negatives": queue}
    expected = info_nce(anchors, positives, **options)
    actual = info_nce(anchors, positives, chunk_size=4, **options)
    assert_same_value_and_grads(actual, expected, [anchors, positives, queue])


def test_info_nce_module_chunk_size():
    anchors, positives = leaf(10, 6, seed=7), leaf(10, 6, seed=8)
    module = InfoNCELoss(logit_scale=LogitScale(), symmetric=True, chunk_size=4)
    assert "chunk_size=4" in repr(module)
    expected = info_nce(anchors, positives, scale=module.logit_scale(), symmetric=True)
    assert_same_value_and_grads(module(anchors, positives), expected, [anchors, positives])


@pytest.mark.parametrize("chunk_size", [1, 3, 5, 64])
@pytest.mark.parametrize("labels", [None, [0, 1, 0, 2, 1]])
@pytest.mark.parametrize("normalize", [True, False])
def test_nt_xent_tiled_matches_plain(chunk_size, labels, normalize):
    z1, z2 = leaf(5, 6, seed=9), leaf(5, 6, seed=10)
    temperature = torch.tensor(0.2, requires_grad=True)
    labels = None if labels is None else torch.tensor(labels)
    options = {"temperature": temperature, "labels": labels, "normalize": normalize}
    expected = nt_xent(z1, z2, **options)
    actual = nt_xent(z1, z2, chunk_size=chunk_size, **options)
    assert_same_value_and_grads(actual, expected, [z1, z2, temperature])
    module = NTXentLoss(temperature=0.2, normalize=normalize, chunk_size=chunk_size)
    torch.testing.assert_close(module(z1, z2, labels), actual, **TOL)


@pytest.mark.parametrize("transpose", [False, True])
def test_tiled_terms_with_any_upstream_gradient(transpose):
    """Per-row weights that are positive, negative or zero (the backward folds them into the exponent)."""
    queries, keys = leaf(6, 4, seed=15), leaf(9, 4, seed=16)
    scale = torch.tensor(4.0, requires_grad=True)
    targets, labels = torch.arange(6), torch.tensor([0, 1, 1, 2, 0, 3, 1, 2, 2])
    weights = torch.tensor([1.0, -2.0, 0.0, 0.5, -0.1, 3.0])

    def weighted(chunk_size):
        rows, columns = cross_entropy_terms(
            queries, keys, targets, scale, labels[:6], labels, chunk_size=chunk_size, transpose=transpose
        )
        return (rows * weights).sum() + ((columns * weights.flip(0)).sum() if transpose else 0.0)

    assert_same_value_and_grads(weighted(4), weighted(None), [queries, keys, scale])


def test_tiled_extreme_logits_stay_finite():
    """Scale 100 (CLIP's clamp) with near-duplicate rows: the running log-sum-exp must not overflow."""
    base = torch.randn(8, 16, generator=torch.Generator().manual_seed(11))
    anchors = (base + 1e-3 * torch.randn(8, 16)).requires_grad_()
    positives = (-base).requires_grad_()  # every positive is the least similar column
    expected = info_nce(anchors, positives, scale=100.0, symmetric=True)
    actual = info_nce(anchors, positives, scale=100.0, symmetric=True, chunk_size=3)
    assert torch.isfinite(actual)
    assert_same_value_and_grads(actual, expected, [anchors, positives])


def largest_saved_tensor(loss_fn) -> int:
    """The largest number of elements among the tensors autograd saves for the backward pass."""
    sizes = []

    def pack(tensor: Tensor) -> Tensor:
        sizes.append(tensor.numel())
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss_fn()
    return max(sizes)


@pytest.mark.parametrize("symmetric", [False, True])
def test_tiled_saves_no_logits(symmetric):
    """Plain InfoNCE keeps the [N, N] logits for backward; tiled keeps only O(N d) tensors."""
    batch, dim = 64, 4
    anchors, positives = leaf(batch, dim, seed=12), leaf(batch, dim, seed=13)
    plain = largest_saved_tensor(lambda: info_nce(anchors, positives, symmetric=symmetric))
    tiled = largest_saved_tensor(lambda: info_nce(anchors, positives, symmetric=symmetric, chunk_size=8))
    assert plain >= batch * batch
    assert tiled <= batch * dim
    views = largest_saved_tensor(lambda: nt_xent(anchors, positives, chunk_size=8))
    assert views <= 2 * batch * dim


def test_tiled_float32_under_bf16_autocast():
    generator = torch.Generator().manual_seed(14)
    inputs = [torch.randn(9, 16, generator=generator).bfloat16().requires_grad_() for _ in range(2)]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = info_nce(*inputs, scale=50.0, symmetric=True, chunk_size=4)
        views = nt_xent(*inputs, temperature=0.1, chunk_size=4)
    assert loss.dtype == views.dtype == torch.float32
    reference = info_nce(*[x.detach().float() for x in inputs], scale=50.0, symmetric=True)
    torch.testing.assert_close(loss, reference, **TOL)
    (loss + views).backward()
    assert all(x.grad.dtype == torch.bfloat16 and torch.isfinite(x.grad).all() for x in inputs)
