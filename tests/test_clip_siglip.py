"""SigLIP in the two-tower method: the loss equals the loss core's sigmoid loss (value and gradient wrt the
embeddings, the scale and the bias), the paper's initialisation, the bias kept across a resume, the CLIP recipe
trained with `model.loss.name=siglip` (export and zero-shot unaffected by the bias), and bad settings refused with
the key named, in the CLIP, CLAP and video-text recipes."""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from mmcontrast.cli import main
from mmcontrast.data.samplers import ShuffledBatchSampler
from mmcontrast.engine.checkpoints import checkpoint_dirs
from mmcontrast.engine.config import TrainingConfig
from mmcontrast.engine.trainer import Trainer
from mmcontrast.losses import SigmoidLoss
from mmcontrast.methods.two_tower import TwoTower
from mmcontrast.typed_config import ConfigError, load_yaml

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


class VectorTower(nn.Module):
    """A linear tower over vectors: the smallest module with the two-tower method's tower interface."""

    def __init__(self, dim_in: int, embedding_dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(dim_in, embedding_dim)
        self.embedding_dim = embedding_dim

    def preprocess(self, examples):
        return torch.stack([torch.as_tensor(example, dtype=torch.float32) for example in examples])

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.linear(inputs)


def siglip_method(**options) -> TwoTower:
    torch.manual_seed(0)
    towers = {"image": VectorTower(6, 5), "audio": VectorTower(4, 5)}
    return TwoTower(towers, embed_dim=3, **{"loss": "siglip", **options})


def test_siglip_starts_as_the_paper_says_and_matches_the_loss_core():
    method = siglip_method()
    assert float(method.logit_scale().detach()) == pytest.approx(10.0)  # t' = log 10
    assert method.logit_scale.log_scale.item() == pytest.approx(math.log(10.0))
    assert isinstance(method.logit_bias, nn.Parameter) and float(method.logit_bias.detach()) == -10.0
    core = SigmoidLoss(scale_init=10.0, bias_init=-10.0, normalize=False)
    with torch.no_grad():  # away from the initialisation, the same values in both
        for module in (method, core):
            module.logit_scale.log_scale.fill_(math.log(7.0))
        method.logit_bias.fill_(-3.0)
        core.bias.fill_(-3.0)
    a, b = F.normalize(torch.randn(8, 3), dim=-1), F.normalize(torch.randn(8, 3), dim=-1)
    ours_a, ours_b = a.clone().requires_grad_(), b.clone().requires_grad_()
    theirs_a, theirs_b = a.clone().requires_grad_(), b.clone().requires_grad_()
    ours = method.loss({"image": ours_a, "audio": ours_b}, {})
    theirs = core(theirs_a, theirs_b)
    ours.loss.backward()
    theirs.backward()
    assert torch.allclose(ours.loss, theirs, atol=1e-6)
    assert {k: float(v) for k, v in ours.metrics.items()} == pytest.approx({"logit_scale": 7.0, "logit_bias": -3.0})
    assert torch.allclose(method.logit_bias.grad, core.bias.grad, atol=1e-6)
    assert torch.allclose(method.logit_scale.log_scale.grad, core.logit_scale.log_scale.grad, atol=1e-6)
    assert torch.allclose(ours_a.grad, theirs_a.grad, atol=1e-6)
    assert torch.allclose(ours_b.grad, theirs_b.grad, atol=1e-6)
    assert method.logit_bias.grad.item() != 0.0


def test_siglip_options_and_refusals():
    assert float(siglip_method(logit_scale_init=3.0).logit_scale().detach()) == pytest.approx(3.0)
    assert float(siglip_method(logit_bias_init=-2.0).logit_bias.detach()) == -2.0
    method = siglip_method()
    rows = [{"image": [0.0] * 6, "audio": [1.0] * 4, "label": i % 2} for i in range(4)]
    assert "positive_ids" not in method.collate(rows)  # the sigmoid loss has no label mask
    info_nce = TwoTower({"image": VectorTower(6, 5), "audio": VectorTower(4, 5)}, embed_dim=3)
    assert not hasattr(info_nce, "logit_bias") and float(info_nce.logit_scale().detach()) == pytest.approx(1 / 0.07)
    assert "positive_ids" in info_nce.collate(rows)
    with pytest.raises(ValueError, match="loss must be one of"):
        TwoTower({"image": VectorTower(6, 5), "audio": VectorTower(4, 5)}, embed_dim=3, loss="sigmoid")


def _trainer(output_dir: Path, **overrides) -> Trainer:
    settings = {"batch_size": 4, "lr": 0.05, "max_steps": 6, "progress_bar": False, "logging_steps": 1}
    config = TrainingConfig(**{**settings, **overrides})
    generator = torch.Generator().manual_seed(1)
    rows = [
        {"image": torch.randn(6, generator=generator), "audio": torch.randn(4, generator=generator)} for _ in range(16)
    ]
    sampler = ShuffledBatchSampler(len(rows), config.batch_size, seed=config.seed, drop_last=True)
    return Trainer(siglip_method(gather=False), rows, sampler, config, output_dir)


def test_siglip_bias_is_trained_checkpointed_and_resumed_exactly(tmp_path):
    reference = _trainer(tmp_path / "reference")
    reference.train()
    run = tmp_path / "run"
    _trainer(run, save_steps=2, save_total_limit=0).train()
    last = checkpoint_dirs(run / "checkpoints")[-1]
    weights = load_file(next(last.glob("*.safetensors")))
    assert "logit_bias" in weights and float(weights["logit_bias"]) != -10.0  # trained and saved
    for folder in checkpoint_dirs(run / "checkpoints")[-2:]:  # as if killed after the step-2 checkpoint
        shutil.rmtree(folder)
    resumed = _trainer(run, save_steps=2, save_total_limit=0)
    resumed.train(resume_from="latest")
    assert torch.equal(resumed.method.logit_bias, reference.method.logit_bias)
    assert float(reference.method.logit_bias.detach()) != -10.0
    for name, tensor in reference.method.state_dict().items():
        assert torch.equal(tensor, resumed.method.state_dict()[name]), name


def test_clip_recipe_trains_with_siglip_and_zero_shot_ignores_the_bias(tmp_path):
    from mmcontrast.data.images import DIGIT_NAMES, digits
    from mmcontrast.evaluation.zero_shot import zero_shot_classifier
    from mmcontrast.hub.transformers_clip import TransformersDualEncoder

    run = tmp_path / "run"
    overrides = [f"output_dir={run}", "model.loss.name=siglip", "train.max_steps=4", "train.batch_size=16"]
    overrides += ["train.save_steps=0", "train.eval_steps=0", "train.progress_bar=false", "train.logging_steps=1"]
    overrides += ["eval.templates=['a photo of the digit {}.']"]
    assert main(["train", str(RECIPES / "clip_digits.yaml"), *overrides]) == 0
    log = json.loads((run / "training_log.json").read_text())
    history = log["log_history"] if isinstance(log, dict) else log
    biases = [entry["logit_bias"] for entry in history if "logit_bias" in entry]
    assert len(biases) == 4 and biases[-1] != -10.0 and all(math.isfinite(b) for b in biases)
    exported = TransformersDualEncoder(run / "model")  # the CLIPModel export carries the scale, not the bias
    images = [row["image"] for row in digits("test").rows[:40]]
    classifier = zero_shot_classifier(exported, DIGIT_NAMES, ["a photo of the digit {}."])
    similarities = exported.encode_images(images) @ classifier.T
    scale = exported.model.logit_scale.exp().item()
    for bias in (-10.0, biases[-1], 5.0):  # SigLIP's logits s * cos + b: the same argmax for any bias
        assert torch.equal((scale * similarities + bias).argmax(dim=1), similarities.argmax(dim=1))
    card_text = (run / "model" / "README.md").read_text()
    card = re.search(r"learned logit bias \((-?[0-9.]+)\) is not part of this format", card_text)
    assert card is not None and float(card[1]) == pytest.approx(biases[-1], abs=0.05) and float(card[1]) != -10.0
    summary = json.loads((run / "summary.json").read_text())["metrics"]
    zero_shot = json.loads((run / "zero_shot.json").read_text())
    assert zero_shot["top1"] == pytest.approx(summary["zero_shot/top1"])


@pytest.mark.parametrize(
    ("recipe", "module"),
    [("clip_digits.yaml", "clip"), ("clap_fsdd.yaml", "clap"), ("video_text_digits.yaml", "video_text")],
)
def test_every_two_tower_recipe_takes_model_loss(recipe, module):
    from importlib import import_module

    from mmcontrast.recipe import load_recipe

    with pytest.raises(ConfigError, match=r"model\.loss\.name"):
        load_recipe(RECIPES / recipe, ["model.loss.name=sigmoid"])
    raw = load_yaml(RECIPES / recipe)
    raw["model"]["loss"] = {"name": "siglip", "bias_init": -5.0}
    method = import_module(f"mmcontrast.recipes.{module}").method_from_recipe(raw, recipe)
    assert method.loss_name == "siglip" and float(method.logit_bias.detach()) == -5.0
    assert float(method.logit_scale().detach()) == pytest.approx(10.0)
    raw["model"]["loss"] = {"name": "info_nce", "bias_init": -5.0}
    with pytest.raises(ValueError, match=r"model\.loss\.bias_init"):
        import_module(f"mmcontrast.recipes.{module}").method_from_recipe(raw, recipe)


def test_a_bad_loss_name_is_refused_on_the_command_line(tmp_path, capsys):
    assert main(["train", str(RECIPES / "clip_digits.yaml"), f"output_dir={tmp_path}", "model.loss.name=sigmoid"]) != 0
    assert "model.loss.name" in capsys.readouterr().err


def test_the_mmcontrast_format_keeps_the_bias(tmp_path):
    import mmcontrast.recipe  # noqa: F401  (registers the builders that rebuild saved folders)
    from mmcontrast.hub.mmcontrast_clip import load_mmcontrast_clip, save_mmcontrast_clip
    from mmcontrast.recipes.video_text import method_from_recipe

    raw = load_yaml(RECIPES / "video_text_digits.yaml")
    raw["model"]["loss"] = {"name": "siglip"}
    method = method_from_recipe(raw, "video_text_digits.yaml")
    with torch.no_grad():
        method.logit_bias.fill_(-4.25)
    loaded = load_mmcontrast_clip(save_mmcontrast_clip(method, raw, tmp_path / "model"))
    assert loaded.loss_name == "siglip" and loaded.logit_bias.item() == -4.25


def _distributed_worker(rank: int, world_size: int, port: int) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    try:
        generator = torch.Generator().manual_seed(3)
        a = F.normalize(torch.randn(4 * world_size, 3, generator=generator), dim=-1)
        b = F.normalize(torch.randn(4 * world_size, 3, generator=generator), dim=-1)
        single = siglip_method(gather=False)
        expected = single.loss({"image": a, "audio": b}, {}).loss
        expected.backward()
        method = siglip_method()  # gather=True: this rank's images against every rank's captions
        rows = slice(4 * rank, 4 * (rank + 1))
        local = method.loss({"image": a[rows], "audio": b[rows]}, {}).loss
        local.backward()
        values = torch.stack([local.detach(), method.logit_bias.grad, method.logit_scale.log_scale.grad])
        dist.all_reduce(values)  # DDP averages gradients over ranks; the mean loss is the single-process loss
        values /= world_size
        torch.testing.assert_close(values[0], expected.detach())
        torch.testing.assert_close(values[1], single.logit_bias.grad)
        torch.testing.assert_close(values[2], single.logit_scale.log_scale.grad)
    finally:
        dist.destroy_process_group()


def test_siglip_gathers_across_processes_as_one_process():
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    mp.spawn(_distributed_worker, args=(2, port), nprocs=2, join=True)


def test_video_text_recipe_trains_with_siglip_and_its_folder_keeps_the_bias(tmp_path):
    from mmcontrast.hub.mmcontrast_clip import load_mmcontrast_clip

    run = tmp_path / "run"
    tower = "{model_type: clip_vision_model, image_size: 32, patch_size: 8, hidden_size: 32, num_hidden_layers: 1, "
    tower += "num_attention_heads: 2, intermediate_size: 64}"
    overrides = [f"output_dir={run}", "model.loss.name=siglip", f"model.video.image.config={tower}"]
    overrides += ["data.moving_digits.num_videos=16", "data.moving_digits.num_frames=4", "num_frames=4"]
    overrides += ["eval.num_videos=8", "train.batch_size=8", "train.epochs=1", "train.progress_bar=false"]
    assert main(["train", str(RECIPES / "video_text_digits.yaml"), *overrides]) == 0
    model = load_mmcontrast_clip(run / "model")
    assert model.loss_name == "siglip" and model.logit_bias.item() != -10.0
    card = (run / "model" / "README.md").read_text()
    assert f"the learned logit bias ({model.logit_bias.item():.4f}) is saved with the weights" in card


def test_clap_recipe_trains_with_siglip_and_the_card_gives_the_bias(tmp_path):
    from test_clap import _fsdd_subset

    run = tmp_path / "run"
    overrides = [f"data.train={_fsdd_subset(tmp_path)}", f"output_dir={run}", "model.loss.name=siglip"]
    overrides += ["train.max_steps=3", "train.batch_size=16", "train.eval_steps=0", "train.progress_bar=false"]
    assert main(["train", str(RECIPES / "clap_fsdd.yaml"), *overrides]) == 0
    assert json.loads((run / "model" / "config.json").read_text())["model_type"] == "clap"
    card = (run / "model" / "README.md").read_text()
    assert "Trained with SigLIP's sigmoid loss: its learned logit bias" in card
