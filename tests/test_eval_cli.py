"""`mmcontrast eval sts` agrees with sentence-transformers' EmbeddingSimilarityEvaluator; retrieval metrics
agree with a brute-force computation."""

from __future__ import annotations

import json
import math

import pytest
import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.evaluation import EmbeddingSimilarityEvaluator

from mmcontrast.cli import main
from mmcontrast.data.tables import load_table
from mmcontrast.evaluation.retrieval import retrieval_metrics


def test_eval_sts_matches_sentence_transformers(minilm_path, stsb_dir, capsys):
    dev = stsb_dir / "sts-dev.csv"
    table = load_table(str(dev), format="stsb")
    evaluator = EmbeddingSimilarityEvaluator(
        table["sentence1"], table["sentence2"], [s / 5 for s in table["score"]], name="sts-dev"
    )
    theirs = evaluator(SentenceTransformer(minilm_path, device="cpu"))
    assert main(["eval", "sts", "--model", minilm_path, "--data", str(dev)]) == 0
    printed = capsys.readouterr().out
    ours = json.loads(printed[printed.index("{") :])
    assert len(table) == 1500
    assert abs(ours["spearman_cosine"] - theirs["sts-dev_spearman_cosine"]) < 1e-4
    assert abs(ours["pearson_cosine"] - theirs["sts-dev_pearson_cosine"]) < 1e-4


def _brute_force(queries, corpus, relevant):
    scores = torch.nn.functional.normalize(queries, dim=-1) @ torch.nn.functional.normalize(corpus, dim=-1).T
    out = {"recall@1": 0.0, "recall@3": 0.0, "mrr@10": 0.0, "ndcg@10": 0.0}
    for q in range(len(queries)):
        ranking = sorted(range(len(corpus)), key=lambda d: -scores[q, d].item())
        for k in (1, 3):
            out[f"recall@{k}"] += len(set(ranking[:k]) & relevant[q]) / len(relevant[q])
        for rank, doc in enumerate(ranking[:10], 1):
            if doc in relevant[q]:
                out["mrr@10"] += 1 / rank
                break
        dcg = sum(1 / math.log2(r + 1) for r, d in enumerate(ranking[:10], 1) if d in relevant[q])
        idcg = sum(1 / math.log2(r + 1) for r in range(1, min(len(relevant[q]), 10) + 1))
        out["ndcg@10"] += dcg / idcg
    return {k: v / len(queries) for k, v in out.items()}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_retrieval_metrics_match_brute_force(seed):
    generator = torch.Generator().manual_seed(seed)
    queries, corpus = torch.randn(7, 5, generator=generator), torch.randn(15, 5, generator=generator)
    relevant = [{(3 * q) % 15, (3 * q + seed + 1) % 15} if q % 2 else {(5 * q) % 15} for q in range(7)]
    ours = retrieval_metrics(queries, corpus, relevant, ks=(1, 3), chunk_size=3)
    expected = _brute_force(queries, corpus, relevant)
    for name, value in expected.items():
        assert ours[name] == pytest.approx(value, abs=1e-9), name
