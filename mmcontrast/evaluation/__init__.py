"""Evaluation: STS correlation, retrieval metrics, zero-shot classification, kNN and linear probes, video alignment,
plots."""

from mmcontrast.evaluation.probe import knn_accuracy, linear_probe_accuracy
from mmcontrast.evaluation.retrieval import RetrievalEvaluator, retrieval_metrics
from mmcontrast.evaluation.sts import STSEvaluator, sts_metrics
from mmcontrast.evaluation.video_alignment import (
    alignment_error,
    clip_retrieval,
    kendall_tau,
    pairwise_alignment,
    pixel_features,
    video_alignment_report,
)

__all__ = [
    "RetrievalEvaluator",
    "STSEvaluator",
    "alignment_error",
    "clip_retrieval",
    "kendall_tau",
    "knn_accuracy",
    "linear_probe_accuracy",
    "pairwise_alignment",
    "pixel_features",
    "retrieval_metrics",
    "sts_metrics",
    "video_alignment_report",
]
