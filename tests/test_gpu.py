"""The engine and the tiled loss on a CUDA device: mixed precision, fused AdamW, tiled = plain, GradCache, no
host-device sync per step. Run by ``benchmarks/gpu_suite.sh`` (``pytest -m gpu``); skipped without a GPU.

The training tests use the real CLIP recipe with open_clip towers (``recipes/clip_open_clip_digits.yaml``: a tiny
random ViT and text transformer, sklearn's digits), built and trained as ``mmcontrast train`` does.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from accelerate.utils import send_to_device

from mmcontrast.engine.trainer import Trainer
from mmcontrast.losses import info_nce
from mmcontrast.recipe import build_parts, load_recipe

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (benchmarks/gpu_suite.sh)"),
]

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "clip_open_clip_digits.yaml"


def _trainer(tmp_path: Path, *overrides: str) -> Trainer:
    """The CLIP recipe's trainer, a few steps long, writing nothing but its log."""
    recipe = load_recipe(
        RECIPE,
        [
            f"output_dir={tmp_path}",
            "train.batch_size=32",
            "train.max_steps=4",
            "train.save_steps=0",
            "train.eval_steps=0",
            "train.progress_bar=false",
            *overrides,
        ],
    )
    parts = build_parts(recipe)
    return Trainer(parts.method, parts.dataset, parts.batch_sampler, recipe.train, tmp_path)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_trains_under_autocast(tmp_path, precision):
    trainer = _trainer(tmp_path, f"train.mixed_precision={precision}", "train.logging_steps=1")
    assert trainer.accelerator.device.type == "cuda"
    assert (trainer.accelerator.scaler is not None) == (precision == "fp16")  # fp16 needs the grad scaler
    before = {name: p.detach().clone() for name, p in trainer.method.named_parameters()}
    output_dtypes = set()
    for module in trainer.method.modules():
        if isinstance(module, torch.nn.Linear):  # the towers' MLPs and projections
            module.register_forward_hook(lambda module, inputs, output: output_dtypes.add(output.dtype))
    result = trainer.train()
    assert output_dtypes == {torch.bfloat16 if precision == "bf16" else torch.float16}
    losses = [row["loss"] for row in result.log_history if "loss" in row]
    assert len(losses) == 4 and all(torch.isfinite(torch.tensor(losses)))
    changed = [name for name, p in trainer.method.named_parameters() if not torch.equal(p.detach(), before[name])]
    assert len(changed) == len(before)  # every weight trained (under fp16: no step skipped for good)
    assert all(p.dtype == torch.float32 for p in trainer.method.parameters())  # master weights stay fp32


def test_fused_adamw_is_used_on_cuda(tmp_path):
    trainer = _trainer(tmp_path, "train.mixed_precision=bf16")
    optimizer = trainer.optimizer.optimizer
    assert isinstance(optimizer, torch.optim.AdamW) and optimizer.defaults["fused"] is True
    parameters = [p for group in optimizer.param_groups for p in group["params"]]
    assert parameters and all(p.is_cuda for p in parameters)
    trainer.train()
    assert all(optimizer.state[p]["step"].is_cuda for p in parameters)  # the fused kernel keeps its step on the GPU


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_tiled_info_nce_equals_plain_on_gpu(dtype):
    """Both forms compute the float32 logits of the same inputs; only the summation order differs (tiles of 128
    over N = 1000, not a multiple). Float32 rounding of sums over 1000 terms stays far below 1e-5 relative, which
    is still 700x tighter than one bf16 step (2^-8): logits computed in bf16 would fail. Gradients come back in
    the input dtype, so bf16 gradients may differ by one bf16 rounding step (rtol 2^-7)."""
    generator = torch.Generator(device="cuda").manual_seed(0)
    a = torch.randn(1000, 64, device="cuda", generator=generator).to(dtype).requires_grad_()
    b = torch.randn(1000, 64, device="cuda", generator=generator).to(dtype).requires_grad_()
    results = []
    for chunk_size in (None, 128):
        loss = info_nce(a, b, scale=20.0, symmetric=True, chunk_size=chunk_size)
        gradients = torch.autograd.grad(loss, (a, b))
        results.append((loss, gradients))
    (plain, plain_gradients), (tiled, tiled_gradients) = results
    assert plain.dtype == tiled.dtype == torch.float32
    torch.testing.assert_close(tiled, plain, rtol=1e-5, atol=0.0)
    rtol = 1e-5 if dtype == torch.float32 else 2**-7
    for tiled_gradient, plain_gradient in zip(tiled_gradients, plain_gradients, strict=True):
        assert tiled_gradient.dtype == dtype
        atol = 1e-5 * float(plain_gradient.abs().max())
        torch.testing.assert_close(tiled_gradient, plain_gradient, rtol=rtol, atol=atol)


def _gradients(tmp_path: Path, method, rows: list, cache_chunk_size: int | None) -> dict[str, torch.Tensor]:
    from mmcontrast.data.samplers import ShuffledBatchSampler
    from mmcontrast.engine.config import TrainingConfig

    config = TrainingConfig(batch_size=len(rows), cache_chunk_size=cache_chunk_size, progress_bar=False)
    trainer = Trainer(method, rows, ShuffledBatchSampler(len(rows), len(rows), shuffle=False), config, tmp_path)
    method.zero_grad(set_to_none=True)
    trainer.backward(send_to_device(trainer.collate(rows), trainer.accelerator.device))
    return {name: p.grad.clone() for name, p in method.named_parameters() if p.grad is not None}


def test_grad_cache_on_gpu_equals_the_whole_batch(tmp_path, monkeypatch):
    # TF32 convolutions (cuDNN's default) round differently for other batch shapes: compare in true float32
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    recipe = load_recipe(RECIPE, [f"output_dir={tmp_path}"])
    parts = build_parts(recipe)
    rows = [parts.dataset[i] for i in range(24)]
    whole = _gradients(tmp_path / "whole", parts.method, rows, None)
    cached = _gradients(tmp_path / "cached", parts.method, rows, 5)
    assert next(parts.method.parameters()).is_cuda
    assert whole.keys() == cached.keys() and len(whole) > 10
    for name, gradient in whole.items():
        torch.testing.assert_close(cached[name], gradient, atol=1e-5, rtol=1e-4, msg=name)


@pytest.mark.parametrize("precision", ["'no'", "bf16"])  # quoted: YAML reads a bare no as false
def test_no_host_device_sync_between_the_first_and_last_step(tmp_path, precision):
    """The hot loop (data, forward, backward, gradient norm, finiteness checks, optimizer and scheduler steps)
    never makes the host wait for the GPU: CUDA's sync debug mode raises at any synchronising call from the end of
    step 1 to the end of the last step (its logging, the one read of the loss, comes after)."""
    steps = 6
    trainer = _trainer(
        tmp_path, f"train.mixed_precision={precision}", f"train.max_steps={steps}", "train.logging_steps=1000"
    )
    seen = []

    def after_optimizer_step(step: int, total_steps: int) -> None:
        seen.append(step)
        torch.cuda.set_sync_debug_mode("error" if step < total_steps else "default")

    trainer.method.after_optimizer_step = after_optimizer_step
    try:
        result = trainer.train()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert seen == list(range(1, steps + 1))
    assert [row["step"] for row in result.log_history if "loss" in row] == [steps]  # the only read of the loss
