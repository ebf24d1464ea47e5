"""CLAP: the audio-text two-tower method, its ClapModel export (pipeline agreement), the loss direction, the recipe
and `mmcontrast zero-shot` on audio."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

from mmcontrast.cli import main
from mmcontrast.data.audio import FSDD_PATTERN, load_audio
from mmcontrast.losses import info_nce
from mmcontrast.recipe import load_recipe
from mmcontrast.recipes.base import effective_recipe
from mmcontrast.recipes.clap import ClapModelConfig, _method
from mmcontrast.typed_config import build as build_config

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "clap_fsdd.yaml"
FSDD = ROOT.parent / "shared" / "data" / "fsdd" / "recordings"
RATE = 8000


def _model_config(**changes) -> ClapModelConfig:
    raw = yaml.safe_load(RECIPE.read_text())["model"] | changes
    return build_config(ClapModelConfig, raw, source="test")


def _clips(count: int = 12) -> list[torch.Tensor]:
    """Deterministic test clips: FSDD test takes when the shared data is there, else tones and noise."""
    if FSDD.is_dir():
        files = sorted(FSDD.glob("*_[0-4].wav"))[:: max(1, 250 // count)][:count]
        return [load_audio(path, RATE)[0] for path in files]
    generator = torch.Generator().manual_seed(0)
    time = torch.arange(3000) / RATE
    return [
        torch.sin(2 * math.pi * (200 + 150 * i) * time) + 0.1 * torch.randn(3000, generator=generator)
        for i in range(count)
    ]


@pytest.fixture(scope="module")
def trained_clap():
    """A tiny CLAP-shaped method, a few steps away from its initialisation (so every weight matters)."""
    torch.manual_seed(0)
    method = _method(_model_config())
    clips = _clips(16)
    rows = [{"audio": clip, "caption": f"This is a sound of {i % 4}.", "label": i % 4} for i, clip in enumerate(clips)]
    optimizer = torch.optim.AdamW(method.parameters(), lr=1e-2)
    method.train()
    for _ in range(3):
        batch = method.collate(rows)
        loss = method.loss(method.embed(batch), batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    with torch.no_grad():
        method.logit_scale.log_scale.fill_(math.log(20.0))
    return method.eval()


@pytest.fixture(scope="module")
def exported(trained_clap, tmp_path_factory) -> Path:
    from mmcontrast.hub.transformers_clap import export_transformers_clap

    return export_transformers_clap(trained_clap, tmp_path_factory.mktemp("clap") / "model")


def test_export_is_clap_model_with_same_embeddings(trained_clap, exported):
    from mmcontrast.hub.dual_encoders import load_dual_encoder
    from mmcontrast.hub.transformers_clap import TransformersClapEncoder

    config = json.loads((exported / "config.json").read_text())
    assert config["model_type"] == "clap"
    assert (exported / "preprocessor_config.json").is_file() or (exported / "processor_config.json").is_file()
    loaded = load_dual_encoder(exported)
    assert isinstance(loaded, TransformersClapEncoder) and loaded.sample_rate == RATE
    clips = _clips()
    texts = ["This is a sound of 3.", "someone says 7.", "a recording of a dog barking"]
    torch.testing.assert_close(loaded.encode_audio(clips), trained_clap.encode_audio(clips), atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(loaded.encode_texts(texts), trained_clap.encode_texts(texts), atol=2e-5, rtol=1e-4)
    assert float(loaded.model.logit_scale_a.detach().exp()) == pytest.approx(20.0, rel=1e-5)
    assert float(loaded.model.logit_scale_t.detach().exp()) == pytest.approx(20.0, rel=1e-5)


def test_pipeline_agrees_with_mmcontrast_on_every_clip(trained_clap, exported):
    from transformers import pipeline

    from mmcontrast.evaluation.zero_shot import zero_shot_classifier

    classes = [str(d) for d in range(10)]
    clips = _clips()
    ours = trained_clap.encode_audio(clips) @ zero_shot_classifier(trained_clap, classes, ["This is a sound of {}."]).T
    classifier = pipeline("zero-shot-audio-classification", model=str(exported))
    for clip, scores in zip(clips, ours, strict=True):
        result = classifier(clip.numpy().astype(np.float32), candidate_labels=classes)
        assert result[0]["label"] == classes[int(scores.argmax())]
        probabilities = (20.0 * scores).softmax(-1)
        by_label = {item["label"]: item["score"] for item in result}
        assert [by_label[c] for c in classes] == pytest.approx(probabilities.tolist(), abs=1e-4)


def test_loss_is_symmetric_unlike_transformers_clap_loss():
    """transformers' ClapModel(return_loss=True) trains text -> audio twice; the core's loss both directions."""
    from transformers.models.clap.modeling_clap import contrastive_loss

    generator = torch.Generator().manual_seed(0)
    audio = F.normalize(torch.randn(8, 16, generator=generator), dim=-1)
    text = F.normalize(torch.randn(8, 16, generator=generator), dim=-1)
    scale = 10.0
    logits_per_text = scale * text @ audio.T
    logits_per_audio = scale * audio @ text.T
    target = torch.arange(8)
    audio_to_text = F.cross_entropy(logits_per_audio, target)
    text_to_audio = F.cross_entropy(logits_per_text, target)
    transformers_loss = (contrastive_loss(logits_per_text) + contrastive_loss(logits_per_audio.t())) / 2
    core = info_nce(audio, text, scale=scale, symmetric=True, normalize=False)
    torch.testing.assert_close(transformers_loss, text_to_audio)  # both terms are text -> audio
    torch.testing.assert_close(core, (audio_to_text + text_to_audio) / 2)
    assert abs(float(core - transformers_loss)) > 1e-3
    # the loss ClapModel itself returns is the text -> audio one too
    from transformers import ClapConfig, ClapModel

    method = _method(_model_config())
    batch = method.collate([{"audio": c, "caption": f"{i}"} for i, c in enumerate(_clips(4))])
    audio_tower = method.tower("audio").tower.encoder
    features = batch["audio"]["features"]  # the extractor's inputs, made in the collate
    config = ClapConfig(
        text_config=method.tower("text").tower.transformer.config.to_dict(),
        audio_config=audio_tower.backbone.config.to_dict(),
        projection_dim=64,
    )
    model = ClapModel(config).eval()
    output = model(**batch["text"], **features, return_loss=True)
    target = torch.arange(4)
    torch.testing.assert_close(output.loss, F.cross_entropy(output.logits_per_text, target))
    symmetric = (F.cross_entropy(output.logits_per_text, target) + F.cross_entropy(output.logits_per_audio, target)) / 2
    assert not torch.allclose(output.loss, symmetric)


def test_linear_projection_towers_export_in_mmcontrast_format(tmp_path):
    from mmcontrast.hub.dual_encoders import load_dual_encoder
    from mmcontrast.hub.folders import folder_kind
    from mmcontrast.hub.mmcontrast_clip import save_mmcontrast_clip
    from mmcontrast.hub.transformers_clap import clap_shape_problem
    from mmcontrast.methods.clap import CLAP

    raw = yaml.safe_load(RECIPE.read_text())
    raw["model"]["projection"] = "linear"
    recipe = load_recipe(None, [f"{k}={json.dumps(v)}" for k, v in [("method", "clap"), ("model", raw["model"])]])
    method = _method(recipe.model).eval()
    assert "ClapProjectionLayer" in clap_shape_problem(method)
    save_mmcontrast_clip(method, effective_recipe(recipe), tmp_path / "model")
    assert folder_kind(tmp_path / "model").kind == "audio-text"
    loaded = load_dual_encoder(tmp_path / "model")
    assert isinstance(loaded, CLAP)
    clips = _clips(4)
    torch.testing.assert_close(loaded.encode_audio(clips), method.encode_audio(clips))


def _fsdd_subset(tmp_path: Path, per_class: int = 4) -> Path:
    """A small FSDD copy: per digit, `per_class` training takes (>= 5) and 2 test takes (0-1) of one speaker."""
    if not FSDD.is_dir():
        pytest.skip(f"shared FSDD data not found at {FSDD}")
    folder = tmp_path / "fsdd"
    folder.mkdir()
    for digit in range(10):
        for take in [0, 1, *range(5, 5 + per_class)]:
            shutil.copy(FSDD / f"{digit}_george_{take}.wav", folder)
    return folder


def test_recipe_runs_end_to_end_and_zero_shot_cli(tmp_path, capsys):
    data = _fsdd_subset(tmp_path)
    output = tmp_path / "run"
    overrides = [
        f"data.train={data}",
        f"output_dir={output}",
        "train.max_steps=3",
        "train.batch_size=16",
        "train.eval_steps=0",
        "train.progress_bar=false",
        "train.logging_steps=1",
    ]
    assert main(["train", str(RECIPE), *overrides]) == 0
    out = capsys.readouterr().out
    assert "captions are generated from the class labels" in out
    summary = json.loads((output / "summary.json").read_text())
    assert {"zero_shot/top1", "zero_shot/audio_to_text/recall@1"} <= set(summary["metrics"])
    card = (output / "model" / "README.md").read_text()
    assert "zero-shot-audio-classification" in card
    model = output / "model"
    assert json.loads((model / "config.json").read_text())["model_type"] == "clap"

    # zero-shot CLI on the held-out takes: labels from the file names, same top-1 as the run's export evaluation
    assert main(["zero-shot", "--model", str(model), "--data", str(data), "--pattern", "fsdd"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["clips"] == 20
    expected = json.loads((output / "zero_shot.json").read_text())
    assert report["zero_shot"]["top1"] == pytest.approx(expected["top1"])

    # class names are matched by name: any order gives the same result; a wrong set is an error naming both
    shuffled = [str(d) for d in (3, 1, 4, 0, 5, 9, 2, 6, 8, 7)]
    args = ["zero-shot", "--model", str(model), "--data", str(data), "--pattern", FSDD_PATTERN]
    assert main([*args, "--classes", *shuffled]) == 0
    assert json.loads(capsys.readouterr().out)["zero_shot"]["top1"] == pytest.approx(expected["top1"])
    assert main([*args, "--classes", "zero", "one"]) == 2
    error = capsys.readouterr().err
    assert "--classes" in error and "not in the data" in error

    # --audio files with --classes: predictions per file, as the pipeline's top label
    from transformers import pipeline

    files = sorted(data.glob("*_george_0.wav"))[:3]
    assert main(["zero-shot", "--model", str(model), "--audio", *map(str, files), "--classes", *shuffled]) == 0
    predictions = json.loads(capsys.readouterr().out)["predictions"]
    classifier = pipeline("zero-shot-audio-classification", model=str(model))
    for file in files:
        top = classifier(load_audio(file, RATE)[0].numpy(), candidate_labels=shuffled)[0]["label"]
        assert predictions[str(file)].split(" ")[0] == top


def test_zero_shot_cli_audio_errors(exported, tmp_path, capsys):
    assert (
        main(["zero-shot", "--model", str(exported), "--audio", str(tmp_path / "missing.wav"), "--classes", "a"]) == 2
    )
    assert "missing.wav" in capsys.readouterr().err
    assert main(["zero-shot", "--model", str(exported), "--images", "x.png", "--classes", "a"]) == 2
    assert "audio-text" in capsys.readouterr().err
    assert main(["zero-shot", "--model", str(exported), "--audio", str(tmp_path / "x.wav")]) == 2
    assert "--classes" in capsys.readouterr().err


@pytest.mark.slow
def test_clap_fsdd_recipe_reaches_zero_shot_target(tmp_path):
    """The full recipe (minutes on CPU): zero-shot top-1 on the FSDD test takes >= 0.6 (chance 0.1)."""
    if not FSDD.is_dir():
        pytest.skip(f"shared FSDD data not found at {FSDD}")
    output = tmp_path / "run"
    assert main(["train", str(RECIPE), f"data.train={FSDD}", f"output_dir={output}", "train.progress_bar=false"]) == 0
    assert json.loads((output / "zero_shot.json").read_text())["top1"] >= 0.6
