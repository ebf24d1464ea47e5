r"""InfoNCE over per-query candidate sets, and Contrastive Predictive Coding (CPC) built on it.

Each query :math:`q_i` (:math:`i = 1..N`) is scored against its **own** candidates: its positive
:math:`p_i` and its own negatives :math:`n_{i,1}..n_{i,M}` (not the other rows' positives, unlike
:func:`~mmcontrast.losses.info_nce`). With similarity :math:`s` (dot product or cosine), divided by the
dimension :math:`d` when ``normalize_by_dim`` (CPC_audio's ``mean`` over the features) and scale
:math:`\lambda = 1/\tau`:

.. math::

    \ell_i = -\log \frac{e^{\lambda s(q_i, p_i)}}
        {e^{\lambda s(q_i, p_i)} + \sum_{m \notin F_i} e^{\lambda s(q_i, n_{i,m})}},
    \qquad
    \mathcal{L} = \frac{1}{N} \sum_i \ell_i

where :math:`F_i` holds the negatives masked out of row :math:`i` (``negative_mask``, empty by default).
This is cross-entropy over the candidate logits with the positive at index 0, and the accuracy is the
fraction of rows whose arg-max candidate is index 0.

**CPC** (:func:`cpc_info_nce`): an encoder gives frames :math:`z_{b,t}` (``[B, T, d]``), a context network
gives :math:`c_{b,t}` and step-:math:`k` predictors give :math:`\hat z_{b,t,k} = W_k c_{b,t}`
(:math:`k = 1..K`, ``predictions[b, t, k - 1]``). The positive of :math:`\hat z_{b,t,k}` is
:math:`z_{b,t+k}`; its negatives are frames drawn by :func:`sample_cpc_negatives` (shared by the
:math:`K` steps, as in CPC_audio), and

.. math::

    \mathcal{L}_\text{CPC} = \sum_{k=1}^{K} \frac{1}{B W} \sum_{b=1}^{B} \sum_{t=0}^{W-1}
        \ell\bigl(\hat z_{b,t,k};\ z_{b,t+k},\ \{z_{\nu(b,t,m)}\}_{m=1}^{M}\bigr)

with :math:`s(x, y) = x \cdot y / d` and :math:`\lambda = 1`: the criterion of facebookresearch/CPC_audio
(``CPCUnsupersivedCriterion``: the step losses are each a mean over positions and are summed in training).

References:
    van den Oord, Li, Vinyals. "Representation Learning with Contrastive Predictive Coding", 2018.
    https://arxiv.org/abs/1807.03748

    Rivière, Joulin, Mazaré, Dupoux. "Unsupervised pretraining transfers well across languages",
    ICASSP 2020. https://arxiv.org/abs/2002.02848
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from mmcontrast.losses.distributed import gather_rows, rank_and_world_size
from mmcontrast.losses.info_nce import LogitScale
from mmcontrast.losses.similarity import (
    Scale,
    check_choice,
    check_embeddings,
    check_positive,
    check_same_shape,
    full_precision,
    prepare,
)

SIMILARITIES = ("dot", "cosine")
REDUCTIONS = ("mean", "sum", "none")
SAMPLING_MODES = ("batch", "speaker", "sequence")


def _resolve_scale(fn: str, scale: Scale | None, temperature: Scale | None) -> Scale:
    """``scale``, or ``1 / temperature``, or 1.0 when neither is given."""
    if scale is not None and temperature is not None:
        raise ValueError(f"{fn}: pass either scale or temperature, not both")
    if temperature is not None:
        check_positive(fn, "temperature", temperature)
        return 1.0 / temperature
    if scale is not None:
        check_positive(fn, "scale", scale)
        return scale
    return 1.0


def _check_mask(fn: str, name: str, mask: Tensor, shape: tuple[int, ...]) -> None:
    if not isinstance(mask, Tensor):
        raise TypeError(f"{fn}: {name} must be a torch.Tensor, got {type(mask).__name__}")
    if mask.dtype != torch.bool:
        raise TypeError(f"{fn}: {name} must be a bool tensor (True drops the negative), got dtype {mask.dtype}")
    if tuple(mask.shape) != shape:
        raise ValueError(f"{fn}: {name} has shape {tuple(mask.shape)} but the negatives need {shape}")


def _scores(queries: Tensor, candidates: Tensor, scale: Scale, similarity: str, normalize_by_dim: bool) -> Tensor:
    """``scale * s(q, c)`` in float32 for ``queries [..., Q, d]`` and ``candidates [..., C, d]``: ``[..., Q, C]``.

    One matmul scores every candidate, the positive included, so a negative that is a copy of the positive gets
    exactly the positive's logit and the arg-max (first index on ties) counts it as a hit, as CPC_audio does.
    Call under :func:`full_precision`.
    """
    cosine = similarity == "cosine"
    queries, candidates = prepare(queries, cosine), prepare(candidates, cosine)
    logits = torch.matmul(queries, candidates.transpose(-1, -2))
    if normalize_by_dim:
        logits = logits / queries.shape[-1]
    return logits * scale


def _mask_negatives(logits: Tensor, negative_mask: Tensor | None) -> Tensor:
    """``-inf`` at the masked negatives of ``[..., 1 + M]`` logits (the positive, index 0, is never masked)."""
    if negative_mask is None:
        return logits
    mask = torch.nn.functional.pad(negative_mask.to(logits.device), (1, 0), value=False)
    return logits.masked_fill(mask, float("-inf"))


def _cross_entropy_at_zero(logits: Tensor) -> tuple[Tensor, Tensor]:
    """Per-row ``logsumexp - logit[0]`` and whether the arg-max is index 0 (ties go to the first index)."""
    losses = torch.logsumexp(logits, dim=-1) - logits[..., 0]
    correct = (logits.detach().argmax(dim=-1) == 0).float()
    return losses, correct


def candidate_info_nce(
    queries: Tensor,
    positives: Tensor,
    negatives: Tensor,
    *,
    scale: Scale | None = None,
    temperature: Scale | None = None,
    similarity: str = "dot",
    normalize_by_dim: bool = False,
    negative_mask: Tensor | None = None,
    reduction: str = "mean",
    return_accuracy: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """InfoNCE where each query is scored against its own positive and its own negatives.

    Args:
        queries: ``[N, d]`` query embeddings (e.g. CPC's step-k predictions).
        positives: ``[N, d]``; ``positives[i]`` is the one positive of ``queries[i]`` (candidate 0).
        negatives: ``[N, M, d]``; ``negatives[i]`` are the ``M`` negatives of ``queries[i]`` only.
        scale: multiplier of the similarities, ``1 / temperature`` (a float, or a scalar tensor that keeps
            its gradient). Mutually exclusive with ``temperature``; 1.0 when neither is given.
        temperature: divisor of the similarities.
        similarity: ``"dot"`` (the dot product, CPC) or ``"cosine"`` (L2-normalised first).
        normalize_by_dim: divide the similarity by ``d`` (CPC_audio's ``mean`` over the features).
        negative_mask: optional ``[N, M]`` bool; ``True`` drops that negative from its row's denominator
            (padding, known false negatives).
        reduction: ``"mean"`` over rows, ``"sum"``, or ``"none"`` for the ``[N]`` per-row losses.
        return_accuracy: also return the accuracy, the fraction of rows whose highest logit is the
            positive's (per row, as 0/1 floats, with ``reduction="none"``); no gradient.

    Returns:
        The loss, float32 (computed in float32 even under autocast), or ``(loss, accuracy)``.
    """
    fn = "candidate_info_nce"
    check_embeddings(fn, "queries", queries)
    check_embeddings(fn, "positives", positives)
    check_same_shape(fn, "queries", queries, "positives", positives, "every query needs exactly one positive")
    check_embeddings(fn, "negatives", negatives, ("[N, M, d]",))
    rows, dim = queries.shape
    if negatives.shape[0] != rows or negatives.shape[2] != dim:
        raise ValueError(
            f"{fn}: negatives has shape {tuple(negatives.shape)} but queries has shape {tuple(queries.shape)}; "
            f"negatives must be [N, M, d] with N={rows}, d={dim}"
        )
    if negative_mask is not None:
        _check_mask(fn, "negative_mask", negative_mask, tuple(negatives.shape[:2]))
    check_choice(fn, "similarity", similarity, SIMILARITIES)
    check_choice(fn, "reduction", reduction, REDUCTIONS)
    scale = _resolve_scale(fn, scale, temperature)
    with full_precision(queries):
        candidates = torch.cat([positives.unsqueeze(1), negatives.to(positives.dtype)], dim=1)
        logits = _scores(queries.unsqueeze(1), candidates, scale, similarity, normalize_by_dim).squeeze(1)
        logits = _mask_negatives(logits, negative_mask)
        losses, correct = _cross_entropy_at_zero(logits)
        if reduction == "mean":
            loss, accuracy = losses.mean(), correct.mean()
        elif reduction == "sum":
            loss, accuracy = losses.sum(), correct.mean()
        else:
            loss, accuracy = losses, correct
    return (loss, accuracy) if return_accuracy else loss


class CandidateInfoNCELoss(nn.Module):
    """Module form of :func:`candidate_info_nce`, with a fixed scale / temperature or a learnable :class:`LogitScale`.

    Args:
        scale: fixed ``1 / temperature``; 1.0 when none of ``scale``, ``temperature``, ``logit_scale`` is given.
        temperature: fixed temperature (instead of ``scale``).
        logit_scale: a :class:`LogitScale` whose output is the scale (trained, being a submodule).
        similarity: ``"dot"`` or ``"cosine"``.
        normalize_by_dim: divide the similarity by the dimension (CPC_audio).
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
    """

    def __init__(
        self,
        scale: float | None = None,
        temperature: float | None = None,
        logit_scale: LogitScale | None = None,
        similarity: str = "dot",
        normalize_by_dim: bool = False,
        reduction: str = "mean",
    ) -> None:
        super().__init__()
        fn = "CandidateInfoNCELoss"
        if logit_scale is not None and (scale is not None or temperature is not None):
            raise ValueError(f"{fn}: pass one of scale, temperature or logit_scale")
        self.scale = _resolve_scale(fn, scale, temperature)
        self.logit_scale = logit_scale
        check_choice(fn, "similarity", similarity, SIMILARITIES)
        check_choice(fn, "reduction", reduction, REDUCTIONS)
        self.similarity = similarity
        self.normalize_by_dim = normalize_by_dim
        self.reduction = reduction

    def forward(
        self,
        queries: Tensor,
        positives: Tensor,
        negatives: Tensor,
        negative_mask: Tensor | None = None,
        return_accuracy: bool = False,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Return :func:`candidate_info_nce` of the given embeddings with this module's options."""
        scale = self.scale if self.logit_scale is None else self.logit_scale()
        return candidate_info_nce(
            queries,
            positives,
            negatives,
            scale=scale,
            similarity=self.similarity,
            normalize_by_dim=self.normalize_by_dim,
            negative_mask=negative_mask,
            reduction=self.reduction,
            return_accuracy=return_accuracy,
        )

    def extra_repr(self) -> str:
        scale = "" if self.logit_scale is not None else f"scale={self.scale}, "
        return (
            f"{scale}similarity={self.similarity!r}, normalize_by_dim={self.normalize_by_dim}, "
            f"reduction={self.reduction!r}"
        )


# ---------------------------------------------------------------------------------------------
# CPC


def sample_cpc_negatives(
    num_sequences: int,
    seq_len: int,
    num_negatives: int,
    *,
    num_positions: int | None = None,
    mode: str = "batch",
    speakers: Tensor | None = None,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """Draw CPC negatives for every query position of a ``[num_sequences, seq_len, d]`` batch of frames.

    Query ``(b, t)`` (``t < num_positions``) gets ``num_negatives`` frames, drawn independently with
    replacement: a sequence ``b'`` by ``mode``, and a position ``(t + r) mod seq_len`` with ``r`` uniform in
    ``1 .. seq_len - 1``, so never position ``t`` itself (of any sequence), as in CPC_audio's ``sampleClean``.
    The positive ``z[b, t + k]`` *can* be drawn (CPC_audio does not exclude it either; see
    ``exclude_positive`` in :func:`cpc_info_nce`).

    * ``"batch"``: ``b'`` uniform over all sequences (including ``b``), CPC_audio's criterion. Its
      ``samplingType`` (``uniform``, ``samespeaker``, ``samesequence``) chooses how the *batch* is made and
      so where these negatives come from.
    * ``"speaker"``: ``b'`` uniform over the sequences whose ``speakers`` id equals ``speakers[b]``
      (including ``b``): CPC_audio's ``samespeaker`` without needing one speaker per batch.
    * ``"sequence"``: ``b' = b``, negatives from the query's own sequence.

    The draws are laid out as CPC_audio's (``[B, M, W]`` sequence ids, then position offsets), so with
    ``mode="batch"`` and a generator seeded like CPC_audio's global seed, the same frames are drawn.

    Args:
        num_sequences: ``B``, the number of sequences (the global batch under ``gather=True``: sample for
            all ranks with the same seed and pass each rank its own rows).
        seq_len: ``T``, frames per sequence (at least 2).
        num_negatives: ``M``, negatives per query.
        num_positions: ``W``, query positions ``0 .. W - 1`` per sequence; ``seq_len`` by default
            (CPC uses ``T - K``).
        mode: ``"batch"``, ``"speaker"`` or ``"sequence"``.
        speakers: ``[B]`` integer speaker ids, required by ``mode="speaker"``.
        generator: a seeded ``torch.Generator`` for reproducible draws (the global RNG otherwise).
        device: device of the result (the generator's device by default).

    Returns:
        ``[B, W, M]`` int64 indices into the flattened frames ``z.reshape(B * T, d)`` (``b' * T + t'``).
    """
    fn = "sample_cpc_negatives"
    for name, value, low in (
        ("num_sequences", num_sequences, 1),
        ("seq_len", seq_len, 2),
        ("num_negatives", num_negatives, 1),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{fn}: {name} must be an int >= {low}, got {value!r}")
    positions = seq_len if num_positions is None else num_positions
    if isinstance(positions, bool) or not isinstance(positions, int) or not 1 <= positions <= seq_len:
        raise ValueError(f"{fn}: num_positions must be an int in [1, seq_len={seq_len}], got {num_positions!r}")
    check_choice(fn, "mode", mode, SAMPLING_MODES)
    if device is None:
        device = generator.device if generator is not None else torch.device("cpu")
    gen_device = generator.device if generator is not None else device
    shape = (num_sequences, num_negatives, positions)
    if mode == "speaker":
        if speakers is None:
            raise ValueError(f"{fn}: mode='speaker' needs speakers, one integer id per sequence")
        if not isinstance(speakers, Tensor):
            raise TypeError(f"{fn}: speakers must be a torch.Tensor, got {type(speakers).__name__}")
        if speakers.ndim != 1 or speakers.shape[0] != num_sequences:
            raise ValueError(
                f"{fn}: speakers has shape {tuple(speakers.shape)} but there are {num_sequences} sequences; "
                "speakers must be a 1-D tensor with one id per sequence"
            )
        if speakers.is_floating_point() or speakers.is_complex():
            raise TypeError(f"{fn}: speakers must hold integer ids, got dtype {speakers.dtype}")
    elif speakers is not None:
        raise ValueError(f"{fn}: speakers is only used by mode='speaker', got mode={mode!r}")

    if mode == "batch":
        sequences = torch.randint(0, num_sequences, shape, generator=generator, device=gen_device)
    elif mode == "sequence":
        sequences = torch.arange(num_sequences, device=gen_device)[:, None, None].expand(shape)
    else:
        speakers = speakers.to(gen_device)
        # Sequences sorted by speaker: the pool of sequence b is a contiguous run [start_b, start_b + count_b).
        order = torch.argsort(speakers, stable=True)
        same = speakers[:, None] == speakers[None, :]
        count = same.sum(dim=1)
        start = (speakers[None, :] < speakers[:, None]).sum(dim=1)
        uniform = torch.rand(shape, generator=generator, device=gen_device, dtype=torch.float64)
        pick = (uniform * count[:, None, None]).long().clamp_max(count[:, None, None] - 1)
        sequences = order[start[:, None, None] + pick]
    offsets = torch.randint(1, seq_len, shape, generator=generator, device=gen_device)
    frames = (offsets + torch.arange(positions, device=gen_device)) % seq_len
    indices = sequences * seq_len + frames
    return indices.permute(0, 2, 1).contiguous().to(device)


class CPCOutput(NamedTuple):
    """What :func:`cpc_info_nce` returns: the summed loss and, per step ``k``, its loss and accuracy."""

    loss: Tensor
    """Scalar: the sum over the ``K`` steps of the mean loss over the (local) query positions."""
    step_losses: Tensor
    """``[K]``: the loss of each step (with gradient)."""
    step_accuracy: Tensor
    """``[K]``: the fraction of (local) positions whose positive scores highest, per step (no gradient)."""


def cpc_info_nce(
    predictions: Tensor,
    frames: Tensor,
    negative_indices: Tensor,
    *,
    scale: Scale | None = None,
    temperature: Scale | None = None,
    similarity: str = "dot",
    normalize_by_dim: bool = True,
    exclude_positive: bool = False,
    gather: bool = False,
) -> CPCOutput:
    """CPC's InfoNCE: each step-``k`` prediction against its future frame and its sampled negatives.

    Defaults give CPC_audio's criterion: dot product divided by ``d``, scale 1, the positive at candidate 0,
    cross-entropy averaged over the ``B * W`` positions of each step, summed over the ``K`` steps.

    Args:
        predictions: ``[B, W, K, d]``; ``predictions[b, t, k - 1]`` predicts ``frames[b, t + k]``
            (``W + K <= T``; CPC uses ``W = T - K``).
        frames: ``[B, T, d]`` encoder outputs ``z`` (the positives, and the pool of negatives).
        negative_indices: ``[B, W, M]`` (shared by the ``K`` steps, as CPC_audio) or ``[B, W, K, M]`` (one
            set per step) int64 indices into the flattened frames of the batch, ``b' * T + t'``, e.g. from
            :func:`sample_cpc_negatives`. With ``gather=True`` on several ranks they index the frames of the
            global batch (rank ``r``'s sequence ``b`` is global sequence ``r * B + b``).
        scale: multiplier of the similarities (1.0 by default); exclusive with ``temperature``.
        temperature: divisor of the similarities.
        similarity: ``"dot"`` or ``"cosine"``.
        normalize_by_dim: divide the similarity by ``d`` (CPC_audio; the 2018 paper uses the plain dot product).
        exclude_positive: drop a negative that is the positive frame itself (``z[b, t + k]`` drawn as a
            negative) from the denominator. CPC_audio keeps it; off by default.
        gather: with an initialised process group of several ranks, draw negatives from the frames of all
            ranks, gathered with gradient (:mod:`mmcontrast.losses.distributed`); each rank returns the loss
            of its own positions, and the mean over ranks is the single-process loss of the global batch.

    Returns:
        :class:`CPCOutput` ``(loss, step_losses, step_accuracy)``, float32.
    """
    fn = "cpc_info_nce"
    check_embeddings(fn, "predictions", predictions, ("[B, W, K, d]",))
    check_embeddings(fn, "frames", frames, ("[B, T, d]",))
    batch, positions, steps, dim = predictions.shape
    seq_len = frames.shape[1]
    if frames.shape[0] != batch or frames.shape[2] != dim:
        raise ValueError(
            f"{fn}: frames has shape {tuple(frames.shape)} but predictions has shape {tuple(predictions.shape)}; "
            f"frames must be [B, T, d] with B={batch}, d={dim}"
        )
    if positions + steps > seq_len:
        raise ValueError(
            f"{fn}: predictions has shape {tuple(predictions.shape)} (W={positions}, K={steps}) but frames has "
            f"T={seq_len}; the step-K target of the last position needs W + K <= T"
        )
    if not isinstance(negative_indices, Tensor):
        raise TypeError(f"{fn}: negative_indices must be a torch.Tensor, got {type(negative_indices).__name__}")
    if negative_indices.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"{fn}: negative_indices must be an int64 tensor, got dtype {negative_indices.dtype}")
    per_step = negative_indices.ndim == 4
    expected = (batch, positions, steps) if per_step else (batch, positions)
    if negative_indices.ndim not in (3, 4) or tuple(negative_indices.shape[:-1]) != expected:
        raise ValueError(
            f"{fn}: negative_indices has shape {tuple(negative_indices.shape)} but predictions has shape "
            f"{tuple(predictions.shape)}; negative_indices must be [B, W, M] or [B, W, K, M] "
            f"with B={batch}, W={positions}, K={steps}"
        )
    if negative_indices.shape[-1] < 1:
        raise ValueError(f"{fn}: negative_indices has no negatives (shape {tuple(negative_indices.shape)})")
    check_choice(fn, "similarity", similarity, SIMILARITIES)
    scale = _resolve_scale(fn, scale, temperature)
    rank, world_size = rank_and_world_size(gather)
    all_frames = frames
    if world_size > 1:
        (all_frames,) = gather_rows(fn, ("frames",), (frames,), world_size)
    total = all_frames.shape[0] * seq_len
    negative_indices = negative_indices.to(device=frames.device, dtype=torch.int64)
    low, high = int(negative_indices.min()), int(negative_indices.max())
    if low < 0 or high >= total:
        raise ValueError(
            f"{fn}: negative_indices must lie in [0, {total}) (the {all_frames.shape[0]} x {seq_len} frames"
            f"{' of all ranks' if world_size > 1 else ''}), got values in [{low}, {high}]"
        )
    flat = all_frames.reshape(total, dim)
    with full_precision(frames):
        # targets[b, t, k - 1] = z[b, t + k], the positive of predictions[b, t, k - 1].
        targets = torch.stack([frames[:, k : k + positions] for k in range(1, steps + 1)], dim=2)
        if per_step:  # [B, W, K, 1 + M] candidates, each step against its own
            candidates = torch.cat([targets.unsqueeze(3), flat[negative_indices].to(targets.dtype)], dim=3)
            logits = _scores(predictions.unsqueeze(3), candidates, scale, similarity, normalize_by_dim).squeeze(3)
        else:
            # Negatives shared by the steps: score [B, W, K] predictions against the K targets and the M negatives
            # at once (one matmul), then keep each step's own target and the negatives.
            candidates = torch.cat([targets, flat[negative_indices].to(targets.dtype)], dim=2)
            scores = _scores(predictions, candidates, scale, similarity, normalize_by_dim)  # [B, W, K, K + M]
            positive = torch.diagonal(scores[..., :steps], dim1=-2, dim2=-1).unsqueeze(-1)
            logits = torch.cat([positive, scores[..., steps:]], dim=-1)
        mask = None
        if exclude_positive:
            # Global flat index of each positive frame (rank offset included): [B, W, K].
            first = (torch.arange(batch, device=frames.device) + rank * batch) * seq_len
            step = torch.arange(1, steps + 1, device=frames.device)
            origin = first[:, None, None] + torch.arange(positions, device=frames.device)[None, :, None] + step
            chosen = negative_indices if per_step else negative_indices.unsqueeze(2)
            mask = chosen == origin.unsqueeze(-1)
        losses, correct = _cross_entropy_at_zero(_mask_negatives(logits, mask))  # [B, W, K]
        step_loss = losses.mean(dim=(0, 1))
        step_accuracy = correct.mean(dim=(0, 1))
    return CPCOutput(step_loss.sum(), step_loss, step_accuracy)


class CPCLoss(nn.Module):
    """Module form of :func:`cpc_info_nce` (CPC_audio's criterion by default) with a fixed scale or temperature.

    Args:
        scale: fixed ``1 / temperature`` (1.0 by default); exclusive with ``temperature`` and ``logit_scale``.
        temperature: fixed temperature.
        logit_scale: a learnable :class:`LogitScale`.
        similarity: ``"dot"`` or ``"cosine"``.
        normalize_by_dim: divide the similarity by ``d`` (CPC_audio).
        exclude_positive: drop negatives that are the positive frame itself.
        gather: draw negatives from the frames of all ranks (see :func:`cpc_info_nce`).
    """

    def __init__(
        self,
        scale: float | None = None,
        temperature: float | None = None,
        logit_scale: LogitScale | None = None,
        similarity: str = "dot",
        normalize_by_dim: bool = True,
        exclude_positive: bool = False,
        gather: bool = False,
    ) -> None:
        super().__init__()
        fn = "CPCLoss"
        if logit_scale is not None and (scale is not None or temperature is not None):
            raise ValueError(f"{fn}: pass one of scale, temperature or logit_scale")
        self.scale = _resolve_scale(fn, scale, temperature)
        self.logit_scale = logit_scale
        check_choice(fn, "similarity", similarity, SIMILARITIES)
        self.similarity = similarity
        self.normalize_by_dim = normalize_by_dim
        self.exclude_positive = exclude_positive
        self.gather = gather

    def forward(self, predictions: Tensor, frames: Tensor, negative_indices: Tensor) -> CPCOutput:
        """Return :func:`cpc_info_nce` of the given tensors with this module's options."""
        scale = self.scale if self.logit_scale is None else self.logit_scale()
        return cpc_info_nce(
            predictions,
            frames,
            negative_indices,
            scale=scale,
            similarity=self.similarity,
            normalize_by_dim=self.normalize_by_dim,
            exclude_positive=self.exclude_positive,
            gather=self.gather,
        )

    def extra_repr(self) -> str:
        scale = "" if self.logit_scale is not None else f"scale={self.scale}, "
        return (
            f"{scale}similarity={self.similarity!r}, normalize_by_dim={self.normalize_by_dim}, "
            f"exclude_positive={self.exclude_positive}, gather={self.gather}"
        )
