"""Evaluation: STS correlation, retrieval metrics, zero-shot classification, kNN and linear probes, plots."""

from mmcontrast.evaluation.probe import knn_accuracy, linear_probe_accuracy
from mmcontrast.evaluation.retrieval import RetrievalEvaluator, retrieval_metrics
from mmcontrast.evaluation.sts import STSEvaluator, sts_metrics

__all__ = [
    "RetrievalEvaluator",
    "STSEvaluator",
    "knn_accuracy",
    "linear_probe_accuracy",
    "retrieval_metrics",
    "sts_metrics",
]
