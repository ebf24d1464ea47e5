"""Helpers shared by the loss tests: seeded leaf tensors and a value + gradient comparison."""

from __future__ import annotations

import torch
from torch import Tensor

TOL = {"rtol": 1e-5, "atol": 1e-5}


def leaf(*shape: int, seed: int, scale: float = 1.0) -> Tensor:
    """A seeded random tensor that requires grad."""
    generator = torch.Generator().manual_seed(seed)
    return (scale * torch.randn(*shape, generator=generator)).requires_grad_()


def assert_same_value_and_grads(actual: Tensor, expected: Tensor, inputs: list[Tensor]) -> None:
    """``actual`` equals ``expected`` in value and in its gradient with respect to every input (fp32, 1e-5)."""
    torch.testing.assert_close(actual, expected, **TOL)
    actual_grads = torch.autograd.grad(actual, inputs, retain_graph=True)
    expected_grads = torch.autograd.grad(expected, inputs)
    for got, want in zip(actual_grads, expected_grads, strict=True):
        torch.testing.assert_close(got, want, **TOL)
