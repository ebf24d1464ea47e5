"""Semantic textual similarity: Spearman and Pearson correlation of cosine similarity with gold scores."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from scipy.stats import pearsonr, spearmanr

from mmcontrast.evaluation.sources import evaluation_table

Encode = Callable[[Sequence[str]], torch.Tensor]


def sts_metrics(embeddings1: torch.Tensor, embeddings2: torch.Tensor, scores: Sequence[float]) -> dict[str, float]:
    """``spearman_cosine`` and ``pearson_cosine`` of row-wise cosine similarity against ``scores``."""
    if embeddings1.shape != embeddings2.shape or embeddings1.shape[0] != len(scores):
        raise ValueError(
            f"STS needs one score per pair: got {tuple(embeddings1.shape)} and {tuple(embeddings2.shape)} "
            f"embeddings for {len(scores)} scores"
        )
    cosine = F.cosine_similarity(embeddings1.double(), embeddings2.double(), dim=-1).numpy()
    return {
        "spearman_cosine": float(spearmanr(scores, cosine).statistic),
        "pearson_cosine": float(pearsonr(scores, cosine).statistic),
    }


class STSEvaluator:
    """Evaluate an encoder on scored sentence pairs.

    Args:
        sentences1, sentences2: the pairs.
        scores: gold similarity per pair (any scale: correlations are scale-free).
        batch_size: texts per encoder call.
    """

    def __init__(
        self,
        sentences1: Sequence[str],
        sentences2: Sequence[str],
        scores: Sequence[float],
        batch_size: int = 64,
        show_progress: bool = False,
    ) -> None:
        self.sentences1, self.sentences2, self.scores = list(sentences1), list(sentences2), list(scores)
        self.batch_size = batch_size
        self.show_progress = show_progress

    @classmethod
    def from_file(
        cls,
        source: str,
        *,
        format: str = "auto",
        columns: Sequence[str] = ("sentence1", "sentence2"),
        score_column: str = "score",
        limit: int | None = None,
        name: str = "STS data",
        **kwargs,
    ) -> STSEvaluator:
        """Read pairs and scores from a table (``format="stsb"`` for the STS Benchmark TSV files, detected when
        ``auto``); ``name`` says what gave ``source`` (`--data`, `eval.sts`) in errors."""
        if format == "auto" and source.endswith((".csv", ".tsv")) and Path(source).is_file():
            format = "stsb" if _looks_like_stsb(source, name) else format
        hint = (
            f"An STS table has the columns {', '.join(columns)} and {score_column}, or is an STS Benchmark TSV "
            "file (headerless: genre, file, year, id, score, sentence1, sentence2)"
        )
        table = evaluation_table(
            source,
            name=name,
            columns=columns,
            columns_hint=hint,
            score_column=score_column,
            format=format,  # type: ignore[arg-type]
            limit=limit,
        )
        return cls(table[columns[0]], table[columns[1]], table[score_column], **kwargs)

    def __call__(self, encode: Encode) -> dict[str, float]:
        """Metrics for ``encode`` (texts -> [N, d] embeddings)."""
        unique = list(dict.fromkeys(self.sentences1 + self.sentences2))
        embeddings = encode(unique)
        index = {text: i for i, text in enumerate(unique)}
        first = embeddings[[index[t] for t in self.sentences1]]
        second = embeddings[[index[t] for t in self.sentences2]]
        return sts_metrics(first, second, self.scores)


def _looks_like_stsb(source: str, name: str) -> bool:
    """The STS Benchmark files have no header: their first line has a numeric fifth tab-separated field."""
    try:
        with open(source, encoding="utf-8") as handle:
            fields = handle.readline().rstrip("\n").split("\t")
    except UnicodeDecodeError as error:
        raise ValueError(f"{name} '{source}': line 1 is not UTF-8 text ({error.reason}); save it as UTF-8") from None
    if len(fields) < 7:
        return False
    try:
        float(fields[4])
    except ValueError:
        return False
    return True
