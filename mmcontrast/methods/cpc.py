"""Contrastive Predictive Coding: predict the encoder's future frames from a causal context, against negatives.

An encoder maps a waveform to frames ``z_1..z_T`` (``[B, T, d]``; the CPC conv stack gives one per 160 samples);
an autoregressive network (GRU or LSTM) summarises ``z_1..z_t`` into a context ``c_t``. Both belong to the audio
adapter (:class:`~mmcontrast.modalities.audio.AudioEncoder` with a ``context`` network), so the exported encoder
gives the contexts, CPC's features; for each step
``k = 1..K`` a predictor (a linear map ``W_k``, or a one-layer causal transformer as in CPC_audio) predicts
``z_{t+k}`` from ``c_t``. Each prediction is scored against its true future frame and ``N`` negative frames
drawn from the same sequence, the same speaker or the whole batch, with the per-query candidates InfoNCE of the
loss core (:func:`mmcontrast.losses.cpc_info_nce`), with ``p = W_k c_t``:

    L = sum_k  mean_{b, t <= T-K}  -log  exp(s(p, z_{t+k})) / (exp(s(p, z_{t+k})) + sum_n exp(s(p, z_n)))

with ``s(a, b) = a . b / d`` (CPC_audio's criterion). The accuracy of each step (the true frame scored above
every negative) is logged as ``accuracy_step{k}``. Negatives are drawn from the global torch generator, whose
state the engine checkpoints, so a resumed run draws the same ones; with ``gather`` the batch negatives are the
frames of every process's sequences, drawn once on the main process and shared.

References:
    van den Oord, Li, Vinyals. "Representation Learning with Contrastive Predictive Coding", 2018.
    Rivière, Joulin, Mazaré, Dupoux. "Unsupervised pretraining transfers well across languages", ICASSP 2020
    (facebookresearch/CPC_audio).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import nn

from mmcontrast.losses import cpc_info_nce, sample_cpc_negatives
from mmcontrast.methods.base import LossOutput, Method
from mmcontrast.modalities.audio import AudioEncoder

Predictor = Literal["linear", "transformer"]
Sampling = Literal["batch", "speaker", "sequence"]
Similarity = Literal["dot", "cosine"]


class CausalTransformerPredictor(nn.Module):
    """One causal transformer layer over the context sequence, then a linear map to the frame size."""

    def __init__(self, context_dim: int, frame_dim: int, heads: int = 4) -> None:
        super().__init__()
        heads = heads if context_dim % heads == 0 else 1
        self.layer = nn.TransformerEncoderLayer(
            context_dim, heads, dim_feedforward=4 * context_dim, dropout=0.0, batch_first=True
        )
        self.out = nn.Linear(context_dim, frame_dim, bias=False)

    def forward(self, context: torch.Tensor) -> torch.Tensor:
        mask = nn.Transformer.generate_square_subsequent_mask(context.shape[1], device=context.device)
        return self.out(self.layer(context, src_mask=mask, is_causal=True))


class CPC(Method):
    """An audio encoder with a context network + K step-ahead predictors, trained with the CPC loss.

    Args:
        encoder: the audio adapter: frames ``z`` (the CPC conv stack, a mel front end, a transformers audio model)
            and its ``context`` network giving ``c`` (``AudioEncoder(..., context={"type": "gru", "dim": 256})``).
        steps: ``K``, how many frames ahead are predicted.
        negatives: ``N``, negatives per prediction.
        predictor: ``linear`` (``W_k``, the paper) or ``transformer`` (one causal layer per step, CPC_audio).
        sampling: where negatives come from: ``batch`` (any sequence of the batch), ``speaker`` (sequences of
            the query's speaker) or ``sequence`` (the query's own sequence).
        similarity: ``dot`` (``a . b / d``, CPC_audio) or ``cosine`` (``cos(a, b)``, hCPC's ``normalizeCPCScore``).
        temperature: the similarities are divided by it (1.0: CPC_audio; with ``cosine``, e.g. 0.1).
        gather: draw batch negatives from every process's sequences (exact cross-process CPC).
    """

    def __init__(
        self,
        encoder: AudioEncoder,
        *,
        steps: int = 12,
        negatives: int = 128,
        predictor: Predictor = "linear",
        sampling: Sampling = "speaker",
        similarity: Similarity = "dot",
        temperature: float = 1.0,
        gather: bool = False,
    ) -> None:
        super().__init__()
        if encoder.context_net is None:
            raise ValueError("CPC needs an audio encoder with a context network (model.audio.context: {type: gru})")
        if predictor not in ("linear", "transformer"):
            raise ValueError(f"CPC predictor must be 'linear' or 'transformer', got {predictor!r}")
        if sampling not in ("batch", "speaker", "sequence"):
            raise ValueError(f"CPC sampling must be 'batch', 'speaker' or 'sequence', got {sampling!r}")
        self.encoder = encoder
        context_dim, frame_dim = encoder.embedding_dim, encoder.frame_dim
        self.predictors = nn.ModuleList(
            nn.Linear(context_dim, frame_dim, bias=False)
            if predictor == "linear"
            else CausalTransformerPredictor(context_dim, frame_dim)
            for _ in range(steps)
        )
        if similarity not in ("dot", "cosine"):
            raise ValueError(f"CPC similarity must be 'dot' or 'cosine', got {similarity!r}")
        if not temperature > 0:
            raise ValueError(f"CPC temperature must be positive, got {temperature}")
        self.steps, self.negatives, self.sampling, self.gather = steps, negatives, sampling, gather
        self.similarity, self.temperature = similarity, temperature

    def collate(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        """Equal-length windows (``waveform``) and their ``speaker`` indices -> a batch."""
        lengths = {len(row["waveform"]) for row in rows}
        if len(lengths) != 1:
            raise ValueError(f"CPC needs windows of one length, got lengths {sorted(lengths)}")
        return {
            "input_values": torch.stack([torch.as_tensor(row["waveform"], dtype=torch.float32) for row in rows]),
            "speakers": torch.tensor([int(row.get("speaker", 0)) for row in rows], dtype=torch.long),
        }

    def embed(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Frames ``z`` of the encoder and contexts ``c`` of the autoregressive network, both ``[B, T, .]``."""
        frames = self.encoder.encode_frames(batch["input_values"])
        return {"frames": frames, "context": self.encoder.contextualize(frames)}

    def _negative_indices(self, batch_size: int, length: int, positions: int, speakers: torch.Tensor) -> torch.Tensor:
        """``[B, W, N]`` indices of negative frames (into this batch's frames, or the global batch's with gather)."""
        distributed = self.gather and torch.distributed.is_available() and torch.distributed.is_initialized()
        if not distributed:
            return sample_cpc_negatives(
                batch_size,
                length,
                self.negatives,
                num_positions=positions,
                mode=self.sampling,
                speakers=speakers if self.sampling == "speaker" else None,
                device=speakers.device,
            )
        world, rank = torch.distributed.get_world_size(), torch.distributed.get_rank()
        everyone = [torch.empty_like(speakers) for _ in range(world)]
        torch.distributed.all_gather(everyone, speakers)
        every_speaker = torch.cat(everyone)
        indices = sample_cpc_negatives(
            batch_size * world,
            length,
            self.negatives,
            num_positions=positions,
            mode=self.sampling,
            speakers=every_speaker if self.sampling == "speaker" else None,
            device=speakers.device,
        )
        torch.distributed.broadcast(indices, src=0)  # one draw for the global batch, the main process's
        return indices[rank * batch_size : (rank + 1) * batch_size]

    def loss(self, embeddings: dict[str, torch.Tensor], batch: dict[str, Any]) -> LossOutput:
        frames, context = embeddings["frames"], embeddings["context"]
        batch_size, length, _ = frames.shape
        positions = length - self.steps
        if positions < 1:
            raise ValueError(
                f"CPC predicts {self.steps} frames ahead but the windows give only {length} frames: use longer "
                "windows (data.window) or fewer steps (model.steps)"
            )
        predictions = torch.stack([predict(context[:, :positions]) for predict in self.predictors], dim=2)
        indices = self._negative_indices(batch_size, length, positions, batch["speakers"].to(frames.device))
        scoring = (
            {"temperature": self.temperature}  # CPC_audio's a . b / d
            if self.similarity == "dot"
            else {"similarity": "cosine", "normalize_by_dim": False, "temperature": self.temperature}
        )
        output = cpc_info_nce(predictions, frames, indices, gather=self.gather, **scoring)
        accuracy = output.step_accuracy.detach().float()
        metrics = {f"accuracy_step{k + 1}": value for k, value in enumerate(accuracy)}
        metrics["accuracy"] = accuracy.mean()
        return LossOutput(output.loss, metrics)
