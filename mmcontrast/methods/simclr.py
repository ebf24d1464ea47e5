r"""SimCLR: an encoder trained so that two augmented views of one example (an image, an audio or video clip) agree.

Each example :math:`x_k` of a batch of :math:`N` gets two random views (images: :mod:`mmcontrast.views.simclr`,
audio: :mod:`mmcontrast.views.audio`); the encoder :math:`f` (a backbone; for audio, its frames pooled over the
valid ones) and a projection head :math:`g` (an MLP) map them to :math:`z = g(f(x))`.
The :math:`2N` projections :math:`v_1..v_{2N}` (first views, then second views) are scored with NT-Xent, the
normalised temperature-scaled cross-entropy, where each view's positive :math:`v_{\pi(i)}` is the other view
of the same example and the remaining :math:`2N - 2` views are negatives:

.. math::

    \ell_i = -\log \frac{\exp(\cos(v_i, v_{\pi(i)}) / \tau)}{\sum_{j \ne i} \exp(\cos(v_i, v_j) / \tau)},
    \qquad
    \mathcal{L} = \frac{1}{2N} \sum_{i=1}^{2N} \ell_i

(:func:`mmcontrast.losses.nt_xent`). With ``gather`` the negatives come from the views of every process
(the loss of the global batch, with gradient through the gathered views). With ``V > 2`` views per example the
loss is the mean of NT-Xent over the ``V (V - 1) / 2`` pairs of views. The representation kept after
training is :math:`h = f(x)`, before the head; the head is dropped at export.

The method is the same for every modality; only the batch's input key differs: ``pixel_values``
``[B, V, 3, H, W]`` for an :class:`~mmcontrast.modalities.image.ImageEncoder`, ``input_values`` ``[B, V, T]``
(waveforms, or log-mel ``[B, V, n_mels, F]``) plus an optional ``attention_mask`` ``[B, V, T]`` for an
:class:`~mmcontrast.modalities.audio.AudioEncoder`, whose utterance embedding pools only the valid frames, and
``pixel_values`` ``[B, V, frames, 3, H, W]`` plus a frame mask for a video encoder
(:class:`~mmcontrast.modalities.video.VideoEncoder`). With video views that are two clips of one video a random
time apart (:class:`mmcontrast.views.video.VideoClipViews`, ``mode="cvrl"``) this is CVRL's clip-level contrast
(Qian et al., "Spatiotemporal Contrastive Video Representation Learning", CVPR 2021,
https://arxiv.org/abs/2008.03800): other videos' clips are the negatives.

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
from mmcontrast.modalities.audio import AudioEncoder, pad_batch
from mmcontrast.modalities.image import ImageEncoder
from mmcontrast.modalities.transformers_video import TransformersVideoEncoder
from mmcontrast.modalities.video import VideoEncoder

VIEW_INPUTS = {"image": "pixel_values", "audio": "input_values", "video": "pixel_values"}
"""The batch key of each modality's stacked views (the adapters' own input names)."""
VIEW_SHAPES = {
    "image": ((5,), "[batch, views >= 2, 3, H, W]"),
    "audio": ((3, 4), "[batch, views >= 2, T] (waveforms) or [batch, views >= 2, n_mels, F] (log-mel)"),
    "video": ((6,), "[batch, views >= 2, frames, 3, H, W]"),
}
PADDED = frozenset({"audio"})
"""Modalities whose views may differ in length: padded at the end, with an ``attention_mask``."""


def stack_views(rows: list[dict[str, Any]], pad: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The ``views`` of ``rows`` -> ``[B, V, ...]`` and, when they were padded, an ``attention_mask`` ``[B, V, T]``.

    Views of one shape are stacked (no mask). With ``pad``, views that differ along their last axis are zero padded
    to the longest (:func:`mmcontrast.modalities.audio.pad_batch`) and the mask marks their real samples.

    Raises:
        ValueError: rows without ``views``, rows with different numbers of views, or views of different shapes
            that cannot be padded.
    """
    if not rows or "views" not in rows[0]:
        raise ValueError("SimCLR.collate: rows need 'views' (wrap the data in mmcontrast.views.ViewsDataset)")
    counts = {len(row["views"]) for row in rows}
    if len(counts) != 1:
        raise ValueError(f"SimCLR.collate: every row needs the same number of views, got {sorted(counts)}")
    views = [torch.as_tensor(view) for row in rows for view in row["views"]]  # row-major: B x V
    shape = (len(rows), counts.pop())
    if len({tuple(view.shape) for view in views}) == 1:
        return torch.stack(views).reshape(*shape, *views[0].shape), None
    if not pad or len({tuple(view.shape[:-1]) for view in views}) != 1:
        shapes = sorted({tuple(view.shape) for view in views})
        raise ValueError(
            f"SimCLR.collate: views of different shapes {shapes[:4]}; crop them to one size (for audio, waveform "
            "views of different lengths are padded; log-mel views must share one length)"
        )
    padded = pad_batch(views)
    values, mask = padded["input_values"], padded["attention_mask"]
    return values.reshape(*shape, *values.shape[1:]), mask.reshape(*shape, mask.shape[-1])


class SimCLR(Method):
    """Backbone + projection head trained with NT-Xent over augmented views, for any modality with views.

    Rows are made by :class:`mmcontrast.views.ViewsDataset` (images) or
    :class:`mmcontrast.views.audio.AudioViewsDataset` (audio) or :class:`mmcontrast.views.video.VideoClipViews`
    (video: uint8 clips, preprocessed by the encoder in the collate): ``views``, a list of ``V`` tensors. The
    backbone is held as ``{modality}_encoder`` (``image_encoder``, ``audio_encoder``) and reached as :attr:`encoder`.

    Args:
        encoder: the backbone ``f`` (kept after training): an :class:`ImageEncoder` (``[N, 3, H, W]`` -> ``[N, d]``)
            or an :class:`AudioEncoder` (waveforms ``[N, T]`` or log-mel ``[N, n_mels, F]`` -> pooled ``[N, d]``) or a
            video encoder (clips ``[N, frames, 3, H, W]`` + frame mask -> ``[N, d]``).
        head: the projection head ``g`` (training only), e.g. :class:`mmcontrast.modalities.heads.MLPHead`.
        modality: ``image``, ``audio`` or ``video`` (default: from the encoder's type).
        temperature: NT-Xent temperature ``tau``.
        gather: use the views of every process as negatives (exact cross-device NT-Xent).
        chunk_size: compute the loss's logits in tiles of this size (``None``: materialise them).
    """

    def __init__(
        self,
        encoder: ImageEncoder | AudioEncoder,
        head: nn.Module,
        *,
        modality: str | None = None,
        temperature: float = 0.5,
        gather: bool = True,
        chunk_size: int | None = None,
    ) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"SimCLR: temperature must be positive, got {temperature}")
        if modality is None:
            modality = "audio" if isinstance(encoder, AudioEncoder) else "image"
            modality = "video" if isinstance(encoder, (VideoEncoder, TransformersVideoEncoder)) else modality
        if modality not in VIEW_INPUTS:
            raise ValueError(f"SimCLR: modality must be one of {sorted(VIEW_INPUTS)}, got {modality!r}")
        if modality == "audio" and not isinstance(encoder, AudioEncoder):
            raise TypeError(f"SimCLR: an audio backbone must be an AudioEncoder, got {type(encoder).__name__}")
        self.modality = modality
        setattr(self, f"{modality}_encoder", encoder)  # image_encoder.*: the state-dict keys image runs always had
        self.head = head
        self.temperature = temperature
        self.gather = gather
        self.chunk_size = chunk_size

    @property
    def encoder(self) -> nn.Module:
        """The backbone (``image_encoder`` or ``audio_encoder``)."""
        return getattr(self, f"{self.modality}_encoder")

    @property
    def input_key(self) -> str:
        """The batch key of the stacked views: ``pixel_values`` (image) or ``input_values`` (audio)."""
        return VIEW_INPUTS[self.modality]

    def collate(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        """Rows with ``views`` -> ``{input_key: [B, V, ...]}``, plus ``attention_mask`` ``[B, V, T]`` when audio views
        of different lengths were padded (video: ``frame_mask`` ``[B, V, frames]``, the clips preprocessed by the
        encoder), plus ``labels`` when every row has one (kept, never used)."""
        if self.modality == "video":
            batch = self._collate_clips(rows)
        else:
            values, mask = stack_views(rows, pad=self.modality in PADDED)
            batch = {self.input_key: values}
            if mask is not None:
                batch["attention_mask"] = mask
        if all("label" in row for row in rows):
            batch["labels"] = torch.tensor([int(row["label"]) for row in rows], dtype=torch.long)
        return batch

    def _collate_clips(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        """Video views (uint8 clips ``[T, H, W, 3]``) -> the preprocessed clips and frame masks, ``[B, V, ...]``."""
        if not rows or "views" not in rows[0]:
            raise ValueError(
                "SimCLR.collate: rows need 'views' (wrap the videos in mmcontrast.views.video.VideoClipViews)"
            )
        counts = {len(row["views"]) for row in rows}
        if len(counts) != 1:
            raise ValueError(f"SimCLR.collate: every row needs the same number of views, got {sorted(counts)}")
        shape = (len(rows), counts.pop())
        inputs = self.encoder.preprocess([view for row in rows for view in row["views"]])  # row-major: B x V
        return {
            "pixel_values": inputs["pixel_values"].reshape(*shape, *inputs["pixel_values"].shape[1:]),
            "attention_mask": inputs["frame_mask"].reshape(*shape, -1),
        }

    def features(self, values: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Backbone features ``[N, d]`` of ``N`` views: an image encoder's output, an audio encoder's pooled
        utterance embedding over the valid samples (:meth:`AudioEncoder.embed`), a video encoder's clip embedding
        over the valid frames (``attention_mask`` is then the frame mask)."""
        if self.modality == "audio":
            return self.encoder.embed(values, attention_mask)  # type: ignore[operator]
        if self.modality == "video":
            return self.encoder(values, attention_mask)
        return self.encoder(values)

    def embed(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """``{"projections": [B, V, d]}``: the head's output for every view of every example (not normalised).

        All ``B x V`` views go through the backbone in one pass, so batch-norm statistics cover every view.
        """
        values = batch[self.input_key]
        ndims, expected = VIEW_SHAPES[self.modality]
        if values.ndim not in ndims or values.shape[1] < 2:
            raise ValueError(f"SimCLR: {self.input_key} must be {expected}, got {list(values.shape)}")
        rows, views = values.shape[:2]

        def flat(x: torch.Tensor) -> torch.Tensor:  # view-major: all first views, then all second views...
            return x.transpose(0, 1).reshape(rows * views, *x.shape[2:])

        mask = batch.get("attention_mask")
        projections = self.head(self.features(flat(values), None if mask is None else flat(mask)))
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
