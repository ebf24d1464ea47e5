r"""Instance discrimination with a memory bank (Wu et al. 2018): every training example is its own class.

The backbone :math:`f` and a linear head map a view of example :math:`i` to :math:`v = \operatorname{norm}(g(f(x)))`.
A memory bank keeps one normalised entry :math:`m_j` per example of the dataset (:class:`~mmcontrast.losses.
MemoryBank`, addressed by the dataset index); the probability that :math:`v` is example :math:`i` is
:math:`P(i \mid v) = \exp(m_i \cdot v / \tau) / Z` with :math:`Z = \sum_j \exp(m_j \cdot v / \tau)`, the paper's
non-parametric softmax. ``objective="softmax"`` trains it exactly, :math:`\mathcal{L} = -\log P(i \mid v)` over all
:math:`n` entries (affordable when the dataset is small). ``objective="nce"`` (the paper's choice for ImageNet)
approximates it with binary NCE against :math:`K` entries drawn uniformly from the bank
(:func:`mmcontrast.losses.binary_nce`), with a constant :math:`Z`:

.. math::

    \mathcal{L} = -\log h(i, v) - \sum_{k=1}^{K} \log (1 - h(j_k, v)),
    \qquad h(j, v) = \frac{P(j \mid v)}{P(j \mid v) + K / n}

where :math:`Z` is estimated once, on the first batch (lemniscate's constant,
:class:`mmcontrast.losses.BinaryNCELoss`, whose buffer keeps it). After every optimizer step the entries of the
batch's examples move towards their new features, :math:`m_i \leftarrow \operatorname{norm}(\mu m_i + (1 - \mu)
v_i)` (the mean of the example's views when it has several). The noise indices are drawn from a generator seeded by
``(seed, process, draw)``, the draw counter being a buffer: a resumed run draws the same noise as an uninterrupted one.

Reference:
    Wu, Xiong, Yu, Lin. "Unsupervised Feature Learning via Non-Parametric Instance Discrimination", CVPR 2018.
    https://arxiv.org/abs/1805.01978
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mmcontrast.losses import BinaryNCELoss, MemoryBank
from mmcontrast.losses.distributed import rank_and_world_size
from mmcontrast.methods.base import LossOutput
from mmcontrast.methods.moco import output_dim
from mmcontrast.methods.views import ViewsMethod, normalised_std


def noise_seed(seed: int, rank: int, draw: int) -> int:
    """The seed of one noise draw: a fixed function of (seed, process, draw), the same in every run (Python hashes
    tuples of ints without the per-process salt it gives strings)."""
    return hash((seed, rank, draw)) & (2**63 - 1)


class MemoryBankNCE(ViewsMethod):
    """Backbone + head trained to discriminate instances against a momentum-updated memory bank.

    Rows need their dataset ``index`` (views datasets add it) as well as their ``views``.

    Args:
        encoder: the backbone, kept after training.
        head: the head (the paper: a linear layer to 128), dropped at export.
        num_data: the number of training examples (the bank's size; indices must lie below it).
        modality: the backbone's modality (default: from its type).
        temperature: ``tau`` (0.07).
        negatives: ``K``, noise entries per query (4096).
        momentum: ``mu`` of the bank update (0.5).
        objective: ``nce`` (binary NCE against ``negatives`` noise entries) or ``softmax`` (the exact
            non-parametric softmax over the whole bank; ``negatives`` is then not used).
        seed: seed of the noise draws.
        gather: every process's updates go into every process's bank (identical banks).
    """

    name = "MemoryBankNCE"
    draws: torch.Tensor

    def __init__(
        self,
        encoder: nn.Module,
        head: nn.Module,
        num_data: int,
        *,
        modality: str | None = None,
        temperature: float = 0.07,
        negatives: int = 4096,
        momentum: float = 0.5,
        objective: str = "nce",
        seed: int = 0,
        gather: bool = True,
    ) -> None:
        super().__init__(encoder, modality=modality, min_views=1)
        if temperature <= 0:
            raise ValueError(f"MemoryBankNCE: temperature must be positive, got {temperature}")
        if negatives < 1:
            raise ValueError(f"MemoryBankNCE: negatives must be >= 1, got {negatives}")
        if objective not in ("nce", "softmax"):
            raise ValueError(f"MemoryBankNCE: objective must be 'nce' or 'softmax', got {objective!r}")
        self.objective = objective
        self.head = head
        self.bank = MemoryBank(
            num_data, output_dim(head), momentum, gather=gather, generator=torch.Generator().manual_seed(seed)
        )
        self.temperature = temperature
        self.num_negatives = negatives
        self.seed = seed
        self.nce = BinaryNCELoss(num_data, temperature, gather=gather)  # Z in its buffer, estimated on the first call
        self.register_buffer("draws", torch.zeros((), dtype=torch.long))
        self._pending: list[tuple[torch.Tensor, torch.Tensor]] = []  # (indices, features) to write after the step

    def embed(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """``{"projections": [B, V, d]}`` (not normalised; the loss normalises)."""
        return {"projections": self.projections(batch, self.head)}

    def noise(self, batch_size: int) -> torch.Tensor:
        """``[batch_size, K]`` noise indices of this draw, a fixed function of (seed, process, draw counter)."""
        rank, _ = rank_and_world_size(True)
        generator = torch.Generator().manual_seed(noise_seed(self.seed, rank, int(self.draws)))
        self.draws += 1
        return self.bank.sample_indices(batch_size, self.num_negatives, generator)

    def loss(self, embeddings: dict[str, torch.Tensor], batch: dict[str, Any]) -> LossOutput:
        indices = batch.get("indices")
        if indices is None:
            raise ValueError(
                "MemoryBankNCE: the batch has no indices; rows need their dataset 'index' (mmcontrast.views datasets "
                "add it)"
            )
        projections = embeddings["projections"]
        value = (
            self.softmax_loss(projections, indices)
            if self.objective == "softmax"
            else self.nce_loss(projections, indices)
        )
        if self.training:
            self._pending.append((indices, F.normalize(projections.detach().float(), dim=-1).mean(dim=1)))
        return LossOutput(value, {"projection_std": normalised_std(projections)})

    def softmax_loss(self, projections: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """The non-parametric softmax over all entries, ``-log P(i | v)``, averaged over views and rows."""
        memory = self.bank.memory.detach().float()
        unit = F.normalize(projections.float(), dim=-1)
        targets = indices.to(unit.device).repeat(projections.shape[1])
        logits = unit.transpose(0, 1).reshape(-1, unit.shape[-1]) @ memory.T / self.temperature  # view-major
        return F.cross_entropy(logits, targets)

    def nce_loss(self, projections: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """Binary NCE of every view against its entry and this draw's noise entries (``Z`` estimated once, on the
        first view of the first batch)."""
        positives = self.bank.entries(indices)
        noise = self.bank.entries(self.noise(len(indices)))
        views = projections.shape[1]
        return sum(self.nce(projections[:, v], positives, noise) for v in range(views)) / views

    def after_optimizer_step(self, step: int, total_steps: int) -> None:
        """Write the step's features into the bank (momentum update of their entries)."""
        for indices, features in self._pending:
            self.bank.update(indices, features)
        self._pending.clear()
