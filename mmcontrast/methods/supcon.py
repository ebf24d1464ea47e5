r"""Supervised contrastive learning: views of examples of the same class are positives.

Every view :math:`i` of the batch (``V`` views of each of ``B`` labelled examples, through the backbone and a
projection head, L2-normalised) has as positives :math:`P(i)` all other views with its label, and the ``L_out``
loss averages the log-likelihood over them:

.. math::

    \mathcal{L} = \frac{1}{|I|} \sum_{i \in I} \frac{-1}{|P(i)|} \sum_{p \in P(i)}
        \log \frac{\exp(z_i \cdot z_p / \tau)}{\sum_{a \ne i} \exp(z_i \cdot z_a / \tau)}

(:func:`mmcontrast.losses.supcon`). Without labels every example is its own class and this is SimCLR's
NT-Xent over the views. With ``gather`` the views and labels of every process are the candidates.

Reference:
    Khosla et al. "Supervised Contrastive Learning", NeurIPS 2020. https://arxiv.org/abs/2004.11362
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from mmcontrast.losses import supcon
from mmcontrast.methods.base import LossOutput
from mmcontrast.methods.views import ViewsMethod, normalised_std


class SupCon(ViewsMethod):
    """Backbone + projection head trained with SupCon's ``L_out`` over labelled views.

    Rows need a ``label`` (collated to ``labels``) as well as their ``views``.

    Args:
        encoder: the backbone, kept after training.
        head: the projection head (the paper: Linear-ReLU-Linear to 128), dropped at export.
        modality: the backbone's modality (default: from its type).
        temperature: ``tau`` (0.1 in the paper).
        gather: the views and labels of every process are candidates (the loss of the global batch).
    """

    name = "SupCon"

    def __init__(
        self,
        encoder: nn.Module,
        head: nn.Module,
        *,
        modality: str | None = None,
        temperature: float = 0.1,
        gather: bool = True,
    ) -> None:
        super().__init__(encoder, modality=modality, min_views=1)
        if temperature <= 0:
            raise ValueError(f"SupCon: temperature must be positive, got {temperature}")
        self.head = head
        self.temperature = temperature
        self.gather = gather

    def embed(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """``{"projections": [B, V, d]}`` (not normalised; the loss normalises)."""
        return {"projections": self.projections(batch, self.head)}

    def loss(self, embeddings: dict[str, torch.Tensor], batch: dict[str, Any]) -> LossOutput:
        labels = batch.get("labels")
        if labels is None:
            raise ValueError(
                "SupCon: the batch has no labels; give every row a 'label' (class folders, sklearn:digits, or a "
                "label column), or train SimCLR for unlabelled data"
            )
        projections = embeddings["projections"]
        value = supcon(projections, labels, temperature=self.temperature, gather=self.gather)
        return LossOutput(value, {"projection_std": normalised_std(projections)})
