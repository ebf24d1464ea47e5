r"""SimCLR: an image encoder trained so that two augmented views of one image agree.

Each image :math:`x_k` of a batch of :math:`N` gets two random views (:mod:`mmcontrast.views.simclr`); the
encoder :math:`f` (a backbone) and a projection head :math:`g` (an MLP) map them to :math:`z = g(f(x))`.
The :math:`2N` projections :math:`v_1..v_{2N}` (first views, then second views) are scored with NT-Xent, the
normalised temperature-scaled cross-entropy, where each view's positive :math:`v_{\pi(i)}` is the other view
of the same image and the remaining :math:`2N - 2` views are negatives:

.. math::

    \ell_i = -\log \frac{\exp(\cos(v_i, v_{\pi(i)}) / \tau)}{\sum_{j \ne i} \exp(\cos(v_i, v_j) / \tau)},
    \qquad
    \mathcal{L} = \frac{1}{2N} \sum_{i=1}^{2N} \ell_i

(:func:`mmcontrast.losses.nt_xent`). With ``gather`` the negatives come from the views of every process
(the loss of the global batch, with gradient through the gathered views). With ``V > 2`` views per image the
loss is the mean of NT-Xent over the ``V (V - 1) / 2`` pairs of views. The representation kept after
training is :math:`h = f(x)`, before the head; the head is dropped at export.

Reference:
    Chen, Kornblith, Norouzi, Hinton. "A Simple Framework for Contrastive Learning of Visual Representations",
    ICML 2020. https://arxiv.org/abs/2002.05709
"""

from __future__ import annotations

from itertools import combinations
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mmcontrast.losses import nt_xent
from mmcontrast.methods.base import LossOutput, Method
from mmcontrast.modalities.image import ImageEncoder


class SimCLR(Method):
    """Backbone + projection head trained with NT-Xent over augmented views.

    Rows are made by :class:`mmcontrast.views.ViewsDataset` (``views``: a list of ``V`` image tensors).

    Args:
        image_encoder: the backbone ``f`` (kept after training).
        head: the projection head ``g`` (training only), e.g. :class:`mmcontrast.modalities.heads.MLPHead`.
        temperature: NT-Xent temperature ``tau``.
        gather: use the views of every process as negatives (exact cross-device NT-Xent).
        chunk_size: compute the loss's logits in tiles of this size (``None``: materialise them).
    """

    def __init__(
        self,
        image_encoder: ImageEncoder,
        head: nn.Module,
        *,
        temperature: float = 0.5,
        gather: bool = True,
        chunk_size: int | None = None,
    ) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"SimCLR: temperature must be positive, got {temperature}")
        self.image_encoder = image_encoder
        self.head = head
        self.temperature = temperature
        self.gather = gather
        self.chunk_size = chunk_size

    def collate(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        if not rows or "views" not in rows[0]:
            raise ValueError("SimCLR.collate: rows need 'views' (wrap the data in mmcontrast.views.ViewsDataset)")
        batch: dict[str, Any] = {
            "pixel_values": torch.stack([torch.stack(row["views"]) for row in rows]),  # [B, V, 3, S, S]
        }
        if all("label" in row for row in rows):
            batch["labels"] = torch.tensor([row["label"] for row in rows], dtype=torch.long)  # kept, never used
        return batch

    def embed(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """``{"projections": [B, V, d]}``: the head's output for every view of every image (not normalised).

        All ``B x V`` views go through the backbone in one pass, so batch-norm statistics cover every view.
        """
        pixels = batch["pixel_values"]
        if pixels.ndim != 5 or pixels.shape[1] < 2:
            raise ValueError(f"SimCLR: pixel_values must be [batch, views >= 2, 3, H, W], got {list(pixels.shape)}")
        rows, views = pixels.shape[:2]
        flat = pixels.transpose(0, 1).reshape(rows * views, *pixels.shape[2:])  # view-major
        projections = self.head(self.image_encoder(flat))
        return {"projections": projections.reshape(views, rows, -1).transpose(0, 1)}

    def loss(self, embeddings: dict[str, torch.Tensor], batch: dict[str, Any]) -> LossOutput:
        projections = embeddings["projections"]
        pairs = list(combinations(range(projections.shape[1]), 2))
        value = sum(
            nt_xent(
                projections[:, a],
                projections[:, b],
                temperature=self.temperature,
                gather=self.gather,
                chunk_size=self.chunk_size,
            )
            for a, b in pairs
        ) / len(pairs)
        with torch.no_grad():
            unit = F.normalize(projections.detach().float(), dim=-1)
            positive = torch.stack([(unit[:, a] * unit[:, b]).sum(-1).mean() for a, b in pairs]).mean()
        return LossOutput(value, {"positive_cosine": float(positive)})  # type: ignore[arg-type]
