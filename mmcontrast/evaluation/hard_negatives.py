"""Hard negatives mined from a corpus with a text encoder: (anchor, positive) pairs become (anchor, positive,
negative) triplets or (anchor, positive, negative_1, ..., negative_n) rows.

For each distinct anchor, every corpus text is scored by the cosine similarity of its embedding to the anchor's, and
ranked, most similar first. Never candidates: the anchor's own positives (every text any row pairs with that anchor)
and the anchor's own text; the corpus is de-duplicated, so a text is one candidate however often it occurs. Then,
in this order (the options of sentence-transformers' ``mine_hard_negatives``):

- ``range_min``, ``range_max``: only ranks ``range_min <= rank < range_max`` of that ranking are candidates (rank 0 is
  the most similar text that is not excluded); skipping the first ranks avoids unlabelled positives, bounding the
  last bounds the work;
- ``max_score``: a candidate scoring above it is dropped (too close to the anchor to be a safe negative);
- ``margin``: a candidate scoring above ``positive - margin`` is dropped, where ``positive`` is the lowest score of
  the anchor's positives (a negative must score at least ``margin`` below every positive of its anchor);
- ``sampling``: ``top`` keeps the ``num_negatives`` highest-scoring candidates left, ``random`` draws
  ``num_negatives`` of them uniformly (seeded); negatives are listed most similar first.

An anchor left with fewer than ``num_negatives`` candidates gives the ones it has to triplets, and no row at all in
the n-tuple format (every row there has all ``num_negatives`` columns filled).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F

Encode = Callable[[Sequence[str]], torch.Tensor]
Sampling = Literal["top", "random"]
OutputFormat = Literal["triplet", "n-tuple"]


@dataclass
class MinedNegatives:
    """The negatives of each distinct anchor, with the scores they were chosen by.

    Attributes:
        pairs: the distinct (anchor, positive) pairs of the input, in input order.
        negatives: for each anchor, its negatives, most similar first.
        negative_scores: for each anchor, the cosine similarity of each negative to it.
        positive_scores: for each pair, the cosine similarity of the positive to the anchor.
        num_negatives: the negatives asked for per anchor.
        counts: how many texts and candidates each step saw or removed (for the summary).
    """

    pairs: list[tuple[str, str]]
    negatives: dict[str, list[str]]
    negative_scores: dict[str, list[float]]
    positive_scores: list[float]
    num_negatives: int
    counts: dict[str, int]

    def rows(self, output_format: OutputFormat, columns: Sequence[str] = ("anchor", "positive")) -> dict[str, list]:
        """The output table as columns: ``triplet``: one row per (pair, negative), the third column ``negative``;
        ``n-tuple``: one row per pair whose anchor has all its negatives, columns ``negative_1`` ... ``negative_n``."""
        anchor_column, positive_column = columns
        if output_format == "triplet":
            table: dict[str, list] = {anchor_column: [], positive_column: [], "negative": []}
            for anchor, positive in self.pairs:
                for negative in self.negatives[anchor]:
                    table[anchor_column].append(anchor)
                    table[positive_column].append(positive)
                    table["negative"].append(negative)
            return table
        if output_format != "n-tuple":
            raise ValueError(f"output format '{output_format}' is not one of triplet, n-tuple")
        names = [f"negative_{i}" for i in range(1, self.num_negatives + 1)]
        table = {anchor_column: [], positive_column: [], **{name: [] for name in names}}
        for anchor, positive in self.pairs:
            if len(self.negatives[anchor]) < self.num_negatives:
                continue
            table[anchor_column].append(anchor)
            table[positive_column].append(positive)
            for name, negative in zip(names, self.negatives[anchor], strict=True):
                table[name].append(negative)
        return table

    def summary(self, output_format: OutputFormat) -> dict[str, Any]:
        """Counts and mean scores: rows in and out, anchors short of negatives, candidates each filter removed."""
        rows_out = len(next(iter(self.rows(output_format).values())))
        scores = [score for anchor_scores in self.negative_scores.values() for score in anchor_scores]
        short = sum(len(found) < self.num_negatives for found in self.negatives.values())
        return {
            "rows_in": self.counts["rows_in"],
            "pairs": len(self.pairs),
            "anchors": len(self.negatives),
            "corpus": self.counts["corpus"],
            "rows_out": rows_out,
            "output_format": output_format,
            "anchors_short_of_negatives": short,
            "removed_by_margin": self.counts["removed_by_margin"],
            "removed_by_max_score": self.counts["removed_by_max_score"],
            "mean_positive_score": sum(self.positive_scores) / max(len(self.positive_scores), 1),
            "mean_negative_score": sum(scores) / len(scores) if scores else None,
        }


def mine_hard_negatives(
    anchors: Sequence[str],
    positives: Sequence[str],
    encode: Encode,
    *,
    corpus: Sequence[str] | None = None,
    num_negatives: int = 3,
    range_min: int = 0,
    range_max: int | None = None,
    max_score: float | None = None,
    margin: float | None = None,
    sampling: Sampling = "top",
    seed: int = 0,
    chunk_size: int = 256,
) -> MinedNegatives:
    """Mine ``num_negatives`` hard negatives per anchor of the (anchor, positive) rows (module docstring).

    Args:
        anchors, positives: the two text columns, one pair per row.
        encode: texts -> ``[n, d]`` embeddings (compared by cosine similarity).
        corpus: the candidate texts; default: the positives of all rows.
        num_negatives: negatives per anchor (at least 1).
        range_min, range_max: the ranks considered, ``range_min <= rank < range_max``; ``range_max=None``: all.
        max_score: drop candidates scoring above this.
        margin: drop candidates scoring above the anchor's lowest positive score minus this.
        sampling: ``top`` or ``random`` (seeded by ``seed``).
        chunk_size: anchors scored against the corpus at a time.
    """
    if len(anchors) != len(positives):
        raise ValueError(f"{len(anchors)} anchors but {len(positives)} positives")
    if num_negatives < 1:
        raise ValueError(f"num_negatives must be at least 1, got {num_negatives}")
    if range_min < 0:
        raise ValueError(f"range_min must be at least 0, got {range_min}")
    if range_max is not None and range_max - range_min < num_negatives:
        raise ValueError(
            f"range_min={range_min} and range_max={range_max} leave {range_max - range_min} ranks for "
            f"{num_negatives} negatives: lower range_min or raise range_max"
        )
    if sampling not in ("top", "random"):
        raise ValueError(f"sampling '{sampling}' is not one of top, random")
    pairs = list(dict.fromkeys(zip(anchors, positives, strict=True)))
    positives_of: dict[str, set[str]] = {}
    for anchor, positive in pairs:
        positives_of.setdefault(anchor, set()).add(positive)
    candidates = list(dict.fromkeys(corpus if corpus is not None else [positive for _, positive in pairs]))
    if not candidates:
        raise ValueError("the corpus has no texts to mine negatives from")
    documents = list(dict.fromkeys([*candidates, *(positive for _, positive in pairs)]))  # candidates come first
    position = {text: i for i, text in enumerate(documents)}
    unique_anchors = list(positives_of)
    anchor_embeddings = F.normalize(encode(unique_anchors).float(), dim=-1)
    document_embeddings = F.normalize(encode(documents).float(), dim=-1)

    rng = random.Random(seed)
    negatives: dict[str, list[str]] = {}
    negative_scores: dict[str, list[float]] = {}
    counts = {"rows_in": len(anchors), "corpus": len(candidates), "removed_by_max_score": 0, "removed_by_margin": 0}
    depth = len(candidates) if range_max is None else min(range_max, len(candidates))
    for start in range(0, len(unique_anchors), chunk_size):
        block = unique_anchors[start : start + chunk_size]
        scores = anchor_embeddings[start : start + chunk_size] @ document_embeddings.T
        candidate_scores = scores[:, : len(candidates)].clone()
        for row, anchor in enumerate(block):  # never the anchor's own positives, nor its own text
            own = [position.get(text, len(candidates)) for text in (*positives_of[anchor], anchor)]
            candidate_scores[row, [i for i in own if i < len(candidates)]] = -torch.inf
        ranked_scores, ranked = candidate_scores.topk(depth, dim=1)  # most similar first
        for row, anchor in enumerate(block):
            window_scores, window = ranked_scores[row, range_min:], ranked[row, range_min:]
            keep = window_scores > -torch.inf
            if margin is not None:
                lowest_positive = min(float(scores[row, position[text]]) for text in positives_of[anchor])
                passes = window_scores <= lowest_positive - margin
                counts["removed_by_margin"] += int((keep & ~passes).sum())
                keep &= passes
            if max_score is not None:
                passes = window_scores <= max_score
                counts["removed_by_max_score"] += int((keep & ~passes).sum())
                keep &= passes
            chosen = keep.nonzero().flatten().tolist()
            if sampling == "random" and len(chosen) > num_negatives:
                chosen = sorted(rng.sample(chosen, num_negatives))  # window order is score order
            chosen = chosen[:num_negatives]
            negatives[anchor] = [documents[int(window[j])] for j in chosen]
            negative_scores[anchor] = [float(window_scores[j]) for j in chosen]
    anchor_row = {anchor: i for i, anchor in enumerate(unique_anchors)}
    positive_scores = [
        float(anchor_embeddings[anchor_row[anchor]] @ document_embeddings[position[positive]])
        for anchor, positive in pairs
    ]
    return MinedNegatives(pairs, negatives, negative_scores, positive_scores, num_negatives, counts)


def save_table(table: dict[str, list], path: str | Path) -> Path:
    """Write a table of columns to ``path``, in the format its suffix names: ``.jsonl`` / ``.json`` (JSON lines),
    ``.csv`` or ``.parquet``; the folder is created."""
    import datasets

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".jsonl", ".json", ".csv", ".parquet"):
        raise ValueError(f"'{path}': give a file ending in .jsonl, .json, .csv or .parquet")
    path.parent.mkdir(parents=True, exist_ok=True)
    dataset = datasets.Dataset.from_dict(table)
    if suffix == ".csv":
        dataset.to_csv(path, index=False)
    elif suffix == ".parquet":
        dataset.to_parquet(path)
    else:
        dataset.to_json(path, lines=True, force_ascii=False)
    return path
