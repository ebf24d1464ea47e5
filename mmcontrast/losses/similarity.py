"""Shared building blocks of the contrastive losses.

Everything a loss needs besides its own formula lives here, so that every loss validates its inputs,
computes in float32 and masks false negatives the same way:

* **Validation** (``check_*``): each raises ``ValueError`` (``TypeError`` for a non-tensor or
  non-float input) with a message that starts with the loss name and names the offending argument.
* **Float32 compute**: :func:`full_precision` turns autocast off; inside it the helpers cast their
  inputs with ``.float()``, so logits, norms and log-sum-exps are float32 even when the model runs
  under bf16/fp16 autocast. The loss value is float32 and gradients flow back in the input dtype.
* **Similarities and distances** between float32 embeddings: :func:`prepare`,
  :func:`pairwise_cosine`, :func:`distance_matrix`, :func:`paired_distance`.
* **False-negative masks** from labels (:func:`false_negative_mask`) and the InfoNCE-style logits
  (:func:`contrastive_logits`). They take a block of queries, a block of keys and the target
  key of each query, which is the unit the other two core modules work on:
  :mod:`mmcontrast.losses.distributed` makes the queries the local rows and the keys the rows of
  all ranks (targets offset by the rank), and :mod:`mmcontrast.losses.tiled` evaluates the same
  terms tile by tile (:func:`~mmcontrast.losses.tiled.cross_entropy_terms` picks the plain or the
  tiled form for every softmax loss).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

Scale = float | Tensor
"""A logit scale (inverse temperature): a positive float, or a scalar tensor that keeps its gradient."""

# Smallest squared distance passed to ``sqrt``, so that its gradient stays finite at zero distance.
_MIN_SQUARED_DISTANCE = 1e-30


def _shape(x: Tensor) -> tuple[int, ...]:
    return tuple(x.shape)


def check_embeddings(fn: str, name: str, x: Tensor, shapes: Sequence[str] = ("[B, d]",)) -> None:
    """Check that ``x`` is a finite, non-empty float tensor with one of the layouts in ``shapes``.

    ``shapes`` spells the accepted layouts (``"[B, d]"``, ``"[B, K, d]"``); their number of
    dimensions is what is checked.
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"{fn}: {name} must be a torch.Tensor, got {type(x).__name__}")
    ndims = [layout.count(",") + 1 for layout in shapes]
    if x.ndim not in ndims:
        layouts = " or ".join(shapes)
        raise ValueError(f"{fn}: {name} must have shape {layouts}, got a {x.ndim}-D tensor of shape {_shape(x)}")
    if not x.is_floating_point():
        raise TypeError(f"{fn}: {name} must be a floating-point tensor, got dtype {x.dtype}")
    if x.numel() == 0:
        raise ValueError(f"{fn}: {name} is empty (shape {_shape(x)}); a batch needs at least one non-empty row")
    check_finite(fn, name, x)


def check_finite(fn: str, name: str, x: Tensor) -> None:
    """Raise if ``x`` holds a NaN or Inf, naming the first offending row (index along dim 0).

    CPU tensors only: on an accelerator the check would make the host wait for the device at every call (a
    non-finite input there gives a non-finite loss, which the training engine watches without waiting)."""
    if x.device.type != "cpu":
        return
    bad = ~torch.isfinite(x.detach())
    if bad.any():
        row = int(bad.reshape(x.shape[0], -1).any(dim=1).nonzero()[0])
        raise ValueError(f"{fn}: {name} contains NaN or Inf at row {row}")


def check_same_shape(fn: str, name_a: str, a: Tensor, name_b: str, b: Tensor, why: str) -> None:
    """Raise if ``a`` and ``b`` differ in shape; ``why`` says what the pairing means."""
    if a.shape != b.shape:
        raise ValueError(f"{fn}: {name_a} has shape {_shape(a)} but {name_b} has shape {_shape(b)}; {why}")


def check_labels(fn: str, name: str, labels: Tensor, batch_size: int, *, scores: bool = False) -> None:
    """Check a 1-D tensor with one entry per batch row.

    Class labels (``scores=False``) must be integer or bool; scores (``scores=True``) may be any
    finite real dtype.
    """
    if not isinstance(labels, Tensor):
        raise TypeError(f"{fn}: {name} must be a torch.Tensor, got {type(labels).__name__}")
    if labels.ndim != 1 or labels.shape[0] != batch_size:
        raise ValueError(
            f"{fn}: {name} has shape {_shape(labels)} but the batch has {batch_size} rows; "
            f"{name} must be a 1-D tensor with one entry per row"
        )
    if scores:
        if labels.is_complex():
            raise TypeError(f"{fn}: {name} must be real, got dtype {labels.dtype}")
        if labels.is_floating_point():
            check_finite(fn, name, labels)
    elif labels.is_floating_point() or labels.is_complex():
        raise TypeError(f"{fn}: {name} must hold integer class ids, got dtype {labels.dtype}")


def check_choice(fn: str, name: str, value: str, choices: Sequence[str]) -> None:
    """Raise if the option ``name`` is not one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{fn}: {name} must be one of {', '.join(map(repr, choices))}, got {value!r}")


def check_positive(fn: str, name: str, value: Scale) -> None:
    """Check a positive finite float, or a one-element tensor (left unchecked to avoid a device sync)."""
    if isinstance(value, Tensor):
        if value.numel() != 1:
            raise ValueError(f"{fn}: {name} must be a scalar tensor, got shape {_shape(value)}")
    elif not (math.isfinite(value) and value > 0):
        raise ValueError(f"{fn}: {name} must be a positive finite number, got {value!r}")


def check_chunk_size(fn: str, chunk_size: int | None) -> None:
    """Check that ``chunk_size`` is ``None`` or a positive int."""
    if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1):
        raise ValueError(f"{fn}: chunk_size must be a positive int or None, got {chunk_size!r}")


def check_finite_scalar(fn: str, name: str, value: Scale) -> None:
    """Check a finite float, or a one-element tensor (left unchecked to avoid a device sync)."""
    if isinstance(value, Tensor):
        if value.numel() != 1:
            raise ValueError(f"{fn}: {name} must be a scalar tensor, got shape {_shape(value)}")
    elif not math.isfinite(value):
        raise ValueError(f"{fn}: {name} must be a finite number, got {value!r}")


def full_precision(x: Tensor) -> torch.autocast:
    """A context with autocast off on ``x``'s device, so float32 inputs give float32 results."""
    return torch.autocast(device_type=x.device.type, enabled=False)


def prepare(x: Tensor, normalize: bool) -> Tensor:
    """``x`` in float32, L2-normalised along the last dimension when ``normalize`` is true."""
    x = x.float()
    return F.normalize(x, dim=-1) if normalize else x


def pairwise_cosine(a: Tensor, b: Tensor) -> Tensor:
    """Row-wise cosine similarity ``cos(a_i, b_i)`` in float32, shape ``[B]``."""
    return (prepare(a, True) * prepare(b, True)).sum(dim=-1)


def paired_distance(a: Tensor, b: Tensor, metric: str) -> Tensor:
    """Row-wise distance ``d(a_i, b_i)``: ``1 - cos`` (``"cosine"``) or L2 (``"euclidean"``)."""
    if metric == "cosine":
        return 1.0 - pairwise_cosine(a, b)
    return torch.linalg.vector_norm(a.float() - b.float(), dim=-1)


def distance_matrix(queries: Tensor, keys: Tensor, metric: str, self_columns: Tensor) -> Tensor:
    """Pairwise distances ``D[i, j] = d(queries_i, keys_j)`` in float32, shape ``[Q, K]``.

    ``self_columns[i]`` is the column that holds query ``i`` itself (``arange(B)`` for a batch
    against itself; shifted by the rank's offset against the gathered batch). ``"cosine"`` is
    ``1 - cos``. ``"euclidean"`` expands ``|q_i|^2 - 2 q_i.k_j + |k_j|^2`` (one matmul), clamps
    rounding error at zero and returns exactly 0 with zero gradient at the self column and for
    coincident points, where ``sqrt`` has no derivative.
    """
    if metric == "cosine":
        return 1.0 - prepare(queries, True) @ prepare(keys, True).T
    queries, keys = queries.float(), keys.float()
    squared = (queries * queries).sum(dim=-1)[:, None] + (keys * keys).sum(dim=-1)[None, :] - 2.0 * (queries @ keys.T)
    columns = torch.arange(keys.shape[0], device=keys.device)
    zero = (squared <= 0) | (columns[None, :] == self_columns[:, None])
    return torch.where(zero, 0.0, squared.clamp_min(_MIN_SQUARED_DISTANCE).sqrt())


def false_negative_mask(
    query_labels: Tensor, key_labels: Tensor, targets: Tensor, num_keys: int, first_key: int = 0
) -> Tensor:
    """Boolean ``[Q, num_keys]`` mask of keys to drop from each query's softmax denominator.

    Key ``j`` is masked for query ``i`` when it carries the same label (``key_labels[j] ==
    query_labels[i]``) but is not the query's own target ``targets[i]``: a duplicate or another
    sample of the same class, which would otherwise be pushed away as a negative. Only the first
    ``len(key_labels)`` keys are labelled; keys after them (explicit hard negatives, a queue) are
    never masked. The mask covers keys ``first_key .. first_key + num_keys - 1``, so a tile of the
    key columns gets its own slice of the full mask.
    """
    stop = max(first_key, min(first_key + num_keys, key_labels.shape[0]))
    labelled = torch.arange(first_key, stop, device=targets.device)
    mask = (query_labels[:, None] == key_labels[None, first_key:stop]) & (labelled[None, :] != targets[:, None])
    return F.pad(mask, (0, num_keys - labelled.shape[0]))


def contrastive_logits(
    queries: Tensor,
    keys: Tensor,
    targets: Tensor,
    scale: Scale,
    query_labels: Tensor | None = None,
    key_labels: Tensor | None = None,
) -> Tensor:
    """The ``[Q, K]`` logits ``scale * q_i . k_j``, with false negatives (given labels) set to ``-inf``."""
    logits = (queries @ keys.T) * scale
    if query_labels is not None and key_labels is not None:
        mask = false_negative_mask(query_labels, key_labels, targets, keys.shape[0])
        logits = logits.masked_fill(mask, -math.inf)
    return logits
