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

Other losses over the same views (``loss``):

- ``dcl`` / ``dclw``: the decoupled contrastive loss, NT-Xent without the positive in the denominator (Yeh et al.
  2022; DCLW weights the positives by a von Mises-Fisher kernel; :func:`mmcontrast.losses.dcl`);
- ``info_nce``: one direction, first view -> second views (:func:`mmcontrast.losses.info_nce`); with text and
  identical views, the encoder's dropout making the two embeddings differ, this is unsupervised SimCSE (Gao et
  al. 2021, https://arxiv.org/abs/2104.08821), and the same objective as sentence-transformers'
  ``MultipleNegativesRankingLoss`` on (s, s) pairs.

The method is the same for every modality; only the batch's input key differs: ``pixel_values``
``[B, V, 3, H, W]`` for an :class:`~mmcontrast.modalities.image.ImageEncoder`, ``input_values`` ``[B, V, T]``
(waveforms, or log-mel ``[B, V, n_mels, F]``) plus an optional ``attention_mask`` ``[B, V, T]`` for an
:class:`~mmcontrast.modalities.audio.AudioEncoder`, whose utterance embedding pools only the valid frames, and
``pixel_values`` ``[B, V, frames, 3, H, W]`` plus a frame mask for a video encoder
(:class:`~mmcontrast.modalities.video.VideoEncoder`). With video views that are two clips of one video a random
time apart (:class:`mmcontrast.views.video.VideoClipViews`, ``mode="cvrl"``) this is CVRL's clip-level contrast
(Qian et al., "Spatiotemporal Contrastive Video Representation Learning", CVPR 2021,
https://arxiv.org/abs/2008.03800): other videos' clips are the negatives.

References:
    Chen, Kornblith, Norouzi, Hinton. "A Simple Framework for Contrastive Learning of Visual Representations",
    ICML 2020. https://arxiv.org/abs/2002.05709

    Yeh et al. "Decoupled Contrastive Learning", ECCV 2022. https://arxiv.org/abs/2110.06848
"""

from __future__ import annotations

from torch import Tensor, nn

from mmcontrast.losses import dcl, info_nce, nt_xent
from mmcontrast.methods.views import ProjectedViews

LOSSES = ("nt_xent", "dcl", "dclw", "info_nce")


class SimCLR(ProjectedViews):
    """Backbone + projection head trained with NT-Xent over augmented views, for any modality with views.

    Rows are made by :class:`mmcontrast.views.ViewsDataset` (images; text with ``key="text"``) or
    :class:`mmcontrast.views.audio.AudioViewsDataset` (audio) or :class:`mmcontrast.views.video.VideoClipViews`
    (video: uint8 clips, preprocessed by the encoder in the collate): ``views``, a list of ``V`` views. The
    backbone is held as ``{modality}_encoder`` (``image_encoder``, ``audio_encoder``...) and reached as
    :attr:`encoder`.

    Args:
        encoder: the backbone ``f`` (kept after training): an :class:`ImageEncoder` (``[N, 3, H, W]`` -> ``[N, d]``)
            or an :class:`AudioEncoder` (waveforms ``[N, T]`` or log-mel ``[N, n_mels, F]`` -> pooled ``[N, d]``) or a
            video encoder (clips ``[N, frames, 3, H, W]`` + frame mask -> ``[N, d]``) or a :class:`TextEncoder`.
        head: the projection head ``g`` (training only), e.g. :class:`mmcontrast.modalities.heads.MLPHead`;
            ``nn.Identity()`` for SimCSE (no head).
        modality: ``image``, ``audio``, ``video`` or ``text`` (default: from the encoder's type).
        temperature: the softmax temperature ``tau``.
        gather: use the views of every process as negatives (exact cross-device loss).
        chunk_size: compute the loss's logits in tiles of this size (``None``: materialise them; NT-Xent and
            InfoNCE only).
        loss: ``nt_xent`` (SimCLR), ``dcl``, ``dclw`` (``weight_sigma``) or ``info_nce`` (SimCSE).
        weight_sigma: DCLW's ``sigma`` (0.5 in the paper).
    """

    name = "SimCLR"

    def __init__(
        self,
        encoder: nn.Module,
        head: nn.Module,
        *,
        modality: str | None = None,
        temperature: float = 0.5,
        gather: bool = True,
        chunk_size: int | None = None,
        loss: str = "nt_xent",
        weight_sigma: float = 0.5,
    ) -> None:
        super().__init__(encoder, head, modality=modality)
        if temperature <= 0:
            raise ValueError(f"SimCLR: temperature must be positive, got {temperature}")
        if loss not in LOSSES:
            raise ValueError(f"SimCLR: loss must be one of {', '.join(LOSSES)}, got {loss!r}")
        if chunk_size is not None and loss in ("dcl", "dclw"):
            raise ValueError(f"SimCLR: chunk_size tiles NT-Xent and InfoNCE; the {loss} loss materialises its logits")
        self.temperature = temperature
        self.gather = gather
        self.chunk_size = chunk_size
        self.loss_name = loss
        self.weight_sigma = weight_sigma

    def pair_loss(self, a: Tensor, b: Tensor) -> Tensor:
        if self.loss_name == "nt_xent":
            return nt_xent(a, b, temperature=self.temperature, gather=self.gather, chunk_size=self.chunk_size)
        if self.loss_name == "info_nce":
            return info_nce(a, b, scale=1.0 / self.temperature, gather=self.gather, chunk_size=self.chunk_size)
        sigma = self.weight_sigma if self.loss_name == "dclw" else None
        return dcl(a, b, temperature=self.temperature, weight_sigma=sigma, gather=self.gather)
