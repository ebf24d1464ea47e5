r"""Exponential moving average of an online network: momentum (MoCo) and target (BYOL) encoders.

After each optimizer step the target parameters :math:`\xi` follow the online parameters
:math:`\theta`:

.. math::

    \xi \leftarrow m\, \xi + (1 - m)\, \theta

MoCo keeps :math:`m` fixed (0.999). BYOL raises it from a base value to 1 over training with a
cosine schedule, at step :math:`k` of :math:`K`:

.. math::

    m_k = 1 - (1 - m_{\text{base}}) \cdot \frac{\cos(\pi k / K) + 1}{2}

(:func:`cosine_momentum`; :math:`m_0 = m_{\text{base}}`, :math:`m_K = 1`). The target network never
receives gradients: its parameters are set to ``requires_grad=False``.

References:
    He, Fan, Wu, Xie, Girshick. "Momentum Contrast for Unsupervised Visual Representation
    Learning", CVPR 2020. https://arxiv.org/abs/1911.05722

    Grill et al. "Bootstrap Your Own Latent: A New Approach to Self-Supervised Learning",
    NeurIPS 2020. https://arxiv.org/abs/2006.07733
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

MomentumSchedule = Callable[[int, int], float]
"""A function ``(step, total_steps) -> momentum``."""


def _check_momentum(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"EMA: {name} must lie in [0, 1], got {value!r}")


def cosine_momentum(base: float = 0.996, final: float = 1.0) -> MomentumSchedule:
    """BYOL's schedule: ``base`` at step 0 rising to ``final`` at the last step along a half cosine.

    Steps past ``total_steps`` keep ``final``.
    """
    _check_momentum("base", base)
    _check_momentum("final", final)

    def schedule(step: int, total_steps: int) -> float:
        progress = min(step / total_steps, 1.0) if total_steps > 0 else 1.0
        return final - (final - base) * (math.cos(math.pi * progress) + 1) / 2

    return schedule


class EMA:
    """Keeps ``target`` an exponential moving average of ``online``.

    On construction the target's parameters are copied from the online network and frozen
    (``requires_grad=False``); both networks must have the same parameter names and shapes.
    Buffers (e.g. batch-norm statistics) are left to each network. Neither network is owned: the
    target's weights are saved wherever the target module is (normally inside the method's model).

    Args:
        online: the network trained by the optimizer.
        target: the momentum / target network, usually ``copy.deepcopy(online)``.
        momentum: a constant ``m`` in ``[0, 1]`` (MoCo: 0.999) or a schedule
            ``(step, total_steps) -> m`` such as ``cosine_momentum(0.996)`` (BYOL).
    """

    def __init__(self, online: nn.Module, target: nn.Module, momentum: float | MomentumSchedule = 0.999) -> None:
        if not callable(momentum):
            _check_momentum("momentum", momentum)
        online_params, target_params = dict(online.named_parameters()), dict(target.named_parameters())
        if online_params.keys() != target_params.keys():
            missing = sorted(online_params.keys() ^ target_params.keys())
            raise ValueError(f"EMA: online and target networks differ in parameters: {', '.join(missing[:5])}")
        for name, param in online_params.items():
            if param.shape != target_params[name].shape:
                raise ValueError(
                    f"EMA: parameter {name} has shape {tuple(param.shape)} in the online network but "
                    f"{tuple(target_params[name].shape)} in the target"
                )
        self.momentum = momentum
        self._pairs = [(online_params[name], target_params[name]) for name in online_params]
        with torch.no_grad():
            for source, destination in self._pairs:
                destination.copy_(source)
                destination.requires_grad_(False)

    def momentum_at(self, step: int, total_steps: int) -> float:
        """The momentum used at ``step`` of ``total_steps``."""
        return self.momentum(step, total_steps) if callable(self.momentum) else self.momentum

    @torch.no_grad()
    def update(self, step: int, total_steps: int) -> float:
        """Move the target towards the online network (call after the optimizer step); returns ``m``."""
        momentum = self.momentum_at(step, total_steps)
        for source, destination in self._pairs:
            destination.lerp_(source.to(destination.dtype), 1.0 - momentum)
        return momentum
