"""Towers for two-tower methods with an audio side (CLAP): an audio tower around :class:`AudioEncoder`, a tower +
head wrapper, and a byte-level BPE tokenizer that needs no download.

- :class:`AudioTower` fits :class:`~mmcontrast.methods.two_tower.Tower`: ``preprocess(waveforms)`` crops (random
  in training, from a seeded generator; centred at evaluation) or pads mono waveforms at the encoder's rate into a
  padded batch (for a feature-input transformers encoder: straight into its extractor's inputs, so the STFTs run in
  the collate, in the DataLoader), ``forward(batch) -> [B, d]`` is the encoder's pooled utterance embedding
  (:meth:`AudioEncoder.embed`). A transformers feature-input encoder (the CLAP audio tower) can be given its own
  feature extractor (``feature_extractor=``): the adapter's default CLAP extractor is LAION-CLAP's (48 kHz, 10 s);
  small data wants its own rate and length.
- :class:`ProjectedTower` puts a head after a tower (CLAP's two-layer ``ClapProjectionLayer``), so the head is
  part of the tower and the two-tower method runs with ``project=False``: that is exactly transformers'
  ``ClapModel`` (``audio_projection(audio_model(...).pooler_output)``).
- :func:`byte_level_tokenizer`: a RoBERTa tokenizer (what ``ClapProcessor`` expects) whose vocabulary is the 256
  byte symbols of GPT-2's byte-level BPE plus RoBERTa's special tokens, no merges: one token per byte, built
  offline, saved and reloaded as any RoBERTa tokenizer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from mmcontrast.modalities.audio import AudioEncoder, crop_or_pad

SPECIAL_TOKENS = ("<s>", "<pad>", "</s>", "<unk>")
"""RoBERTa's special tokens at ids 0-3 (``<mask>`` comes last)."""


class AudioTower(nn.Module):
    """An :class:`AudioEncoder` as a two-tower tower: raw waveforms in, pooled ``[B, d]`` out.

    Args:
        encoder: the audio encoder (any kind).
        max_samples: longest clip fed to the encoder (samples at its rate); longer clips are cropped (randomly in
            training, centred at evaluation). None: whole clips (a feature extractor then applies its own limit).
        feature_extractor: a transformers feature extractor replacing the encoder's own (its ``sampling_rate``
            becomes the encoder's rate); for ``kind='transformers'`` feature-input models only.
        seed: seed of the training crops' generator.
    """

    def __init__(
        self,
        encoder: AudioEncoder,
        *,
        max_samples: int | None = None,
        feature_extractor: Any | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if max_samples is not None and max_samples < 1:
            raise ValueError(f"AudioTower: max_samples must be at least 1, got {max_samples}")
        if feature_extractor is not None:
            if encoder.feature_extractor is None:
                raise ValueError(
                    f"AudioTower: a feature_extractor only replaces a feature-input transformers encoder's own; the "
                    f"'{encoder.kind}' encoder takes waveforms"
                )
            encoder.feature_extractor = feature_extractor
            encoder.sample_rate = int(feature_extractor.sampling_rate)
        self.encoder = encoder
        self.max_samples = max_samples
        self.generator = torch.Generator().manual_seed(seed)

    @property
    def embedding_dim(self) -> int:
        """Size of the pooled embedding."""
        return int(self.encoder.embedding_dim)

    @property
    def sample_rate(self) -> int:
        """The rate (Hz) waveforms must have."""
        return int(self.encoder.sample_rate)

    def preprocess(self, waveforms: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
        """Mono waveforms ``[T_i]`` at :attr:`sample_rate` -> ``input_values`` + ``attention_mask`` (cropped/padded),
        or, for a feature-input transformers encoder whose frames all count (AST, the CLAP audio tower), its
        extractor's inputs (``input_features``), computed here in the collate rather than in the forward."""
        if self.encoder.feature_extractor is not None and not self.encoder._is_whisper:
            options = dict(train=self.training, generator=self.generator, min_length=self.encoder.min_samples)
            clips = [crop_or_pad(torch.as_tensor(w).reshape(-1), self.max_samples, **options) for w in waveforms]
            return {"features": self.encoder.extract(clips)}  # type: ignore[dict-item]
        batch = self.encoder.preprocess(
            waveforms, max_samples=self.max_samples, train=self.training, generator=self.generator
        )
        return {"input_values": batch["input_values"], "attention_mask": batch["attention_mask"]}

    def forward(self, inputs: dict[str, Any]) -> torch.Tensor:
        """A preprocessed batch -> pooled ``[B, embedding_dim]``."""
        if "features" in inputs:
            return self.encoder.embed_features(inputs["features"])
        return self.encoder.embed(inputs["input_values"], inputs.get("attention_mask"))


class ProjectedTower(nn.Module):
    """A tower followed by a head (``forward = head(tower(inputs))``); preprocessing is the tower's.

    Args:
        tower: any two-tower tower (``embedding_dim``, ``preprocess``, ``forward``).
        head: a module mapping ``[B, tower.embedding_dim]`` to ``[B, embedding_dim]``.
        embedding_dim: the head's output size.
    """

    def __init__(self, tower: nn.Module, head: nn.Module, embedding_dim: int) -> None:
        super().__init__()
        self.tower, self.head, self.embedding_dim = tower, head, int(embedding_dim)

    def preprocess(self, examples: Sequence[Any]) -> Any:
        """The tower's own preprocessing."""
        return self.tower.preprocess(examples)

    def forward(self, inputs: Any) -> torch.Tensor:
        return self.head(self.tower(inputs))


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map of the 256 bytes to printable characters (byte-level BPE's alphabet)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    codes, extra = printable[:], 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in codes), strict=True))


def byte_level_tokenizer(max_length: int = 64) -> Any:
    """A RoBERTa tokenizer with one token per byte (261 ids: ``<s> <pad> </s> <unk>``, 256 bytes, ``<mask>``).

    Built offline (no download); ``save_pretrained`` writes ordinary ``vocab.json`` / ``merges.txt`` files that
    ``AutoTokenizer`` and ``ClapProcessor`` load.
    """
    from transformers import RobertaTokenizer

    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS)}
    for symbol in _bytes_to_unicode().values():
        vocab[symbol] = len(vocab)
    vocab["<mask>"] = len(vocab)
    tokenizer = RobertaTokenizer(vocab=vocab, merges=[])
    tokenizer.model_max_length = max_length
    return tokenizer
