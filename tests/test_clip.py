"""CLIP: training through the recipe, the transformers export (pipeline agreement, same embeddings), the
VisionTextDualEncoder export, corrupted images skipped and counted, the offline CLIP tokenizer, and the
zero-shot classifier against open_clip's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import captioned_digits_folder
from PIL import Image
from transformers import ViTConfig, ViTModel, pipeline

from mmcontrast.cli import main
from mmcontrast.data.images import DIGIT_NAMES, digits
from mmcontrast.evaluation.zero_shot import zero_shot_classifier
from mmcontrast.hub.transformers_clip import TransformersDualEncoder, export_transformers_clip
from mmcontrast.methods.clip import CLIP
from mmcontrast.modalities.clip_tokenizer import clip_tokenizer
from mmcontrast.modalities.image import ImageEncoder
from mmcontrast.modalities.text import TextEncoder

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "clip_digits.yaml"
TEMPLATE = "a photo of the digit {}."


@pytest.fixture(scope="module")
def trained_clip(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("clip")
    code = main(
        [
            "train",
            str(RECIPE),
            f"output_dir={run}",
            "train.max_steps=60",
            "train.batch_size=32",
            "train.save_steps=0",
            "train.eval_steps=0",
            "train.progress_bar=false",
            f"eval.templates=['{TEMPLATE}']",
        ]
    )
    assert code == 0
    return run


def test_pipeline_agrees_with_mmcontrast_zero_shot(trained_clip):
    model_dir = trained_clip / "model"
    images = [row["image"] for row in digits("test").rows[:60]]
    classifier = pipeline("zero-shot-image-classification", model=str(model_dir))
    theirs = [
        classifier(image, candidate_labels=list(DIGIT_NAMES), hypothesis_template=TEMPLATE)[0]["label"]
        for image in images
    ]
    encoder = TransformersDualEncoder(model_dir)
    weights = zero_shot_classifier(encoder, DIGIT_NAMES, [TEMPLATE])
    ours = [DIGIT_NAMES[i] for i in (encoder.encode_images(images) @ weights.T).argmax(dim=1).tolist()]
    assert ours == theirs
    assert len(set(ours)) > 1  # not a constant model


def test_export_gives_the_trained_embeddings(tmp_path):
    from mmcontrast.recipe import build_parts, load_recipe

    recipe = load_recipe(RECIPE, [f"output_dir={tmp_path}", "data.limit=8"])
    method = build_parts(recipe).method
    with torch.no_grad():
        method.logit_scale.log_scale.fill_(3.0)
    export_transformers_clip(method, tmp_path / "model")
    exported = TransformersDualEncoder(tmp_path / "model")
    images = [row["image"] for row in digits("test").rows[:8]]
    texts = ["a handwritten seven.", "the number zero.", "a photo of the digit two."]
    assert (method.encode_images(images) - exported.encode_images(images)).abs().max() < 1e-5
    assert (method.encode_texts(texts) - exported.encode_texts(texts)).abs().max() < 1e-5
    assert float(exported.model.logit_scale) == pytest.approx(3.0)


def test_zero_shot_cli_reports_metrics_and_plot(trained_clip, tmp_path, capsys):
    plot = tmp_path / "confusion.png"
    args = ["zero-shot", "--model", str(trained_clip / "model"), "--data", "sklearn:digits", "--split", "test"]
    assert main([*args, "--templates", TEMPLATE, "--confusion-matrix", str(plot)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report["zero_shot"]) == {"top1", "top5", "mean_per_class_recall"}
    assert 0.0 <= report["zero_shot"]["top1"] <= report["zero_shot"]["top5"] <= 1.0
    assert plot.stat().st_size > 0
    card = (trained_clip / "model" / "README.md").read_text()
    assert "zero-shot-image-classification" in card and "top1" in card


def test_vision_text_dual_encoder_export(tiny_bert_path, tmp_path):
    torch.manual_seed(0)
    vit = ViTModel(
        ViTConfig(
            image_size=16,
            patch_size=4,
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=64,
        )
    )
    text = TextEncoder.from_pretrained(tiny_bert_path, pooling="pooler", normalize=False, max_length=16)
    method = CLIP(ImageEncoder.from_transformers(vit), text, embed_dim=24)
    export_transformers_clip(method, tmp_path / "model")
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    assert config["model_type"] == "vision-text-dual-encoder"
    exported = TransformersDualEncoder(tmp_path / "model")
    images = [Image.new("RGB", (16, 16), colour) for colour in ("red", "navy", "white")]
    texts = ["a red square", "a dark blue square"]
    assert (method.encode_images(images) - exported.encode_images(images)).abs().max() < 1e-5
    assert (method.encode_texts(texts) - exported.encode_texts(texts)).abs().max() < 1e-5
    result = pipeline("zero-shot-image-classification", model=str(tmp_path / "model"))(
        images[0], candidate_labels=["red", "blue"]
    )
    assert {r["label"] for r in result} == {"red", "blue"}


def test_corrupted_images_are_skipped_and_counted(tmp_path, capsys):
    folder = captioned_digits_folder(tmp_path / "images", "train", 24)
    data = (folder / "3.png").read_bytes()
    (folder / "3.png").write_bytes(data[: len(data) // 2])  # truncated
    (folder / "7.png").write_bytes(b"this is not a png")  # corrupted
    code = main(
        [
            "train",
            str(RECIPE),
            f"output_dir={tmp_path / 'run'}",
            f"data.train={folder}",
            "train.max_steps=2",
            "train.batch_size=8",
            "train.save_steps=0",
            "train.progress_bar=false",
            "eval.zero_shot=null",
        ]
    )
    assert code == 0
    output = capsys.readouterr().out
    assert "skipped unreadable image" in output and "3.png" in output and "7.png" in output
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["skipped_rows"] == 2


def test_clip_tokenizer_matches_open_clip():
    import open_clip

    ours = clip_tokenizer(32)
    theirs = open_clip.get_tokenizer("ViT-B-32", context_length=32)
    for text in ["a photo of the digit seven.", "Hello, World! It's 2026.", "naïve café au lait"]:
        ids = ours(text)["input_ids"]
        assert ids == theirs([text])[0][: len(ids)].tolist()


def test_zero_shot_classifier_matches_open_clip(trained_clip):
    from open_clip.zero_shot_classifier import build_zero_shot_classifier

    encoder = TransformersDualEncoder(trained_clip / "model")
    templates = ["a photo of the digit {}.", "a handwritten {}."]

    class Texts(list):  # open_clip moves tokenised texts to the device; these are the texts themselves
        def to(self, device):
            return self

    class Model:
        def encode_text(self, texts, normalize=False):
            return encoder.encode_texts(texts)

    theirs = build_zero_shot_classifier(
        Model(), tokenizer=Texts, classnames=DIGIT_NAMES, templates=templates, use_tqdm=False
    )
    ours = zero_shot_classifier(encoder, DIGIT_NAMES, templates)
    assert torch.allclose(ours, theirs.T, atol=1e-6)


def test_imagefolder_recipe_lit_exports_dual_encoder(minilm_path, tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    lines = ["file_name,text"]
    for i, row in enumerate(digits("train", image_size=64).rows[:16]):
        row["image"].save(folder / f"{i}.png")
        lines.append(f"{i}.png,a handwritten {DIGIT_NAMES[row['label']]}")
    (folder / "metadata.csv").write_text("\n".join(lines) + "\n")
    recipe = RECIPE.parent / "clip_imagefolder.yaml"
    run = tmp_path / "run"
    overrides = [f"output_dir={run}", f"data.train={folder}", f"model.text.name_or_path={minilm_path}"]
    overrides += [
        "train.max_steps=2",
        "train.batch_size=8",
        "train.progress_bar=false",
        "model.image.config.num_hidden_layers=1",
    ]
    assert main(["train", str(recipe), *overrides]) == 0
    config = json.loads((run / "model" / "config.json").read_text())
    assert config["model_type"] == "vision-text-dual-encoder"
    result = pipeline("zero-shot-image-classification", model=str(run / "model"))(
        str(folder / "0.png"), candidate_labels=["seven", "two"]
    )
    assert len(result) == 2


def test_towers_without_a_transformers_form_export_a_loadable_mmcontrast_folder(tiny_bert_path, tmp_path, capsys):
    from huggingface_hub import ModelCard

    from mmcontrast.hub.dual_encoders import load_dual_encoder
    from mmcontrast.methods.clip import CLIP as ClipMethod

    run = tmp_path / "run"
    overrides = [
        f"output_dir={run}",
        "model.image.config=null",
        "model.image.backbone=timm/test_resnet",
        "model.text.config=null",
        f"model.text.name_or_path={tiny_bert_path}",
        "model.text.pooling=mean",
        "train.max_steps=3",
        "train.batch_size=16",
        "train.progress_bar=false",
    ]
    assert main(["train", str(RECIPE), *overrides]) == 0
    model_dir = run / "model"
    assert {p.name for p in model_dir.iterdir()} >= {"config.json", "model.safetensors", "README.md"}
    loaded = load_dual_encoder(model_dir)
    assert isinstance(loaded, ClipMethod) and not loaded.training
    images = [row["image"] for row in digits("test").rows[:6]]
    assert loaded.encode_images(images).shape == (6, 64)
    card = ModelCard.load(model_dir / "README.md")
    assert card.data.library_name == "mmcontrast"
    assert {r.metric_type for r in card.data.eval_results} == {"top1", "top5", "mean_per_class_recall"}
    capsys.readouterr()
    templates = ["a photo of the digit {}.", "a handwritten {}.", "the number {}."]  # the recipe's
    assert main(["zero-shot", "--model", str(model_dir), "--data", "sklearn:digits", "--templates", *templates]) == 0
    report = json.loads(capsys.readouterr().out)
    trained = json.loads((run / "summary.json").read_text())["metrics"]  # the in-memory model's last evaluation
    assert report["zero_shot"] == pytest.approx({k.removeprefix("zero_shot/"): v for k, v in trained.items()})


def test_mmcontrast_clip_folder_gives_the_trained_embeddings(tiny_bert_path, tmp_path):
    from mmcontrast.hub.mmcontrast_clip import load_mmcontrast_clip, save_mmcontrast_clip
    from mmcontrast.recipe import build_parts, load_recipe
    from mmcontrast.recipes.base import effective_recipe

    overrides = [f"output_dir={tmp_path}", "data.limit=8", "model.image.config=null"]
    overrides += ["model.image.backbone=timm/test_resnet", "model.text.config=null"]
    overrides += [f"model.text.name_or_path={tiny_bert_path}", "model.text.pooling=mean"]
    recipe = load_recipe(RECIPE, overrides)
    method = build_parts(recipe).method
    with torch.no_grad():
        for parameter in method.parameters():
            parameter.add_(0.01 * torch.randn_like(parameter))  # off the initialisation the loader would rebuild
    loaded = load_mmcontrast_clip(save_mmcontrast_clip(method, effective_recipe(recipe), tmp_path / "model"))
    images = [row["image"] for row in digits("test").rows[:8]]
    texts = ["a handwritten seven.", "the number zero."]
    assert (method.encode_images(images) - loaded.encode_images(images)).abs().max() < 1e-6
    assert (method.encode_texts(texts) - loaded.encode_texts(texts)).abs().max() < 1e-6
