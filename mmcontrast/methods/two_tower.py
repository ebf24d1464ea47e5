"""Two towers: any two modalities embedded into one space, matching pairs aligned by symmetric InfoNCE or SigLIP.

One method for every paired-modality model: image-text (CLIP, :class:`mmcontrast.methods.clip.CLIP`),
audio-text (CLAP: an audio tower + a text tower), video-text and audio-video; what differs between them is only
which two towers it holds. Each tower's features go through a linear projection (no bias) to a shared space
and are L2-normalised (towers that already end in a projection, as open_clip's do, are used as they are:
``project=False``); the loss is the symmetric InfoNCE of the shared core over the batch (every other row's
second-modality input is a negative for a row's first-modality input and vice versa):

    L = 1/2 [ CE(s * A B^T, diag) + CE(s * B A^T, diag) ],   s = exp(t) clamped to [1, 100], t learnable,

with ``A``, ``B`` the normalised embeddings of the two towers and ``t`` initialised at log(1 / 0.07). Pairs
known to match (same class label, or the same caption) are masked out of each other's negatives. A *locked*
tower (LiT) is frozen (a pretrained encoder, in eval mode) and only the other side and the projections learn.

With ``loss="siglip"`` the loss is SigLIP's sigmoid loss of the shared core
(:func:`~mmcontrast.losses.sigmoid_loss`): every pair ``(i, j)`` of the batch is its own binary classification,
positive on the diagonal,

    L = -1/N sum_ij log sigmoid(z_ij (s * a_i . b_j + b)),   z_ii = 1, z_ij = -1 (i != j),

with a learnable scale ``s = exp(t)`` (clamped to [1, 100]) initialised at 10 (``t = log 10``) and a learnable
bias ``b`` (``logit_bias``) initialised at -10, as in the paper. The sigmoid loss has no label mask: every other
row is a negative, whatever ``mask_positives`` says. The bias is a constant shift of every logit, so rankings
and zero-shot predictions (an argmax, or a softmax over classes) do not depend on it.

A tower is any module with the small :class:`Tower` interface the modality adapters already have
(``embedding_dim``, ``preprocess(raw examples) -> tensors`` run in the collator, ``forward(tensors) -> [B, d]``):
``modalities.image.ImageEncoder``, ``modalities.text.TextEncoder``, ``modalities.open_clip_towers
.OpenClipTextEncoder``, and the audio (and later video) adapters.

References:
    Radford et al., "Learning Transferable Visual Models From Natural Language Supervision", ICML 2021.
    Elizalde et al., "CLAP: Learning Audio Concepts From Natural Language Supervision", ICASSP 2023.
    Zhai et al., "LiT: Zero-Shot Transfer with Locked-image text Tuning", CVPR 2022.
    Zhai et al., "Sigmoid Loss for Language Image Pre-Training" (SigLIP), ICCV 2023.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, Literal, Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from accelerate.utils import send_to_device
from torch import nn

from mmcontrast.losses import LogitScale, info_nce, sigmoid_loss
from mmcontrast.methods.base import LossOutput, Method

TowerInputs = torch.Tensor | dict[str, torch.Tensor]
TwoTowerLoss = Literal["info_nce", "siglip"]
# Initial logit scale of each loss when none is given: CLIP's 1 / 0.07, SigLIP's 10.
DEFAULT_SCALES: dict[str, float] = {"info_nce": 1 / 0.07, "siglip": 10.0}
SIGLIP_BIAS_INIT = -10.0

# Attribute and batch names that differ from the generic `{modality}_projection` / `{modality}`: they follow
# transformers' CLIPModel (`visual_projection`, `pixel_values`), so CLIP's state-dict keys and batches stay as
# they always were and the transformers exports copy the projections by the same names.
PROJECTION_NAMES = {"image": "visual_projection"}
BATCH_KEYS = {"image": "pixel_values"}
# Row columns that feed a tower, when not the modality's own name: paired data calls its text `caption`.
ROW_COLUMNS = {"text": "caption"}


@runtime_checkable
class Tower(Protocol):
    """What a two-tower method needs of a tower (a modality adapter).

    Attributes:
        embedding_dim: size of the tower's output ``[B, embedding_dim]``.
    """

    embedding_dim: int

    def preprocess(self, examples: Sequence[Any]) -> TowerInputs:
        """Raw examples of the modality (PIL images, strings, waveforms...) -> a batch of tensors."""
        ...

    def __call__(self, inputs: TowerInputs) -> torch.Tensor:
        """The preprocessed batch -> ``[B, embedding_dim]`` features."""
        ...


def stable_hash(text: str) -> int:
    """A hash of a text, the same in every process (Python's ``hash`` is salted per process), kept apart from
    small class labels."""
    return (int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little") >> 2) + 2**32


class TwoTower(Method):
    """Two towers (any two modalities) + projections + a learnable logit scale (and bias, for SigLIP).

    Each tower is held as ``{modality}_encoder`` and its projection as ``{modality}_projection`` (the image's as
    ``visual_projection``); embeddings are returned under the modality names, and a batch holds each tower's
    inputs under the modality name (the image's under ``pixel_values``).

    Args:
        towers: ``{modality: tower}`` for exactly two modalities, in loss order (e.g. ``{"image": ..., "text": ...}``,
            ``{"audio": ..., "text": ...}``); each tower follows :class:`Tower`.
        embed_dim: size of the shared embedding space.
        logit_scale_init: initial scale (1 / temperature); None: the loss's own (1 / 0.07 for ``info_nce``, 10
            for ``siglip``).
        locked: modalities whose tower is frozen (LiT), e.g. ``("text",)``.
        gather: use every process's pairs as negatives (exact cross-device loss).
        project: add the linear projections; False when both towers already project to ``embed_dim``.
        mask_positives: rows known to match (the same class label, or the same ``duplicates`` value) are not
            negatives of each other; False makes every other row of the batch a negative, as CLIP and open_clip do.
            ``info_nce`` only: SigLIP's sigmoid loss makes every other row a negative.
        columns: the row column that feeds each tower (default: ``caption`` for text, else the modality name).
        duplicates: the row column whose equal values mark rows as positives of each other when a row has no
            ``label`` (default: the text tower's column, if there is a text tower).
        loss: ``info_nce`` (symmetric InfoNCE, CLIP) or ``siglip`` (sigmoid loss with a learnable bias).
        logit_bias_init: initial bias of the ``siglip`` logits (SigLIP: -10).
    """

    def __init__(
        self,
        towers: Mapping[str, nn.Module],
        embed_dim: int = 512,
        *,
        logit_scale_init: float | None = None,
        locked: Collection[str] = (),
        gather: bool = True,
        project: bool = True,
        mask_positives: bool = True,
        columns: Mapping[str, str] | None = None,
        duplicates: str | None = None,
        loss: TwoTowerLoss = "info_nce",
        logit_bias_init: float = SIGLIP_BIAS_INIT,
    ) -> None:
        super().__init__()
        if loss not in DEFAULT_SCALES:
            raise ValueError(f"{type(self).__name__}: loss must be one of {list(DEFAULT_SCALES)}, got {loss!r}")
        modalities = tuple(towers)
        if len(modalities) != 2:
            raise ValueError(f"{type(self).__name__} needs exactly two towers, got {list(modalities)}")
        unknown = set(locked) - set(modalities)
        if unknown:
            raise ValueError(f"locked towers {sorted(unknown)} are not among the towers {list(modalities)}")
        for name, tower in towers.items():
            if not isinstance(tower, Tower):
                raise TypeError(
                    f"the {name} tower ({type(tower).__name__}) needs embedding_dim, preprocess and forward"
                )
        self.modalities = modalities
        for name in modalities:
            setattr(self, f"{name}_encoder", towers[name])
        if project:
            for name in modalities:
                projection = nn.Linear(towers[name].embedding_dim, embed_dim, bias=False)
                setattr(self, self.projection_name(name), projection)
        else:
            dims = {name: towers[name].embedding_dim for name in modalities}
            if set(dims.values()) != {embed_dim}:
                raise ValueError(
                    f"{type(self).__name__}(project=False) needs both towers to output embed_dim={embed_dim}, "
                    f"got {dims}"
                )
            for name in modalities:
                setattr(self, self.projection_name(name), nn.Identity())
        scale_init = DEFAULT_SCALES[loss] if logit_scale_init is None else logit_scale_init
        self.logit_scale = LogitScale(scale_init, learnable=True, max_scale=100.0)
        self.loss_name = loss
        if loss == "siglip":  # a parameter: trained, checkpointed, and saved with the weights
            self.logit_bias = nn.Parameter(torch.tensor(float(logit_bias_init)))
        self.locked = frozenset(locked)
        self.gather = gather
        self.mask_positives = mask_positives
        self.columns = {name: (columns or {}).get(name, ROW_COLUMNS.get(name, name)) for name in modalities}
        self.duplicates = duplicates if duplicates is not None else self.columns.get("text")
        for name in self.locked:
            towers[name].requires_grad_(False)
            towers[name].eval()

    @staticmethod
    def projection_name(modality: str) -> str:
        """The attribute holding a modality's projection (``visual_projection`` for images, as in CLIPModel)."""
        return PROJECTION_NAMES.get(modality, f"{modality}_projection")

    @staticmethod
    def batch_key(modality: str) -> str:
        """The key of a modality's tower inputs in a collated batch (``pixel_values`` for images)."""
        return BATCH_KEYS.get(modality, modality)

    def tower(self, modality: str) -> nn.Module:
        """The encoder of ``modality``."""
        if modality not in self.modalities:
            raise KeyError(f"{type(self).__name__} has no {modality} tower (towers: {list(self.modalities)})")
        return getattr(self, f"{modality}_encoder")

    def projection(self, modality: str) -> nn.Module:
        """The projection of ``modality`` to the shared space (``nn.Identity`` with ``project=False``)."""
        return getattr(self, self.projection_name(modality))

    def train(self, mode: bool = True) -> TwoTower:
        super().train(mode)
        for name in self.locked:
            self.tower(name).eval()
        return self

    def collate(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        batch: dict[str, Any] = {
            self.batch_key(name): self.tower(name).preprocess([row[self.columns[name]] for row in rows])
            for name in self.modalities
        }
        if self.mask_positives and self.loss_name == "info_nce":  # rows of one class / caption: not negatives
            if self.duplicates is not None:
                ids = [row["label"] if "label" in row else stable_hash(str(row[self.duplicates])) for row in rows]
                batch["positive_ids"] = torch.tensor(ids, dtype=torch.long)
            elif rows and all("label" in row for row in rows):
                batch["positive_ids"] = torch.tensor([row["label"] for row in rows], dtype=torch.long)
        return batch

    def embed_tower(self, modality: str, inputs: TowerInputs) -> torch.Tensor:
        """Normalised embeddings ``[B, embed_dim]`` of one tower's preprocessed inputs."""
        if modality in self.locked:
            with torch.no_grad():
                hidden = self.tower(modality)(inputs)
        else:
            hidden = self.tower(modality)(inputs)
        return F.normalize(self.projection(modality)(hidden), dim=-1)

    def embed(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        return {name: self.embed_tower(name, batch[self.batch_key(name)]) for name in self.modalities}

    def loss(self, embeddings: dict[str, torch.Tensor], batch: dict[str, Any]) -> LossOutput:
        scale = self.logit_scale()
        first, second = self.modalities
        if self.loss_name == "siglip":
            value = sigmoid_loss(
                embeddings[first],
                embeddings[second],
                scale=scale,
                bias=self.logit_bias,
                normalize=False,
                gather=self.gather,
            )
            metrics = {"logit_scale": scale.detach(), "logit_bias": self.logit_bias.detach()}
            return LossOutput(value, metrics)
        value = info_nce(
            embeddings[first],
            embeddings[second],
            scale=scale,
            symmetric=True,
            normalize=False,
            labels=batch.get("positive_ids"),
            gather=self.gather,
        )
        return LossOutput(value, {"logit_scale": scale.detach()})

    @torch.no_grad()
    def encode(self, modality: str, items: Sequence[Any], batch_size: int = 128) -> torch.Tensor:
        """Embed raw examples of ``modality`` for evaluation (eval mode, no gradient, fp32 on the CPU)."""
        tower = self.tower(modality)
        return self._encode(items, batch_size, tower.preprocess, lambda inputs: self.embed_tower(modality, inputs))

    def encode_texts(self, texts: Sequence[str], batch_size: int = 256) -> torch.Tensor:
        """Normalised embeddings of texts (the ``text`` tower; eval mode, no gradient, fp32 on the CPU)."""
        return self.encode("text", texts, batch_size)

    def _encode(
        self,
        items: Sequence[Any],
        batch_size: int,
        preprocess: Callable[[Sequence[Any]], TowerInputs],
        embed: Callable[[TowerInputs], torch.Tensor],
    ) -> torch.Tensor:
        was_training = self.training
        self.eval()
        device = self.logit_scale.log_scale.device
        chunks = []
        for start in range(0, len(items), batch_size):
            inputs = send_to_device(preprocess(items[start : start + batch_size]), device)  # tensors, nested dicts
            chunks.append(embed(inputs).float().cpu())
        self.train(was_training)
        return torch.cat(chunks)
