"""SigLIP's sigmoid loss: brute-force loop, open_clip's ``SigLipLoss``, tiled form, module, autocast."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from loss_checks import TOL, assert_same_value_and_grads, leaf
from torch import Tensor

from mmcontrast.losses import LogitScale, SigmoidLoss, sigmoid_loss


def loop_sigmoid(a: Tensor, b: Tensor, scale, bias, normalize: bool) -> Tensor:
    total = 0.0
    for i in range(len(a)):
        for j in range(len(b)):
            dot = torch.dot(a[i], b[j])
            similarity = dot / (a[i].norm() * b[j].norm()) if normalize else dot
            sign = 1.0 if i == j else -1.0
            total = total - torch.log(torch.sigmoid(sign * (scale * similarity + bias)))
    return total / len(a)


@pytest.mark.parametrize("batch, dim, seed", [(1, 3, 0), (5, 8, 1), (8, 4, 2)])
@pytest.mark.parametrize(
    "normalize, scale_init, bias_value", [(True, 10.0, -10.0), (True, 3.0, 0.5), (False, 1.0, -1.0)]
)
@pytest.mark.parametrize("chunk_size", [None, 1, 3])
def test_sigmoid_matches_loop(batch, dim, seed, normalize, scale_init, bias_value, chunk_size):
    a, b = leaf(batch, dim, seed=seed), leaf(batch, dim, seed=seed + 100)
    log_scale = torch.tensor(math.log(scale_init), requires_grad=True)
    bias = torch.tensor(bias_value, requires_grad=True)
    inputs = [a, b, log_scale, bias]
    options = {"scale": log_scale.exp(), "bias": bias, "normalize": normalize}
    actual = sigmoid_loss(a, b, chunk_size=chunk_size, **options)
    expected = loop_sigmoid(a, b, log_scale.exp(), bias, normalize)
    assert_same_value_and_grads(actual, expected, inputs)


@pytest.mark.parametrize("batch, dim, seed", [(2, 4, 0), (8, 16, 1)])
@pytest.mark.parametrize("chunk_size", [None, 3])
def test_sigmoid_matches_open_clip(batch, dim, seed, chunk_size):
    open_clip_loss = pytest.importorskip("open_clip.loss")
    a, b = leaf(batch, dim, seed=seed), leaf(batch, dim, seed=seed + 1)
    module = SigmoidLoss(chunk_size=chunk_size)
    # open_clip takes normalised features and the exponentiated scale; it also divides by the batch size.
    expected = open_clip_loss.SigLipLoss()(
        F.normalize(a, dim=-1), F.normalize(b, dim=-1), module.logit_scale.log_scale.exp(), module.bias
    )
    inputs = [a, b, module.logit_scale.log_scale, module.bias]
    assert_same_value_and_grads(module(a, b), expected, inputs)


def test_sigmoid_module_state():
    module = SigmoidLoss()
    assert math.isclose(module.logit_scale().item(), 10.0, rel_tol=1e-6)
    assert math.isclose(module.logit_scale.log_scale.item(), math.log(10.0), rel_tol=1e-6)
    assert module.bias.item() == -10.0
    assert {name for name, _ in module.named_parameters()} == {"logit_scale.log_scale", "bias"}
    frozen = SigmoidLoss(scale_init=5.0, bias_init=-2.0, learnable=False)
    assert list(frozen.parameters()) == []
    assert set(frozen.state_dict()) == {"logit_scale.log_scale", "bias"}
    a, b = leaf(4, 6, seed=3), leaf(4, 6, seed=4)
    torch.testing.assert_close(frozen(a, b), sigmoid_loss(a, b, scale=LogitScale(5.0)(), bias=-2.0))


def test_sigmoid_float32_under_bf16_autocast():
    generator = torch.Generator().manual_seed(5)
    a, b = (torch.randn(6, 16, generator=generator).bfloat16().requires_grad_() for _ in range(2))
    for chunk_size in (None, 4):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = sigmoid_loss(a, b, scale=10.0, bias=-5.0, chunk_size=chunk_size)
        assert loss.dtype == torch.float32
        reference = sigmoid_loss(a.detach().float(), b.detach().float(), scale=10.0, bias=-5.0)
        torch.testing.assert_close(loss, reference, **TOL)
        loss.backward()
        assert a.grad.dtype == torch.bfloat16
