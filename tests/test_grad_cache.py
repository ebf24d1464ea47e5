"""Cached large batch (GradCache): the gradients equal those of the uncached whole batch (dropout off)."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers import ViTConfig, ViTModel

from mmcontrast.data.samplers import ShuffledBatchSampler
from mmcontrast.engine.trainer import Trainer, TrainingConfig
from mmcontrast.losses import nt_xent
from mmcontrast.methods.base import LossOutput, Method
from mmcontrast.methods.sbert import SbertLossConfig, SentenceBERT
from mmcontrast.modalities.text import TextEncoder


class TwoViewViT(Method):
    """A tiny ViT embedding two noisy views of each image, NT-Xent between the views."""

    def __init__(self) -> None:
        super().__init__()
        config = ViTConfig(
            image_size=16,
            patch_size=4,
            num_channels=3,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0,
        )
        self.backbone = ViTModel(config, add_pooling_layer=False)
        self.head = nn.Sequential(nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 16))

    def collate(self, rows):
        return {"view1": torch.stack([r[0] for r in rows]), "view2": torch.stack([r[1] for r in rows])}

    def embed(self, batch):
        def one(pixels):
            return self.head(self.backbone(pixel_values=pixels).last_hidden_state[:, 0])

        return {"view1": one(batch["view1"]), "view2": one(batch["view2"])}

    def loss(self, embeddings, batch):
        return LossOutput(nt_xent(embeddings["view1"], embeddings["view2"], temperature=0.2))


def _gradients(method: Method, rows: list, tmp_path, cache_chunk_size: int | None) -> dict[str, torch.Tensor]:
    config = TrainingConfig(batch_size=len(rows), cache_chunk_size=cache_chunk_size, progress_bar=False)
    sampler = ShuffledBatchSampler(len(rows), len(rows), shuffle=False)
    trainer = Trainer(method, rows, sampler, config, tmp_path)
    method.zero_grad(set_to_none=True)
    batch = trainer.collate(rows)
    trainer.backward(batch)
    return {name: p.grad.clone() for name, p in method.named_parameters() if p.grad is not None}


def _compare(method: Method, rows: list, tmp_path, chunk: int) -> None:
    whole = _gradients(method, rows, tmp_path / "whole", None)
    cached = _gradients(method, rows, tmp_path / "cached", chunk)
    assert whole.keys() == cached.keys() and len(whole) > 10
    for name, gradient in whole.items():
        assert torch.allclose(cached[name], gradient, atol=1e-5, rtol=1e-4), name


@pytest.mark.parametrize("chunk", [1, 3, 8])
def test_image_backbone_cached_gradients_match(tmp_path, chunk):
    torch.manual_seed(0)
    images = torch.rand(10, 3, 16, 16)
    rows = [(image, (image + 0.05 * torch.randn_like(image)).clamp(0, 1)) for image in images]
    _compare(TwoViewViT(), rows, tmp_path, chunk)


@pytest.mark.parametrize("loss", ["info_nce", "cosent"])
def test_text_adapter_cached_gradients_match(tiny_bert_path, tmp_path, loss):
    from conftest import synthetic_pairs

    encoder = TextEncoder.from_pretrained(tiny_bert_path, max_length=32)
    for module in encoder.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
    scored = loss == "cosent"
    method = SentenceBERT(encoder, ["anchor", "positive"], SbertLossConfig(name=loss), "score" if scored else None)
    rows = [{"anchor": a, "positive": p, "score": float(i % 5)} for i, (a, p) in enumerate(synthetic_pairs(12))]
    _compare(method, rows, tmp_path, 5)
