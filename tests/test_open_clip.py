"""open_clip towers in the CLIP recipe: the `local-dir:` export reloads in open_clip with the same embeddings,
the trained folder runs in `mmcontrast zero-shot`, and bad `model.open_clip` sections are named."""

from __future__ import annotations

import json
from pathlib import Path

import open_clip
import pytest
import torch
import yaml
from huggingface_hub import ModelCard

from mmcontrast.cli import main
from mmcontrast.data.images import digits
from mmcontrast.hub.open_clip_folder import save_open_clip
from mmcontrast.recipe import build_parts, load_recipe

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "clip_open_clip_digits.yaml"
TEXTS = ["a handwritten seven.", "the number zero.", "a photo of the digit two."]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("open_clip")
    overrides = [f"output_dir={run}", "train.max_steps=80", "train.batch_size=32", "train.save_steps=0"]
    assert main(["train", str(RECIPE), *overrides, "train.eval_steps=0", "train.progress_bar=false"]) == 0
    return run


def _moved_method(tmp_path):
    """The recipe's CLIP method after a few optimiser steps (weights and logit scale off their init)."""
    recipe = load_recipe(RECIPE, [f"output_dir={tmp_path}", "data.limit=32"])
    parts = build_parts(recipe)
    method = parts.method
    optimizer = torch.optim.AdamW(method.parameters(), lr=1e-2)
    rows = [parts.dataset[i] for i in range(16)]
    for _ in range(3):
        loss = method(method.collate(rows)).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return method


def test_open_clip_export_reloads_with_identical_embeddings(tmp_path):
    method = _moved_method(tmp_path)
    model_cfg = yaml.safe_load(RECIPE.read_text())["model"]["open_clip"]["model_cfg"]
    folder = save_open_clip(
        method.image_encoder, method.text_encoder, method.logit_scale.log_scale, model_cfg, tmp_path / "model"
    )
    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{folder}")
    tokenizer = open_clip.get_tokenizer(f"local-dir:{folder}")
    model.eval()
    images = [row["image"] for row in digits("test").rows[:16]]
    with torch.no_grad():
        theirs_images = model.encode_image(torch.stack([preprocess(image) for image in images]), normalize=True)
        theirs_texts = model.encode_text(tokenizer(TEXTS), normalize=True)
    assert (method.encode_images(images) - theirs_images).abs().max() < 1e-5
    assert (method.encode_texts(TEXTS) - theirs_texts).abs().max() < 1e-5
    assert float(model.logit_scale) == pytest.approx(method.logit_scale.log_scale.item(), abs=1e-6)
    assert float(model.logit_scale) != pytest.approx(float(torch.tensor(1 / 0.07).log()), abs=1e-4)  # it trained


def test_trained_run_exports_an_open_clip_folder_that_zero_shot_loads(trained_run, capsys):
    model_dir = trained_run / "model"
    assert {"open_clip_config.json", "open_clip_model.safetensors", "README.md"} <= {
        p.name for p in model_dir.iterdir()
    }
    assert not list(model_dir.glob("*.bin")) and not list(model_dir.glob("*.pt*"))
    capsys.readouterr()
    assert (
        main(
            [
                "zero-shot",
                "--model",
                str(model_dir),
                "--data",
                "sklearn:digits",
                "--split",
                "test",
                "--templates",
                "a photo of the digit {}.",
                "a handwritten {}.",
                "the number {}.",
            ]
        )
        == 0
    )
    report = json.loads(capsys.readouterr().out)
    recorded = json.loads((trained_run / "zero_shot.json").read_text())
    assert report["zero_shot"] == pytest.approx(recorded, abs=1e-6)  # export evaluation = CLI on the same folder
    card = ModelCard.load(model_dir / "README.md")
    assert card.data.library_name == "open_clip"
    assert card.data.pipeline_tag == "zero-shot-image-classification"
    assert {r.metric_type for r in card.data.eval_results} == {"top1", "top5", "mean_per_class_recall"}
    assert 'create_model_and_transforms("local-dir:' in card.text


def test_same_folder_runs_in_the_transformers_pipeline_with_the_same_predictions(trained_run):
    from transformers import CLIPModel, pipeline

    from mmcontrast.data.images import DIGIT_NAMES
    from mmcontrast.evaluation.zero_shot import zero_shot_classifier
    from mmcontrast.hub.open_clip_folder import OpenClipDualEncoder
    from mmcontrast.hub.transformers_clip import TransformersDualEncoder

    model_dir = trained_run / "model"
    assert isinstance(TransformersDualEncoder(model_dir).model, CLIPModel)
    images = [row["image"] for row in digits("test").rows[:60]]
    template = "a photo of the digit {}."
    classifier = pipeline("zero-shot-image-classification", model=str(model_dir))
    theirs = [
        classifier(image, candidate_labels=list(DIGIT_NAMES), hypothesis_template=template)[0]["label"]
        for image in images
    ]
    encoder = OpenClipDualEncoder(model_dir)  # what `mmcontrast zero-shot` loads from this folder
    weights = zero_shot_classifier(encoder, DIGIT_NAMES, [template])
    ours = [DIGIT_NAMES[i] for i in (encoder.encode_images(images) @ weights.T).argmax(dim=1).tolist()]
    assert ours == theirs
    assert len(set(ours)) > 1  # not a constant model
    transformers_side = TransformersDualEncoder(model_dir)
    assert (transformers_side.encode_images(images) - encoder.encode_images(images)).abs().max() < 1e-5
    assert (transformers_side.encode_texts(TEXTS) - encoder.encode_texts(TEXTS)).abs().max() < 1e-5


def test_non_standard_open_clip_models_are_not_converted():
    from mmcontrast.hub.open_clip_to_transformers import convertible

    cfg = yaml.safe_load(RECIPE.read_text())["model"]["open_clip"]["model_cfg"]
    assert convertible(cfg) is None
    cfg["vision_cfg"]["ls_init_value"] = 1e-5
    assert "vision_cfg.ls_init_value" in convertible(cfg)
    assert "ResNet" in convertible({"embed_dim": 8, "vision_cfg": {"layers": [1, 1, 1, 1]}, "text_cfg": {}})


def test_open_clip_with_other_towers_is_refused(tmp_path):
    recipe = load_recipe(RECIPE, [f"output_dir={tmp_path}", "model.image.backbone=timm/resnet18"])
    with pytest.raises(ValueError, match=r"model\.open_clip replaces model\.image and model\.text"):
        build_parts(recipe)


def test_unknown_open_clip_name_is_named(tmp_path):
    recipe = load_recipe(
        RECIPE, [f"output_dir={tmp_path}", "model.open_clip.model_cfg=null", "model.open_clip.name=ViT-Nope-1"]
    )
    with pytest.raises(ValueError, match="'ViT-Nope-1' is not an open_clip model"):
        build_parts(recipe)
