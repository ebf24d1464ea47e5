"""Sharded training: FSDP2 on 2 CPU processes (gloo), launched with the shipped Accelerate config, trains exactly as
DDP does, writes sharded checkpoints that verify and resume exactly, evaluates and exports the full model; the cached
large batch is exact under FSDP2; DDP's `find_unused_parameters` is off for methods that use every parameter and the
error of a run that needs it names the key."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from accelerate.commands.config.config_args import load_config_from_file
from conftest import pairs_training_args
from safetensors.torch import load_file
from test_launch_distributed import _cpu_environment, _free_port

from mmcontrast.engine.checkpoints import MANIFEST_FILE, checkpoint_dirs, verify
from mmcontrast.engine.sharding import fill_optimizer_state

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "recipes" / "accelerate"
UNUSED_NOTE = "train.find_unused_parameters: 2 trainable parameters get no gradient"


@pytest.fixture()
def no_dropout_bert(tiny_bert_path, tmp_path) -> str:
    """The tiny BERT without dropout, so that runs on different process layouts can agree to float precision."""
    from transformers import AutoModel, AutoTokenizer

    folder = tmp_path / "bert"
    AutoModel.from_pretrained(
        tiny_bert_path, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0
    ).save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_bert_path).save_pretrained(folder)
    return str(folder)


def _launch(config: str, *args: str) -> list[str]:
    """`accelerate launch --config_file recipes/accelerate/CONFIG` of 2 CPU processes running the CLI."""
    return [
        sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CONFIGS / config),
        "--num_processes", "2", "--main_process_port", str(_free_port()), "-m", "mmcontrast.cli", *args,
    ]  # fmt: skip


def _sbert(model: str, data: Path, output_dir: Path, *extra: str) -> list[str]:
    return [
        *pairs_training_args(model, data, output_dir),
        f"eval.retrieval={data}", "eval.retrieval_format=csv", "eval.retrieval_min_score=null",
        "train.batch_size=4", "train.max_steps=6", "train.lr=1e-3", "train.save_steps=3", "train.save_total_limit=0",
        "train.eval_steps=3", "train.logging_steps=1", "train.progress_bar=false", "train.report_to=[]",
        *extra,
    ]  # fmt: skip


def _train(command: list[str]) -> str:
    run = subprocess.run(command, cwd=ROOT, env=_cpu_environment(), capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-4000:]
    return run.stdout + run.stderr


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(run / "model" / "model.safetensors")


def _assert_close(actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], atol: float) -> None:
    assert actual.keys() == expected.keys()
    for name, tensor in expected.items():
        assert torch.allclose(actual[name], tensor, atol=atol, rtol=0), name


def test_shipped_accelerate_configs_load():
    """Accelerate's own loader reads every config users pass with --config_file."""
    kinds = {path.stem: load_config_from_file(str(path)) for path in sorted(CONFIGS.glob("*.yaml"))}
    assert set(kinds) == {"ddp", "fsdp2", "deepspeed_zero2", "deepspeed_zero3"}
    assert kinds["ddp"].distributed_type == "MULTI_GPU"
    assert kinds["fsdp2"].distributed_type == "FSDP" and kinds["fsdp2"].fsdp_config["fsdp_version"] == 2
    assert kinds["fsdp2"].fsdp_config["fsdp_state_dict_type"] == "SHARDED_STATE_DICT"
    for stage in (2, 3):
        config = kinds[f"deepspeed_zero{stage}"]
        assert config.distributed_type == "DEEPSPEED" and config.deepspeed_config["zero_stage"] == stage


def test_fsdp2_trains_as_ddp_resumes_exactly_and_exports_the_full_model(no_dropout_bert, pairs_csv, tmp_path):
    ddp, fsdp, resumed = tmp_path / "ddp", tmp_path / "fsdp", tmp_path / "resumed"
    ddp_output = _train(_launch("ddp.yaml", *_sbert(no_dropout_bert, pairs_csv, ddp)))
    fsdp_output = _train(_launch("fsdp2.yaml", *_sbert(no_dropout_bert, pairs_csv, fsdp)))
    # DDP needs find_unused_parameters for BERT's pooler (mean pooling never uses it); FSDP has no such option
    assert UNUSED_NOTE in ddp_output and UNUSED_NOTE not in fsdp_output

    # the same steps: losses, evaluations (during training, on the main process's full copy) and weights
    logs = [json.loads((run / "training_log.json").read_text()) for run in (ddp, fsdp)]
    assert [r["step"] for r in logs[1]] == [r["step"] for r in logs[0]]
    for expected, actual in zip(*logs, strict=True):
        for key in expected.keys() - {"rows_per_second"}:
            assert actual[key] == pytest.approx(expected[key], abs=1e-6), key
    assert any("retrieval/mrr@10" in r and r["step"] == 3 for r in logs[1])
    _assert_close(_weights(fsdp), _weights(ddp), atol=1e-6)

    # sharded checkpoints (torch.distributed.checkpoint files of both processes), sealed and verified
    checkpoints = checkpoint_dirs(fsdp / "checkpoints")
    assert [c.name for c in checkpoints] == ["checkpoint-00000003", "checkpoint-00000006"]
    sealed = json.loads((checkpoints[0] / MANIFEST_FILE).read_text())["files"]
    for shard in ("pytorch_model_fsdp_0/__0_0.distcp", "pytorch_model_fsdp_0/__1_0.distcp", "optimizer_0/.metadata"):
        assert shard in sealed
    assert all(verify(c) is None for c in checkpoints)

    # resume from the step-3 checkpoint (the later state removed, as if killed before it): the same weights
    shutil.copytree(fsdp, resumed)
    for folder in ("model", "checkpoints/checkpoint-00000006"):
        shutil.rmtree(resumed / folder)
    for file in ("summary.json", "training_log.json"):
        (resumed / file).unlink()
    output = _train(_launch("fsdp2.yaml", *_sbert(no_dropout_bert, pairs_csv, resumed, "resume_from=latest")))
    assert "at step 3" in output
    expected, actual = _weights(fsdp), _weights(resumed)
    assert expected.keys() == actual.keys()
    assert all(torch.equal(actual[name], tensor) for name, tensor in expected.items())

    # the export is the full model: sentence-transformers loads it and it encodes as the DDP export does
    from sentence_transformers import SentenceTransformer

    sentences = ["the red river and a small boat", "a happy teacher in the morning"]
    encoded = [SentenceTransformer(str(run / "model"), device="cpu").encode(sentences) for run in (ddp, fsdp)]
    assert encoded[1].shape == (2, 32)
    assert torch.allclose(torch.as_tensor(encoded[1]), torch.as_tensor(encoded[0]), atol=1e-5)


@pytest.mark.slow
def test_fsdp2_sigkill_then_resume_matches_uninterrupted(no_dropout_bert, pairs_csv, tmp_path):
    reference, run = tmp_path / "reference", tmp_path / "run"
    extra = ("train.max_steps=24", "train.save_steps=4", "eval.retrieval=null", "train.eval_steps=0")
    _train(_launch("fsdp2.yaml", *_sbert(no_dropout_bert, pairs_csv, reference, *extra)))
    process = subprocess.Popen(
        _launch("fsdp2.yaml", *_sbert(no_dropout_bert, pairs_csv, run, *extra)),
        cwd=ROOT, env=_cpu_environment(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,  # the launcher and both trainers form one process group, killed together
    )  # fmt: skip
    deadline = time.monotonic() + 300
    while not checkpoint_dirs(run / "checkpoints") and process.poll() is None:
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.01)
    os.killpg(process.pid, signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (run / "model").exists()
    output = _train(_launch("fsdp2.yaml", *_sbert(no_dropout_bert, pairs_csv, run, *extra, "resume_from=latest")))
    assert "resumed from" in output
    expected, actual = _weights(reference), _weights(run)
    assert all(torch.equal(actual[name], tensor) for name, tensor in expected.items())


@pytest.mark.slow
def test_fsdp2_cached_batch_and_gradient_accumulation_match_ddp(no_dropout_bert, pairs_csv, tmp_path):
    """GradCache under FSDP2 (each backward pass reduce-scatters) takes the steps of GradCache under DDP (one
    all-reduce of the summed gradients) and of the uncached batch; accumulation over 2 micro-batches (FSDP2's
    `set_requires_gradient_sync(False)` between them) takes DDP's steps too."""
    runs = {}
    for name, config, extra in [
        ("fsdp_cached", "fsdp2.yaml", ["train.cache_chunk_size=2"]),
        ("ddp_cached", "ddp.yaml", ["train.cache_chunk_size=2"]),
        ("fsdp", "fsdp2.yaml", []),
        ("fsdp_accumulated", "fsdp2.yaml", ["train.gradient_accumulation_steps=2"]),
        ("ddp_accumulated", "ddp.yaml", ["train.gradient_accumulation_steps=2"]),
    ]:
        _train(_launch(config, *_sbert(no_dropout_bert, pairs_csv, tmp_path / name, "eval.retrieval=null", *extra)))
        runs[name] = _weights(tmp_path / name)
    _assert_close(runs["fsdp_cached"], runs["ddp_cached"], atol=1e-6)
    _assert_close(runs["fsdp_cached"], runs["fsdp"], atol=1e-6)
    _assert_close(runs["fsdp_accumulated"], runs["ddp_accumulated"], atol=1e-6)
    assert any(not torch.equal(runs["fsdp_accumulated"][k], v) for k, v in runs["fsdp"].items())  # other steps


def test_ddp_without_find_unused_parameters_names_the_key(tiny_bert_path, pairs_csv, tmp_path):
    """BERT's pooler gets no gradient under mean pooling: with the option off, DDP's failure names the key."""
    command = _launch(
        "ddp.yaml", *_sbert(tiny_bert_path, pairs_csv, tmp_path / "run", "train.find_unused_parameters=false")
    )
    run = subprocess.run(command, cwd=ROOT, env=_cpu_environment(), capture_output=True, text=True, timeout=600)
    assert run.returncode != 0
    assert "set train.find_unused_parameters=true" in run.stderr, run.stderr[-3000:]
    assert "step 2:" in run.stderr  # DDP notices at the step after the one that left parameters unused


@pytest.mark.slow
@pytest.mark.parametrize(
    ("recipe", "extra"),
    [("clip_digits", ["eval.zero_shot=null"]), ("simclr_digits", ["eval.train=null"])],
    ids=["two_towers", "views"],
)
def test_methods_that_use_every_parameter_train_without_find_unused_parameters(recipe, extra, tmp_path):
    common = [
        "train.max_steps=2", "data.limit=32", "train.batch_size=8", "train.progress_bar=false",
        "train.report_to=[]", "train.eval_steps=0", "train.save_steps=0",
    ]  # fmt: skip
    run = tmp_path / "run"
    forced = _train(_launch("ddp.yaml", "train", f"recipes/{recipe}.yaml", f"output_dir={run}", *common, *extra,
                            "train.find_unused_parameters=false"))  # fmt: skip
    assert "step 2/2" in forced and (run / "model").is_dir()
    decided = _train(_launch("ddp.yaml", "train", f"recipes/{recipe}.yaml", f"output_dir={tmp_path / 'auto'}",
                             *common, *extra))  # fmt: skip
    assert "train.find_unused_parameters:" not in decided  # the probe found every parameter used: the option is off


def test_filled_optimizer_state_leaves_the_updates_unchanged():
    """AdamW state made up front (step 0, zero moments) for every parameter gives the same updates as state made
    at a parameter's first gradient, and a parameter that never gets one stays untouched (no weight decay)."""
    torch.manual_seed(0)
    reference = torch.nn.ModuleDict(
        {"used": torch.nn.Linear(4, 4), "late": torch.nn.Linear(4, 4), "never": torch.nn.Linear(4, 4)}
    )
    filled = torch.nn.ModuleDict({k: torch.nn.Linear(4, 4) for k in reference})
    filled.load_state_dict(reference.state_dict())
    never = reference["never"].weight.detach().clone()
    optimizers = [torch.optim.AdamW(m.parameters(), lr=0.1, weight_decay=0.1, fused=True) for m in (reference, filled)]
    fill_optimizer_state(optimizers[1])
    assert len(optimizers[1].state) == 6 and torch.equal(filled["never"].weight, reference["never"].weight)
    inputs = torch.randn(3, 4)
    for step in range(3):
        for model, optimizer in zip((reference, filled), optimizers, strict=True):
            loss = model["used"](inputs).square().sum() + (model["late"](inputs).sum() if step else 0)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    for name, tensor in reference.state_dict().items():
        assert torch.equal(filled.state_dict()[name], tensor), name
    assert torch.equal(filled["never"].weight, never)
    assert int(optimizers[1].state[filled["late"].weight]["step"]) == 2  # counted from its first gradient


def test_keep_best_is_refused_under_fsdp(tiny_bert_path, pairs_csv, tmp_path):
    """The best weights cannot be put back into the shards yet: refused up front, naming the key."""
    extra = ["train.keep_best.metric=retrieval/mrr@10", "train.max_steps=2"]
    command = _launch("fsdp2.yaml", *_sbert(tiny_bert_path, pairs_csv, tmp_path / "run", *extra))
    run = subprocess.run(command, cwd=ROOT, env=_cpu_environment(), capture_output=True, text=True, timeout=600)
    assert run.returncode != 0
    assert "key 'train.keep_best.metric' is set, but the model is sharded" in run.stderr, run.stderr[-3000:]
