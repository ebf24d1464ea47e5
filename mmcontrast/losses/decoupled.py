r"""Decoupled Contrastive Learning (DCL) and its weighted form (DCLW).

Two views :math:`z^{(1)}_k, z^{(2)}_k` of each of :math:`N` samples give :math:`2N` views
:math:`v_1..v_{2N}` (:math:`v_k = z^{(1)}_k`, :math:`v_{N+k} = z^{(2)}_k`); the positive of view
:math:`i` is the other view :math:`v_{\pi(i)}` of the same sample. DCL is NT-Xent with the positive
taken out of the denominator ("decoupled"), which then holds only the :math:`2N - 2` views of the
other samples, :math:`s_{ij} = \cos(v_i, v_j) / \tau`:

.. math::

    \ell_i = -w_i\, s_{i\pi(i)} + \log \sum_{j \notin \{i, \pi(i)\}} \exp(s_{ij}),
    \qquad
    \mathcal{L} = \frac{1}{2N} \sum_{i=1}^{2N} \ell_i

DCL has :math:`w_i = 1`. DCLW weights the positive term of sample :math:`k` (both of its views) by
the negative von Mises-Fisher weight

.. math::

    w_k = 2 - N \frac{\exp(c_k / \sigma)}{\sum_{m=1}^{N} \exp(c_m / \sigma)},
    \qquad c_k = \cos(z^{(1)}_k, z^{(2)}_k)

(:math:`\sigma = 0.5` in the paper), computed without gradient, so that hard positive pairs (low
similarity) weigh more. The weights average to 1 over the batch.

This equals ``lightly.loss.DCLLoss(temperature)`` and ``lightly.loss.DCLWLoss(temperature, sigma)``
on one process: lightly averages the two directions (view 1 as anchors, then view 2), which is the
mean over the :math:`2N` views above. With ``gather=True`` the loss is that of the concatenated
batch of all ranks, the DCLW softmax included (over all :math:`N = W B` samples); lightly's
``gather_distributed=True`` gathers the negatives the same way but computes the DCLW weights over
each rank's local batch only.

Reference:
    Yeh, Hong, Hsu, Liu, Chen, LeCun. "Decoupled Contrastive Learning", ECCV 2022.
    https://arxiv.org/abs/2110.06848
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from mmcontrast.losses.distributed import gather_rows, rank_and_world_size
from mmcontrast.losses.similarity import (
    Scale,
    check_embeddings,
    check_positive,
    check_same_shape,
    full_precision,
    prepare,
)

DEFAULT_TEMPERATURE = 0.1
DEFAULT_SIGMA = 0.5


def dcl(
    z1: Tensor,
    z2: Tensor,
    *,
    temperature: Scale = DEFAULT_TEMPERATURE,
    weight_sigma: float | None = None,
    gather: bool = False,
) -> Tensor:
    """Decoupled contrastive loss over the ``2N`` views ``cat([z1, z2])``, averaged over all of them.

    Args:
        z1: ``[N, d]`` embeddings of the first view.
        z2: ``[N, d]`` embeddings of the second view; ``z2[k]`` is the positive of ``z1[k]``.
        temperature: softmax temperature (a float or a scalar tensor); logits are ``cos / temperature``.
        weight_sigma: ``None`` for DCL; a positive ``sigma`` for DCLW, which weights each sample's
            positive term by ``2 - N * softmax_k(cos(z1_k, z2_k) / sigma)`` (no gradient through
            the weights; the paper and lightly use 0.5).
        gather: with an initialised process group of several ranks, score the ``2N`` local views
            against the views of all ranks (gathered with gradient) and take the DCLW softmax over
            all ranks' samples, i.e. the loss of the concatenated batch. Each rank returns the
            mean over its local views (see :mod:`mmcontrast.losses.distributed`). A no-op on one
            process.

    Returns:
        The mean loss, a float32 scalar (computed in float32 even under autocast).
    """
    fn = "dcl"
    check_embeddings(fn, "z1", z1)
    check_embeddings(fn, "z2", z2)
    check_same_shape(fn, "z1", z1, "z2", z2, "z1[k] and z2[k] must be two views of the same sample")
    check_positive(fn, "temperature", temperature)
    if weight_sigma is not None:
        if isinstance(weight_sigma, bool) or not isinstance(weight_sigma, int | float):
            raise TypeError(f"{fn}: weight_sigma must be a positive number or None, got {weight_sigma!r}")
        check_positive(fn, "weight_sigma", weight_sigma)
    num_samples = z1.shape[0]
    rank, world_size = rank_and_world_size(gather)
    if num_samples * world_size < 2:
        raise ValueError(
            f"{fn}: z1 has {num_samples} row(s) in all; DCL needs at least 2 samples, since the denominator "
            "of each view holds only the views of the other samples"
        )
    all_z1, all_z2 = z1, z2
    if world_size > 1:
        all_z1, all_z2 = gather_rows(fn, ("z1", "z2"), (z1, z2), world_size)
    total_samples = num_samples * world_size
    with full_precision(z1):
        views = prepare(torch.cat([z1, z2]), True)
        all_views = views if world_size == 1 else prepare(torch.cat([all_z1, all_z2]), True)
        samples = torch.arange(num_samples, device=z1.device) + rank * num_samples
        query_samples = torch.cat([samples, samples])
        key_samples = torch.arange(total_samples, device=z1.device).repeat(2)
        logits = (views @ all_views.T) / temperature
        # Both views of a view's own sample (itself and its positive) leave the denominator.
        own = query_samples[:, None] == key_samples[None, :]
        negative_term = torch.logsumexp(logits.masked_fill(own, -math.inf), dim=1)
        first, second = views[:num_samples], views[num_samples:]
        positive = (first * second).sum(dim=1) / temperature
        positive = torch.cat([positive, positive])
        if weight_sigma is not None:
            with torch.no_grad():
                if world_size == 1:
                    all_cos = (first * second).sum(dim=1)
                else:
                    all_cos = (prepare(all_z1, True) * prepare(all_z2, True)).sum(dim=1)
                weights = 2.0 - total_samples * torch.softmax(all_cos / weight_sigma, dim=0)
            positive = positive * weights[samples].repeat(2)
        return (negative_term - positive).mean()


class DCLLoss(nn.Module):
    """Module form of :func:`dcl` (DCL; DCLW with ``weight_sigma``).

    Args:
        temperature: softmax temperature (0.1, as lightly's ``DCLLoss``).
        weight_sigma: ``None`` for DCL, a positive float for DCLW's weighting (see :func:`dcl`).
        gather: score local views against the views of all ranks (see :func:`dcl`).
    """

    def __init__(
        self, temperature: float = DEFAULT_TEMPERATURE, weight_sigma: float | None = None, gather: bool = False
    ) -> None:
        super().__init__()
        name = type(self).__name__
        check_positive(name, "temperature", temperature)
        if weight_sigma is not None:
            check_positive(name, "weight_sigma", weight_sigma)
        self.temperature = temperature
        self.weight_sigma = weight_sigma
        self.gather = gather

    def forward(self, z1: Tensor, z2: Tensor) -> Tensor:
        """Return :func:`dcl` of the two views with this module's options."""
        return dcl(z1, z2, temperature=self.temperature, weight_sigma=self.weight_sigma, gather=self.gather)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, weight_sigma={self.weight_sigma}, gather={self.gather}"


class DCLWLoss(DCLLoss):
    """DCLW: :class:`DCLLoss` with the von Mises-Fisher weighting, ``sigma`` 0.5 by default.

    Args:
        temperature: softmax temperature (0.1, as lightly's ``DCLWLoss``).
        sigma: temperature of the weighting softmax (0.5, as the paper and lightly).
        gather: score local views against the views of all ranks (see :func:`dcl`).
    """

    def __init__(
        self, temperature: float = DEFAULT_TEMPERATURE, sigma: float = DEFAULT_SIGMA, gather: bool = False
    ) -> None:
        check_positive("DCLWLoss", "sigma", sigma)
        super().__init__(temperature=temperature, weight_sigma=sigma, gather=gather)
