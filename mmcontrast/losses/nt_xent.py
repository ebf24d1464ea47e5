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

from mmcontrast.losses.distributed import gather_rows, rank_and_world_size
from mmcontrast.losses.similarity import (
    Scale,
    check_chunk_size,
    check_embeddings,
    check_labels,
    check_positive,
    check_same_shape,
    full_precision,
    prepare,
)
from mmcontrast.losses.tiled import cross_entropy_terms


def nt_xent(
    z1: Tensor,
    z2: Tensor,
    *,
    temperature: Scale = 0.5,
    normalize: bool = True,
    labels: Tensor | None = None,
    gather: bool = False,
    chunk_size: int | None = None,
) -> Tensor:
    """SimCLR's NT-Xent loss over the ``2N`` views ``cat([z1, z2])``, averaged over all of them.

    Args:
        z1: ``[N, d]`` embeddings of the first view.
        z2: ``[N, d]`` embeddings of the second view; ``z2[k]`` is the positive of ``z1[k]``.
        temperature: softmax temperature (a float or a scalar tensor); logits are ``sim / temperature``.
        normalize: cosine similarity if true, plain dot product if false.
        labels: optional ``[N]`` integer labels; views of other samples with the same label are
            masked out of the denominator instead of being treated as negatives.
        gather: with an initialised process group of several ranks, score the ``2N`` local views
            against the views of all ranks (gathered with gradient; labels too), i.e. the loss of
            the concatenated batch. Each rank returns the mean over its local views; see
            :mod:`mmcontrast.losses.distributed`. A no-op on one process.
        chunk_size: evaluate the logits in ``chunk_size x chunk_size`` tiles, recomputed in the
            backward pass (:mod:`mmcontrast.losses.tiled`); ``None`` materialises them.

    Returns:
        The mean loss, a float32 scalar (computed in float32 even under autocast).
    """
    check_embeddings("nt_xent", "z1", z1)
    check_embeddings("nt_xent", "z2", z2)
    check_same_shape("nt_xent", "z1", z1, "z2", z2, "z1[k] and z2[k] must be two views of the same sample")
    check_positive("nt_xent", "temperature", temperature)
    check_chunk_size("nt_xent", chunk_size)
    num_samples = z1.shape[0]
    if labels is not None:
        check_labels("nt_xent", "labels", labels, num_samples)
        labels = labels.to(z1.device)
    rank, world_size = rank_and_world_size(gather)
    all_z1, all_z2, all_labels = z1, z2, labels
    if world_size > 1:
        all_z1, all_z2, all_labels = gather_rows("nt_xent", ("z1", "z2", "labels"), (z1, z2, labels), world_size)
    total_samples = num_samples * world_size
    with full_precision(z1):
        views = prepare(torch.cat([z1, z2]), normalize)
        all_views = views if world_size == 1 else prepare(torch.cat([all_z1, all_z2]), normalize)
        # Global sample index of the local samples; view k of the first half is paired with the
        # same sample in the second half of the gathered views.
        samples = torch.arange(num_samples, device=z1.device) + rank * num_samples
        targets = torch.cat([samples + total_samples, samples])
        # Labelling each view with its sample id (or class) masks its self-similarity along with
        # any false negatives: the view itself shares its label and is not its target.
        if labels is None:
            labels, all_labels = samples, torch.arange(total_samples, device=z1.device)
        query_labels, key_labels = torch.cat([labels, labels]), torch.cat([all_labels, all_labels])
        losses, _ = cross_entropy_terms(
            views, all_views, targets, 1.0 / temperature, query_labels, key_labels, chunk_size=chunk_size
        )
    return losses.mean()


class NTXentLoss(nn.Module):
    """Module form of :func:`nt_xent`.

    Args:
        temperature: softmax temperature (SimCLR uses 0.5 at its default batch size).
        normalize: cosine similarity if true, dot product if false.
        gather: score local views against the views of all ranks (see :func:`nt_xent`).
        chunk_size: tile size of the logits, ``None`` to materialise them (see :func:`nt_xent`).
    """

    def __init__(
        self, temperature: float = 0.5, normalize: bool = True, gather: bool = False, chunk_size: int | None = None
    ) -> None:
        super().__init__()
        check_positive("NTXentLoss", "temperature", temperature)
        check_chunk_size("NTXentLoss", chunk_size)
        self.temperature = temperature
        self.normalize = normalize
        self.gather = gather
        self.chunk_size = chunk_size

    def forward(self, z1: Tensor, z2: Tensor, labels: Tensor | None = None) -> Tensor:
        """Return :func:`nt_xent` of the two views with this module's options."""
        return nt_xent(
            z1,
            z2,
            temperature=self.temperature,
            normalize=self.normalize,
            labels=labels,
            gather=self.gather,
            chunk_size=self.chunk_size,
        )

    def extra_repr(self) -> str:
        return (
            f"temperature={self.temperature}, normalize={self.normalize}, "
            f"gather={self.gather}, chunk_size={self.chunk_size}"
        )
