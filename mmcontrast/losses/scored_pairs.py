r"""Losses for pairs with a graded similarity score: CoSENT and cosine-similarity regression.

For pairs :math:`(a_i, b_i)` with gold scores :math:`s_i` and :math:`c_i = \cos(a_i, b_i)`:

**CoSENT** only uses the *order* of the scores. Every pair of pairs whose scores disagree in order
with their cosines is penalised, with scale :math:`\lambda` (20 by default):

.. math::

    \mathcal{L}_{\text{CoSENT}}
        = \log\Big(1 + \sum_{(i, j):\, s_i > s_j} \exp\big(\lambda (c_j - c_i)\big)\Big)

**Cosine-similarity regression** fits the cosine to the score with a squared error:

.. math::

    \mathcal{L}_{\text{cos}} = \frac{1}{B} \sum_i (c_i - s_i)^2

so the scores must already live in the cosine's range ([0, 1] or [-1, 1]). These are
sentence-transformers' ``CoSENTLoss`` and ``CosineSimilarityLoss`` (with its default ``MSELoss``).

References:
    Su. "CoSENT: A more efficient sentence vector scheme than Sentence-BERT", 2022.
    https://kexue.fm/archives/8847

    Reimers, Gurevych. "Sentence-BERT: Sentence Embeddings using Siamese BERT-Networks", EMNLP 2019.
    https://arxiv.org/abs/1908.10084
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mmcontrast.losses.similarity import (
    check_embeddings,
    check_labels,
    check_positive,
    check_same_shape,
    full_precision,
    pairwise_cosine,
)


def _check_scored_pairs(fn: str, a: Tensor, b: Tensor, scores: Tensor) -> None:
    check_embeddings(fn, "a", a)
    check_embeddings(fn, "b", b)
    check_same_shape(fn, "a", a, "b", b, "a[i] and b[i] must form pair i")
    check_labels(fn, "scores", scores, a.shape[0], scores=True)


def cosent_loss(a: Tensor, b: Tensor, scores: Tensor, *, scale: float = 20.0) -> Tensor:
    """CoSENT ranking loss: pairs with a higher score should have a higher cosine.

    Args:
        a: ``[B, d]`` first elements of the pairs.
        b: ``[B, d]`` second elements of the pairs.
        scores: ``[B]`` gold similarity scores (any real or integer scale; only their order matters).
        scale: multiplier ``lambda`` of the cosine differences.

    Returns:
        The loss, a float32 scalar; 0 (still attached to the graph) when all scores are equal.
    """
    _check_scored_pairs("cosent_loss", a, b, scores)
    check_positive("cosent_loss", "scale", scale)
    scores = scores.to(a.device)
    with full_precision(a):
        cosines = pairwise_cosine(a, b) * scale
        # differences[i, j] = scale * (c_j - c_i), kept where pair i should rank above pair j
        differences = cosines[None, :] - cosines[:, None]
        misorderings = differences[scores[:, None] > scores[None, :]]
        return torch.cat([misorderings.new_zeros(1), misorderings]).logsumexp(dim=0)


def cosine_similarity_loss(a: Tensor, b: Tensor, scores: Tensor) -> Tensor:
    """Mean squared error between ``cos(a[i], b[i])`` and ``scores[i]``.

    Args:
        a: ``[B, d]`` first elements of the pairs.
        b: ``[B, d]`` second elements of the pairs.
        scores: ``[B]`` gold similarities in the cosine's range ([0, 1] or [-1, 1]).

    Returns:
        The loss, a float32 scalar.
    """
    _check_scored_pairs("cosine_similarity_loss", a, b, scores)
    with full_precision(a):
        errors = pairwise_cosine(a, b) - scores.to(device=a.device, dtype=torch.float32)
        return errors.square().mean()


class CoSENTLoss(nn.Module):
    """Module form of :func:`cosent_loss`.

    Args:
        scale: multiplier ``lambda`` of the cosine differences.
    """

    def __init__(self, scale: float = 20.0) -> None:
        super().__init__()
        check_positive("CoSENTLoss", "scale", scale)
        self.scale = scale

    def forward(self, a: Tensor, b: Tensor, scores: Tensor) -> Tensor:
        """Return :func:`cosent_loss` of the scored pairs."""
        return cosent_loss(a, b, scores, scale=self.scale)

    def extra_repr(self) -> str:
        return f"scale={self.scale}"


class CosineSimilarityLoss(nn.Module):
    """Module form of :func:`cosine_similarity_loss`."""

    def forward(self, a: Tensor, b: Tensor, scores: Tensor) -> Tensor:
        """Return :func:`cosine_similarity_loss` of the scored pairs."""
        return cosine_similarity_loss(a, b, scores)
