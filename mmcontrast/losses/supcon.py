r"""Supervised Contrastive Learning (SupCon), the :math:`\mathcal{L}^{sup}_{out}` form.

:math:`N` samples with :math:`V` views each give :math:`NV` views :math:`v_a` with labels
:math:`y_a` (the label of their sample). Every view is an anchor; its positives :math:`P(a)` are the
other views with the same label, its denominator holds every other view
(:math:`A(a) = \{b \ne a\}`), and :math:`s_{ab} = \cos(v_a, v_b) / \tau`:

.. math::

    \ell_a = -\frac{1}{\lvert P(a) \rvert} \sum_{p \in P(a)}
        \log \frac{\exp(s_{ap})}{\sum_{b \in A(a)} \exp(s_{ab})},
    \qquad
    \mathcal{L} = \frac{1}{\lvert \{a : P(a) \ne \emptyset\} \rvert} \sum_{a : P(a) \ne \emptyset} \ell_a

Without labels every sample is its own class (the other views of the same sample are the positives),
which is SimCLR's NT-Xent for :math:`V = 2`. This is
:func:`~mmcontrast.losses.multi_positive.multi_positive_info_nce` over the :math:`NV` views with the
masks of :func:`~mmcontrast.losses.time_masks.label_masks` (no new core computation), and equals
``pytorch_metric_learning.losses.SupConLoss(temperature)`` on the flattened views
``features.reshape(N * V, d)`` with labels ``labels.repeat_interleave(V)``: both average over the
anchors that have a positive. (The reference code of the paper multiplies the loss by
``temperature / base_temperature``, 1 at its defaults; that factor is left out.)

Reference:
    Khosla, Teterwak, Wang, Sarna, Tian, Isola, Maschinot, Liu, Krishnan. "Supervised Contrastive
    Learning", NeurIPS 2020. https://arxiv.org/abs/2004.11362
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mmcontrast.losses.distributed import rank_and_world_size
from mmcontrast.losses.multi_positive import multi_positive_info_nce
from mmcontrast.losses.similarity import Scale, check_embeddings, check_labels, check_positive
from mmcontrast.losses.time_masks import label_masks

DEFAULT_TEMPERATURE = 0.1


def supcon(
    features: Tensor,
    labels: Tensor | None = None,
    *,
    temperature: Scale = DEFAULT_TEMPERATURE,
    gather: bool = False,
) -> Tensor:
    """SupCon's ``L_out`` over the ``N * V`` views of ``features``.

    Args:
        features: ``[N, V, d]`` embeddings, ``V >= 1`` views of each of ``N`` samples (``[N, d]`` is
            not accepted: add the view dimension with ``features[:, None]``).
        labels: optional ``[N]`` integer class labels, one per sample; ``None`` makes every sample
            its own class (SimCLR; needs ``V >= 2`` for any positive).
        temperature: softmax temperature (a float or a scalar tensor); logits are ``cos / temperature``.
        gather: with an initialised process group of several ranks, score the local views against
            the views of all ranks (gathered with gradient; labels too), i.e. the loss of the
            concatenated batch; see :func:`~mmcontrast.losses.multi_positive.multi_positive_info_nce`
            for the per-rank value. A no-op on one process.

    Returns:
        The mean over the views that have at least one positive, a float32 scalar (computed in
        float32 even under autocast); 0 (attached to the graph) when no view has a positive.
    """
    fn = "supcon"
    check_embeddings(fn, "features", features, ("[N, V, d]",))
    check_positive(fn, "temperature", temperature)
    num_samples, num_views, dim = features.shape
    if labels is None:
        rank, _ = rank_and_world_size(gather)
        # Instance labels, unique across ranks.
        labels = torch.arange(num_samples, device=features.device) + rank * num_samples
    else:
        check_labels(fn, "labels", labels, num_samples)
        labels = labels.to(features.device)
    views = features.reshape(num_samples * num_views, dim)
    positive, negative = label_masks(labels.repeat_interleave(num_views), gather=gather)
    return multi_positive_info_nce(
        views, positive_mask=positive, negative_mask=negative, scale=1.0 / temperature, gather=gather
    )


class SupConLoss(nn.Module):
    """Module form of :func:`supcon`.

    Args:
        temperature: softmax temperature (0.1, as pytorch-metric-learning's ``SupConLoss``).
        gather: score local views against the views of all ranks (see :func:`supcon`).
    """

    def __init__(self, temperature: float = DEFAULT_TEMPERATURE, gather: bool = False) -> None:
        super().__init__()
        check_positive("SupConLoss", "temperature", temperature)
        self.temperature = temperature
        self.gather = gather

    def forward(self, features: Tensor, labels: Tensor | None = None) -> Tensor:
        """Return :func:`supcon` of the ``[N, V, d]`` features with this module's options."""
        return supcon(features, labels, temperature=self.temperature, gather=self.gather)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, gather={self.gather}"
