"""One tower + views: what every method that compares augmented views of one example shares.

A row of a views dataset holds ``views``, a list of ``V`` augmented versions of one example (images:
:class:`mmcontrast.views.ViewsDataset`; audio: :class:`mmcontrast.views.audio.AudioViewsDataset`; video:
:class:`mmcontrast.views.video.VideoClipViews`; text: ``ViewsDataset(rows, transform, key="text")`` with
:mod:`mmcontrast.views.text`). :class:`ViewsMethod` collates them for its modality, runs every view of the batch
through the backbone in one pass (batch-norm statistics cover all views) and hands the methods features
``[B, V, d]``. The methods differ only in their heads, targets and loss:

- :class:`~mmcontrast.methods.simclr.SimCLR` (NT-Xent, DCL / DCLW, or SimCSE's InfoNCE),
- :class:`~mmcontrast.methods.supcon.SupCon` (labelled views),
- :class:`~mmcontrast.methods.moco.MoCo` (v2: queue + momentum encoder; v3: symmetric, no queue),
- :class:`~mmcontrast.methods.bootstrap.BYOL` and :class:`~mmcontrast.methods.bootstrap.SimSiam`,
- :class:`~mmcontrast.methods.redundancy.BarlowTwins` and :class:`~mmcontrast.methods.redundancy.VICReg`,
- :class:`~mmcontrast.methods.memory_bank.MemoryBankNCE` (instance discrimination with a memory bank).

The backbone is held as ``{modality}_encoder`` (``image_encoder``, ``audio_encoder``, ``video_encoder``,
``text_encoder``): the state-dict keys exports and probes read. Momentum methods keep a frozen copy of the backbone
and head as ``target`` (:class:`MomentumTarget`), moved in :meth:`~mmcontrast.methods.base.Method.after_optimizer_step`.
"""

from __future__ import annotations

import copy
from itertools import combinations
from typing import Any

import torch
from torch import nn

from mmcontrast.losses import EMA
from mmcontrast.losses.ema import MomentumSchedule
from mmcontrast.methods.base import LossOutput, Method
from mmcontrast.modalities.audio import AudioEncoder, pad_batch
from mmcontrast.modalities.text import TextEncoder
from mmcontrast.modalities.transformers_video import TransformersVideoEncoder
from mmcontrast.modalities.video import VideoEncoder

VIEW_INPUTS = {"image": "pixel_values", "audio": "input_values", "video": "pixel_values", "text": "features"}
"""The batch key of each modality's stacked views (the adapters' own input names)."""
VIEW_SHAPES = {
    "image": ((5,), "[batch, views, 3, H, W]"),
    "audio": ((3, 4), "[batch, views, T] (waveforms) or [batch, views, n_mels, F] (log-mel)"),
    "video": ((6,), "[batch, views, frames, 3, H, W]"),
}
PADDED = frozenset({"audio"})
"""Modalities whose views may differ in length: padded at the end, with an ``attention_mask``."""


def modality_of(encoder: nn.Module) -> str:
    """The modality of a backbone from its adapter type (``image`` for anything else)."""
    if isinstance(encoder, AudioEncoder):
        return "audio"
    if isinstance(encoder, (VideoEncoder, TransformersVideoEncoder)):
        return "video"
    if isinstance(encoder, TextEncoder):
        return "text"
    return "image"


def stack_views(
    rows: list[dict[str, Any]], pad: bool = False, name: str = "SimCLR"
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The ``views`` of ``rows`` -> ``[B, V, ...]`` and, when they were padded, an ``attention_mask`` ``[B, V, T]``.

    Views of one shape are stacked (no mask). With ``pad``, views that differ along their last axis are zero padded
    to the longest (:func:`mmcontrast.modalities.audio.pad_batch`) and the mask marks their real samples.

    Raises:
        ValueError: rows without ``views``, rows with different numbers of views, or views of different shapes
            that cannot be padded.
    """
    views = [torch.as_tensor(view) for row in rows for view in row["views"]]  # row-major: B x V
    shape = (len(rows), len(rows[0]["views"]))
    if len({tuple(view.shape) for view in views}) == 1:
        return torch.stack(views).reshape(*shape, *views[0].shape), None
    if not pad or len({tuple(view.shape[:-1]) for view in views}) != 1:
        shapes = sorted({tuple(view.shape) for view in views})
        raise ValueError(
            f"{name}.collate: views of different shapes {shapes[:4]}; crop them to one size (for audio, waveform "
            "views of different lengths are padded; log-mel views must share one length)"
        )
    padded = pad_batch(views)
    values, mask = padded["input_values"], padded["attention_mask"]
    return values.reshape(*shape, *values.shape[1:]), mask.reshape(*shape, mask.shape[-1])


class MomentumTarget(nn.Module):
    """A frozen copy of the online backbone and head, kept their exponential moving average: ``x -> g'(f'(x))``.

    ``encoder, head = deepcopy(online)``, then :class:`~mmcontrast.losses.EMA` after every optimizer step
    (:meth:`update`). Its weights are parameters of the method (``requires_grad=False``), so checkpoints hold them
    and a resumed run continues from them exactly. The target runs in the online network's mode (train mode during
    training: its batch norms use the batch statistics, as in MoCo v3 and BYOL) and never builds a graph.

    Args:
        encoder: the online backbone (copied now, then followed).
        head: the online projection head (copied now, then followed).
        modality: how the backbone embeds a flat batch of views (:func:`encode`).
        momentum: a constant ``m`` or a schedule ``(step, total_steps) -> m``
            (:func:`~mmcontrast.losses.cosine_momentum`).
    """

    def __init__(self, encoder: nn.Module, head: nn.Module, modality: str, momentum: float | MomentumSchedule) -> None:
        super().__init__()
        self.encoder = copy.deepcopy(encoder)
        self.head = copy.deepcopy(head)
        self.modality = modality
        online = nn.ModuleDict({"encoder": encoder, "head": head})  # not registered: only pairs the parameters
        self._ema = EMA(online, nn.ModuleDict({"encoder": self.encoder, "head": self.head}), momentum)

    def momentum_at(self, step: int, total_steps: int) -> float:
        """The momentum of the update after optimizer step ``step`` of ``total_steps``."""
        return self._ema.momentum_at(step, total_steps)

    def update(self, step: int, total_steps: int) -> float:
        """Move the target towards the online network; returns the momentum used."""
        return self._ema.update(step, total_steps)

    @torch.no_grad()
    def forward(self, values: Any, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.head(encode(self.encoder, self.modality, values, attention_mask))


def encode(encoder: nn.Module, modality: str, values: Any, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Backbone features ``[N, d]`` of ``N`` views: an image encoder's output, an audio encoder's pooled utterance
    embedding over the valid samples (:meth:`AudioEncoder.embed`), a video encoder's clip embedding over the valid
    frames (``attention_mask`` is then the frame mask), a text encoder's pooled sentence embedding (``values`` is
    the tokenizer's output)."""
    if modality == "audio":
        return encoder.embed(values, attention_mask)  # type: ignore[operator]
    if modality == "video":
        return encoder(values, attention_mask)
    return encoder(values)


class ViewsMethod(Method):
    """Base of the one-tower methods: a backbone for one modality, its views collated and embedded in one pass.

    Subclasses build their heads and implement :meth:`~mmcontrast.methods.base.Method.embed` and
    :meth:`~mmcontrast.methods.base.Method.loss` with :meth:`flat_views` / :meth:`unflat`.

    Args:
        encoder: the backbone, kept after training: an image, audio, video or text encoder.
        modality: ``image``, ``audio``, ``video`` or ``text`` (default: from the encoder's type).
        min_views: the fewest views per row the method needs.
    """

    name = "views"

    def __init__(self, encoder: nn.Module, *, modality: str | None = None, min_views: int = 2) -> None:
        super().__init__()
        modality = modality or modality_of(encoder)
        if modality not in VIEW_INPUTS:
            raise ValueError(f"{self.name}: modality must be one of {sorted(VIEW_INPUTS)}, got {modality!r}")
        expected = {"audio": AudioEncoder, "text": TextEncoder}.get(modality)
        if expected is not None and not isinstance(encoder, expected):
            raise TypeError(
                f"{self.name}: a {modality} backbone must be a {expected.__name__}, got {type(encoder).__name__}"
            )
        self.modality = modality
        self.min_views = min_views
        setattr(self, f"{modality}_encoder", encoder)  # image_encoder.*: the state-dict keys image runs always had

    @property
    def encoder(self) -> nn.Module:
        """The backbone (``image_encoder``, ``audio_encoder``, ``video_encoder`` or ``text_encoder``)."""
        return getattr(self, f"{self.modality}_encoder")

    @property
    def input_key(self) -> str:
        """The batch key of the stacked views: ``pixel_values`` (image, video), ``input_values`` (audio) or
        ``features`` (text: the tokenizer's output)."""
        return VIEW_INPUTS[self.modality]

    def collate(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        """Rows with ``views`` -> ``{input_key: [B, V, ...]}``, plus ``attention_mask`` ``[B, V, T]`` when audio views
        of different lengths were padded (video: the frame masks, the clips preprocessed by the encoder; text: the
        tokenizer's output for the ``V x B`` views, view-major), plus ``labels`` when every row has one and
        ``indices`` (the rows' dataset indices) when every row has one."""
        if not rows or "views" not in rows[0]:
            raise ValueError(
                f"{self.name}.collate: rows need 'views' (wrap the data in mmcontrast.views.ViewsDataset, "
                "AudioViewsDataset or VideoClipViews)"
            )
        counts = {len(row["views"]) for row in rows}
        if len(counts) != 1:
            raise ValueError(f"{self.name}.collate: every row needs the same number of views, got {sorted(counts)}")
        num_views = counts.pop()
        if num_views < self.min_views:
            raise ValueError(f"{self.name}: rows need at least {self.min_views} views each, got {num_views}")
        batch: dict[str, Any]
        if self.modality == "video":
            inputs = self.encoder.preprocess([view for row in rows for view in row["views"]])  # row-major: B x V
            shape = (len(rows), num_views)
            batch = {
                "pixel_values": inputs["pixel_values"].reshape(*shape, *inputs["pixel_values"].shape[1:]),
                "attention_mask": inputs["frame_mask"].reshape(*shape, -1),
            }
        elif self.modality == "text":
            texts = [row["views"][v] for v in range(num_views) for row in rows]  # view-major: V x B
            batch = {"features": self.encoder.preprocess(texts), "num_rows": len(rows), "num_views": num_views}
        else:
            values, mask = stack_views(rows, pad=self.modality in PADDED, name=self.name)
            batch = {self.input_key: values}
            if mask is not None:
                batch["attention_mask"] = mask
        if all("label" in row for row in rows):
            batch["labels"] = torch.tensor([int(row["label"]) for row in rows], dtype=torch.long)
        if all("index" in row for row in rows):
            batch["indices"] = torch.tensor([int(row["index"]) for row in rows], dtype=torch.long)
        return batch

    def flat_views(self, batch: dict[str, Any]) -> tuple[Any, torch.Tensor | None, tuple[int, int]]:
        """The batch's views as one flat, view-major batch (all first views, then all second views...):
        ``(values, attention_mask or None, (rows, views))``, ready for :func:`encode` or a :class:`MomentumTarget`."""
        if self.modality == "text":
            return batch["features"], None, (int(batch["num_rows"]), int(batch["num_views"]))
        values = batch[self.input_key]
        ndims, expected = VIEW_SHAPES[self.modality]
        if values.ndim not in ndims or values.shape[1] < self.min_views:
            expected = expected.replace("views", f"views >= {self.min_views}")
            raise ValueError(f"{self.name}: {self.input_key} must be {expected}, got {list(values.shape)}")
        rows, views = values.shape[:2]

        def flat(x: torch.Tensor) -> torch.Tensor:
            return x.transpose(0, 1).reshape(rows * views, *x.shape[2:])

        mask = batch.get("attention_mask")
        return flat(values), None if mask is None else flat(mask), (rows, views)

    @staticmethod
    def unflat(values: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
        """View-major ``[V * B, d]`` -> ``[B, V, d]``."""
        rows, views = shape
        return values.reshape(views, rows, -1).transpose(0, 1)

    def features(self, values: Any, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Backbone features ``[N, d]`` of a flat batch of ``N`` views (:func:`encode`)."""
        return encode(self.encoder, self.modality, values, attention_mask)

    def projections(self, batch: dict[str, Any], head: nn.Module) -> torch.Tensor:
        """``head(f(view))`` for every view of the batch, ``[B, V, d]`` (all ``B x V`` views in one pass, so
        batch-norm statistics cover every view)."""
        values, mask, shape = self.flat_views(batch)
        return self.unflat(head(self.features(values, mask)), shape)


def normalised_std(projections: torch.Tensor) -> torch.Tensor:
    """The collapse check of SimSiam (Chen & He 2021, Sec. 4.1): the std over samples of the L2-normalised
    projections, averaged over dimensions (a 0-dim tensor on the projections' device). About ``1 / sqrt(d)`` for
    well spread projections, 0 when collapsed."""
    unit = torch.nn.functional.normalize(projections.detach().float().reshape(-1, projections.shape[-1]), dim=-1)
    return unit.std(dim=0).mean() if unit.shape[0] > 1 else unit.new_zeros(())


class ProjectedViews(ViewsMethod):
    """Backbone + projection head, and a loss between the projections of every pair of views, averaged over the
    ``V (V - 1) / 2`` pairs: SimCLR's NT-Xent, Barlow Twins, VICReg. Subclasses define :meth:`pair_loss`.

    Args:
        encoder: the backbone, kept after training.
        head: the projection head (training only; dropped at export).
        modality: the backbone's modality (default: from its type).
    """

    def __init__(self, encoder: nn.Module, head: nn.Module, *, modality: str | None = None) -> None:
        super().__init__(encoder, modality=modality)
        self.head = head

    def embed(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """``{"projections": [B, V, d]}``: the head's output for every view of every example (not normalised)."""
        return {"projections": self.projections(batch, self.head)}

    def pair_loss(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """The loss between the projections of two views ``[B, d]``, ``b[k]`` the positive of ``a[k]``."""
        raise NotImplementedError

    def loss(self, embeddings: dict[str, torch.Tensor], batch: dict[str, Any]) -> LossOutput:
        projections = embeddings["projections"]
        pairs = list(combinations(range(projections.shape[1]), 2))
        value = sum(self.pair_loss(projections[:, a], projections[:, b]) for a, b in pairs) / len(pairs)
        with torch.no_grad():
            unit = torch.nn.functional.normalize(projections.detach().float(), dim=-1)
            positive = torch.stack([(unit[:, a] * unit[:, b]).sum(-1).mean() for a, b in pairs]).mean()
        metrics = {"positive_cosine": positive, "projection_std": normalised_std(projections)}
        return LossOutput(value, metrics)
