r"""Pair margin ("contrastive") loss of Hadsell, Chopra and LeCun.

For pairs :math:`(a_i, b_i)` with labels :math:`y_i \in \{0, 1\}` (1 = similar), a distance
:math:`d_i = D(a_i, b_i)` (``"cosine"``: :math:`1 - \cos(a_i, b_i)`, ``"euclidean"``:
:math:`\lVert a_i - b_i \rVert_2`) and margin :math:`m`:

.. math::

    \ell_i = \tfrac{1}{2}\left(y_i\, d_i^2 + (1 - y_i) \max(0,\, m - d_i)^2\right)

Similar pairs are pulled together; dissimilar pairs are pushed apart until they are at least
:math:`m` away. The loss is averaged (``reduction="mean"``), summed (``"sum"``) or returned per pair
(``"none"``). With the defaults (cosine distance, ``m = 0.5``, mean) this is sentence-transformers'
``ContrastiveLoss``.

Reference:
    Hadsell, Chopra, LeCun. "Dimensionality Reduction by Learning an Invariant Mapping", CVPR 2006.
    https://doi.org/10.1109/CVPR.2006.100
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mmcontrast.losses.similarity import (
    check_choice,
    check_embeddings,
    check_labels,
    check_same_shape,
    full_precision,
    paired_distance,
)

DISTANCES = ("cosine", "euclidean")
REDUCTIONS = ("mean", "sum", "none")


def pair_margin_loss(
    a: Tensor,
    b: Tensor,
    labels: Tensor,
    *,
    margin: float = 0.5,
    distance: str = "cosine",
    reduction: str = "mean",
) -> Tensor:
    """Hadsell-Chopra-LeCun contrastive loss of labelled pairs ``(a[i], b[i])``.

    Args:
        a: ``[B, d]`` first elements of the pairs.
        b: ``[B, d]`` second elements of the pairs.
        labels: ``[B]`` pair labels in ``{0, 1}`` (int, bool or float): 1 = similar, 0 = dissimilar.
        margin: distance beyond which dissimilar pairs cost nothing.
        distance: ``"cosine"`` (``1 - cos``) or ``"euclidean"``.
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (per-pair losses, shape ``[B]``).

    Returns:
        The reduced loss, float32 (computed in float32 even under autocast).
    """
    check_embeddings("pair_margin_loss", "a", a)
    check_embeddings("pair_margin_loss", "b", b)
    check_same_shape("pair_margin_loss", "a", a, "b", b, "a[i] and b[i] must form pair i")
    check_labels("pair_margin_loss", "labels", labels, a.shape[0], scores=True)
    if ((labels != 0) & (labels != 1)).any():
        raise ValueError("pair_margin_loss: labels must be 0 (dissimilar) or 1 (similar)")
    check_choice("pair_margin_loss", "distance", distance, DISTANCES)
    check_choice("pair_margin_loss", "reduction", reduction, REDUCTIONS)
    similar = labels.to(device=a.device, dtype=torch.float32)
    with full_precision(a):
        d = paired_distance(a, b, distance)
        losses = 0.5 * (similar * d.square() + (1.0 - similar) * (margin - d).relu().square())
    if reduction == "none":
        return losses
    return losses.mean() if reduction == "mean" else losses.sum()


class PairMarginLoss(nn.Module):
    """Module form of :func:`pair_margin_loss`.

    Args:
        margin: distance beyond which dissimilar pairs cost nothing.
        distance: ``"cosine"`` or ``"euclidean"``.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
    """

    def __init__(self, margin: float = 0.5, distance: str = "cosine", reduction: str = "mean") -> None:
        super().__init__()
        check_choice("PairMarginLoss", "distance", distance, DISTANCES)
        check_choice("PairMarginLoss", "reduction", reduction, REDUCTIONS)
        self.margin = margin
        self.distance = distance
        self.reduction = reduction

    def forward(self, a: Tensor, b: Tensor, labels: Tensor) -> Tensor:
        """Return :func:`pair_margin_loss` of the labelled pairs with this module's options."""
        return pair_margin_loss(a, b, labels, margin=self.margin, distance=self.distance, reduction=self.reduction)

    def extra_repr(self) -> str:
        return f"margin={self.margin}, distance={self.distance!r}, reduction={self.reduction!r}"
