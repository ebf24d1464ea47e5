"""Pretrained image towers by name (timm tags, torchvision weights enums, open_clip tags): unknown names are
refused with the valid ones, weights in the library's cache load exactly, and missing weights stop offline with
one line. Nothing here touches the network: HF_HUB_OFFLINE=1 (tests/conftest.py), caches in tmp folders, and
torch.hub's download function replaced by one that fails as a machine without network does."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from urllib.error import URLError

import huggingface_hub
import open_clip
import pytest
import timm
import torch
import torchvision
from safetensors.torch import save_file

from mmcontrast.cli import main
from mmcontrast.modalities.image import IMAGENET_MEAN, IMAGENET_STD, ImageEncoder
from mmcontrast.modalities.open_clip_towers import open_clip_towers
from mmcontrast.modalities.pretrained_weights import PretrainedWeightsUnavailable
from mmcontrast.recipe import build_parts, load_recipe
from mmcontrast.recipes.image_tower import ImageTowerConfig, build_image_tower

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
CLIP_RECIPE, OPEN_CLIP_RECIPE = RECIPES / "clip_digits.yaml", RECIPES / "clip_open_clip_digits.yaml"


@pytest.fixture
def hub_cache(tmp_path, monkeypatch) -> Path:
    """An empty Hugging Face cache that timm and open_clip downloads read (offline: read only)."""
    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    return cache


@dataclass
class TorchHome:
    """``$TORCH_HOME`` and the downloads tried from it."""

    checkpoints: Path
    attempts: list[str] = field(default_factory=list)


@pytest.fixture
def torch_home(tmp_path, monkeypatch) -> TorchHome:
    """An empty torch.hub cache, and a download function that fails as it does without network."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    home = TorchHome(tmp_path / "torch-home" / "hub" / "checkpoints")

    def no_network(url, *args, **kwargs):
        home.attempts.append(url)
        raise URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    return home


def put_in_hub_cache(cache: Path, repo_id: str, filename: str, tensors: dict[str, torch.Tensor]) -> None:
    """Write ``filename`` of model repo ``repo_id`` in the Hugging Face cache layout (refs/main -> snapshot)."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True)
    save_file({name: tensor.contiguous() for name, tensor in tensors.items()}, repo / "snapshots" / commit / filename)


@pytest.mark.parametrize(
    ("backbone", "pretrained", "listed"),
    [
        ("timm/resnet18", "nope", "its tags: a1_in1k, a2_in1k, a3_in1k"),
        ("torchvision/resnet18", "nope", "its weights (ResNet18_Weights): IMAGENET1K_V1, DEFAULT"),
        ("open_clip/ViT-B-32", "nope", "its tags: openai, laion400m_e31, laion400m_e32"),
        ("open_clip/ViT-B-32", True, "open_clip has no default weights; name a tag of 'ViT-B-32': openai"),
    ],
)
def test_an_unknown_name_is_refused_with_the_known_ones(backbone, pretrained, listed, torch_home):
    config = ImageTowerConfig(backbone=backbone, pretrained=pretrained)
    with pytest.raises(ValueError, match=r"^model\.image\.pretrained: ") as error:
        build_image_tower(config)
    assert listed in str(error.value)
    assert "'nope' is not" in str(error.value) or pretrained is True
    assert torch_home.attempts == []  # refused before any download


def test_an_unknown_open_clip_tag_is_refused_with_the_known_ones():
    with pytest.raises(ValueError, match=r"^model\.open_clip\.pretrained: 'nope' is not a pretrained tag of open_clip"):
        open_clip_towers("ViT-B-32", pretrained="nope")


def test_pretrained_is_refused_with_a_local_weights_file_or_a_transformers_config(tmp_path):
    with pytest.raises(ValueError, match="by name or a local weights file, not both"):
        build_image_tower(ImageTowerConfig(backbone="timm/resnet18", pretrained=True, weights=str(tmp_path / "w.pt")))
    config = ImageTowerConfig(config={"model_type": "clip_vision_model"}, pretrained=True)
    with pytest.raises(ValueError, match=r"model\.image\.pretrained is for `backbone` models"):
        build_image_tower(config)


@pytest.mark.parametrize(
    ("backbone", "pretrained"),
    [("timm/test_resnet", "r160_in1k"), ("timm/test_resnet", True), ("timm/test_resnet.r160_in1k", True)],
)
def test_timm_offline_without_the_weights_stops_with_one_line(backbone, pretrained, hub_cache):
    with pytest.raises(PretrainedWeightsUnavailable) as error:
        build_image_tower(ImageTowerConfig(backbone=backbone, pretrained=pretrained))
    message = str(error.value)
    assert "\n" not in message
    assert message == (
        f"model.image.pretrained: the weights 'test_resnet.r160_in1k' are not in the local cache ({hub_cache}) and "
        "need a download from the Hugging Face Hub (timm/test_resnet.r160_in1k), but HF_HUB_OFFLINE is set: run "
        "once online (HF_HUB_OFFLINE=0) to cache them, or give a local weights file in model.image.weights"
    )


def test_timm_weights_from_a_url_offline_stop_without_trying(torch_home):
    with pytest.raises(PretrainedWeightsUnavailable) as error:  # gcvit weights are on GitHub, not the Hub
        build_image_tower(ImageTowerConfig(backbone="timm/gcvit_xxtiny", pretrained=True))
    url = timm.models.get_pretrained_cfg("gcvit_xxtiny.in1k").url
    assert str(error.value) == (
        f"model.image.pretrained: the weights 'gcvit_xxtiny.in1k' are not in the local cache "
        f"({torch_home.checkpoints / Path(url).name}) and need a download from {url}, but HF_HUB_OFFLINE is set: "
        "run once online (HF_HUB_OFFLINE=0) to cache them, or give a local weights file in model.image.weights"
    )
    assert torch_home.attempts == []


def test_torchvision_offline_without_the_weights_stops_without_trying(torch_home):
    with pytest.raises(PretrainedWeightsUnavailable) as error:
        build_image_tower(ImageTowerConfig(backbone="torchvision/resnet18", pretrained="DEFAULT"))
    checkpoint = torch_home.checkpoints / "resnet18-f37072fd.pth"
    assert str(error.value) == (
        "model.image.pretrained: the weights 'ResNet18_Weights.IMAGENET1K_V1' are not in the local cache "
        f"({checkpoint}) and need a download from https://download.pytorch.org/models/resnet18-f37072fd.pth, but "
        "HF_HUB_OFFLINE is set: run once online (HF_HUB_OFFLINE=0) to cache them, or give a local weights file in "
        "model.image.weights"
    )
    assert torch_home.attempts == []


def test_torchvision_without_network_stops_with_one_line(torch_home, monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)  # online mode, but no network
    with pytest.raises(PretrainedWeightsUnavailable) as error:
        build_image_tower(ImageTowerConfig(backbone="torchvision/resnet18", pretrained="IMAGENET1K_V1"))
    url = "https://download.pytorch.org/models/resnet18-f37072fd.pth"
    assert torch_home.attempts == [url]
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith("model.image.pretrained: the weights 'ResNet18_Weights.IMAGENET1K_V1' are not in")
    assert message.endswith(
        f"need a download from {url}, which failed (URLError: <urlopen error [Errno -3] Temporary failure in name "
        "resolution>): run once with network access to cache them, or give a local weights file in model.image.weights"
    )


def test_open_clip_offline_without_the_weights_stops_with_one_line(hub_cache):
    with pytest.raises(PretrainedWeightsUnavailable) as error:
        open_clip_towers("ViT-B-32", pretrained="laion2b_s34b_b79k")
    assert str(error.value) == (
        "model.open_clip.pretrained: the weights 'laion2b_s34b_b79k' of open_clip model 'ViT-B-32' are not in the "
        f"local cache ({hub_cache}) and need a download from the Hugging Face Hub "
        "(laion/CLIP-ViT-B-32-laion2B-s34B-b79K), but HF_HUB_OFFLINE is set: run once online (HF_HUB_OFFLINE=0) to "
        "cache them, or give a local weights file in model.open_clip.weights"
    )


def test_the_cli_reports_missing_open_clip_weights_on_one_line(hub_cache, tmp_path, capsys):
    overrides = ["model.open_clip.model_cfg=null", "model.open_clip.name=ViT-B-32"]
    overrides += ["model.open_clip.pretrained=laion2b_s34b_b79k", f"output_dir={tmp_path / 'run'}"]
    assert main(["train", str(OPEN_CLIP_RECIPE), *overrides]) == 2
    error = capsys.readouterr().err.strip()
    assert "\n" not in error
    assert error.startswith("mmcontrast train: error: model.open_clip.pretrained: the weights 'laion2b_s34b_b79k'")
    assert error.endswith("or give a local weights file in model.open_clip.weights")


@pytest.fixture
def cached_test_resnet(hub_cache) -> dict[str, torch.Tensor]:
    """A random timm test_resnet, cached as the weights of its tag r160_in1k (the Hub repo timm downloads)."""
    torch.manual_seed(0)
    saved = timm.create_model("test_resnet", pretrained=False).state_dict()  # with its 1000-class head
    put_in_hub_cache(hub_cache, "timm/test_resnet.r160_in1k", "model.safetensors", saved)
    torch.manual_seed(1)
    return saved


def test_cached_timm_weights_load_with_their_preprocessing(cached_test_resnet, tmp_path):
    saved = cached_test_resnet
    encoder = build_image_tower(ImageTowerConfig(backbone="timm/test_resnet", pretrained="r160_in1k"))
    loaded = encoder.backbone.state_dict()
    assert set(loaded) == set(saved) - {"fc.weight", "fc.bias"}  # the head is dropped (pooled features)
    for name, tensor in loaded.items():
        assert torch.equal(tensor, saved[name]), name
    # the r160_in1k weights' own preprocessing, not ImageNet's
    assert (encoder.image_size, encoder.mean, encoder.std) == (160, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    reloaded = ImageEncoder.from_pretrained(encoder.save_pretrained(tmp_path / "saved"))  # offline, no download
    assert (reloaded.image_size, reloaded.mean, reloaded.std) == (160, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    assert all(torch.equal(tensor, saved[name]) for name, tensor in reloaded.backbone.state_dict().items())


def test_a_recipe_names_pretrained_weights(cached_test_resnet, tmp_path):
    overrides = ["model.image.config=null", "model.image.backbone=timm/test_resnet", "model.image.pretrained=true"]
    recipe = load_recipe(CLIP_RECIPE, [*overrides, f"output_dir={tmp_path}"])
    assert recipe.model.image.pretrained is True
    encoder = build_parts(recipe).method.image_encoder
    for name, tensor in encoder.backbone.state_dict().items():
        assert torch.equal(tensor, cached_test_resnet[name]), name
    assert encoder.mean == (0.5, 0.5, 0.5)


def test_cached_torchvision_weights_load_with_their_preprocessing(torch_home):
    torch.manual_seed(0)
    saved = torchvision.models.resnet18().state_dict()
    checkpoint = torch_home.checkpoints / "resnet18-f37072fd.pth"
    checkpoint.parent.mkdir(parents=True)
    torch.save(saved, checkpoint)
    torch.manual_seed(1)
    config = ImageTowerConfig(backbone="torchvision/resnet18", pretrained="ResNet18_Weights.IMAGENET1K_V1")
    encoder = build_image_tower(config)
    loaded = encoder.backbone.state_dict()
    assert set(loaded) == set(saved) - {"fc.weight", "fc.bias"}
    for name, tensor in loaded.items():
        assert torch.equal(tensor, saved[name]), name
    assert torch_home.attempts == []
    assert (encoder.image_size, encoder.mean, encoder.std) == (224, IMAGENET_MEAN, IMAGENET_STD)
    assert encoder(encoder.preprocess([torch.zeros(3, 40, 40, dtype=torch.uint8)])).shape == (1, 512)


@pytest.fixture(scope="module")
def cached_open_clip(tmp_path_factory) -> tuple[Path, dict[str, torch.Tensor]]:
    """A random ViT-B-32 in open_clip's checkpoint layout, cached as the weights of tag laion400m_e32."""
    torch.manual_seed(0)
    saved = open_clip.create_model("ViT-B-32").state_dict()
    cache = tmp_path_factory.mktemp("hf-cache")
    put_in_hub_cache(cache, "timm/vit_base_patch32_clip_224.laion400m_e32", "open_clip_model.safetensors", saved)
    return cache, saved


def test_cached_open_clip_weights_load_into_both_towers(cached_open_clip, monkeypatch):
    cache, saved = cached_open_clip
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    torch.manual_seed(1)
    towers = open_clip_towers("ViT-B-32", pretrained="laion400m_e32")
    for name, tensor in towers.image.backbone.state_dict().items():
        assert torch.equal(tensor, saved[f"visual.{name}"]), name
    text = towers.text.tower.state_dict()
    assert torch.equal(text["token_embedding.weight"], saved["token_embedding.weight"])
    assert torch.equal(text["text_projection"], saved["text_projection"])
    assert towers.logit_scale == pytest.approx(saved["logit_scale"].exp().item())
    assert towers.model_cfg["quick_gelu"] is True  # laion400m_e32 was trained with QuickGELU
    assert towers.image.mean == open_clip.get_pretrained_cfg("ViT-B-32", "laion400m_e32")["mean"]


def test_cached_open_clip_weights_load_into_an_image_backbone(cached_open_clip, monkeypatch):
    cache, saved = cached_open_clip
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    torch.manual_seed(1)
    encoder = build_image_tower(ImageTowerConfig(backbone="open_clip/ViT-B-32", pretrained="laion400m_e32"))
    for name, tensor in encoder.backbone.state_dict().items():
        assert torch.equal(tensor, saved[f"visual.{name}"]), name
    assert encoder.create_options == {"force_quick_gelu": True}  # saved with the encoder: it rebuilds the same
