r"""BYOL and SimSiam: predict the projection of another view; no negatives.

The online branch is the backbone :math:`f`, a projector :math:`g` and a predictor :math:`q`; for two views
:math:`a, b` of one example the prediction :math:`p_a = q(g(f(a)))` is pulled towards the target projection
:math:`z_b` of the other view, whose gradient is stopped, and the loss is symmetrised over the views (the mean
over ordered pairs when ``V > 2``):

.. math::

    \mathcal{L} = \tfrac12 D(p_a, \operatorname{sg}(z_b)) + \tfrac12 D(p_b, \operatorname{sg}(z_a)),
    \qquad D(p, z) = -\frac{p}{\lVert p \rVert} \cdot \frac{z}{\lVert z \rVert}

(:func:`mmcontrast.losses.negative_cosine`; BYOL writes the same objective as :math:`2 - 2 \cos`, an affine
change of this one with 4x its gradient).

- **SimSiam**: the target is the online projection itself, :math:`z_b = g(f(b))`, detached. The stop-gradient
  and the predictor are what prevent collapse.
- **BYOL**: the target is a momentum copy :math:`g'(f'(\cdot))` of the online backbone and projector, an
  exponential moving average :math:`\xi \leftarrow m \xi + (1 - m) \theta` after every optimizer step, with
  :math:`m` rising from ``momentum`` (0.996) to 1 along a cosine over training
  (:func:`mmcontrast.losses.cosine_momentum`). The target weights are checkpointed with the model.

Collapse shows as ``projection_std`` (the std of the normalised projections, :func:`normalised_std`) falling to 0.

References:
    Grill et al. "Bootstrap Your Own Latent: A New Approach to Self-Supervised Learning", NeurIPS 2020.
    https://arxiv.org/abs/2006.07733

    Chen, He. "Exploring Simple Siamese Representation Learning", CVPR 2021. https://arxiv.org/abs/2011.10566
"""

from __future__ import annotations

from itertools import permutations
from typing import Any

import torch
from torch import nn

from mmcontrast.losses import cosine_momentum, negative_cosine
from mmcontrast.methods.base import LossOutput
from mmcontrast.methods.views import MomentumTarget, ViewsMethod, normalised_std


class SimSiam(ViewsMethod):
    """Backbone + projector + predictor; the target is the other view's projection with its gradient stopped.

    Args:
        encoder: the backbone, kept after training.
        projector: ``g`` (SimSiam: 3 layers with batch norm, the last one without affine parameters).
        predictor: ``q`` (SimSiam: a 2-layer bottleneck MLP with batch norm in the middle).
        modality: the backbone's modality (default: from its type).
    """

    name = "SimSiam"

    def __init__(
        self, encoder: nn.Module, projector: nn.Module, predictor: nn.Module, *, modality: str | None = None
    ) -> None:
        super().__init__(encoder, modality=modality)
        self.head = projector
        self.predictor = predictor

    def embed(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """``{"projections": [B, V, d], "predictions": [B, V, d]}`` of the online branch."""
        projections = self.projections(batch, self.head)
        predictions = self.predictor(projections.flatten(0, 1)).reshape(*projections.shape[:2], -1)
        return {"projections": projections, "predictions": predictions}

    def targets(self, embeddings: dict[str, torch.Tensor], batch: dict[str, Any]) -> torch.Tensor:
        """The target projections ``[B, V, d]``, without gradient: here the online projections, detached."""
        return embeddings["projections"].detach()

    def loss(self, embeddings: dict[str, torch.Tensor], batch: dict[str, Any]) -> LossOutput:
        predictions, targets = embeddings["predictions"], self.targets(embeddings, batch)
        pairs = list(permutations(range(predictions.shape[1]), 2))
        value = sum(negative_cosine(predictions[:, a], targets[:, b]) for a, b in pairs) / len(pairs)
        return LossOutput(value, {"projection_std": normalised_std(embeddings["projections"])})


class BYOL(SimSiam):
    """SimSiam's online branch, predicting a momentum target: an EMA of the backbone and projector.

    Args:
        encoder: the backbone, kept after training.
        projector: ``g`` (BYOL: Linear-BN-ReLU-Linear, 4096 hidden, 256 out).
        predictor: ``q`` (BYOL: the same shape as the projector).
        modality: the backbone's modality (default: from its type).
        momentum: the target's base momentum, raised to ``final_momentum`` along a cosine over training.
        final_momentum: the momentum at the last step (1 in BYOL).
    """

    name = "BYOL"

    def __init__(
        self,
        encoder: nn.Module,
        projector: nn.Module,
        predictor: nn.Module,
        *,
        modality: str | None = None,
        momentum: float = 0.996,
        final_momentum: float = 1.0,
    ) -> None:
        super().__init__(encoder, projector, predictor, modality=modality)
        self.target = MomentumTarget(self.encoder, projector, self.modality, cosine_momentum(momentum, final_momentum))
        self.last_momentum = momentum

    def targets(self, embeddings: dict[str, torch.Tensor], batch: dict[str, Any]) -> torch.Tensor:
        """The momentum target's projections ``[B, V, d]`` of the batch's views (no gradient)."""
        values, mask, shape = self.flat_views(batch)
        return self.unflat(self.target(values, mask), shape)

    def loss(self, embeddings: dict[str, torch.Tensor], batch: dict[str, Any]) -> LossOutput:
        output = super().loss(embeddings, batch)
        return LossOutput(output.loss, {**(output.metrics or {}), "momentum": self.last_momentum})

    def after_optimizer_step(self, step: int, total_steps: int) -> None:
        """Move the target towards the online backbone and projector."""
        self.last_momentum = self.target.update(step, total_steps)
