r"""NT-Xent, the normalised temperature-scaled cross-entropy of SimCLR.

Two views :math:`z^{(1)}_k, z^{(2)}_k` of each of :math:`N` samples give :math:`2N` embeddings
:math:`v_1..v_{2N}` (:math:`v_k = z^{(1)}_k`, :math:`v_{N+k} = z^{(2)}_k`). Each view's positive
:math:`v_{\pi(i)}` is the other view of the same sample, every other view is a negative, and the
self-similarity is excluded:

.. math::

    \ell_i = -\log \frac{\exp(\cos(v_i, v_{\pi(i)}) / \tau)}{\sum_{j \ne i} \exp(\cos(v_i, v_j) / \tau)},
    \qquad
    \mathcal{L} = \frac{1}{2N} \sum_{i=1}^{2N} \ell_i

With ``labels``, views of other samples with the same label are also dropped from the denominator
(false negatives). This equals ``pytorch_metric_learning.losses.NTXentLoss(temperature)`` on
``cat([z1, z2])`` with labels ``cat([arange(N), arange(N)])``.

Reference:
    Chen, Kornblith, Norouzi, Hinton. "A Simple Framework for Contrastive Learning of Visual
    Representations", ICML 2020. https://arxiv.org/abs/2002.05709
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mmcontrast.losses.similarity import (
    Scale,
    check_embeddings,
    check_labels,
    check_positive,
    check_same_shape,
    contrastive_cross_entropy,
    full_precision,
    prepare,
)


def nt_xent(
    z1: Tensor,
    z2: Tensor,
    *,
    temperature: Scale = 0.5,
    normalize: bool = True,
    labels: Tensor | None = None,
) -> Tensor:
    """SimCLR's NT-Xent loss over the ``2N`` views ``cat([z1, z2])``, averaged over all of them.

    Args:
        z1: ``[N, d]`` embeddings of the first view.
        z2: ``[N, d]`` embeddings of the second view; ``z2[k]`` is the positive of ``z1[k]``.
        temperature: softmax temperature (a float or a scalar tensor); logits are ``sim / temperature``.
        normalize: cosine similarity if true, plain dot product if false.
        labels: optional ``[N]`` integer labels; views of other samples with the same label are
            masked out of the denominator instead of being treated as negatives.

    Returns:
        The mean loss, a float32 scalar (computed in float32 even under autocast).
    """
    check_embeddings("nt_xent", "z1", z1)
    check_embeddings("nt_xent", "z2", z2)
    check_same_shape("nt_xent", "z1", z1, "z2", z2, "z1[k] and z2[k] must be two views of the same sample")
    check_positive("nt_xent", "temperature", temperature)
    num_samples = z1.shape[0]
    if labels is not None:
        check_labels("nt_xent", "labels", labels, num_samples)
    with full_precision(z1):
        views = prepare(torch.cat([z1, z2]), normalize)
        index = torch.arange(2 * num_samples, device=z1.device)
        targets = (index + num_samples) % (2 * num_samples)
        # Labelling each view with its sample id (or class) masks its self-similarity along with
        # any false negatives: the view itself shares its label and is not its target.
        sample_labels = index[:num_samples] if labels is None else labels.to(z1.device)
        view_labels = torch.cat([sample_labels, sample_labels])
        losses = contrastive_cross_entropy(views, views, targets, 1.0 / temperature, view_labels, view_labels)
    return losses.mean()


class NTXentLoss(nn.Module):
    """Module form of :func:`nt_xent`.

    Args:
        temperature: softmax temperature (SimCLR uses 0.5 at its default batch size).
        normalize: cosine similarity if true, dot product if false.
    """

    def __init__(self, temperature: float = 0.5, normalize: bool = True) -> None:
        super().__init__()
        check_positive("NTXentLoss", "temperature", temperature)
        self.temperature = temperature
        self.normalize = normalize

    def forward(self, z1: Tensor, z2: Tensor, labels: Tensor | None = None) -> Tensor:
        """Return :func:`nt_xent` of the two views with this module's options."""
        return nt_xent(z1, z2, temperature=self.temperature, normalize=self.normalize, labels=labels)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, normalize={self.normalize}"
