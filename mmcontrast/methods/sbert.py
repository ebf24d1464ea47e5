"""Sentence-BERT: siamese (shared-weight) text encoder trained on pairs, triplets or scored pairs.

Every text column of a row goes through the same :class:`~mmcontrast.modalities.TextEncoder`, in one forward
pass over all columns. The loss decides what the columns mean:

- ``info_nce`` - (anchor, positive[, negative...]) rows, in-batch negatives plus hard-negative columns
  (MultipleNegativesRankingLoss; ``symmetric`` adds positive->anchor);
- ``cosine_similarity`` / ``cosent`` - (sentence1, sentence2, score) rows (STS-style regression / ranking);
- ``pair_margin`` - (sentence1, sentence2, label in {0, 1}) rows (Hadsell et al. contrastive loss);
- ``triplet`` - (text, label) rows, triplets mined in the batch (batch-all, batch-hard, semi-hard).

With ``matryoshka_dims`` the loss is applied to each nested prefix of the embeddings and the results summed
(:mod:`mmcontrast.losses.matryoshka`), so the trained model can be truncated to any of those dimensions. A column
can carry a prompt (``"query: "``), prepended to its texts before tokenisation, as sentence-transformers does.

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
from mmcontrast.losses.matryoshka import check_matryoshka_dims, matryoshka_loss
from mmcontrast.methods.base import LossOutput, Method
from mmcontrast.modalities.text import TextEncoder
from mmcontrast.typed_config import PositiveFloat, PositiveInt

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
        matryoshka_dims: Matryoshka training: apply the loss also to the first N dimensions of the embeddings
            (each prefix L2-normalised) for each N here, largest first (e.g. [384, 192, 96, 48]), and sum; the
            model can then be truncated to those dimensions. null: the full embedding only.
        matryoshka_weights: weight of each of `matryoshka_dims` in the sum (default 1 each).
    """

    name: SbertLoss = "info_nce"
    scale: PositiveFloat = 20.0
    symmetric: bool = False
    margin: PositiveFloat | None = None
    mining: Literal["batch_all", "batch_hard", "semi_hard"] = "batch_hard"
    distance: Literal["cosine", "euclidean"] = "cosine"
    gather: bool = True
    matryoshka_dims: list[PositiveInt] | None = None
    matryoshka_weights: list[PositiveFloat] | None = None


class SentenceBERT(Method):
    """Siamese text encoder over the ``text_columns`` of each row.

    Args:
        encoder: the shared text encoder.
        text_columns: row columns holding texts, in order (anchor, positive, negatives...).
        loss: loss settings.
        score_column: column with the pair score / label (scored losses only).
        score_max: scores are divided by this (5.0 maps STS-B's 0..5 to 0..1).
        prompts: column -> text prepended to that column's texts (e.g. ``{"anchor": "query: "}``).
    """

    def __init__(
        self,
        encoder: TextEncoder,
        text_columns: list[str],
        loss: SbertLossConfig,
        score_column: str | None = None,
        score_max: float = 1.0,
        prompts: dict[str, str] | None = None,
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
        if loss.matryoshka_dims is not None:
            check_matryoshka_dims(
                loss.matryoshka_dims,
                loss.matryoshka_weights,
                encoder.embedding_dim,
                name="loss.matryoshka_dims",
                weights_name="loss.matryoshka_weights",
            )
        elif loss.matryoshka_weights is not None:
            raise ValueError("loss.matryoshka_weights is set without loss.matryoshka_dims; set both or neither")
        unknown = sorted(set(prompts or {}) - set(text_columns))
        if unknown:
            raise ValueError(f"prompts for {unknown}, which are not among the text columns {list(text_columns)}")
        self.encoder = encoder
        self.text_columns = list(text_columns)
        self.loss_config = loss
        self.score_column = score_column if needs_score else None
        self.score_max = score_max
        self.prompts = dict(prompts or {})

    def collate(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        texts = [self.prompts.get(column, "") + row[column] for column in self.text_columns for row in rows]
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
        columns = [embeddings[c] for c in self.text_columns]
        dims = self.loss_config.matryoshka_dims
        if dims is None:
            return LossOutput(self._loss(columns, batch))
        value = matryoshka_loss(
            lambda *truncated: self._loss(list(truncated), batch), columns, dims, self.loss_config.matryoshka_weights
        )
        return LossOutput(value)

    def _loss(self, columns: list[torch.Tensor], batch: dict[str, Any]) -> torch.Tensor:
        """The configured loss of one batch's column embeddings, in the order of ``text_columns``."""
        config = self.loss_config
        if config.name == "info_nce":
            negatives = torch.stack(columns[2:], dim=1) if len(columns) > 2 else None
            return info_nce(
                columns[0], columns[1], negatives, scale=config.scale, symmetric=config.symmetric, gather=config.gather
            )
        if config.name == "cosine_similarity":
            return cosine_similarity_loss(columns[0], columns[1], batch["scores"])
        if config.name == "cosent":
            return cosent_loss(columns[0], columns[1], batch["scores"], scale=config.scale)
        if config.name == "pair_margin":
            margin = 0.5 if config.margin is None else config.margin
            return pair_margin_loss(columns[0], columns[1], batch["scores"], margin=margin, distance=config.distance)
        margin = 5.0 if config.margin is None else config.margin
        return triplet_margin_loss(
            columns[0],
            batch["scores"].long(),
            margin=margin,
            mining=config.mining,
            distance=config.distance,
            gather=config.gather,
        )


class MultiSourceSentenceBERT(Method):
    """One text encoder trained on several datasets at once, each with its own columns, prompts and loss.

    Rows come as ``(source index, row)`` (:class:`~mmcontrast.data.multi_source.MultiSourceDataset`) and every
    batch from one source (:class:`~mmcontrast.data.samplers.MultiSourceBatchSampler`): a batch is collated,
    embedded and scored by that source's :class:`SentenceBERT`. The sources share one encoder, registered here
    once (the per-source methods are plain attributes, so its weights are held and saved once).

    Args:
        sources: name -> the source's method; all built on the same encoder.
    """

    def __init__(self, sources: dict[str, SentenceBERT]) -> None:
        super().__init__()
        if not sources:
            raise ValueError("MultiSourceSentenceBERT needs at least one source")
        encoders = {id(method.encoder) for method in sources.values()}
        if len(encoders) != 1:
            raise ValueError("the sources' methods must share one encoder")
        self.encoder = next(iter(sources.values())).encoder
        self.names = list(sources)
        self._sources = list(sources.values())  # not submodules: the encoder is registered once, above

    def source(self, batch: dict[str, Any]) -> SentenceBERT:
        """The method of the source a collated batch comes from."""
        return self._sources[batch["source"]]

    def collate(self, rows: list[tuple[int, dict[str, Any]]]) -> dict[str, Any]:
        sources = {source for source, _ in rows}
        if len(sources) != 1:
            names = sorted(self.names[source] for source in sources)
            raise ValueError(f"a batch mixes rows of the sources {names}; each batch must come from one source")
        source = sources.pop()
        return {**self._sources[source].collate([row for _, row in rows]), "source": source}

    def embed(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        return self.source(batch).embed(batch)

    def loss(self, embeddings: dict[str, torch.Tensor], batch: dict[str, Any]) -> LossOutput:
        return self.source(batch).loss(embeddings, batch)
