"""Modality adapters: ``preprocess(examples) -> tensors`` and ``forward(tensors) -> embeddings``."""

from mmcontrast.modalities.text import TextEncoder

__all__ = ["TextEncoder"]
