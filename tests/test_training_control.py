"""Training control in the engine: evaluation before training, early stopping, keeping the best model, callbacks,
trackers, the default sampler, the progress line without a bar, and gradient checkpointing."""

from __future__ import annotations

import json

import pytest
import torch
from accelerate.tracking import GeneralTracker
from test_engine import Regression, _data

from mmcontrast.data.samplers import ShuffledBatchSampler
from mmcontrast.engine.callbacks import TrainerCallback
from mmcontrast.engine.config import EarlyStoppingConfig, KeepBestConfig
from mmcontrast.engine.trainer import Trainer, TrainingConfig
from mmcontrast.typed_config import ConfigError


def _config(**overrides) -> TrainingConfig:
    settings = {"batch_size": 8, "lr": 0.05, "warmup_ratio": 0.0, "progress_bar": False, "logging_steps": 1}
    return TrainingConfig(**(settings | overrides))


def _state(method: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in method.state_dict().items()}


def _held_out_score(method: Regression) -> dict[str, float]:
    """Minus the squared error on rows the run never trains on: higher is better."""
    x = torch.randn(64, 3, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        error = ((method.linear(x).squeeze(-1) - x.sum(dim=1)) ** 2).mean()
    return {"score": -float(error)}


class Scripted:
    """An evaluator whose score is looked up by the exact weights it sees: ``scores[i]`` for the weights after
    step i of a reference run (0 for any other weights), so a metric can be made to peak at a chosen step."""

    def __init__(self, snapshots: list[dict[str, torch.Tensor]], scores: list[float]) -> None:
        self.snapshots, self.scores, self.calls = snapshots, scores, 0

    def __call__(self, method: Regression) -> dict[str, float]:
        self.calls += 1
        state = method.state_dict()
        for snapshot, score in zip(self.snapshots, self.scores, strict=True):
            if all(torch.equal(state[k], v) for k, v in snapshot.items()):
                return {"score": score}
        return {"score": 0.0}


def _snapshots(tmp_path, steps: int) -> list[dict[str, torch.Tensor]]:
    """The weights after each step 0..steps of the reference run (same seed and data as the runs under test)."""
    torch.manual_seed(0)
    method, snapshots = Regression(), []

    class Record(TrainerCallback):
        def on_evaluate(self, trainer, step, metrics):
            snapshots.append(_state(trainer.method))

    config = _config(max_steps=steps, eval_steps=1)
    trainer = Trainer(method, _data(), config=config, output_dir=tmp_path / "reference", callbacks=[Record()])
    trainer.evaluators = {"reference": lambda m: {"score": 0.0}}
    trainer.evaluate_before_training = True
    trainer.train()
    return snapshots  # steps 0 (before training), 1, ..., steps (the final evaluation)


def test_evaluation_before_training_is_the_initial_model(tmp_path):
    torch.manual_seed(0)
    method = Regression()
    initial = _held_out_score(method)["score"]
    trainer = Trainer(
        method,
        _data(),
        config=_config(max_steps=4),
        output_dir=tmp_path,
        evaluators={"held_out": _held_out_score},
        evaluate_before_training=True,
    )
    result = trainer.train()
    evaluations = [r for r in result.log_history if "loss" not in r]
    assert evaluations[0] == {"step": 0, "held_out/score": pytest.approx(initial)}
    assert evaluations[-1]["step"] == 4 and evaluations[-1]["held_out/score"] > initial  # it learned
    saved = json.loads((tmp_path / "training_log.json").read_text())
    assert saved[0] == {"step": 0, "held_out/score": pytest.approx(initial)}


def test_early_stopping_stops_after_patience_evaluations_without_improvement(tmp_path):
    snapshots = _snapshots(tmp_path, 8)
    scores = [0.0, 0.5, 0.6, 0.55, 0.6, 0.58, 0.9, 0.9, 0.9]  # the best (0.6) is not beaten at steps 3, 4 and 5
    torch.manual_seed(0)
    config = _config(max_steps=8, eval_steps=1, early_stopping=EarlyStoppingConfig("check/score", patience=3))
    evaluator = Scripted(snapshots, scores)
    trainer = Trainer(
        Regression(), _data(), config=config, output_dir=tmp_path / "run", evaluators={"check": evaluator}
    )
    result = trainer.train()
    assert result.global_step == 5
    steps = [r["step"] for r in result.log_history if "loss" not in r]
    assert steps == [1, 2, 3, 4, 5, 5]  # evaluations at each step, then the final one


@pytest.mark.parametrize("mode, best_step", [("max", 3), ("min", 5)])
def test_keep_best_exports_the_best_evaluated_weights(tmp_path, mode, best_step):
    snapshots = _snapshots(tmp_path, 6)
    scores = [0.0, 0.2, 0.3, 0.9, 0.4, 0.1, 0.5]
    torch.manual_seed(0)
    config = _config(max_steps=6, eval_steps=1, keep_best=KeepBestConfig("check/score", mode=mode))
    method = Regression()
    trainer = Trainer(
        method, _data(), config=config, output_dir=tmp_path / mode, evaluators={"check": Scripted(snapshots, scores)}
    )
    result = trainer.train()
    assert result.global_step == 6 and result.best_step == best_step
    for key, value in snapshots[best_step].items():
        assert torch.equal(method.state_dict()[key], value)  # the step's exact weights, not the last ones
    assert result.final_metrics == {"check/score": scores[best_step]}
    assert (tmp_path / mode / "best" / "step.txt").read_text().startswith(f"{best_step} ")


def test_a_metric_to_watch_needs_evaluations_during_training(tmp_path):
    config = _config(max_steps=2, keep_best=KeepBestConfig("check/score"))
    with pytest.raises(ConfigError, match=r"train.keep_best.metric.*train.eval_steps > 0"):
        Trainer(Regression(), _data(), config=config, output_dir=tmp_path, evaluators={"check": _held_out_score})
    config = _config(max_steps=2, eval_steps=1, early_stopping=EarlyStoppingConfig("check/scroe"))
    trainer = Trainer(Regression(), _data(), config=config, output_dir=tmp_path, evaluators={"check": _held_out_score})
    with pytest.raises(
        ConfigError, match="'check/scroe', a metric the evaluation does not measure; it measures: check/score"
    ):
        trainer.train()


def test_callbacks_see_every_hook_and_can_stop_the_run(tmp_path):
    seen: list[tuple[str, int]] = []

    class Watch(TrainerCallback):
        def on_train_begin(self, trainer, step):
            seen.append(("begin", step))

        def on_log(self, trainer, record):
            seen.append(("log", record["step"]))
            if record["step"] == 3:
                trainer.should_stop = True

        def on_save(self, trainer, step):
            seen.append(("save", step))

        def on_evaluate(self, trainer, step, metrics):
            seen.append(("evaluate", step))

        def on_train_end(self, trainer, result):
            seen.append(("end", result.global_step))

    config = _config(max_steps=10, save_steps=2)
    trainer = Trainer(
        Regression(),
        _data(),
        config=config,
        output_dir=tmp_path,
        evaluators={"e": _held_out_score},
        callbacks=[Watch()],
    )
    result = trainer.train()
    assert result.global_step == 3
    assert seen == [("begin", 0), ("log", 1), ("log", 2), ("save", 2), ("log", 3), ("evaluate", 3), ("end", 3)]


class ListTracker(GeneralTracker):
    """An Accelerate tracker that keeps what it is given in memory (no network, no files)."""

    name = "list"
    requires_logging_directory = False

    def __init__(self) -> None:
        super().__init__()
        self.config: dict = {}
        self.logged: list[tuple[int, dict]] = []
        self.finished = False

    @property
    def tracker(self):
        return self.logged

    def store_init_configuration(self, values: dict) -> None:
        self.config = dict(values)

    def log(self, values: dict, step: int | None = None, **kwargs) -> None:
        self.logged.append((step, dict(values)))

    def finish(self) -> None:
        self.finished = True


def test_a_tracker_object_receives_the_config_losses_and_evaluations(tmp_path):
    tracker = ListTracker()
    config = _config(max_steps=3, report_to=[])
    trainer = Trainer(
        Regression(),
        _data(),
        config=config,
        output_dir=tmp_path,
        evaluators={"held_out": _held_out_score},
        run_config={"train": {"lr": 0.05}},
        trackers=[tracker],
    )
    trainer.train()
    assert tracker.config == {"train.lr": 0.05} and tracker.finished
    assert [step for step, values in tracker.logged if "train/loss" in values] == [1, 2, 3]
    assert [step for step, values in tracker.logged if "eval/held_out/score" in values] == [3]
    assert not (tmp_path / "logs").exists()  # report_to=[]: no TensorBoard files


def test_tensorboard_is_the_default_tracker(tmp_path):
    Trainer(Regression(), _data(), config=_config(max_steps=2), output_dir=tmp_path).train()
    assert list((tmp_path / "logs").rglob("events.out.tfevents.*"))


@pytest.mark.parametrize(
    "names, message",
    [
        (["tensorbord"], "'tensorbord'; Accelerate's trackers are: aim, tensorboard"),
        (["wandb"], "'wandb', whose package is not installed: pip install wandb"),
    ],
)
def test_a_tracker_that_cannot_run_is_refused_up_front(tmp_path, names, message):
    pytest.importorskip("tensorboard")
    if names == ["wandb"] and __import__("importlib").util.find_spec("wandb") is not None:
        pytest.skip("wandb is installed here")
    with pytest.raises(ConfigError, match="key 'train.report_to'.*" + message.replace("(", r"\(")):
        Trainer(Regression(), _data(), config=_config(max_steps=2, report_to=names), output_dir=tmp_path)


def test_the_default_sampler_is_the_seeded_shuffled_one(tmp_path):
    torch.manual_seed(0)
    default = Regression()
    torch.manual_seed(0)
    explicit = Regression()
    config = _config(max_steps=6)
    Trainer(default, _data(), config=config, output_dir=tmp_path / "a").train()
    sampler = ShuffledBatchSampler(len(_data()), config.batch_size, seed=config.seed)
    Trainer(explicit, _data(), sampler, config, tmp_path / "b").train()
    for p, q in zip(default.parameters(), explicit.parameters(), strict=True):
        assert torch.equal(p, q)


def test_without_a_bar_each_logging_interval_prints_one_line(tmp_path, capsys):
    Trainer(Regression(), _data(), config=_config(max_steps=4, logging_steps=2), output_dir=tmp_path).train()
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("step ")]
    assert [line.split(" | ")[0] for line in lines] == ["step 2/4", "step 4/4"]
    assert all(" | loss " in line and "rows/s" in line for line in lines)


def test_gradient_checkpointing_gives_the_same_gradients(tiny_bert_path):
    from mmcontrast.engine.trainer import _enable_gradient_checkpointing
    from mmcontrast.methods.sbert import SbertLossConfig, SentenceBERT
    from mmcontrast.modalities.text import TextEncoder

    rows = [{"anchor": f"a sentence about topic {i}", "positive": f"topic {i} in other words"} for i in range(6)]
    gradients = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        method = SentenceBERT(TextEncoder.from_pretrained(tiny_bert_path), ["anchor", "positive"], SbertLossConfig())
        if checkpointing:
            _enable_gradient_checkpointing(method)
            assert method.encoder.transformer.is_activation_checkpointing
        method.train()
        torch.manual_seed(1)  # the same dropout masks in both runs (recomputation replays them)
        method(method.collate(rows)).loss.backward()
        gradients.append({n: p.grad.clone() for n, p in method.named_parameters() if p.grad is not None})
    assert gradients[0].keys() == gradients[1].keys()
    for name, gradient in gradients[0].items():
        torch.testing.assert_close(gradients[1][name], gradient, rtol=1e-5, atol=1e-6, msg=name)


def test_gradient_checkpointing_on_a_method_without_towers_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"train.gradient_checkpointing.*no tower of Regression"):
        Trainer(Regression(), _data(), config=_config(gradient_checkpointing=True), output_dir=tmp_path)


def test_tensor_metrics_are_read_only_when_logged(tmp_path):
    """Methods report device tensors as metrics (no wait per step); the log holds them as numbers."""
    seen: list[object] = []

    class WithMetric(Regression):
        def loss(self, embeddings, batch):
            output = super().loss(embeddings, batch)
            metric = embeddings["prediction"].detach().mean()
            seen.append(metric)
            return output._replace(metrics={"mean_prediction": metric})

    trainer = Trainer(WithMetric(), _data(), config=_config(max_steps=4, logging_steps=2), output_dir=tmp_path)
    log = [r for r in trainer.train().log_history if "loss" in r]
    assert all(isinstance(m, torch.Tensor) for m in seen)
    assert [r["step"] for r in log] == [2, 4]
    assert [r["mean_prediction"] for r in log] == [float(seen[1]), float(seen[3])]  # the interval's last batch
    assert json.loads((tmp_path / "training_log.json").read_text())[0]["mean_prediction"] == log[0]["mean_prediction"]
