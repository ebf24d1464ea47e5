"""The engine on a toy method: NaN guard, gradient accumulation, checkpoint rotation and atomicity."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mmcontrast.data.samplers import ShuffledBatchSampler
from mmcontrast.engine.checkpoints import CheckpointError, checkpoint_dirs, resolve_resume
from mmcontrast.engine.trainer import Trainer, TrainingConfig
from mmcontrast.methods.base import LossOutput, Method


class Regression(Method):
    """y = w x, squared error; optionally returns NaN from a given call on."""

    def __init__(self, nan_from_call: int | None = None) -> None:
        super().__init__()
        self.linear = nn.Linear(3, 1)
        self.calls = 0
        self.nan_from_call = nan_from_call

    def collate(self, rows):
        return {"x": torch.stack([r[0] for r in rows]), "y": torch.stack([r[1] for r in rows])}

    def embed(self, batch):
        return {"prediction": self.linear(batch["x"]).squeeze(-1)}

    def loss(self, embeddings, batch):
        self.calls += 1
        value = ((embeddings["prediction"] - batch["y"]) ** 2).mean()
        if self.nan_from_call is not None and self.calls >= self.nan_from_call:
            value = value * float("nan")
        return LossOutput(value)


def _data(rows=32):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(rows, 3, generator=generator)
    return [(x[i], x[i].sum()) for i in range(rows)]


def _trainer(tmp_path, method, batch_size, **overrides):
    config = TrainingConfig(
        batch_size=batch_size, lr=0.05, warmup_ratio=0.0, progress_bar=False, logging_steps=1, **overrides
    )
    data = _data()
    sampler = ShuffledBatchSampler(len(data), batch_size, seed=config.seed, drop_last=True)
    return Trainer(method, data, sampler, config, tmp_path)


def test_non_finite_loss_stops_with_the_step(tmp_path):
    trainer = _trainer(tmp_path, Regression(nan_from_call=3), 8)
    with pytest.raises(FloatingPointError, match=r"diverged at step 3 \(learning rate 0.025\): the loss is nan"):
        trainer.train()


def test_gradient_accumulation_equals_the_large_batch(tmp_path):
    torch.manual_seed(0)
    large = Regression()
    torch.manual_seed(0)
    accumulated = Regression()
    _trainer(tmp_path / "a", large, 8, max_steps=4).train()
    # two micro-batches of 4 per step: the same rows as one batch of 8 (same seed, consecutive slices)
    _trainer(tmp_path / "b", accumulated, 4, max_steps=4, gradient_accumulation_steps=2).train()
    for p, q in zip(large.parameters(), accumulated.parameters(), strict=True):
        assert torch.allclose(p, q, atol=1e-6)


def test_checkpoints_rotate_and_temporary_folders_are_ignored(tmp_path):
    trainer = _trainer(tmp_path, Regression(), 4, max_steps=8, save_steps=2, save_total_limit=2)
    trainer.train()
    root = tmp_path / "checkpoints"
    assert [p.name for p in checkpoint_dirs(root)] == ["checkpoint-00000006", "checkpoint-00000008"]
    (root / ".tmp-checkpoint-00000010").mkdir()  # what a kill during a save leaves behind
    assert resolve_resume("latest", root).name == "checkpoint-00000008"
    with pytest.raises(CheckpointError, match="not a checkpoint folder"):
        resolve_resume(str(root / ".tmp-checkpoint-00000010"), root)


@pytest.mark.parametrize("save_steps", [0, 3])
def test_deferred_checks_name_the_first_bad_step_and_keep_no_checkpoint_of_it(tmp_path, monkeypatch, save_steps):
    """On an accelerator the finiteness checks are read at the logging interval and before a checkpoint (no
    wait per step): forced on here, the run still names the first bad step and its learning rate."""
    from functools import partial

    import mmcontrast.engine.trainer as trainer_module
    from mmcontrast.engine.divergence import DivergenceWatch

    monkeypatch.setattr(trainer_module, "DivergenceWatch", partial(DivergenceWatch, deferred=True))
    config = TrainingConfig(batch_size=8, lr=0.05, warmup_ratio=0.0, progress_bar=False, logging_steps=4)
    config.save_steps = save_steps
    trainer = Trainer(Regression(nan_from_call=3), _data(), config=config, output_dir=tmp_path)
    assert trainer.divergence.deferred
    with pytest.raises(FloatingPointError, match=r"diverged at step 3 \(learning rate 0.025\): the loss is not finite"):
        trainer.train()
    assert checkpoint_dirs(tmp_path / "checkpoints") == []


def test_a_non_finite_gradient_norm_is_named():
    from mmcontrast.engine.divergence import DivergenceWatch

    now, later = DivergenceWatch(torch.device("cpu")), DivergenceWatch(torch.device("cpu"), deferred=True)
    assert now.check(torch.tensor(float("inf")), 5, 1) == "the gradient norm is inf"
    for step, value in enumerate([1.0, 2.0, float("nan"), float("inf")], 1):
        assert later.check(torch.tensor(value), step, 1 if step == 3 else 0) is None
    assert later.flush() == (3, "the gradient norm is not finite")
