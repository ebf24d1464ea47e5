"""`train.compile`: the towers run compiled, train as the eager towers do, and leave checkpoints, resume and the
exported model as they are (no ``_orig_mod.`` in any parameter name).

The recipe-level tests use the ``aot_eager`` backend (dynamo capture and AOTAutograd, the same graphs inductor
receives, without the C++ kernel compilation that takes tens of seconds on this CPU); one default test and the slow
one run inductor itself.
"""

from __future__ import annotations

import pytest
import torch
from conftest import pairs_training_args, synthetic_pairs
from safetensors.torch import load_file
from torch import nn

import mmcontrast
from mmcontrast.data.samplers import ShuffledBatchSampler
from mmcontrast.engine.checkpoints import checkpoint_dirs
from mmcontrast.engine.trainer import Trainer, TrainingConfig
from mmcontrast.methods.base import Method
from mmcontrast.methods.sbert import SbertLossConfig, SentenceBERT
from mmcontrast.modalities.text import TextEncoder
from mmcontrast.typed_config import ConfigError


def _sbert(tiny_bert_path: str) -> SentenceBERT:
    """The tiny BERT as a Sentence-BERT method, dropout off (compiled dropout draws other masks than eager)."""
    torch.manual_seed(0)
    encoder = TextEncoder.from_pretrained(tiny_bert_path, max_length=32)
    for module in encoder.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
    return SentenceBERT(encoder, ["anchor", "positive"], SbertLossConfig(name="info_nce"))


def _gradients(tiny_bert_path: str, rows: list, tmp_path, **settings) -> dict[str, torch.Tensor]:
    method = _sbert(tiny_bert_path)
    config = TrainingConfig(batch_size=len(rows), progress_bar=False, report_to=[], **settings)
    trainer = Trainer(method, rows, ShuffledBatchSampler(len(rows), len(rows), shuffle=False), config, tmp_path)
    trainer.backward(trainer.collate(rows))
    if settings.get("compile"):
        assert method.encoder._compiled_call_impl is not None  # the tower itself was compiled, in place
    return {name: p.grad.clone() for name, p in method.named_parameters() if p.grad is not None}


def _rows(count: int) -> list[dict[str, str]]:
    return [{"anchor": a, "positive": p} for a, p in synthetic_pairs(count)]


def _assert_close(compiled: dict[str, torch.Tensor], eager: dict[str, torch.Tensor]) -> None:
    assert compiled.keys() == eager.keys() and len(eager) > 10
    for name, gradient in eager.items():
        # float32 sums in another order: relative differences of ~1e-6, far below this bound
        assert torch.allclose(compiled[name], gradient, rtol=1e-4, atol=1e-6), name


def test_inductor_gradients_match_eager(tiny_bert_path, tmp_path):
    rows = _rows(8)
    eager = _gradients(tiny_bert_path, rows, tmp_path / "eager")
    torch._dynamo.reset()
    compiled = _gradients(tiny_bert_path, rows, tmp_path / "compiled", compile=True)
    _assert_close(compiled, eager)


def test_compile_with_grad_cache_and_gradient_checkpointing(tiny_bert_path, tmp_path):
    rows = _rows(8)
    eager = _gradients(tiny_bert_path, rows, tmp_path / "eager")
    torch._dynamo.reset()
    compiled = _gradients(
        tiny_bert_path,
        rows,
        tmp_path / "compiled",
        compile=True,
        compile_backend="aot_eager",
        cache_chunk_size=3,
        gradient_checkpointing=True,
    )
    _assert_close(compiled, eager)


def _train(tiny_bert_path, pairs_csv, output_dir, *extra: str) -> dict:
    overrides = [
        *pairs_training_args(tiny_bert_path, pairs_csv, output_dir)[2:],
        "train.batch_size=16",
        "train.max_steps=4",
        "train.save_steps=2",
        "train.save_total_limit=0",
        "train.lr=1e-3",
        "train.progress_bar=false",
        "train.report_to=[]",
        "train.compile=true",
        "train.compile_backend=aot_eager",
        *extra,
    ]
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    return mmcontrast.train("recipes/sbert_pairs.yaml", overrides)


def test_compiled_run_saves_resumes_and_exports_plain_names(tiny_bert_path, pairs_csv, tmp_path):
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModel

    summary = _train(tiny_bert_path, pairs_csv, tmp_path / "whole")
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 1  # the run did go through torch.compile
    checkpoints = checkpoint_dirs(tmp_path / "whole" / "checkpoints")
    assert len(checkpoints) == 2
    for checkpoint in checkpoints:  # the names of the eager method's parameters
        assert set(load_file(checkpoint / "model.safetensors")) == set(_sbert(tiny_bert_path).state_dict())
    exported = load_file(next((tmp_path / "whole" / "model").rglob("model.safetensors")))
    assert set(exported) == set(AutoModel.from_pretrained(tiny_bert_path).state_dict())
    SentenceTransformer(summary["model_dir"], device="cpu")  # loads with no missing or unexpected weights

    # a run stopped at step 2 and resumed, compiled again, ends where the uninterrupted run did
    _train(tiny_bert_path, pairs_csv, tmp_path / "resumed", "train.max_steps=2")
    _train(tiny_bert_path, pairs_csv, tmp_path / "resumed", "resume_from=latest")
    whole = load_file(checkpoints[-1] / "model.safetensors")
    resumed = load_file(checkpoint_dirs(tmp_path / "resumed" / "checkpoints")[-1] / "model.safetensors")
    assert whole.keys() == resumed.keys()
    for name, value in whole.items():
        assert torch.equal(resumed[name], value), name


class _NoTower(Method):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(2, 2)


def test_compile_settings_are_checked(tiny_bert_path, tmp_path):
    with pytest.raises(ConfigError, match=r"key 'train\.compile' is true, but _NoTower holds no tower"):
        Trainer(_NoTower(), [0], config=TrainingConfig(compile=True, report_to=[]), output_dir=tmp_path / "c")
    rows = _rows(4)
    with pytest.raises(ConfigError, match=r"key 'train\.compile_backend' is 'no_such_backend'"):
        _gradients(tiny_bert_path, rows, tmp_path / "a", compile=True, compile_backend="no_such_backend")
    with pytest.raises(ConfigError, match=r"key 'train\.compile_mode' is 'max-autotune'"):
        _gradients(
            tiny_bert_path, rows, tmp_path / "b", compile=True, compile_backend="aot_eager", compile_mode="max-autotune"
        )


@pytest.mark.slow
def test_inductor_training_follows_eager_with_one_recompile_for_text_lengths(tiny_bert_path, tmp_path):
    """Eight steps over texts of varying length: inductor compiles the tower twice (the first length, then once
    with the length dynamic), and the weights stay next to the eager run's."""
    lr, steps = 1e-4, 8
    rows = [
        {"anchor": row["anchor"] + " and more" * (i // 16), "positive": row["positive"]}
        for i, row in enumerate(_rows(64))
    ]  # batches in order (below): each two batches 2 tokens longer than the two before
    collate = _sbert(tiny_bert_path).collate
    assert len({collate(rows[i : i + 8])["features"]["input_ids"].shape[1] for i in range(0, 64, 8)}) == 4

    def train(**settings) -> dict[str, torch.Tensor]:
        method = _sbert(tiny_bert_path)
        config = TrainingConfig(batch_size=8, max_steps=steps, lr=lr, progress_bar=False, report_to=[], **settings)
        sampler = ShuffledBatchSampler(len(rows), 8, shuffle=False)
        Trainer(method, rows, sampler, config, tmp_path / str(len(settings))).train()
        return {name: p.detach().clone() for name, p in method.named_parameters()}

    initial = {name: p.detach().clone() for name, p in _sbert(tiny_bert_path).named_parameters()}
    eager = train()
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    compiled = train(compile=True)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 2
    for name, value in eager.items():
        # AdamW's first steps move each weight by about lr whatever the gradient's size, so a gradient near zero
        # that float rounding flips moves a weight the other way: at most 2 * lr per step apart
        assert torch.allclose(compiled[name], value, rtol=0, atol=2 * lr * steps), name
    moved = sum(float((eager[n] - initial[n]).abs().sum()) for n in eager)
    apart = sum(float((compiled[n] - eager[n]).abs().sum()) for n in eager)
    assert apart < 0.01 * moved  # on the whole the compiled run trains as the eager one does
