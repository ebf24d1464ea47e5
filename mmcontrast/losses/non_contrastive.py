r"""Non-contrastive objectives: BYOL / SimSiam negative cosine, Barlow Twins and VICReg.

None of these losses uses negatives; they prevent collapse by a stop-gradient and a predictor
(negative cosine) or by decorrelating the features of the batch (Barlow Twins, VICReg). All take two
``[N, d]`` embeddings of two views of the same ``N`` samples.

**Negative cosine** (BYOL, SimSiam), with the stop-gradient on the target ``z``:

.. math::

    \mathcal{L}(p, z) = -\frac{1}{N} \sum_k \cos\big(p_k, \operatorname{sg}(z_k)\big)

SimSiam symmetrises it, ``0.5 * (negative_cosine(p1, z2) + negative_cosine(p2, z1))``; BYOL's
``2 - 2 cos`` is ``2 + 2 * negative_cosine(p, z)`` (same gradient up to the factor 2).

**Barlow Twins.** Each feature is standardised over the batch as ``BatchNorm1d(affine=False)`` does
in training (the official code): :math:`\hat z_{ki} = (z_{ki} - \mu_i) / \sqrt{\sigma_i^2 + \epsilon}`
with the biased variance :math:`\sigma_i^2 = \frac{1}{N}\sum_k (z_{ki} - \mu_i)^2` and
:math:`\epsilon = 10^{-5}`. With the cross-correlation :math:`C = \hat z^{(1)\top} \hat z^{(2)} / N`:

.. math::

    \mathcal{L} = \sum_i (1 - C_{ii})^2 + \lambda \sum_{i \ne j} C_{ij}^2

**VICReg** (official code: unbiased variance, :math:`\epsilon = 10^{-4}`, the two variance terms
averaged, the two covariance terms summed), with :math:`C(z)` the unbiased ``d x d`` covariance
of :math:`z` over the batch:

.. math::

    \mathcal{L} = \lambda \frac{1}{Nd}\sum_{k,i} (z^{(1)}_{ki} - z^{(2)}_{ki})^2
    + \frac{\mu}{2} \sum_{b=1,2} \frac{1}{d}\sum_i \operatorname{relu}\Big(1 - \sqrt{C(z^{(b)})_{ii} + \epsilon}\Big)
    + \nu \sum_{b=1,2} \frac{1}{d} \sum_{i \ne j} C(z^{(b)})_{ij}^2

**Distributed (``gather=True``).** Barlow Twins and VICReg depend on batch statistics, so with an
initialised process group of ``W > 1`` ranks each holding ``B`` rows, the rows of all ranks are
gathered with gradient (:func:`~mmcontrast.losses.distributed.gather_rows`) and the means,
variances, cross-correlation and covariances are those of the concatenated batch of ``N = W B``
rows: the loss is exactly the single-process loss on that batch. (VICReg's invariance term is a
mean over rows, so each rank computes it on its own rows; the mean over ranks is the global term.)
The gradient follows :mod:`mmcontrast.losses.distributed`: the mean over ranks of the returned
losses is the single-process loss :math:`\mathcal{L}`, the gradient reaching rank ``r``'s local
inputs is :math:`W\,\partial\mathcal{L}/\partial x_r` (``all_gather``'s backward sums over ranks),
and DistributedDataParallel's average over ranks gives every parameter exactly the
single-process gradient. (If you sum gradients over ranks instead, divide the loss by ``W``.)
Per-rank batch statistics (``gather=False`` under DDP) give a different loss; a cross-correlation
all-reduced *without* gradient gives a gradient ``W`` times too small after DDP's average.

Peers (checked by the tests): ``lightly.loss.NegativeCosineSimilarity()(p, z.detach())`` (lightly
does not detach), ``lightly.loss.BarlowTwinsLoss(lambda_param=lambda_offdiag)`` (same batch norm,
eps 1e-5; its ``gather_distributed`` normalises each rank's rows with the local statistics and
averages the per-rank cross-correlations, which is not the loss of the concatenated batch),
``lightly.loss.VICRegLoss(lambda_param=sim_weight, mu_param=var_weight, nu_param=cov_weight,
eps=eps)`` and ``pytorch_metric_learning.losses.VICRegLoss(invariance_lambda=sim_weight,
variance_mu=var_weight, covariance_v=cov_weight, eps=eps)(z1, ref_emb=z2)``.

References:
    Grill et al. "Bootstrap Your Own Latent", NeurIPS 2020. https://arxiv.org/abs/2006.07733
    Chen, He. "Exploring Simple Siamese Representation Learning", CVPR 2021.
    https://arxiv.org/abs/2011.10566
    Zbontar, Jing, Misra, LeCun, Deny. "Barlow Twins: Self-Supervised Learning via Redundancy
    Reduction", ICML 2021. https://arxiv.org/abs/2103.03230 (code: facebookresearch/barlowtwins)
    Bardes, Ponce, LeCun. "VICReg: Variance-Invariance-Covariance Regularization for
    Self-Supervised Learning", ICLR 2022. https://arxiv.org/abs/2105.04906
    (code: facebookresearch/vicreg)
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmcontrast.losses.distributed import gather_rows, rank_and_world_size
from mmcontrast.losses.similarity import check_embeddings, check_positive, check_same_shape, full_precision

_SAME_SAMPLE = "row k of both must be two views of the same sample"


def _check_weight(fn: str, name: str, value: float) -> None:
    """Check a finite, non-negative float weight."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{fn}: {name} must be a non-negative finite number, got {value!r}")


def _check_pair(fn: str, name_a: str, a: Tensor, name_b: str, b: Tensor) -> None:
    check_embeddings(fn, name_a, a)
    check_embeddings(fn, name_b, b)
    check_same_shape(fn, name_a, a, name_b, b, _SAME_SAMPLE)


def _at_least_float32(x: Tensor) -> Tensor:
    """``x`` in float32, or float64 if it already is (half precision is promoted)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def _gather_pair(fn: str, z1: Tensor, z2: Tensor, gather: bool) -> tuple[Tensor, Tensor]:
    """Both views with the rows of every rank (with gradient) if ``gather``; checks the global batch size."""
    _, world_size = rank_and_world_size(gather)
    if world_size > 1:
        all_z1, all_z2 = gather_rows(fn, ("z1", "z2"), (z1, z2), world_size)
        assert all_z1 is not None and all_z2 is not None
        z1, z2 = all_z1, all_z2
    if z1.shape[0] < 2:
        raise ValueError(
            f"{fn}: z1 has {z1.shape[0]} row(s) in the (gathered) batch; the batch statistics need at least 2 rows"
        )
    return z1, z2


def _off_diagonal_squares(matrix: Tensor) -> Tensor:
    """Sum of the squared off-diagonal entries of a square matrix."""
    eye = torch.eye(matrix.shape[0], dtype=torch.bool, device=matrix.device)
    return matrix.pow(2).masked_fill(eye, 0.0).sum()


# ---------------------------------------------------------------------------------------------
# Negative cosine (BYOL, SimSiam)


def negative_cosine(p: Tensor, z: Tensor) -> Tensor:
    """Negative mean cosine similarity of the predictions ``p`` and the stop-gradient targets ``z``.

    Args:
        p: ``[N, d]`` predictor outputs (online branch); the gradient flows through them only.
        z: ``[N, d]`` targets (projections of the other view, or of the momentum encoder); detached.

    Returns:
        ``-mean_k cos(p_k, z_k)`` in ``[-1, 1]``, a float32 scalar (float64 for float64 inputs),
        computed with autocast off.
    """
    _check_pair("negative_cosine", "p", p, "z", z)
    with full_precision(p):
        p32, z32 = _at_least_float32(p), _at_least_float32(z.detach())
        return -(F.normalize(p32, dim=-1) * F.normalize(z32, dim=-1)).sum(dim=-1).mean()


class NegativeCosineLoss(nn.Module):
    """Module form of :func:`negative_cosine` (BYOL / SimSiam); ``forward(p, z)``, ``z`` detached."""

    def forward(self, p: Tensor, z: Tensor) -> Tensor:
        """Return :func:`negative_cosine` of the predictions ``p`` and the targets ``z``."""
        return negative_cosine(p, z)


# ---------------------------------------------------------------------------------------------
# Barlow Twins


def _standardise(x: Tensor, eps: float) -> Tensor:
    """Each column of ``x`` at zero mean and unit biased variance (BatchNorm1d, affine=False)."""
    centred = x - x.mean(dim=0)
    return centred / torch.sqrt(centred.pow(2).mean(dim=0) + eps)


def barlow_twins(
    z1: Tensor, z2: Tensor, *, lambda_offdiag: float = 5e-3, eps: float = 1e-5, gather: bool = False
) -> Tensor:
    """Barlow Twins: drive the cross-correlation of the standardised views to the identity.

    Args:
        z1: ``[N, d]`` projections of the first view.
        z2: ``[N, d]`` projections of the second view; ``z2[k]`` pairs with ``z1[k]``.
        lambda_offdiag: weight of the redundancy-reduction (off-diagonal) term; the paper's
            ``5e-3`` is tuned for ``d = 8192``.
        eps: added to the biased batch variance before the square root (BatchNorm1d's ``1e-5``).
        gather: with an initialised process group of several ranks, use the batch statistics and
            cross-correlation of the rows of all ranks (gathered with gradient): every rank returns
            the single-process loss of the concatenated batch, scaled for DDP's gradient average as
            in :mod:`mmcontrast.losses.distributed`. A no-op on one process.

    Returns:
        The loss, a float32 scalar (float64 for float64 inputs), computed with autocast off.
    """
    fn = "barlow_twins"
    _check_pair(fn, "z1", z1, "z2", z2)
    _check_weight(fn, "lambda_offdiag", lambda_offdiag)
    check_positive(fn, "eps", eps)
    z1, z2 = _gather_pair(fn, z1, z2, gather)
    with full_precision(z1):
        a, b = _standardise(_at_least_float32(z1), eps), _standardise(_at_least_float32(z2), eps)
        c = a.T @ b / a.shape[0]
        on_diagonal = (1.0 - c.diagonal()).pow(2).sum()
        return on_diagonal + lambda_offdiag * _off_diagonal_squares(c)


class BarlowTwinsLoss(nn.Module):
    """Module form of :func:`barlow_twins`.

    Args:
        lambda_offdiag: weight of the off-diagonal term (``5e-3`` in the paper).
        eps: batch-norm epsilon (``1e-5``).
        gather: use the global batch across ranks (see :func:`barlow_twins`).
    """

    def __init__(self, lambda_offdiag: float = 5e-3, eps: float = 1e-5, gather: bool = False) -> None:
        super().__init__()
        _check_weight("BarlowTwinsLoss", "lambda_offdiag", lambda_offdiag)
        check_positive("BarlowTwinsLoss", "eps", eps)
        self.lambda_offdiag = lambda_offdiag
        self.eps = eps
        self.gather = gather

    def forward(self, z1: Tensor, z2: Tensor) -> Tensor:
        """Return :func:`barlow_twins` of the two views with this module's options."""
        return barlow_twins(z1, z2, lambda_offdiag=self.lambda_offdiag, eps=self.eps, gather=self.gather)

    def extra_repr(self) -> str:
        return f"lambda_offdiag={self.lambda_offdiag}, eps={self.eps}, gather={self.gather}"


# ---------------------------------------------------------------------------------------------
# VICReg


def _variance_covariance(x: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    """VICReg's variance hinge (mean over features) and off-diagonal covariance term of ``x``."""
    num_rows, dim = x.shape
    centred = x - x.mean(dim=0)
    std = torch.sqrt(centred.pow(2).sum(dim=0) / (num_rows - 1) + eps)
    covariance = centred.T @ centred / (num_rows - 1)
    return F.relu(1.0 - std).mean(), _off_diagonal_squares(covariance) / dim


def vicreg(
    z1: Tensor,
    z2: Tensor,
    *,
    sim_weight: float = 25.0,
    var_weight: float = 25.0,
    cov_weight: float = 1.0,
    eps: float = 1e-4,
    gather: bool = False,
) -> Tensor:
    """VICReg: invariance (MSE) + variance hinge + covariance decorrelation of both views.

    Args:
        z1: ``[N, d]`` expander outputs of the first view.
        z2: ``[N, d]`` expander outputs of the second view; ``z2[k]`` pairs with ``z1[k]``.
        sim_weight: weight of the invariance term, the MSE between the views (lambda, 25).
        var_weight: weight of the variance term, the mean of the two views' hinges (mu, 25).
        cov_weight: weight of the covariance term, the sum over both views (nu, 1).
        eps: added to the unbiased batch variance before the square root (``1e-4``).
        gather: with an initialised process group of several ranks, use the variances and
            covariances of the rows of all ranks (gathered with gradient): the mean over ranks of
            the returned losses is the single-process loss of the concatenated batch, scaled for
            DDP's gradient average as in :mod:`mmcontrast.losses.distributed`. A no-op on one process.

    Returns:
        The loss, a float32 scalar (float64 for float64 inputs), computed with autocast off.
    """
    fn = "vicreg"
    _check_pair(fn, "z1", z1, "z2", z2)
    for name, weight in (("sim_weight", sim_weight), ("var_weight", var_weight), ("cov_weight", cov_weight)):
        _check_weight(fn, name, weight)
    check_positive(fn, "eps", eps)
    all_z1, all_z2 = _gather_pair(fn, z1, z2, gather)
    with full_precision(z1):
        # A mean over rows: each rank's local term averages to the global one over the ranks.
        invariance = F.mse_loss(_at_least_float32(z1), _at_least_float32(z2))
        variance1, covariance1 = _variance_covariance(_at_least_float32(all_z1), eps)
        variance2, covariance2 = _variance_covariance(_at_least_float32(all_z2), eps)
        return (
            sim_weight * invariance
            + var_weight * 0.5 * (variance1 + variance2)
            + cov_weight * (covariance1 + covariance2)
        )


class VICRegLoss(nn.Module):
    """Module form of :func:`vicreg`.

    Args:
        sim_weight: invariance weight (25).
        var_weight: variance weight (25).
        cov_weight: covariance weight (1).
        eps: variance epsilon (``1e-4``).
        gather: use the global batch statistics across ranks (see :func:`vicreg`).
    """

    def __init__(
        self,
        sim_weight: float = 25.0,
        var_weight: float = 25.0,
        cov_weight: float = 1.0,
        eps: float = 1e-4,
        gather: bool = False,
    ) -> None:
        super().__init__()
        for name, weight in (("sim_weight", sim_weight), ("var_weight", var_weight), ("cov_weight", cov_weight)):
            _check_weight("VICRegLoss", name, weight)
        check_positive("VICRegLoss", "eps", eps)
        self.sim_weight = sim_weight
        self.var_weight = var_weight
        self.cov_weight = cov_weight
        self.eps = eps
        self.gather = gather

    def forward(self, z1: Tensor, z2: Tensor) -> Tensor:
        """Return :func:`vicreg` of the two views with this module's options."""
        return vicreg(
            z1,
            z2,
            sim_weight=self.sim_weight,
            var_weight=self.var_weight,
            cov_weight=self.cov_weight,
            eps=self.eps,
            gather=self.gather,
        )

    def extra_repr(self) -> str:
        return (
            f"sim_weight={self.sim_weight}, var_weight={self.var_weight}, cov_weight={self.cov_weight}, "
            f"eps={self.eps}, gather={self.gather}"
        )
