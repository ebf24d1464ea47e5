"""The engine's hook after the optimizer step (Method.after_optimizer_step): called once per optimizer step with the
global step, also under gradient accumulation, and the momentum state it moves (an EMA target, a queue) is in the
checkpoints, so a resumed run ends bit-identical to an uninterrupted one."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from mmcontrast.data.samplers import ShuffledBatchSampler
from mmcontrast.engine.checkpoints import checkpoint_dirs
from mmcontrast.engine.trainer import Trainer, TrainingConfig
from mmcontrast.losses import EMA, MemoryQueue, cosine_momentum
from mmcontrast.methods.base import LossOutput, Method


class MomentumRegression(Method):
    """y = w x, pulled towards an EMA target's predictions and pushed from a queue of past target outputs."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.online = nn.Linear(3, 2)
        self.target = copy.deepcopy(self.online)
        self.ema = EMA(self.online, self.target, cosine_momentum(0.9))
        self.queue = MemoryQueue(dim=2, size=6, gather=False)
        self.register_buffer("hook_calls", torch.zeros((), dtype=torch.long))  # checkpointed with the rest
        self.steps_seen: list[int] = []
        self.keys: torch.Tensor | None = None

    def collate(self, rows):
        return {"x": torch.stack([r[0] for r in rows]), "y": torch.stack([r[1] for r in rows])}

    def embed(self, batch):
        with torch.no_grad():
            self.keys = self.target(batch["x"])
        return {"online": self.online(batch["x"]), "target": self.keys}

    def loss(self, embeddings, batch):
        online = embeddings["online"]
        value = ((online[:, 0] - batch["y"]) ** 2).mean() + 0.1 * F.mse_loss(online, embeddings["target"])
        if int(self.queue.filled):
            value = value - 0.01 * (online @ self.queue.negatives().T).mean()
        return LossOutput(value)

    def after_optimizer_step(self, step: int, total_steps: int) -> None:
        self.hook_calls += 1
        self.steps_seen.append(step)
        self.ema.update(step, total_steps)
        self.queue.enqueue(self.keys)


def data(rows: int = 32):
    x = torch.randn(rows, 3, generator=torch.Generator().manual_seed(0))
    return [(x[i], x[i].sum()) for i in range(rows)]


def trainer(output_dir: Path, **overrides) -> Trainer:
    settings = {"batch_size": 4, "lr": 0.05, "max_steps": 8, "progress_bar": False, "logging_steps": 1}
    config = TrainingConfig(**{**settings, **overrides})
    rows = data()
    sampler = ShuffledBatchSampler(len(rows), config.batch_size, seed=config.seed, drop_last=True)
    return Trainer(MomentumRegression(), rows, sampler, config, output_dir)


def state(run: Trainer) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in run.method.state_dict().items()}


def test_the_hook_runs_once_per_optimizer_step_with_the_global_step(tmp_path: Path) -> None:
    run = trainer(tmp_path, gradient_accumulation_steps=2)
    run.train()
    assert run.method.steps_seen == list(range(1, 9))  # 8 steps of 2 micro-batches each
    assert int(run.method.hook_calls) == 8
    target = dict(run.method.target.named_parameters())
    assert all(not p.requires_grad for p in target.values())
    online = dict(run.method.online.named_parameters())
    assert any(not torch.equal(online[name], target[name]) for name in online)  # the target lags the online net
    assert int(run.method.queue.filled) == 6


def test_ema_and_queue_state_resume_exactly(tmp_path: Path) -> None:
    reference = trainer(tmp_path / "reference")
    reference.train()
    run = tmp_path / "run"
    trainer(run, save_steps=2, save_total_limit=0).train()
    for folder in checkpoint_dirs(run / "checkpoints")[-2:]:  # as if killed after the step-4 checkpoint
        shutil.rmtree(folder)
    resumed = trainer(run, save_steps=2, save_total_limit=0)
    resumed.train(resume_from="latest")
    expected, got = state(reference), state(resumed)
    assert {"target.weight", "queue.keys", "queue.position", "hook_calls"} <= set(got)
    assert resumed.method.steps_seen == [5, 6, 7, 8] and int(resumed.method.hook_calls) == 8
    for name, tensor in expected.items():
        assert torch.equal(tensor, got[name]), name
