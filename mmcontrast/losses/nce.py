r"""Binary noise-contrastive estimation (NCE) with a memory bank (Wu et al. 2018, instance discrimination).

Every training sample :math:`i` of a data set of :math:`n` is its own class. A **memory bank**
(:class:`MemoryBank`) holds one L2-normalised entry :math:`m_i` per sample; the query :math:`v_i` (the
L2-normalised feature of sample :math:`i`) has its own entry :math:`m_i` as positive and :math:`K`
entries :math:`m_{j_1} .. m_{j_K}` drawn uniformly from the bank as noise (negatives). With temperature
:math:`\tau` and the normalisation constant :math:`Z` of the non-parametric softmax,

.. math::

    x(v, m) = \frac{e^{v \cdot m / \tau}}{Z}, \qquad
    h(x) = \frac{x}{x + K P_n}, \qquad P_n = \frac{1}{n},

    \ell_i = -\log h\bigl(x(v_i, m_i)\bigr) - \sum_{k=1}^{K} \log\bigl(1 - h(x(v_i, m_{j_k}))\bigr),
    \qquad \mathcal{L} = \frac{1}{B} \sum_{i=1}^{B} \ell_i .

:math:`Z` is a constant, estimated once (:func:`estimate_normaliser`) as the mean of
:math:`e^{v \cdot m / \tau}` over the positive and noise scores of the first batch times :math:`n`
(:class:`BinaryNCELoss` does so on its first call when it is not given).

**Log space.** With :math:`\log x = v \cdot m / \tau - \log Z` and :math:`c = \log(K P_n)`,
:math:`-\log h = \mathrm{softplus}(c - \log x)` and :math:`-\log(1 - h) = \mathrm{softplus}(\log x - c)`,
so no exponential is formed (:math:`e^{1/\tau} \approx 1.6 \cdot 10^6` at :math:`\tau = 0.07`).

**Memory bank update** (after the loss, with the batch's features :math:`f_i`, normalised):
:math:`m_i \leftarrow \mathrm{normalise}(\mu\, m_i + (1 - \mu) f_i)`, :math:`\mu = 0.5`.

**Reference-code mapping** (zhirongw/lemniscate.pytorch). ``NCEAverage(inputSize, outputSize, K, T,
momentum)``: ``memory`` is :attr:`MemoryBank.memory`; ``idx = multinomial.draw(B * (K + 1))`` with uniform
unigrams, column 0 replaced by ``y``, is :meth:`MemoryBank.sample_negatives` plus
:meth:`MemoryBank.entries` of ``y``; ``out = exp(bmm(weight, x) / T) / Z`` is :math:`x`, with ``Z = out.mean()
* outputSize`` set on the first batch (:func:`estimate_normaliser`); the update in ``NCEFunction.backward``
(``weight_pos * momentum + x * (1 - momentum)``, divided by its norm, ``index_copy_``) is
:meth:`MemoryBank.update`. ``NCECriterion(nLem)``: ``Pnt = Pns = 1 / nLem``, ``lnPmt = log(Pmt / (Pmt + K Pnt +
eps))``, ``lnPon = log(K Pns / (Pms + K Pns + eps))``, ``loss = -(lnPmt.sum() + lnPon.sum()) / batchSize`` is
:func:`binary_nce` without lemniscate's ``eps = 1e-7`` (which changes each term by at most
:math:`\epsilon / (K P_n)` relatively). Two differences: the inputs here are L2-normalised by the loss
(lemniscate's network ends in a normalisation layer), and lemniscate passes no gradient to the memory
entries (here they are plain tensors: :meth:`MemoryBank.entries` returns them without gradient).

Reference:
    Wu, Xiong, Yu, Lin. "Unsupervised Feature Learning via Non-Parametric Instance Discrimination",
    CVPR 2018. https://arxiv.org/abs/1805.01978 (code: https://github.com/zhirongw/lemniscate.pytorch)
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmcontrast.losses.distributed import all_reduce_sum, check_same_shapes, gather_rows, rank_and_world_size
from mmcontrast.losses.similarity import (
    Scale,
    check_embeddings,
    check_positive,
    check_same_shape,
    full_precision,
    prepare,
)


def _check_count(fn: str, name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{fn}: {name} must be a positive int, got {value!r}")


def _check_inputs(fn: str, queries: Tensor, positives: Tensor, negatives: Tensor) -> None:
    check_embeddings(fn, "queries", queries)
    check_embeddings(fn, "positives", positives)
    check_same_shape(fn, "queries", queries, "positives", positives, "every query needs exactly one positive")
    check_embeddings(fn, "negatives", negatives, ("[B, K, d]",))
    rows, dim = queries.shape
    if negatives.shape[0] != rows or negatives.shape[2] != dim:
        raise ValueError(
            f"{fn}: negatives has shape {tuple(negatives.shape)} but queries has shape {tuple(queries.shape)}; "
            f"negatives must be [B, K, d] with B={rows}, d={dim}"
        )


def _nce_scores(queries: Tensor, positives: Tensor, negatives: Tensor, temperature: Scale) -> Tensor:
    """``[B, 1 + K]`` float32 logits ``v . m / tau`` (positive first) of the normalised inputs."""
    queries, positives, negatives = prepare(queries, True), prepare(positives, True), prepare(negatives, True)
    candidates = torch.cat([positives.unsqueeze(1), negatives], dim=1)
    return torch.matmul(candidates, queries.unsqueeze(-1)).squeeze(-1) / temperature


def estimate_normaliser(scores_exp: Tensor, num_data: int) -> float:
    """lemniscate's estimate of ``Z``: the mean of ``exp(v . m / tau)`` over a batch of scores, times ``n``.

    Args:
        scores_exp: the exponentiated scores ``exp(v . m / tau)`` of one batch, any shape (lemniscate uses
            all ``B * (K + 1)`` positive and noise scores of the first batch).
        num_data: ``n``, the number of data points (memory-bank entries).

    Returns:
        ``Z`` as a Python float (computed in float64).
    """
    fn = "estimate_normaliser"
    if not isinstance(scores_exp, Tensor):
        raise TypeError(f"{fn}: scores_exp must be a torch.Tensor, got {type(scores_exp).__name__}")
    if scores_exp.numel() == 0:
        raise ValueError(f"{fn}: scores_exp is empty (shape {tuple(scores_exp.shape)})")
    _check_count(fn, "num_data", num_data)
    value = float(scores_exp.detach().double().mean()) * num_data
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{fn}: scores_exp must hold positive finite values, their mean times n is {value!r}")
    return value


def binary_nce(
    queries: Tensor,
    positives: Tensor,
    negatives: Tensor,
    *,
    temperature: Scale = 0.07,
    normaliser: float,
    num_data: int,
) -> Tensor:
    """Binary NCE of each query against its positive memory entry and ``K`` uniform noise entries.

    Args:
        queries: ``[B, d]`` features ``v`` (L2-normalised by the loss).
        positives: ``[B, d]``; ``positives[i]`` is the memory entry of ``queries[i]``'s sample.
        negatives: ``[B, K, d]`` noise entries of each query (drawn uniformly from the bank, ``K >= 1``).
        temperature: ``tau`` (a positive float or a scalar tensor, which keeps its gradient).
        normaliser: the constant ``Z`` (see :func:`estimate_normaliser`), a positive float.
        num_data: ``n``, the number of entries of the bank; the noise distribution is ``P_n = 1 / n``.

    Returns:
        The loss averaged over the batch, a float32 scalar (float32 under autocast too).
    """
    fn = "binary_nce"
    _check_inputs(fn, queries, positives, negatives)
    check_positive(fn, "temperature", temperature)
    if isinstance(normaliser, bool) or not isinstance(normaliser, int | float):
        raise TypeError(f"{fn}: normaliser must be a positive float (Z), got {type(normaliser).__name__}")
    check_positive(fn, "normaliser", normaliser)
    _check_count(fn, "num_data", num_data)
    num_noise = negatives.shape[1]
    log_noise = math.log(num_noise) - math.log(num_data)  # log(K P_n)
    with full_precision(queries):
        log_x = _nce_scores(queries, positives, negatives, temperature) - math.log(normaliser)
        losses = F.softplus(log_noise - log_x[:, 0]) + F.softplus(log_x[:, 1:] - log_noise).sum(dim=1)
    return losses.mean()


class BinaryNCELoss(nn.Module):
    """Module form of :func:`binary_nce`; estimates ``Z`` on its first call unless it is given (lemniscate).

    ``Z`` lives in the float64 buffer ``normaliser`` (``-1`` until estimated), so it is checkpointed with
    the model. The estimate is the mean of ``exp(v . m / tau)`` over all ``B (K + 1)`` scores of the first
    batch, times ``num_data``, without gradient.

    Args:
        num_data: ``n``, the number of data points (memory-bank entries).
        temperature: ``tau``.
        normaliser: a fixed ``Z``; estimated from the first batch when ``None``.
        gather: with an initialised process group of several ranks, estimate ``Z`` from the first batch of
            all ranks (the mean of the per-rank means, all ranks passing the same shapes), so that every rank
            uses the same ``Z``. A no-op on one process.
    """

    normaliser: Tensor

    def __init__(
        self, num_data: int, temperature: float = 0.07, normaliser: float | None = None, gather: bool = True
    ) -> None:
        super().__init__()
        fn = "BinaryNCELoss"
        _check_count(fn, "num_data", num_data)
        check_positive(fn, "temperature", temperature)
        if normaliser is not None:
            check_positive(fn, "normaliser", normaliser)
        self.num_data = num_data
        self.temperature = temperature
        self.gather = gather
        self.register_buffer(
            "normaliser", torch.tensor(-1.0 if normaliser is None else normaliser, dtype=torch.float64)
        )

    def forward(self, queries: Tensor, positives: Tensor, negatives: Tensor) -> Tensor:
        """Return :func:`binary_nce` of the given embeddings, estimating ``Z`` first if not yet set."""
        if float(self.normaliser) <= 0:
            _check_inputs("BinaryNCELoss", queries, positives, negatives)
            with torch.no_grad(), full_precision(queries):
                log_scores = _nce_scores(queries.detach(), positives.detach(), negatives.detach(), self.temperature)
                log_mean = torch.logsumexp(log_scores.double().flatten(), 0) - math.log(log_scores.numel())
                _, world_size = rank_and_world_size(self.gather)
                if world_size > 1:  # the mean over all ranks' scores (equal batches), so every rank has one Z
                    check_same_shapes("BinaryNCELoss", ("negatives",), (negatives,), world_size)
                    log_mean = all_reduce_sum(log_mean.exp()).log() - math.log(world_size)
                self.normaliser.fill_(float(log_mean.exp()) * self.num_data)
        return binary_nce(
            queries,
            positives,
            negatives,
            temperature=self.temperature,
            normaliser=float(self.normaliser),
            num_data=self.num_data,
        )

    def extra_repr(self) -> str:
        return (
            f"num_data={self.num_data}, temperature={self.temperature}, normaliser={float(self.normaliser)}, "
            f"gather={self.gather}"
        )


class MemoryBank(nn.Module):
    """One L2-normalised entry per data point, updated by momentum (instance discrimination).

    The entries live in the buffer ``memory`` (``[num_data, dim]``, float32), so they are saved and
    restored with the model's ``state_dict``. They start as normalised Gaussian vectors (lemniscate
    starts from uniform noise, unnormalised; either is overwritten after the first epoch).

    Args:
        num_data: ``n``, the number of data points.
        dim: embedding dimension ``d``.
        momentum: ``mu`` of the update ``m <- normalise(mu m + (1 - mu) f)``, in ``[0, 1]`` (0.5 in the paper).
        gather: in :meth:`update`, gather the indices and features of all ranks (without gradient) when a
            process group of several ranks is initialised (the default), so every rank's bank stays identical.
        generator: optional ``torch.Generator`` for the initial entries.
    """

    memory: Tensor

    def __init__(
        self,
        num_data: int,
        dim: int,
        momentum: float = 0.5,
        *,
        gather: bool = True,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        fn = "MemoryBank"
        _check_count(fn, "num_data", num_data)
        _check_count(fn, "dim", dim)
        if isinstance(momentum, bool) or not isinstance(momentum, int | float) or not 0 <= momentum <= 1:
            raise ValueError(f"{fn}: momentum must be a number in [0, 1], got {momentum!r}")
        self.momentum = float(momentum)
        self.gather = gather
        self.register_buffer("memory", F.normalize(torch.randn(num_data, dim, generator=generator), dim=1))

    @property
    def num_data(self) -> int:
        """Number of entries ``n``."""
        return self.memory.shape[0]

    def _check_indices(self, fn: str, indices: Tensor) -> None:
        if not isinstance(indices, Tensor):
            raise TypeError(f"{fn}: indices must be a torch.Tensor, got {type(indices).__name__}")
        if indices.is_floating_point() or indices.is_complex() or indices.dtype == torch.bool:
            raise TypeError(f"{fn}: indices must be an integer tensor, got dtype {indices.dtype}")
        if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= self.num_data):
            raise ValueError(
                f"{fn}: indices must lie in [0, {self.num_data}), got values in "
                f"[{int(indices.min())}, {int(indices.max())}]"
            )

    def entries(self, indices: Tensor) -> Tensor:
        """The entries at ``indices`` (any shape ``S``): a ``[*S, dim]`` copy without gradient."""
        self._check_indices("MemoryBank.entries", indices)
        return self.memory[indices.to(self.memory.device)].detach()

    def sample_indices(self, batch_size: int, k: int, generator: torch.Generator | None = None) -> Tensor:
        """``[batch_size, k]`` indices drawn uniformly with replacement from ``0 .. n - 1`` (lemniscate's noise).

        A query's own entry can be drawn, as in lemniscate. Drawn on the generator's device (the bank's
        without one) and moved to the bank's device.
        """
        _check_count("MemoryBank.sample_indices", "batch_size", batch_size)
        _check_count("MemoryBank.sample_indices", "k", k)
        device = generator.device if generator is not None else self.memory.device
        indices = torch.randint(0, self.num_data, (batch_size, k), generator=generator, device=device)
        return indices.to(self.memory.device)

    def sample_negatives(self, batch_size: int, k: int, generator: torch.Generator | None = None) -> Tensor:
        """``[batch_size, k, dim]`` noise entries drawn uniformly (:meth:`sample_indices`), without gradient."""
        return self.entries(self.sample_indices(batch_size, k, generator))

    @torch.no_grad()
    def update(self, indices: Tensor, features: Tensor) -> None:
        """``m[i] <- normalise(mu m[i] + (1 - mu) normalise(f))`` for each ``(i, f)`` of ``(indices, features)``.

        With ``gather`` and several ranks, the indices and features of all ranks are gathered first (every
        rank must pass the same number), so every rank applies the same update. When an index occurs more
        than once (in the gathered batch), each copy is computed from the old entry and the last one is kept.
        """
        fn = "MemoryBank.update"
        check_embeddings(fn, "features", features)
        if features.shape[1] != self.memory.shape[1]:
            raise ValueError(
                f"{fn}: features has shape {tuple(features.shape)} but the bank holds "
                f"{self.memory.shape[1]}-dimensional entries"
            )
        self._check_indices(fn, indices)
        if indices.ndim != 1 or indices.shape[0] != features.shape[0]:
            raise ValueError(
                f"{fn}: indices has shape {tuple(indices.shape)} but features has {features.shape[0]} rows; "
                "indices must be 1-D with one entry per row"
            )
        features, indices = features.detach(), indices.to(features.device).long()
        _, world_size = rank_and_world_size(self.gather)
        if world_size > 1:
            indices, features = gather_rows(fn, ("indices", "features"), (indices, features), world_size)
        indices = indices.to(self.memory.device)
        features = F.normalize(features.to(device=self.memory.device, dtype=torch.float32), dim=1)
        unique, inverse = torch.unique(indices, return_inverse=True)
        positions = torch.arange(indices.shape[0], device=indices.device)
        last = torch.full_like(unique, -1).scatter_reduce(0, inverse, positions, "amax")
        mixed = self.momentum * self.memory[unique] + (1.0 - self.momentum) * features[last]
        self.memory[unique] = F.normalize(mixed, dim=1).to(self.memory.dtype)

    def extra_repr(self) -> str:
        return f"num_data={self.num_data}, dim={self.memory.shape[1]}, momentum={self.momentum}, gather={self.gather}"
