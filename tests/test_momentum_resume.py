"""Momentum state survives SIGKILL: MoCo v2's queue and key encoder, BYOL's EMA target (cosine schedule) and the
memory bank (entries, Z, noise-draw counter) of a run killed between checkpoints and resumed with
resume_from=latest end bit-identical to an uninterrupted run's, as do the exported backbones."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_resume import _environment

from mmcontrast.engine.checkpoints import checkpoint_dirs

ROOT = Path(__file__).resolve().parents[1]
STEPS = 24
TINY = [
    "model.image.config={model_type: clip_vision_model, image_size: 32, patch_size: 8, hidden_size: 32, "
    "num_hidden_layers: 1, num_attention_heads: 2, intermediate_size: 64}",
    "data.limit=96",
    "train.batch_size=16",
    f"train.max_steps={STEPS}",
    "train.save_steps=4",
    "train.save_total_limit=2",
    "train.eval_steps=0",
    "train.logging_steps=4",
    "train.num_workers=0",
    "train.progress_bar=false",
    "eval.train=null",
]
METHODS = {
    "moco": ["model.moco.queue_size=40"],  # 2.5 batches: the queue wraps around during the run
    "byol": [],
    "memory_bank": ["model.memory_bank.negatives=16"],
}
STATE = {  # the momentum state each method must carry through the kill
    "moco": ("target.", "queue.keys", "queue.position", "queue.filled"),
    "byol": ("target.",),
    "memory_bank": ("bank.memory", "nce.normaliser", "draws"),
}


def _command(method: str, output_dir: Path, *extra: str) -> list[str]:
    recipe = ROOT / "recipes" / f"{method}_digits.yaml"
    command = [sys.executable, "-m", "mmcontrast.cli", "train", str(recipe), f"output_dir={output_dir}"]
    return [*command, *TINY, *METHODS[method], *extra]


def _final_state(run: Path) -> dict[str, torch.Tensor]:
    last = checkpoint_dirs(run / "checkpoints")[-1]
    assert last.name.endswith(f"{STEPS:08d}"), f"the last checkpoint is {last.name}, not step {STEPS}"
    return load_file(last / "model.safetensors")


@pytest.mark.parametrize("method", list(METHODS))
def test_momentum_state_survives_sigkill_and_resume(method, tmp_path):
    reference, interrupted = tmp_path / "reference", tmp_path / "interrupted"
    subprocess.run(_command(method, reference), cwd=ROOT, env=_environment(), check=True, capture_output=True)

    process = subprocess.Popen(
        _command(method, interrupted),
        cwd=ROOT,
        env=_environment(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 300
    while not checkpoint_dirs(interrupted / "checkpoints") and process.poll() is None:
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL, "the run finished before it could be killed"
    saved = [int(p.name.split("-")[1]) for p in checkpoint_dirs(interrupted / "checkpoints")]
    assert saved and max(saved) < STEPS

    resumed = subprocess.run(
        _command(method, interrupted, "resume_from=latest"),
        cwd=ROOT,
        env=_environment(),
        check=True,
        capture_output=True,
        text=True,
    )
    assert f"resumed from {interrupted / 'checkpoints'}" in resumed.stdout + resumed.stderr

    expected, actual = _final_state(reference), _final_state(interrupted)
    assert expected.keys() == actual.keys()
    carried = [name for name in expected if name.startswith(STATE[method])]
    assert len(carried) >= len(STATE[method]), f"no momentum state among {sorted(expected)[:8]}"
    for name, tensor in expected.items():
        assert torch.equal(tensor, actual[name]), f"{name} differs after the kill and resume"
    # the momentum state moved between the two kept checkpoints, so its equality is not trivial
    earlier = load_file(checkpoint_dirs(reference / "checkpoints")[0] / "model.safetensors")
    assert any(not torch.equal(expected[name], earlier[name]) for name in carried)
    exported = load_file(reference / "model" / "model.safetensors")
    for name, tensor in load_file(interrupted / "model" / "model.safetensors").items():
        assert torch.equal(tensor, exported[name])
