r"""Alignment and uniformity on the hypersphere (Wang & Isola 2020).

On L2-normalised embeddings :math:`\hat x_i = x_i / \lVert x_i \rVert_2` of :math:`N` positive pairs
:math:`(x_i, y_i)`:

.. math::

    \mathcal{L}_{align}(x, y) = \frac{1}{N} \sum_{i=1}^{N} \lVert \hat x_i - \hat y_i \rVert_2^{\alpha},
    \qquad
    \mathcal{L}_{unif}(x) = \log \frac{1}{N(N-1)} \sum_{i \ne j} e^{-t \lVert \hat x_i - \hat x_j \rVert_2^2}

    \mathcal{L} = \mathcal{L}_{align}(x, y) + \lambda\, \frac{\mathcal{L}_{unif}(x) + \mathcal{L}_{unif}(y)}{2}

Alignment pulls the two embeddings of a pair together; uniformity (a log-mean-exp of a Gaussian
potential over all pairs of distinct rows, evaluated as a log-sum-exp; the mean over ordered pairs
equals the mean over unordered ones) spreads the embeddings over the sphere. The paper uses
:math:`\alpha = 2`, :math:`t = 2`, :math:`\lambda = 1`. :func:`hypersphere_loss` equals
``lightly.loss.HypersphereLoss(t=t, lam=uniformity_weight, alpha=alpha)``, which also averages the
uniformity of the two views (lightly's default ``t`` is 1, the paper's 2).

With ``gather=True`` the uniformity runs over the rows of all ranks (gathered with gradient): each
rank scores its local rows against all rows, the log-sum-exp is combined over the ranks, and every
rank returns the global value, with a gradient that, summed over the ranks by ``all_gather``'s
backward, is ``W`` times the single-process one (the convention of
:mod:`mmcontrast.losses.distributed`). Alignment only uses each row's own pair, so it is the mean over
the local rows.

Reference:
    Wang, Isola. "Understanding Contrastive Representation Learning through Alignment and
    Uniformity on the Hypersphere", ICML 2020. https://arxiv.org/abs/2005.10242
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from mmcontrast.losses.distributed import gather_rows, rank_and_world_size
from mmcontrast.losses.similarity import check_embeddings, check_same_shape, full_precision, prepare

# Smallest squared distance raised to a power below 1, so that its gradient stays finite at zero.
_MIN_SQUARED_DISTANCE = 1e-30


def _check_number(fn: str, name: str, value: float, *, positive: bool) -> None:
    bad = isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value)
    if bad or value < 0 or (positive and value == 0):
        bound = "> 0" if positive else ">= 0"
        raise ValueError(f"{fn}: {name} must be a finite number {bound}, got {value!r}")


def alignment(x: Tensor, y: Tensor, alpha: float = 2.0) -> Tensor:
    """Mean over the rows of ``|x_i / |x_i| - y_i / |y_i||_2 ** alpha``.

    Args:
        x: ``[N, d]`` embeddings.
        y: ``[N, d]`` embeddings; ``y[i]`` is the positive of ``x[i]``.
        alpha: power of the distance (2 in the paper).

    Returns:
        A float32 scalar (computed in float32 even under autocast).
    """
    fn = "alignment"
    check_embeddings(fn, "x", x)
    check_embeddings(fn, "y", y)
    check_same_shape(fn, "x", x, "y", y, "y[i] must be the positive of x[i]")
    _check_number(fn, "alpha", alpha, positive=True)
    with full_precision(x):
        squared = (prepare(x, True) - prepare(y, True)).pow(2).sum(dim=1)
        if alpha != 2:
            squared = squared.clamp_min(_MIN_SQUARED_DISTANCE).pow(alpha / 2)
        return squared.mean()


def uniformity(x: Tensor, t: float = 2.0, *, gather: bool = False) -> Tensor:
    """``log`` of the mean over pairs of distinct rows of ``exp(-t |x_i / |x_i| - x_j / |x_j||^2)``.

    Args:
        x: ``[N, d]`` embeddings; at least 2 rows in all (over the ranks with ``gather``).
        t: scale of the Gaussian potential (2 in the paper).
        gather: with an initialised process group of several ranks, take the mean over all pairs of
            the rows of all ranks (gathered with gradient); every rank returns that global value,
            and the gradient of its local rows, summed over the ranks, is ``W`` times the
            single-process one. A no-op on one process.

    Returns:
        A float32 scalar (computed in float32 even under autocast).
    """
    fn = "uniformity"
    check_embeddings(fn, "x", x)
    _check_number(fn, "t", t, positive=True)
    rank, world_size = rank_and_world_size(gather)
    num_rows = x.shape[0]
    total_rows = num_rows * world_size
    if total_rows < 2:
        raise ValueError(f"{fn}: x has {num_rows} row(s) in all; uniformity needs at least 2 rows to form a pair")
    all_x = x
    if world_size > 1:
        (all_x,) = gather_rows(fn, ("x",), (x,), world_size)
    with full_precision(x):
        local = prepare(x, True)
        everything = local if world_size == 1 else prepare(all_x, True)
        squared = (
            (local * local).sum(dim=1)[:, None]
            + (everything * everything).sum(dim=1)[None, :]
            - 2.0 * (local @ everything.T)
        ).clamp_min(0.0)
        columns = torch.arange(total_rows, device=x.device)
        self_columns = torch.arange(num_rows, device=x.device) + rank * num_rows
        logits = (-t * squared).masked_fill(columns[None, :] == self_columns[:, None], -math.inf)
        log_count = math.log(total_rows * (total_rows - 1))
        local_lse = torch.logsumexp(logits.flatten(), dim=0)
        if world_size == 1:
            return local_lse - log_count
        # Global log-sum-exp of the ranks' parts (no gradient); the local part enters linearly with the
        # weight exp(local_lse - global_lse), so that its gradient is d(local sum) / (global sum).
        (parts,) = gather_rows(fn, ("uniformity terms",), (local_lse.detach()[None],), world_size)
        global_lse = torch.logsumexp(parts, dim=0)
        share = torch.exp(local_lse - global_lse)
        return (global_lse - log_count) + world_size * (share - share.detach())


def hypersphere_loss(
    x: Tensor,
    y: Tensor,
    *,
    alpha: float = 2.0,
    t: float = 2.0,
    uniformity_weight: float = 1.0,
    gather: bool = False,
) -> Tensor:
    """``alignment(x, y, alpha) + uniformity_weight * (uniformity(x, t) + uniformity(y, t)) / 2``.

    Args:
        x: ``[N, d]`` embeddings of the first view.
        y: ``[N, d]`` embeddings of the second view; ``y[i]`` is the positive of ``x[i]``.
        alpha: power of the alignment distance (2 in the paper).
        t: scale of the uniformity potential (2 in the paper; lightly's default is 1).
        uniformity_weight: weight of the uniformity term (``lam`` in lightly and the paper's code).
        gather: uniformity over the rows of all ranks (see :func:`uniformity`); the alignment is the
            mean over the local rows, so the mean over ranks is the single-process loss.

    Returns:
        A float32 scalar (computed in float32 even under autocast).
    """
    fn = "hypersphere_loss"
    check_embeddings(fn, "x", x)
    check_embeddings(fn, "y", y)
    check_same_shape(fn, "x", x, "y", y, "y[i] must be the positive of x[i]")
    _check_number(fn, "uniformity_weight", uniformity_weight, positive=False)
    align = alignment(x, y, alpha)
    uniform = (uniformity(x, t, gather=gather) + uniformity(y, t, gather=gather)) / 2
    return align + uniformity_weight * uniform


class HypersphereLoss(nn.Module):
    """Module form of :func:`hypersphere_loss`.

    Args:
        alpha: power of the alignment distance.
        t: scale of the uniformity potential.
        uniformity_weight: weight of the uniformity term.
        gather: uniformity over the rows of all ranks (see :func:`hypersphere_loss`).
    """

    def __init__(
        self, alpha: float = 2.0, t: float = 2.0, uniformity_weight: float = 1.0, gather: bool = False
    ) -> None:
        super().__init__()
        _check_number("HypersphereLoss", "alpha", alpha, positive=True)
        _check_number("HypersphereLoss", "t", t, positive=True)
        _check_number("HypersphereLoss", "uniformity_weight", uniformity_weight, positive=False)
        self.alpha = alpha
        self.t = t
        self.uniformity_weight = uniformity_weight
        self.gather = gather

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        """Return :func:`hypersphere_loss` of the two views with this module's options."""
        return hypersphere_loss(
            x, y, alpha=self.alpha, t=self.t, uniformity_weight=self.uniformity_weight, gather=self.gather
        )

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, t={self.t}, uniformity_weight={self.uniformity_weight}, gather={self.gather}"
