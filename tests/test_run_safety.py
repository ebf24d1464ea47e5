"""Run safety in the engine: one run per folder, validated resume, verified checkpoints, the divergence guard.

Each test reproduces one finding of the run-safety review (issue 9) on a toy regression method, with real
files, real processes for the lock, and a real full disk (a 1 MiB tmpfs) where the host allows mounting one.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from transformers import get_scheduler

from mmcontrast.engine import durable
from mmcontrast.engine.checkpoints import (
    MANIFEST_FILE,
    CheckpointError,
    checkpoint_dirs,
    resolve_resume,
    sha256,
)
from mmcontrast.engine.run_folder import LOCK_FILE, RunFolder, RunFolderError
from mmcontrast.engine.trainer import ResumeError, Trainer, TrainingConfig, TrainingDivergedError
from mmcontrast.methods.base import LossOutput, Method


class Regression(Method):
    """y = w x with squared error; optionally NaN embeddings from a given call on."""

    def __init__(self, nan_embeddings_from_call: int | None = None) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.linear = nn.Linear(3, 1)
        self.calls = 0
        self.nan_from = nan_embeddings_from_call

    def collate(self, rows):
        return {"x": torch.stack([r[0] for r in rows]), "y": torch.stack([r[1] for r in rows])}

    def embed(self, batch):
        self.calls += 1
        prediction = self.linear(batch["x"]).squeeze(-1)
        if self.nan_from is not None and self.calls >= self.nan_from:
            prediction = prediction * float("nan")
        return {"prediction": prediction}

    def loss(self, embeddings, batch):
        return LossOutput(((embeddings["prediction"] - batch["y"]) ** 2).mean())


def _data(rows: int = 32):
    x = torch.randn(rows, 3, generator=torch.Generator().manual_seed(0))
    return [(x[i], x[i].sum()) for i in range(rows)]


def _trainer(output_dir: Path, method: Method | None = None, fingerprint=None, overwrite=False, **overrides):
    from mmcontrast.data.samplers import ShuffledBatchSampler

    settings = {"batch_size": 4, "lr": 0.05, "warmup_ratio": 0.25, "progress_bar": False, "logging_steps": 1}
    config = TrainingConfig(**{**settings, **overrides})
    data = _data()
    sampler = ShuffledBatchSampler(len(data), config.batch_size, seed=config.seed, drop_last=True)
    return Trainer(
        method or Regression(),
        data,
        sampler,
        config,
        output_dir,
        fingerprint=fingerprint,
        overwrite_output_dir=overwrite,
    )


def _weights(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in trainer.method.state_dict().items()}


def _steps(root: Path) -> list[int]:
    return [int(p.name.split("-")[1]) for p in checkpoint_dirs(root)]


# 1. a second run into a folder holding an earlier run's checkpoints
def test_new_run_into_a_used_folder_refuses_and_overwrite_keeps_its_own_checkpoints(tmp_path):
    _trainer(tmp_path, max_steps=8, save_steps=2, save_total_limit=2).train()
    assert _steps(tmp_path / "checkpoints") == [6, 8]
    with pytest.raises(RunFolderError, match=r"holds another run \(2 checkpoint\(s\), newest checkpoint-00000008\)"):
        _trainer(tmp_path, max_steps=4, save_steps=2).train()
    second = _trainer(tmp_path, max_steps=4, save_steps=2, save_total_limit=2, overwrite=True)
    second.train()
    # the new run's own checkpoints survive retention; the old run's are gone, so latest is the new run's
    assert _steps(tmp_path / "checkpoints") == [2, 4]
    assert resolve_resume("latest", tmp_path / "checkpoints").name == "checkpoint-00000004"


def test_checkpoint_beyond_max_steps_is_refused(tmp_path):
    _trainer(tmp_path, max_steps=8, save_steps=4).train()
    with pytest.raises(ResumeError, match=r"at step 8, beyond this run's 4 steps"):
        _trainer(tmp_path, max_steps=4, save_steps=4).train(resume_from="latest")


def test_retention_ignores_checkpoints_of_another_run(tmp_path):
    """A checkpoint copied in from another run (higher step number) never makes this run delete its own."""
    other = tmp_path / "other"
    _trainer(other, max_steps=8, save_steps=8).train()
    ours = tmp_path / "ours"
    (ours / "checkpoints").mkdir(parents=True)
    _trainer(ours, max_steps=2, save_steps=1, save_total_limit=1).train()
    shutil.copytree(other / "checkpoints" / "checkpoint-00000008", ours / "checkpoints" / "checkpoint-00000008")
    _trainer(ours, max_steps=4, save_steps=1, save_total_limit=1).train(resume_from=str(_checkpoint(ours, 2)))
    assert _steps(ours / "checkpoints") == [4, 8]


def _checkpoint(output_dir: Path, step: int) -> Path:
    return output_dir / "checkpoints" / f"checkpoint-{step:08d}"


# 2. resume with a changed recipe
@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"lr": 0.01}, "train.lr: checkpoint 0.05, now 0.01"),
        ({"batch_size": 8}, "train.batch_size: checkpoint 4, now 8"),
        ({"seed": 7}, "train.seed: checkpoint 42, now 7"),
        ({"gradient_accumulation_steps": 2}, "train.gradient_accumulation_steps"),
        ({"scheduler": "cosine"}, "train.scheduler"),
    ],
)
def test_resume_with_a_changed_training_setting_names_the_key(tmp_path, change, named):
    _trainer(tmp_path, max_steps=4, save_steps=2).train()
    shutil.rmtree(_checkpoint(tmp_path, 4))
    with pytest.raises(ResumeError, match=named.replace("(", r"\(").replace(")", r"\)")):
        _trainer(tmp_path, max_steps=4, save_steps=2, **change).train(resume_from="latest")


def test_resume_with_another_model_shape_names_the_key_instead_of_a_traceback(tmp_path):
    _trainer(tmp_path, fingerprint={"model.embed_dim": 16}, max_steps=4, save_steps=2).train()
    shutil.rmtree(_checkpoint(tmp_path, 4))
    with pytest.raises(ResumeError, match=r"model\.embed_dim: checkpoint 16, now 32"):
        _trainer(tmp_path, fingerprint={"model.embed_dim": 32}, max_steps=4, save_steps=2).train(resume_from="latest")


def test_extending_a_run_follows_the_new_schedule_with_the_original_warmup(tmp_path):
    _trainer(tmp_path, max_steps=8, save_steps=4, scheduler="linear").train()
    extended = _trainer(tmp_path, max_steps=16, save_steps=4, scheduler="linear")
    result = extended.train(resume_from="latest")
    assert result.global_step == 16
    # the rates a fresh scheduler gives with the original warm-up (ceil(0.25 * 8) = 2) and the new total
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.05)
    reference = get_scheduler("linear", optimizer, 2, 16)
    expected = {}
    for step in range(1, 17):
        optimizer.step()
        reference.step()
        expected[step] = reference.get_last_lr()[0]
    logged = {r["step"]: r["lr"] for r in result.log_history if "lr" in r and r["step"] > 8}
    assert logged and all(math.isclose(logged[s], expected[s], rel_tol=1e-12) for s in logged)


# 3 and 4. damaged checkpoints are never picked; latest falls back and says why
def test_truncated_rng_state_is_skipped_naming_the_file_and_the_resume_stays_exact(tmp_path, capsys):
    reference = _trainer(tmp_path / "reference", max_steps=8)
    reference.train()
    run = tmp_path / "run"
    _trainer(run, max_steps=8, save_steps=2, save_total_limit=0).train()
    shutil.rmtree(_checkpoint(run, 8))
    rng = _checkpoint(run, 6) / "random_states_0.pkl"
    rng.write_bytes(rng.read_bytes()[:20])  # what a disk error or a bad copy leaves
    with pytest.raises(CheckpointError, match=r"random_states_0.pkl has 20 bytes.*resume_from=.*checkpoint-00000004"):
        resolve_resume(str(_checkpoint(run, 6)), run / "checkpoints")
    resumed = _trainer(run, max_steps=8, save_steps=2, save_total_limit=0)
    resumed.train(resume_from="latest")
    out = capsys.readouterr().out
    assert "skipping" in out and "checkpoint-00000006: random_states_0.pkl has 20 bytes" in out
    assert "resumed from" in out and "checkpoint-00000004 at step 4" in out
    for name, tensor in _weights(reference).items():
        assert torch.equal(tensor, _weights(resumed)[name])
    # the damaged step-6 folder was replaced by a complete one
    assert resolve_resume(str(_checkpoint(run, 6)), run / "checkpoints") == _checkpoint(run, 6)


def test_half_deleted_checkpoint_is_never_resumed_from(tmp_path, capsys):
    _trainer(tmp_path, max_steps=6, save_steps=2, save_total_limit=0).train()
    (_checkpoint(tmp_path, 6) / "model.safetensors").unlink()  # a kill inside the old rmtree + replace
    assert resolve_resume("latest", tmp_path / "checkpoints") == _checkpoint(tmp_path, 4)
    assert "checkpoint-00000006: model.safetensors is missing" in capsys.readouterr().out
    (_checkpoint(tmp_path, 4) / MANIFEST_FILE).unlink()  # a save that never finished sealing
    assert resolve_resume("latest", tmp_path / "checkpoints") == _checkpoint(tmp_path, 2)


def test_replacing_a_step_swaps_atomically_and_everything_is_fsynced(tmp_path, monkeypatch):
    synced: list[Path] = []
    real_fsync = durable.fsync_path
    monkeypatch.setattr(durable, "fsync_path", lambda p: (synced.append(Path(p)), real_fsync(p)))
    trainer = _trainer(tmp_path, max_steps=2, save_steps=2)
    trainer.train()
    final = _checkpoint(tmp_path, 2)
    files = {p.name for p in final.iterdir()}
    assert {"model.safetensors", "optimizer.bin", "random_states_0.pkl", "trainer_state.json", MANIFEST_FILE} <= files
    staged = {p.name for p in synced}
    assert files <= staged and ".tmp-checkpoint-00000002" in staged and "checkpoints" in staged
    # a kill between the two renames of a replacement: the old folder is aside, the new one not yet in place
    before = sha256(final / "model.safetensors")
    real_replace, calls = os.replace, []

    def replace_then_die(source, target):
        calls.append(target)
        if len(calls) == 2:
            raise KeyboardInterrupt("killed")
        real_replace(source, target)

    monkeypatch.setattr(os, "replace", replace_then_die)
    with pytest.raises(KeyboardInterrupt):
        trainer._save(2)
    monkeypatch.setattr(os, "replace", real_replace)
    assert not final.exists() and resolve_resume("latest", tmp_path / "checkpoints") is None
    hidden = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert all(name.startswith((".old-", ".tmp-")) for name in hidden)
    trainer._save(2)  # the next save clears the leftovers and writes the step again
    assert sha256(final / "model.safetensors") == before
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == [final.name]


# 5. two runs into one folder at once
_HOLDER = """
import sys, time
from mmcontrast.engine.run_folder import RunFolder
with RunFolder(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(600)
"""


def test_a_live_run_holds_the_folder_and_a_killed_one_is_taken_over(tmp_path, capsys):
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunFolderError, match=rf"in use by another run \(pid {holder.pid} on .*-c {tmp_path}"):
            _trainer(tmp_path, max_steps=2).train()
        assert not (tmp_path / "checkpoints").exists()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    _trainer(tmp_path, max_steps=2).train()  # the dead holder's lock is stale: taken over
    assert f"taking over the lock of a run that ended (pid {holder.pid}" in capsys.readouterr().out
    assert (tmp_path / LOCK_FILE).read_text() == ""  # released at the end of the run


_HOLDER_WITH_WORKER = """
import os, sys, time
from mmcontrast.engine.run_folder import RunFolder
with RunFolder(sys.argv[1]):
    worker = os.fork()
    if worker == 0:  # a DataLoader worker: forked while the lock is held, it outlives its parent for a while
        time.sleep(60)
        os._exit(0)
    print("locked", worker, flush=True)
    time.sleep(600)
"""


def test_a_killed_run_whose_forked_worker_lives_on_is_taken_over(tmp_path, capsys):
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER_WITH_WORKER, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    _, worker = holder.stdout.readline().split()
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    try:
        with RunFolder(tmp_path):  # the worker still has the lock file open, but the lock was the killed run's
            pass
    finally:
        os.kill(int(worker), signal.SIGKILL)
    assert f"taking over the lock of a run that ended (pid {holder.pid}" in capsys.readouterr().out


def test_lock_is_reentrant_in_one_process(tmp_path):
    with RunFolder(tmp_path), RunFolder(tmp_path):
        _trainer(tmp_path, max_steps=1).train()
    with RunFolder(tmp_path):  # released: can be taken again
        pass


# 6. a user's backup folder named checkpoint-<not a number>
def test_non_numeric_checkpoint_folders_are_ignored(tmp_path):
    _trainer(tmp_path, max_steps=4, save_steps=2, save_total_limit=1).train()
    shutil.copytree(_checkpoint(tmp_path, 4), tmp_path / "checkpoints" / "checkpoint-backup")
    (tmp_path / "checkpoints" / "checkpoint-00000004-copy").mkdir()
    _trainer(tmp_path, max_steps=8, save_steps=2, save_total_limit=1).train(resume_from="latest")
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["checkpoint-00000004-copy", "checkpoint-00000008", "checkpoint-backup"]


# 12. the engine reports divergence itself, before the loss core
def test_non_finite_embeddings_are_reported_by_the_engine_with_step_and_rate(tmp_path):
    with pytest.raises(TrainingDivergedError, match=r"diverged at step 3 \(learning rate .*\): the 'prediction'"):
        _trainer(tmp_path, Regression(nan_embeddings_from_call=3), max_steps=8).train()


def test_exploded_weights_are_refused(tmp_path):
    with pytest.raises(TrainingDivergedError, match=r"parameter 'linear\.(weight|bias)' ends with values up to"):
        _trainer(tmp_path, lr=1e6, warmup_ratio=0.0, max_steps=2, max_grad_norm=0.0).train()


# 13. a full disk is named as such
def test_full_disk_during_a_checkpoint_says_so(tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        trainer = _trainer(disk / "run", max_steps=2, save_steps=2)
        free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
        (disk / "filler").write_bytes(b"\0" * (free - 4096))  # room for the lock file, not for a checkpoint
        with pytest.raises(OSError, match="no space left on the device while writing checkpoint checkpoint-00000002"):
            trainer.train()
        assert not _checkpoint(disk / "run", 2).exists()
    finally:
        subprocess.run(["umount", str(disk)], check=False)


# 14. nothing in a checkpoint folder is unpickled with code execution
class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "code from the checkpoint ran"))


def _reseal(folder: Path) -> None:
    manifest = json.loads((folder / MANIFEST_FILE).read_text())
    for name in manifest["files"]:
        manifest["files"][name] = {"size": (folder / name).stat().st_size, "sha256": sha256(folder / name)}
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest))


def test_checkpoint_files_are_loaded_without_running_code(tmp_path):
    _trainer(tmp_path, max_steps=4, save_steps=2).train()
    checkpoint = _checkpoint(tmp_path, 2)
    assert not list(checkpoint.glob("custom_checkpoint_*")), "no pickled custom objects are written"
    shutil.rmtree(_checkpoint(tmp_path, 4))
    marker = tmp_path / "pwned"
    (checkpoint / "custom_checkpoint_0.pkl").write_bytes(pickle.dumps(_Exploit(marker)))
    with pytest.raises(CheckpointError, match=r"holds custom_checkpoint_0.pkl, a pickle that mmcontrast never writes"):
        _trainer(tmp_path, max_steps=4, save_steps=2).train(resume_from=str(checkpoint))
    (checkpoint / "custom_checkpoint_0.pkl").unlink()
    (checkpoint / "random_states_0.pkl").write_bytes(pickle.dumps({"step": _Exploit(marker)}))
    _reseal(checkpoint)  # a valid manifest: the file is intact as far as checksums go, its content is still not run
    with pytest.raises(CheckpointError, match=r"cannot load .*random_states_0.pkl of checkpoint .*checkpoint-00000002"):
        _trainer(tmp_path, max_steps=4, save_steps=2).train(resume_from=str(checkpoint))
    assert not marker.exists()


# 13. the model folder is complete or absent
def test_export_is_complete_or_absent(tmp_path):
    from types import SimpleNamespace

    from mmcontrast.run_recipe import export_model

    def export(method, result, output_dir, model_dir, die=False):
        model_dir.mkdir(parents=True)
        (model_dir / "config.json").write_text("")  # what a kill in the middle of writing it leaves
        if die:
            raise KeyboardInterrupt("killed during the export")
        (model_dir / "config.json").write_text(json.dumps({"complete": True}))
        (model_dir / "README.md").write_text("card")
        return model_dir

    trainer = SimpleNamespace(method=None)
    with pytest.raises(KeyboardInterrupt):
        export_model(SimpleNamespace(export=lambda *a: export(*a, die=True)), trainer, None, tmp_path)
    assert not (tmp_path / "model").exists()
    export_model(SimpleNamespace(export=export), trainer, None, tmp_path)
    assert json.loads((tmp_path / "model" / "config.json").read_text()) == {"complete": True}
    assert (tmp_path / "model" / "README.md").is_file() and not (tmp_path / ".tmp-model").exists()
    with pytest.raises(KeyboardInterrupt):  # a failed re-export leaves the earlier model untouched
        export_model(SimpleNamespace(export=lambda *a: export(*a, die=True)), trainer, None, tmp_path)
    assert json.loads((tmp_path / "model" / "config.json").read_text()) == {"complete": True}
