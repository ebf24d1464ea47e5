r"""Barlow Twins and VICReg: two views, no negatives; collapse is prevented by statistics of the batch.

Both run every view through the backbone :math:`f` and a wide MLP (Barlow Twins' projector, VICReg's expander:
:class:`~mmcontrast.modalities.heads.MLPHead` with ``num_layers=3, batch_norm=True``) and compare the outputs
:math:`z^A, z^B` of two views of the same examples (the mean over pairs of views when ``V > 2``):

- **Barlow Twins** drives the cross-correlation matrix :math:`C` of the batch-standardised views to the identity,
  :math:`\mathcal{L} = \sum_i (1 - C_{ii})^2 + \lambda \sum_{i \ne j} C_{ij}^2`
  (:func:`mmcontrast.losses.barlow_twins`).
- **VICReg** adds an invariance term (MSE between the views), a variance hinge keeping every dimension's std above
  1 and a covariance term decorrelating the dimensions (:func:`mmcontrast.losses.vicreg`).

With ``gather`` both use the statistics of the global batch (the rows of every process, gathered with gradient),
the official code's semantics; each process returns the global loss divided by the number of processes, so that
DDP's gradient average gives the single-process gradient.

References:
    Zbontar, Jing, Misra, LeCun, Deny. "Barlow Twins: Self-Supervised Learning via Redundancy Reduction",
    ICML 2021. https://arxiv.org/abs/2103.03230

    Bardes, Ponce, LeCun. "VICReg: Variance-Invariance-Covariance Regularization for Self-Supervised Learning",
    ICLR 2022. https://arxiv.org/abs/2105.04906
"""

from __future__ import annotations

from torch import Tensor, nn

from mmcontrast.losses import barlow_twins, vicreg
from mmcontrast.methods.views import ProjectedViews


class BarlowTwins(ProjectedViews):
    """Backbone + projector trained with the Barlow Twins loss between views.

    Args:
        encoder: the backbone, kept after training.
        projector: the projector (the paper: 3 layers of 8192 with batch norm), dropped at export.
        modality: the backbone's modality (default: from its type).
        lambda_offdiag: weight of the off-diagonal (redundancy) term (5e-3 for 8192 dimensions; about
            ``1 / d`` for smaller projectors).
        gather: standardise and correlate over the global batch.
    """

    name = "BarlowTwins"

    def __init__(
        self,
        encoder: nn.Module,
        projector: nn.Module,
        *,
        modality: str | None = None,
        lambda_offdiag: float = 5e-3,
        gather: bool = True,
    ) -> None:
        super().__init__(encoder, projector, modality=modality)
        self.lambda_offdiag = lambda_offdiag
        self.gather = gather

    def pair_loss(self, a: Tensor, b: Tensor) -> Tensor:
        return barlow_twins(a, b, lambda_offdiag=self.lambda_offdiag, gather=self.gather)


class VICReg(ProjectedViews):
    """Backbone + expander trained with VICReg between views.

    Args:
        encoder: the backbone, kept after training.
        expander: the expander (the paper: 3 layers of 8192 with batch norm), dropped at export.
        modality: the backbone's modality (default: from its type).
        sim_weight: weight of the invariance term (lambda, 25).
        var_weight: weight of the variance term (mu, 25).
        cov_weight: weight of the covariance term (nu, 1).
        gather: batch statistics over the global batch.
    """

    name = "VICReg"

    def __init__(
        self,
        encoder: nn.Module,
        expander: nn.Module,
        *,
        modality: str | None = None,
        sim_weight: float = 25.0,
        var_weight: float = 25.0,
        cov_weight: float = 1.0,
        gather: bool = True,
    ) -> None:
        super().__init__(encoder, expander, modality=modality)
        self.weights = {"sim_weight": sim_weight, "var_weight": var_weight, "cov_weight": cov_weight}
        self.gather = gather

    def pair_loss(self, a: Tensor, b: Tensor) -> Tensor:
        return vicreg(a, b, **self.weights, gather=self.gather)
