"""The text adapter loads transformers and sentence-transformers folders, and its export loads in
sentence-transformers with the same embeddings."""

from __future__ import annotations

import pytest
import torch
from sentence_transformers import SentenceTransformer

from mmcontrast.modalities.text import TextEncoder

SENTENCES = [
    "A man is playing a guitar.",
    "Someone plays an instrument on stage while the crowd sings along loudly.",
    "The cat sleeps.",
    "Stock prices fell sharply on Monday after the announcement.",
]


def test_reads_sentence_transformers_settings(minilm_path):
    encoder = TextEncoder.from_pretrained(minilm_path)
    assert (encoder.pooling, encoder.normalize, encoder.max_length) == ("mean", True, 256)


def test_pretrained_minilm_matches_sentence_transformers(minilm_path):
    ours = TextEncoder.from_pretrained(minilm_path).encode(SENTENCES, batch_size=2)
    theirs = SentenceTransformer(minilm_path, device="cpu").encode(SENTENCES, convert_to_tensor=True)
    assert (ours - theirs).abs().max().item() < 1e-5


@pytest.mark.parametrize("pooling", ["mean", "cls", "last"])
@pytest.mark.parametrize("normalize", [False, True])
def test_export_loads_in_sentence_transformers(tiny_bert_path, tmp_path, pooling, normalize):
    encoder = TextEncoder.from_pretrained(tiny_bert_path, pooling=pooling, normalize=normalize, max_length=64)
    folder = encoder.save_pretrained(tmp_path / "model")
    loaded = SentenceTransformer(str(folder), device="cpu")
    theirs = loaded.encode(SENTENCES, convert_to_tensor=True)
    ours = encoder.encode(SENTENCES)
    assert theirs.shape == ours.shape == (len(SENTENCES), 32)
    assert (ours - theirs).abs().max().item() < 1e-5
    # and mmcontrast reads its own export back with the same settings
    again = TextEncoder.from_pretrained(folder)
    assert (again.pooling, again.normalize, again.max_length) == (pooling, normalize, 64)
    assert torch.allclose(again.encode(SENTENCES), ours, atol=1e-6)


def test_missing_folder_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="no-such-model"):
        TextEncoder.from_pretrained(tmp_path / "no-such-model")


def test_unknown_pooling_is_named(tiny_bert_path):
    with pytest.raises(ValueError, match="pooling 'max'"):
        TextEncoder.from_pretrained(tiny_bert_path, pooling="max")  # type: ignore[arg-type]
