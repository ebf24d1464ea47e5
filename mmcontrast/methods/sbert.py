"""Sentence-BERT: siamese (shared-weight) text encoder trained on pairs, triplets or scored pairs.

Every text column of a row goes through the same :class:`~mmcontrast.modalities.TextEncoder`, in one forward
pass over all columns. The loss decides what the columns mean:

- ``info_nce`` - (anchor, positive[, negative...]) rows, in-batch negatives plus hard-negative columns
  (MultipleNegativesRankingLoss; ``symmetric`` adds positive->anchor);
- ``cosine_similarity`` / ``cosent`` - (sentence1, sentence2, score) rows (STS-style regression / ranking);
- ``pair_margin`` - (sentence1, sentence2, label in {0, 1}) rows (Hadsell et al. contrastive loss);
- ``triplet`` - (text, label) rows, triplets mined in the batch (batch-all, batch-hard, semi-hard).

Reference: Reimers & Gurevych, "Sentence-BERT: Sentence Embeddings using Siamese BERT-Networks", EMNLP 2019.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch

from mmcontrast.losses import (
    cosent_loss,
    cosine_similarity_loss,
    info_nce,
    pair_margin_loss,
    triplet_margin_loss,
)
from mmcontrast.methods.base import LossOutput, Method
from mmcontrast.modalities.text import TextEncoder
from mmcontrast.typed_config import PositiveFloat

SbertLoss = Literal["info_nce", "cosine_similarity", "cosent", "pair_margin", "triplet"]
SCORED_LOSSES = ("cosine_similarity", "cosent", "pair_margin", "triplet")


@dataclass
class SbertLossConfig:
    """Loss of the Sentence-BERT method.

    Attributes:
        name: ``info_nce`` for (anchor, positive[, negatives...]) rows; ``cosine_similarity`` or ``cosent``
            for scored pairs; ``pair_margin`` for pairs labelled 0/1; ``triplet`` for (text, class) rows.
        scale: similarity scale (1 / temperature) of ``info_nce`` and ``cosent``.
        symmetric: ``info_nce`` also from positives to anchors.
        margin: margin of ``pair_margin`` (default 0.5) and ``triplet`` (default 5.0).
        mining: triplet mining.
        distance: distance of ``pair_margin`` and ``triplet``.
        gather: with several processes, ``info_nce`` and ``triplet`` use every process's rows (exact
            cross-process negatives, gathered with gradient); no effect in a single process.
    """

    name: SbertLoss = "info_nce"
    scale: PositiveFloat = 20.0
    symmetric: bool = False
    margin: PositiveFloat | None = None
    mining: Literal["batch_all", "batch_hard", "semi_hard"] = "batch_hard"
    distance: Literal["cosine", "euclidean"] = "cosine"
    gather: bool = True


class SentenceBERT(Method):
    """Siamese text encoder over the ``text_columns`` of each row.

    Args:
        encoder: the shared text encoder.
        text_columns: row columns holding texts, in order (anchor, positive, negatives...).
        loss: loss settings.
        score_column: column with the pair score / label (scored losses only).
        score_max: scores are divided by this (5.0 maps STS-B's 0..5 to 0..1).
    """

    def __init__(
        self,
        encoder: TextEncoder,
        text_columns: list[str],
        loss: SbertLossConfig,
        score_column: str | None = None,
        score_max: float = 1.0,
    ) -> None:
        super().__init__()
        needs_score = loss.name in SCORED_LOSSES
        if needs_score and score_column is None:
            raise ValueError(f"loss '{loss.name}' needs a score or label column: set data.score_column")
        expected = {"triplet": (1, 1), "info_nce": (2, None)}.get(loss.name, (2, 2))
        low, high = expected
        if len(text_columns) < low or (high is not None and len(text_columns) > high):
            wanted = f"{low}" if low == high else f"at least {low}"
            raise ValueError(f"loss '{loss.name}' needs {wanted} text column(s) in data.columns, got {text_columns}")
        self.encoder = encoder
        self.text_columns = list(text_columns)
        self.loss_config = loss
        self.score_column = score_column if needs_score else None
        self.score_max = score_max

    def collate(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        texts = [row[column] for column in self.text_columns for row in rows]
        batch: dict[str, Any] = {"features": self.encoder.preprocess(texts), "num_rows": len(rows)}
        if self.score_column is not None:
            batch["scores"] = torch.tensor(
                [float(row[self.score_column]) / self.score_max for row in rows], dtype=torch.float32
            )
        return batch

    def embed(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        embeddings = self.encoder(batch["features"])
        return dict(zip(self.text_columns, embeddings.split(batch["num_rows"]), strict=True))

    def loss(self, embeddings: dict[str, torch.Tensor], batch: dict[str, Any]) -> LossOutput:
        config = self.loss_config
        columns = [embeddings[c] for c in self.text_columns]
        if config.name == "info_nce":
            negatives = torch.stack(columns[2:], dim=1) if len(columns) > 2 else None
            value = info_nce(
                columns[0], columns[1], negatives, scale=config.scale, symmetric=config.symmetric, gather=config.gather
            )
        elif config.name == "cosine_similarity":
            value = cosine_similarity_loss(columns[0], columns[1], batch["scores"])
        elif config.name == "cosent":
            value = cosent_loss(columns[0], columns[1], batch["scores"], scale=config.scale)
        elif config.name == "pair_margin":
            margin = 0.5 if config.margin is None else config.margin
            value = pair_margin_loss(columns[0], columns[1], batch["scores"], margin=margin, distance=config.distance)
        else:
            margin = 5.0 if config.margin is None else config.margin
            value = triplet_margin_loss(
                columns[0],
                batch["scores"].long(),
                margin=margin,
                mining=config.mining,
                distance=config.distance,
                gather=config.gather,
            )
        return LossOutput(value)
