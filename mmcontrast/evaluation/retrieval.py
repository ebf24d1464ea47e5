"""Retrieval metrics over embeddings: recall@k, hit@k, MRR@10 and nDCG@10 with cosine similarity.

Two definitions of "recall at k" are in use, and they differ when a query has several relevant documents:

- recall@k (information retrieval, sentence-transformers' ``InformationRetrievalEvaluator``): the fraction of a
  query's relevant documents found in its top k, averaged over queries. A query with 4 relevant documents and 1 of
  them in its top 5 scores 0.25 at k=5.
- hit@k (open_clip's and CLIP's "recall@k", also called success@k or top-k accuracy): 1 if at least one relevant
  document is in the query's top k, else 0, averaged over queries. The same query scores 1.0 at k=5.

With exactly one relevant document per query the two are equal. MRR@10 is the reciprocal rank of the first relevant
document within the top 10 (0 if none); nDCG@10 uses binary relevance: the sum over relevant hits of
1/log2(rank + 1), divided by the ideal sum.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from mmcontrast.data.tables import TableFormat
from mmcontrast.evaluation.sources import evaluation_table

Encode = Callable[[Sequence[str]], torch.Tensor]


def retrieval_metrics(
    queries: torch.Tensor,
    corpus: torch.Tensor,
    relevant: Sequence[set[int]],
    ks: Sequence[int] = (1, 5, 10),
    chunk_size: int = 1024,
) -> dict[str, float]:
    """Metrics of ranking ``corpus`` rows by cosine similarity to each query row: ``recall@k`` and ``hit@k`` for
    each ``k`` in ``ks``, ``mrr@10`` and ``ndcg@10`` (definitions in the module docstring)."""
    if queries.shape[0] != len(relevant):
        raise ValueError(f"{queries.shape[0]} queries but {len(relevant)} sets of relevant documents")
    if any(not r for r in relevant):
        raise ValueError("every query needs at least one relevant document")
    depth = min(max([*ks, 10]), corpus.shape[0])
    corpus = F.normalize(corpus.float(), dim=-1)
    totals = {f"recall@{k}": 0.0 for k in ks} | {f"hit@{k}": 0.0 for k in ks} | {"mrr@10": 0.0, "ndcg@10": 0.0}
    for start in range(0, queries.shape[0], chunk_size):
        block = F.normalize(queries[start : start + chunk_size].float(), dim=-1)
        top = (block @ corpus.T).topk(depth, dim=1).indices.tolist()
        for offset, ranking in enumerate(top):
            wanted = relevant[start + offset]
            hits = [doc in wanted for doc in ranking]
            for k in ks:
                totals[f"recall@{k}"] += sum(hits[:k]) / len(wanted)
                totals[f"hit@{k}"] += float(any(hits[:k]))
            first = next((rank for rank, hit in enumerate(hits[:10], 1) if hit), None)
            totals["mrr@10"] += 1.0 / first if first else 0.0
            dcg = sum(1.0 / math.log2(rank + 1) for rank, hit in enumerate(hits[:10], 1) if hit)
            ideal = sum(1.0 / math.log2(rank + 1) for rank in range(1, min(len(wanted), 10) + 1))
            totals["ndcg@10"] += dcg / ideal
    return {name: value / queries.shape[0] for name, value in totals.items()}


class RetrievalEvaluator:
    """Retrieve each query's relevant documents from a corpus.

    Args:
        queries: query texts.
        corpus: document texts.
        relevant: for each query, the indices of its relevant documents in ``corpus``.
    """

    def __init__(
        self, queries: Sequence[str], corpus: Sequence[str], relevant: Sequence[set[int]], ks=(1, 5, 10)
    ) -> None:
        self.queries, self.corpus, self.relevant, self.ks = list(queries), list(corpus), list(relevant), ks

    @classmethod
    def from_pairs(
        cls,
        source: str,
        *,
        columns: Sequence[str] = ("anchor", "positive"),
        format: TableFormat = "auto",
        min_score: float | None = None,
        limit: int | None = None,
        name: str = "retrieval data",
        columns_name: str = "columns",
    ) -> RetrievalEvaluator:
        """Queries from the first column; the corpus is every distinct text of the second; a query's
        relevant documents are the texts paired with it. Errors name ``source`` by ``name`` (`--data`,
        `eval.retrieval`) and the column setting by ``columns_name`` (`--columns`, `eval.retrieval_columns`)."""
        table = evaluation_table(
            source,
            name=name,
            columns=columns,
            columns_hint=f"Set {columns_name} to the query and document columns of your data.",
            format=format,
            limit=limit,
            min_score=min_score,
        )
        corpus: dict[str, int] = {}
        relevant: dict[str, set[int]] = {}
        for query, document in zip(table[columns[0]], table[columns[1]], strict=True):
            relevant.setdefault(query, set()).add(corpus.setdefault(document, len(corpus)))
        return cls(list(relevant), list(corpus), list(relevant.values()))

    def __call__(self, encode: Encode) -> dict[str, float]:
        return retrieval_metrics(encode(self.queries), encode(self.corpus), self.relevant, self.ks)
