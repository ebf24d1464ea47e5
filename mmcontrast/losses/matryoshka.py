r"""Matryoshka representation learning: one loss applied to nested prefixes of the embeddings.

A loss :math:`\mathcal{L}` over one or more embedding tensors (anchors, positives, ...) is applied to the first
:math:`m_1 > m_2 > \dots > m_k` dimensions of every tensor, each prefix L2-normalised, and the results are summed
with weights :math:`w_i` (1 by default):

.. math::

    \mathcal{L}_{\text{MRL}}(z^{(1)}, \dots, z^{(n)})
        = \sum_{i=1}^{k} w_i \, \mathcal{L}\big(\bar z^{(1)}_{:m_i}, \dots, \bar z^{(n)}_{:m_i}\big),
    \qquad \bar z_{:m} = \frac{z_{1..m}}{\lVert z_{1..m} \rVert_2}

so that every prefix :math:`z_{1..m_i}` is an embedding on its own: the model can be truncated to any of the
dimensions after training (sentence-transformers' ``truncate_dim``) at a small cost in quality. With
:math:`m_1` the full dimension the first term is the loss of the (normalised) full embedding. This is what
sentence-transformers' ``MatryoshkaLoss`` computes (every dimension at every step).

Reference:
    Kusupati, Bhatt, Rege, Wallingford, Sinha, Ramanujan, Howard-Snyder, Chen, Kakade, Jain, Farhadi.
    "Matryoshka Representation Learning", NeurIPS 2022. https://arxiv.org/abs/2205.13147
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import pairwise

import torch.nn.functional as F
from torch import Tensor, nn

from mmcontrast.losses.similarity import check_embeddings


def check_matryoshka_dims(
    dims: Sequence[int],
    weights: Sequence[float] | None,
    embedding_dim: int | None = None,
    *,
    name: str = "dims",
    weights_name: str = "weights",
) -> None:
    """Refuse Matryoshka dimensions that are empty, not whole numbers >= 1, not strictly descending or larger
    than ``embedding_dim``, and weights that are not one positive finite number per dimension.

    ``name`` and ``weights_name`` are how the caller calls the two (a recipe passes its keys), used in errors.
    """
    if not dims:
        raise ValueError(f"{name} is empty; give the nested dimensions, largest first (e.g. [384, 192, 96, 48])")
    for dim in dims:
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise ValueError(f"{name} must hold whole numbers >= 1, got {list(dims)}")
    if any(later >= earlier for earlier, later in pairwise(dims)):
        raise ValueError(
            f"{name} must be strictly descending (largest first, no repeats), got {list(dims)}; "
            f"write them as {sorted(set(dims), reverse=True)}"
        )
    if embedding_dim is not None and dims[0] > embedding_dim:
        raise ValueError(
            f"{name} holds {dims[0]}, more than the embedding dimension {embedding_dim}; "
            f"every dimension must be at most {embedding_dim}"
        )
    if weights is not None:
        if len(weights) != len(dims):
            raise ValueError(f"{weights_name} has {len(weights)} values for {len(dims)} dimensions in {name}")
        if not all(isinstance(w, (int, float)) and not isinstance(w, bool) and 0 < w < float("inf") for w in weights):
            raise ValueError(f"{weights_name} must hold positive finite numbers, got {list(weights)}")


def truncate(embeddings: Tensor, dim: int) -> Tensor:
    """The first ``dim`` dimensions of ``[..., d]`` embeddings, L2-normalised."""
    return F.normalize(embeddings[..., :dim], p=2, dim=-1)


def matryoshka_loss(
    loss: Callable[..., Tensor],
    embeddings: Sequence[Tensor],
    dims: Sequence[int],
    weights: Sequence[float] | None = None,
) -> Tensor:
    """Weighted sum of ``loss`` over the nested, normalised prefixes of the embeddings.

    Args:
        loss: the base loss, called as ``loss(*truncated)`` with one ``[..., m]`` tensor per input tensor; it
            takes whatever else it needs (scores, labels) from its closure.
        embeddings: the ``[B, d]`` (or ``[B, K, d]``) embedding tensors the base loss takes (all sharing ``d``).
        dims: nested dimensions, strictly descending, each at most ``d``.
        weights: one positive weight per dimension (default: 1 each).

    Returns:
        the scalar ``sum_i weights[i] * loss(each tensor's first dims[i] dimensions, normalised)``.
    """
    if not embeddings:
        raise ValueError("matryoshka_loss: embeddings is empty; give the tensors the base loss takes")
    for i, tensor in enumerate(embeddings):
        check_embeddings("matryoshka_loss", f"embeddings[{i}]", tensor, ("[B, d]", "[B, K, d]"))
    sizes = {tensor.shape[-1] for tensor in embeddings}
    if len(sizes) > 1:
        raise ValueError(f"matryoshka_loss: the embeddings have different last dimensions {sorted(sizes)}")
    check_matryoshka_dims(dims, weights, sizes.pop())
    weights = [1.0] * len(dims) if weights is None else weights
    terms = [weight * loss(*(truncate(t, dim) for t in embeddings)) for dim, weight in zip(dims, weights, strict=True)]
    return sum(terms[1:], terms[0])


class MatryoshkaLoss(nn.Module):
    """Module form of :func:`matryoshka_loss` around a base loss module (which may hold state, e.g. a learnable
    logit scale): ``MatryoshkaLoss(CoSENTLoss(), [384, 96])(a, b, scores=scores)``.

    Args:
        loss: the base loss; called with the truncated embeddings as positional arguments and the keyword
            arguments given to ``forward``.
        dims, weights: as :func:`matryoshka_loss`.
        embedding_dim: the full dimension, to refuse too large ``dims`` at construction.
    """

    def __init__(
        self,
        loss: nn.Module,
        dims: Sequence[int],
        weights: Sequence[float] | None = None,
        embedding_dim: int | None = None,
    ) -> None:
        super().__init__()
        check_matryoshka_dims(dims, weights, embedding_dim)
        self.loss = loss
        self.dims = list(dims)
        self.weights = None if weights is None else list(weights)

    def forward(self, *embeddings: Tensor, **kwargs) -> Tensor:
        return matryoshka_loss(lambda *truncated: self.loss(*truncated, **kwargs), embeddings, self.dims, self.weights)
