r"""MoCo: queries from the online encoder, keys from a momentum encoder.

Two views :math:`a, b` of each example; the query :math:`q = \operatorname{norm}(g(f(a)))` comes from the online
backbone and head, the key :math:`k = \operatorname{norm}(g'(f'(b)))` from a momentum copy of them (an exponential
moving average, updated after every optimizer step, no gradient). Two versions:

- **MoCo v2** (He et al. 2020; Chen et al. 2020): the negatives are a FIFO queue of the keys of past batches
  (:class:`~mmcontrast.losses.MemoryQueue`, ``queue_size`` keys), so their number does not depend on the batch:

  .. math::

      \ell = -\log \frac{\exp(q \cdot k / \tau)}{\exp(q \cdot k / \tau) + \sum_{u \in \text{queue}}
          \exp(q \cdot u / \tau)}

  The batch's keys are enqueued after the optimizer step (every process's keys, gathered, so every queue is the
  same). The head is an MLP without batch norm; the momentum is constant (0.999). ``symmetric`` adds the
  :math:`(b, a)` direction, as lightly's examples do; the paper uses one direction. While the queue is empty (the
  first step) there are no negatives and the loss is 0.
- **MoCo v3** (Chen, Xie, He 2021): no queue; the online branch has a predictor too, the negatives are the other
  keys of the (global) batch, the loss is symmetric and scaled by :math:`2\tau` as in the paper's code, and the
  momentum rises from 0.99 to 1 along a cosine:

  .. math::

      \mathcal{L} = 2\tau \left( \operatorname{InfoNCE}(q_a, k_b) + \operatorname{InfoNCE}(q_b, k_a) \right)

  (:func:`mmcontrast.losses.info_nce` with the keys of every process as columns).

With ``V > 2`` views the loss is the mean over ordered pairs of views (v2: the pairs ``(0, v)``, or all ordered
pairs when ``symmetric``). The key encoder's batch norms use their batch's statistics in train mode; MoCo's
shuffling BN across devices is not implemented: use a backbone with layer norm (the ViT of the recipes) or a
single process when the backbone has batch norm.

References:
    He, Fan, Wu, Xie, Girshick. "Momentum Contrast for Unsupervised Visual Representation Learning", CVPR 2020.
    https://arxiv.org/abs/1911.05722

    Chen, Fan, Girshick, He. "Improved Baselines with Momentum Contrastive Learning", 2020.
    https://arxiv.org/abs/2003.04297

    Chen, Xie, He. "An Empirical Study of Training Self-Supervised Vision Transformers", ICCV 2021.
    https://arxiv.org/abs/2104.02057
"""

from __future__ import annotations

from itertools import permutations
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mmcontrast.losses import MemoryQueue, cosine_momentum, info_nce
from mmcontrast.losses.ema import MomentumSchedule
from mmcontrast.methods.base import LossOutput
from mmcontrast.methods.views import MomentumTarget, ViewsMethod, normalised_std


def output_dim(head: nn.Module) -> int:
    """The output size of a head: the ``out_features`` of its last linear layer."""
    linears = [module for module in head.modules() if isinstance(module, nn.Linear)]
    if not linears:
        raise ValueError(f"MoCo: cannot tell the output size of a {type(head).__name__} head (it has no nn.Linear)")
    return linears[-1].out_features


class MoCo(ViewsMethod):
    """MoCo v2 (queue + momentum encoder) or v3 (predictor, symmetric, in-batch keys as negatives).

    Args:
        encoder: the backbone, kept after training.
        head: the projection head (v2: Linear-ReLU-Linear to 128; v3: 3 layers with batch norm to 256).
        predictor: v3's predictor (2 layers with batch norm); ``None`` for v2.
        version: 2 or 3.
        modality: the backbone's modality (default: from its type).
        temperature: ``tau`` (v2: 0.2; v3: 0.2 for ViTs, 1.0 for ResNets).
        momentum: the key encoder's momentum: a constant (v2: 0.999) or a schedule ``(step, total) -> m``
            (default for v3: :func:`~mmcontrast.losses.cosine_momentum` from 0.99 to 1).
        queue_size: v2's queue length (65536 in the paper).
        symmetric: v2: also score the second view's queries against the first view's keys.
        gather: v3: the keys of every process are negatives; v2: every process's keys go into the queue.
    """

    name = "MoCo"

    def __init__(
        self,
        encoder: nn.Module,
        head: nn.Module,
        predictor: nn.Module | None = None,
        *,
        version: int = 2,
        modality: str | None = None,
        temperature: float = 0.2,
        momentum: float | MomentumSchedule | None = None,
        queue_size: int = 65536,
        symmetric: bool = False,
        gather: bool = True,
    ) -> None:
        super().__init__(encoder, modality=modality)
        if version not in (2, 3):
            raise ValueError(f"MoCo: version must be 2 or 3, got {version!r}")
        if (version == 3) != (predictor is not None):
            raise ValueError("MoCo: v3 needs a predictor and v2 has none (give predictor only with version=3)")
        if temperature <= 0:
            raise ValueError(f"MoCo: temperature must be positive, got {temperature}")
        self.version = version
        self.head = head
        self.predictor = predictor
        self.temperature = temperature
        self.symmetric = symmetric or version == 3
        self.gather = gather
        if momentum is None:
            momentum = 0.999 if version == 2 else cosine_momentum(0.99)
        self.target = MomentumTarget(self.encoder, head, self.modality, momentum)
        self.queue = MemoryQueue(output_dim(head), queue_size, gather=gather) if version == 2 else None
        self._pending: list[torch.Tensor] = []  # keys to enqueue after the optimizer step
        self.last_momentum = self.target.momentum_at(0, 1)

    def embed(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """``{"queries": [B, V, d]}``: the online head's (v3: predictor's) output for every view, not normalised."""
        queries = self.projections(batch, self.head)
        if self.predictor is not None:
            queries = self.predictor(queries.flatten(0, 1)).reshape(*queries.shape[:2], -1)
        return {"queries": queries}

    def pairs(self, views: int) -> list[tuple[int, int]]:
        """The (query view, key view) pairs scored."""
        if self.symmetric:
            return list(permutations(range(views), 2))
        return [(0, b) for b in range(1, views)]

    def queue_loss(self, queries: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        """v2: cross-entropy of each query over its key (first column) and the queue."""
        assert self.queue is not None
        queries, keys = F.normalize(queries.float(), dim=-1), F.normalize(keys.float(), dim=-1)
        positive = (queries * keys).sum(-1, keepdim=True)
        negatives = queries @ F.normalize(self.queue.negatives().float(), dim=-1).T
        logits = torch.cat([positive, negatives], dim=1) / self.temperature
        return F.cross_entropy(logits, torch.zeros(len(logits), dtype=torch.long, device=logits.device))

    def loss(self, embeddings: dict[str, torch.Tensor], batch: dict[str, Any]) -> LossOutput:
        queries = embeddings["queries"]
        values, mask, shape = self.flat_views(batch)
        keys = self.unflat(self.target(values, mask), shape)  # no gradient
        pairs = self.pairs(queries.shape[1])
        if self.version == 2:
            value = sum(self.queue_loss(queries[:, a], keys[:, b]) for a, b in pairs) / len(pairs)
            if self.training:
                self._pending += [F.normalize(keys[:, b].detach(), dim=-1) for b in sorted({b for _, b in pairs})]
        else:
            scale = 1.0 / self.temperature
            value = sum(info_nce(queries[:, a], keys[:, b], scale=scale, gather=self.gather) for a, b in pairs)
            value = value * 2 * self.temperature / (len(pairs) / 2)
        metrics = {"projection_std": normalised_std(queries), "momentum": self.last_momentum}
        return LossOutput(value, metrics)

    def after_optimizer_step(self, step: int, total_steps: int) -> None:
        """Enqueue the keys of the step's batches (v2), then move the key encoder towards the online one."""
        if self.queue is not None:
            for keys in self._pending:
                self.queue.enqueue(keys)
        self._pending.clear()
        self.last_momentum = self.target.update(step, total_steps)
