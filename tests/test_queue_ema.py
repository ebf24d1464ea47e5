"""Memory queue (MoCo) and EMA target networks (MoCo, BYOL).

The distributed enqueue (identical queues on every rank) is checked in
``test_losses_distributed.py``, inside its spawned job.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from mmcontrast.losses import EMA, MemoryQueue, cosine_momentum, info_nce


def keys(*values: float) -> torch.Tensor:
    """One 2-d key per value: ``[value, -value]``."""
    column = torch.tensor(values, dtype=torch.float32)
    return torch.stack([column, -column], dim=1)


def test_queue_fifo_and_wrap_around():
    queue = MemoryQueue(dim=2, size=5)
    assert queue.negatives().shape == (0, 2)
    queue.enqueue(keys(1, 2))
    assert queue.negatives()[:, 0].tolist() == [1, 2]
    queue.enqueue(keys(3, 4))
    queue.enqueue(keys(5, 6))  # 6 wraps to slot 0, overwriting 1, the oldest
    assert queue.keys[:, 0].tolist() == [6, 2, 3, 4, 5]
    assert int(queue.position) == 1 and int(queue.filled) == 5
    queue.enqueue(keys(7, 8, 9))  # overwrites 2, 3, 4
    assert queue.keys[:, 0].tolist() == [6, 7, 8, 9, 5]
    torch.testing.assert_close(queue.negatives(), queue.keys)
    queue.enqueue(keys(*range(10, 17)))  # more than the capacity: the last 5 are kept
    assert sorted(queue.negatives()[:, 0].tolist()) == [12, 13, 14, 15, 16]


def test_queue_state_is_checkpointed():
    queue = MemoryQueue(dim=2, size=4)
    queue.enqueue(keys(1, 2, 3))
    restored = MemoryQueue(dim=2, size=4)
    restored.load_state_dict(queue.state_dict())
    assert set(queue.state_dict()) == {"keys", "position", "filled"}
    torch.testing.assert_close(restored.negatives(), queue.negatives())
    restored.enqueue(keys(4, 5))
    assert restored.keys[:, 0].tolist() == [5, 2, 3, 4]


def test_queue_stores_detached_keys_and_checks_them():
    queue = MemoryQueue(dim=3, size=4)
    queue.enqueue(torch.randn(2, 3, requires_grad=True))
    assert not queue.negatives().requires_grad
    with pytest.raises(ValueError, match=r"MemoryQueue.enqueue: keys has shape \(2, 4\)"):
        queue.enqueue(torch.randn(2, 4))
    with pytest.raises(ValueError, match="MemoryQueue: size must be a positive int"):
        MemoryQueue(dim=3, size=0)


def test_queue_negatives_are_shared_columns_of_info_nce():
    """The queue's keys enter as extra columns, exactly like hard negatives shared by every anchor."""
    generator = torch.Generator().manual_seed(0)
    anchors, positives = torch.randn(3, 4, generator=generator), torch.randn(3, 4, generator=generator)
    queue = MemoryQueue(dim=4, size=6)
    queue.enqueue(torch.randn(6, 4, generator=generator))
    as_hard_negatives = queue.negatives().reshape(3, 2, 4)
    for symmetric in (False, True):
        torch.testing.assert_close(
            info_nce(anchors, positives, shared_negatives=queue.negatives(), symmetric=symmetric),
            info_nce(anchors, positives, as_hard_negatives, symmetric=symmetric),
        )


def make_networks() -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    online = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    target = copy.deepcopy(online)
    for param in target.parameters():
        nn.init.normal_(param)  # EMA must start from the online weights, not these
    return online, target


def test_ema_copies_freezes_and_averages():
    online, target = make_networks()
    ema = EMA(online, target, momentum=0.9)
    for source, copied in zip(online.parameters(), target.parameters(), strict=True):
        assert torch.equal(source, copied) and not copied.requires_grad
    assert all(param.requires_grad for param in online.parameters())
    before = [param.detach().clone() for param in target.parameters()]
    with torch.no_grad():
        for param in online.parameters():
            param.add_(torch.randn_like(param))
    assert ema.update(step=3, total_steps=10) == 0.9
    for old, source, updated in zip(before, online.parameters(), target.parameters(), strict=True):
        torch.testing.assert_close(updated, 0.9 * old + 0.1 * source)


def test_cosine_momentum_schedule():
    schedule = cosine_momentum(0.996)
    assert schedule(0, 100) == pytest.approx(0.996)
    assert schedule(50, 100) == pytest.approx(0.998)
    assert schedule(100, 100) == pytest.approx(1.0)
    assert schedule(150, 100) == pytest.approx(1.0)
    k, total = 30, 100
    assert schedule(k, total) == pytest.approx(1 - (1 - 0.996) * (math.cos(math.pi * k / total) + 1) / 2)


def test_ema_with_schedule_matches_manual():
    online, target = make_networks()
    ema = EMA(online, target, momentum=cosine_momentum(0.5))
    expected = [param.detach().clone() for param in target.parameters()]
    for step in range(4):
        with torch.no_grad():
            for param in online.parameters():
                param.mul_(1.1).add_(0.1)
        momentum = ema.update(step, total_steps=4)
        assert momentum == pytest.approx(1 - 0.5 * (math.cos(math.pi * step / 4) + 1) / 2)
        pairs = zip(expected, online.parameters(), strict=True)
        expected = [momentum * old + (1 - momentum) * source for old, source in pairs]
    for want, got in zip(expected, target.parameters(), strict=True):
        torch.testing.assert_close(got, want)


def test_ema_rejects_mismatched_networks():
    online = nn.Linear(3, 4)
    with pytest.raises(ValueError, match=r"EMA: parameter weight has shape \(4, 3\) in the online network"):
        EMA(online, nn.Linear(3, 5))
    with pytest.raises(ValueError, match="EMA: online and target networks differ in parameters: bias"):
        EMA(online, nn.Linear(3, 4, bias=False))
    with pytest.raises(ValueError, match="EMA: momentum must lie in"):
        EMA(online, nn.Linear(3, 4), momentum=1.5)
