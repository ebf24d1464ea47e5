r"""Debiased contrastive loss (Chuang et al. 2020) and hard-negative reweighting (Robinson et al. 2021).

SimCLR's two-view layout (:func:`~mmcontrast.losses.nt_xent.nt_xent`): :math:`N` samples, two views
each, :math:`2N` L2-normalised views :math:`v_i`. For view :math:`i` with positive :math:`\pi(i)`
(the other view of its sample), temperature :math:`t`, cosine similarities :math:`s_{ik}`, the
:math:`M = 2N - 2` negatives :math:`k \notin \{i, \pi(i)\}` and the class prior
:math:`\tau^+` (probability that a "negative" shares the anchor's class),

.. math::

    \mathrm{pos}_i = e^{s_{i\pi(i)}/t}, \qquad
    \mathrm{neg}_i = \sum_k w_{ik}\, e^{s_{ik}/t}, \qquad
    N_g = \max\!\Big(\frac{\mathrm{neg}_i - M \tau^+ \mathrm{pos}_i}{1 - \tau^+},\; M e^{-1/t}\Big), \qquad
    \ell_i = -\log \frac{\mathrm{pos}_i}{\mathrm{pos}_i + N_g}

and :math:`\mathcal{L}` is the mean of :math:`\ell_i` over the :math:`2N` views.

* **Debiased** (:func:`debiased_nt_xent`, DCL): :math:`w_{ik} = 1`, so :math:`\mathrm{neg}_i` is the
  plain sum over the negatives (``estimator='easy'`` of chingyaoc/DCL).
* **Hard negatives** (:func:`hard_negative_nt_xent`, HCL): importance weights
  :math:`w_{ik} = \mathrm{imp}_{ik} / \overline{\mathrm{imp}}_i` with
  :math:`\mathrm{imp}_{ik} = e^{\beta s_{ik}/t}` and :math:`\overline{\mathrm{imp}}_i` their mean over
  the :math:`M` negatives, i.e. ``reweight_neg = (imp * neg).sum(-1) / imp.mean(-1)`` of
  joshr17/HCL (``estimator='hard'``); :math:`\beta = 0` is the debiased loss.

With :math:`\tau^+ = 0` (and :math:`\beta = 0`) the loss is exactly NT-Xent,
``nt_xent(z1, z2, temperature=t)``: the clamp :math:`M e^{-1/t}` is the smallest possible value of
:math:`\sum_k e^{s_{ik}/t}` for cosine similarities and never binds.

**Log space.** Everything is computed from log-sum-exps: :math:`\log \mathrm{neg}_i` is
:math:`\mathrm{LSE}_k(s_{ik}/t)` (debiased) or :math:`\mathrm{LSE}_k((1+\beta)s_{ik}/t) -
\mathrm{LSE}_k(\beta s_{ik}/t) + \log M` (hard), the difference as
:math:`\log(a - b) = \log a + \log(-\mathrm{expm1}(\log b - \log a))` (taken as :math:`-\infty`
when :math:`b \ge a`), the clamp as a ``maximum`` of logs and :math:`\ell_i =
\mathrm{softplus}(\log N_g - \log \mathrm{pos}_i)`.

**Reference-code mapping.** ``out = cat([out_1, out_2])`` of normalised features,
``neg = exp(out @ out.T / temperature)`` without the self and positive columns, ``N = 2 *
batch_size - 2``, ``Ng = clamp((-tau_plus * N * pos + reweight_neg) / (1 - tau_plus), min=N *
e**(-1 / temperature))``, ``loss = -log(pos / (pos + Ng)).mean()``; the inputs here are normalised
by the loss. With ``gather=True`` the negatives are the views of all ranks (:math:`M = 2WN - 2`).

References:
    Chuang, Robinson, Lin, Torralba, Jegelka. "Debiased Contrastive Learning", NeurIPS 2020.
    https://arxiv.org/abs/2007.00224 (code: https://github.com/chingyaoc/DCL)

    Robinson, Chuang, Sra, Jegelka. "Contrastive Learning with Hard Negative Samples", ICLR 2021.
    https://arxiv.org/abs/2010.04592 (code: https://github.com/joshr17/HCL)
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
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


def _check_tau_plus(fn: str, tau_plus: float) -> None:
    if isinstance(tau_plus, bool) or not isinstance(tau_plus, int | float) or not 0 <= tau_plus < 1:
        raise ValueError(f"{fn}: tau_plus must be a number in [0, 1) (the positive class prior), got {tau_plus!r}")


def _check_beta(fn: str, beta: float) -> None:
    if isinstance(beta, bool) or not isinstance(beta, int | float) or not math.isfinite(beta) or beta < 0:
        raise ValueError(f"{fn}: beta must be a finite number >= 0 (the hardness concentration), got {beta!r}")


def _debiased_loss(
    fn: str, z1: Tensor, z2: Tensor, temperature: Scale, tau_plus: float, beta: float | None, gather: bool
) -> Tensor:
    check_embeddings(fn, "z1", z1)
    check_embeddings(fn, "z2", z2)
    check_same_shape(fn, "z1", z1, "z2", z2, "z1[k] and z2[k] must be two views of the same sample")
    check_positive(fn, "temperature", temperature)
    _check_tau_plus(fn, tau_plus)
    if beta is not None:
        _check_beta(fn, beta)
    num_samples = z1.shape[0]
    rank, world_size = rank_and_world_size(gather)
    total_samples = num_samples * world_size
    if total_samples < 2:
        raise ValueError(
            f"{fn}: z1 has {num_samples} row(s); the loss needs at least 2 samples in the (gathered) batch "
            "so that every view has a negative"
        )
    all_z1, all_z2 = z1, z2
    if world_size > 1:
        all_z1, all_z2 = gather_rows(fn, ("z1", "z2"), (z1, z2), world_size)
    num_negatives = 2 * total_samples - 2
    with full_precision(z1):
        views = prepare(torch.cat([z1, z2]), True)
        all_views = views if world_size == 1 else prepare(torch.cat([all_z1, all_z2]), True)
        logits = views @ all_views.T / temperature
        samples = torch.arange(num_samples, device=z1.device) + rank * num_samples
        self_columns = torch.cat([samples, samples + total_samples])
        targets = torch.cat([samples + total_samples, samples])
        rows = torch.arange(2 * num_samples, device=z1.device)
        log_pos = logits[rows, targets]
        columns = torch.arange(all_views.shape[0], device=z1.device)
        not_negative = (columns[None, :] == self_columns[:, None]) | (columns[None, :] == targets[:, None])
        negatives = logits.masked_fill(not_negative, -math.inf)
        if beta is None:
            log_neg = negatives.logsumexp(dim=1)
        else:
            # log( sum(imp * neg) / mean(imp) ) with imp = exp(beta * s / t), neg = exp(s / t).
            # (beta * -inf is NaN for beta = 0: scale first, then mask.)
            log_neg = (
                ((1.0 + beta) * logits).masked_fill(not_negative, -math.inf).logsumexp(dim=1)
                - (beta * logits).masked_fill(not_negative, -math.inf).logsumexp(dim=1)
                + math.log(num_negatives)
            )
        if tau_plus > 0:
            # log(neg - M tau+ pos) = log neg + log(-expm1(log(M tau+ pos) - log neg)), -inf if <= 0.
            ratio = log_pos + math.log(num_negatives * tau_plus) - log_neg
            valid = ratio < 0
            log_diff = log_neg + torch.log(-torch.expm1(torch.where(valid, ratio, -1.0)))
            log_ng = torch.where(valid, log_diff - math.log1p(-tau_plus), -math.inf)
        else:
            log_ng = log_neg
        log_floor = math.log(num_negatives) - 1.0 / temperature
        if not isinstance(log_floor, Tensor):
            log_floor = torch.tensor(log_floor, device=z1.device)
        log_ng = torch.maximum(log_ng, log_floor.float())
        losses = F.softplus(log_ng - log_pos)
    return losses.mean()


def debiased_nt_xent(
    z1: Tensor, z2: Tensor, *, temperature: Scale = 0.5, tau_plus: float = 0.1, gather: bool = False
) -> Tensor:
    """Debiased contrastive loss (DCL) of the ``2N`` views ``cat([z1, z2])``, averaged over all of them.

    Args:
        z1: ``[N, d]`` embeddings of the first view (L2-normalised by the loss: cosine similarity).
        z2: ``[N, d]`` embeddings of the second view; ``z2[k]`` is the positive of ``z1[k]``.
        temperature: the temperature ``t`` (a positive float or a scalar tensor, which keeps its
            gradient).
        tau_plus: the class prior :math:`\\tau^+ \\in [0, 1)`; 0 gives NT-Xent.
        gather: with an initialised process group of several ranks, the negatives of the local
            views are the views of all ranks (gathered with gradient), :math:`M = 2WN - 2`; each
            rank returns the mean over its local views (:mod:`mmcontrast.losses.distributed`).
            A no-op on one process.

    Returns:
        The mean loss, a float32 scalar (float32 under autocast too).
    """
    return _debiased_loss("debiased_nt_xent", z1, z2, temperature, tau_plus, None, gather)


def hard_negative_nt_xent(
    z1: Tensor,
    z2: Tensor,
    *,
    temperature: Scale = 0.5,
    tau_plus: float = 0.1,
    beta: float = 1.0,
    gather: bool = False,
) -> Tensor:
    """Hard-negative contrastive loss (HCL): DCL with negatives reweighted by ``exp(beta * s / t)``.

    Args:
        z1: ``[N, d]`` embeddings of the first view (L2-normalised by the loss: cosine similarity).
        z2: ``[N, d]`` embeddings of the second view; ``z2[k]`` is the positive of ``z1[k]``.
        temperature: the temperature ``t`` (a positive float or a scalar tensor).
        tau_plus: the class prior :math:`\\tau^+ \\in [0, 1)`.
        beta: the concentration :math:`\\beta \\ge 0` of the weights on hard negatives; 0 gives
            :func:`debiased_nt_xent`, and ``beta=0, tau_plus=0`` NT-Xent.
        gather: negatives from the views of all ranks (see :func:`debiased_nt_xent`).

    Returns:
        The mean loss, a float32 scalar (float32 under autocast too).
    """
    return _debiased_loss("hard_negative_nt_xent", z1, z2, temperature, tau_plus, beta, gather)


class DebiasedNTXentLoss(nn.Module):
    """Module form of :func:`debiased_nt_xent`.

    Args:
        temperature: the temperature ``t``.
        tau_plus: the class prior in ``[0, 1)``.
        gather: negatives from the views of all ranks (see :func:`debiased_nt_xent`).
    """

    def __init__(self, temperature: float = 0.5, tau_plus: float = 0.1, gather: bool = False) -> None:
        super().__init__()
        check_positive("DebiasedNTXentLoss", "temperature", temperature)
        _check_tau_plus("DebiasedNTXentLoss", tau_plus)
        self.temperature = temperature
        self.tau_plus = tau_plus
        self.gather = gather

    def forward(self, z1: Tensor, z2: Tensor) -> Tensor:
        """Return :func:`debiased_nt_xent` of the two views with this module's options."""
        return debiased_nt_xent(z1, z2, temperature=self.temperature, tau_plus=self.tau_plus, gather=self.gather)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, tau_plus={self.tau_plus}, gather={self.gather}"


class HardNegativeNTXentLoss(nn.Module):
    """Module form of :func:`hard_negative_nt_xent`.

    Args:
        temperature: the temperature ``t``.
        tau_plus: the class prior in ``[0, 1)``.
        beta: the concentration on hard negatives, ``>= 0``.
        gather: negatives from the views of all ranks (see :func:`debiased_nt_xent`).
    """

    def __init__(
        self, temperature: float = 0.5, tau_plus: float = 0.1, beta: float = 1.0, gather: bool = False
    ) -> None:
        super().__init__()
        check_positive("HardNegativeNTXentLoss", "temperature", temperature)
        _check_tau_plus("HardNegativeNTXentLoss", tau_plus)
        _check_beta("HardNegativeNTXentLoss", beta)
        self.temperature = temperature
        self.tau_plus = tau_plus
        self.beta = beta
        self.gather = gather

    def forward(self, z1: Tensor, z2: Tensor) -> Tensor:
        """Return :func:`hard_negative_nt_xent` of the two views with this module's options."""
        return hard_negative_nt_xent(
            z1, z2, temperature=self.temperature, tau_plus=self.tau_plus, beta=self.beta, gather=self.gather
        )

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, tau_plus={self.tau_plus}, beta={self.beta}, gather={self.gather}"
