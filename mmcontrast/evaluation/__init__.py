"""Evaluation: STS correlation, retrieval metrics (and later zero-shot, linear probe, kNN, plots)."""

from mmcontrast.evaluation.retrieval import RetrievalEvaluator, retrieval_metrics
from mmcontrast.evaluation.sts import STSEvaluator, sts_metrics

__all__ = ["RetrievalEvaluator", "STSEvaluator", "retrieval_metrics", "sts_metrics"]
