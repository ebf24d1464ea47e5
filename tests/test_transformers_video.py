"""transformers video towers (mmcontrast.modalities.transformers_video: VideoMAE, X-CLIP's video side), the
`model.video` recipe section and load_video_encoder, on tiny random models built offline."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mmcontrast.modalities.transformers_video import TransformersVideoEncoder, XCLIPVideoModel, frame_indices
from mmcontrast.modalities.video import POOLINGS, VideoEncoder, load_video_encoder
from mmcontrast.recipes.image_tower import ImageTowerConfig
from mmcontrast.recipes.video_tower import VideoTowerConfig, build_video_tower

VIDEOMAE = {
    "model_type": "videomae",
    "image_size": 32,
    "patch_size": 8,
    "num_frames": 4,
    "tubelet_size": 2,
    "hidden_size": 32,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "intermediate_size": 64,
}
XCLIP_VISION = {
    "model_type": "xclip_vision_model",
    "image_size": 32,
    "patch_size": 8,
    "num_frames": 4,
    "hidden_size": 32,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "mit_hidden_size": 16,
    "mit_intermediate_size": 32,
    "mit_num_hidden_layers": 1,
    "mit_num_attention_heads": 2,
}
CLIP_VISION = {
    "model_type": "clip_vision_model",
    "image_size": 32,
    "patch_size": 8,
    "hidden_size": 32,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "intermediate_size": 64,
}


def clips(*lengths: int, seed: int = 0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 256, (n, 40, 48, 3), dtype=torch.uint8, generator=generator) for n in lengths]


@pytest.fixture(scope="module")
def videomae() -> TransformersVideoEncoder:
    torch.manual_seed(0)
    return TransformersVideoEncoder.from_config(VIDEOMAE).eval()


@pytest.fixture(scope="module")
def xclip() -> TransformersVideoEncoder:
    torch.manual_seed(0)
    return TransformersVideoEncoder.from_config(XCLIP_VISION).eval()


def test_frame_indices() -> None:
    assert frame_indices(2, 4).tolist() == [0, 1, 1, 1]
    assert frame_indices(4, 4).tolist() == [0, 1, 2, 3]
    assert frame_indices(8, 4).tolist() == [1, 3, 5, 7]
    with pytest.raises(ValueError, match="at least one frame"):
        frame_indices(0, 4)


def test_videomae_shapes_and_padding(videomae: TransformersVideoEncoder) -> None:
    assert videomae.embedding_dim == 32 and videomae.image_size == 32 and videomae.num_frames == 4
    assert videomae.sees_position and videomae.frames_see_position
    short, long = clips(2, 9)
    batch = videomae.preprocess([short, long])
    assert batch["pixel_values"].shape == (2, 4, 3, 32, 32) and batch["frame_mask"].all()
    # the short clip's last frame is repeated; the long clip is subsampled uniformly
    alone = videomae.preprocess([short])["pixel_values"][0]
    torch.testing.assert_close(alone[2], alone[1], atol=0, rtol=0)
    torch.testing.assert_close(batch["pixel_values"][1], videomae.preprocess([long[1::2][:4]])["pixel_values"][0])
    with torch.no_grad():
        frames = videomae.encode_frames(**batch)
        embeddings = videomae(**batch)
        single = videomae(**videomae.preprocess([short]))
    assert frames.shape == (2, 2, 32)  # T' = num_frames / tubelet_size
    assert embeddings.shape == (2, 32) and torch.isfinite(embeddings).all()
    torch.testing.assert_close(embeddings[:1], single, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(videomae(batch), embeddings, atol=0, rtol=0)  # the preprocess dict as one argument


def test_videomae_takes_padded_batches_and_uint8(videomae: TransformersVideoEncoder) -> None:
    (clip,) = clips(3)
    pixels = videomae.preprocess([clip])["pixel_values"]
    raw = torch.stack([videomae.transform(frame.permute(2, 0, 1)) for frame in clip])[None]
    padded = torch.cat([raw, torch.randn(1, 3, 3, 32, 32) * 10], dim=1)  # a VideoEncoder-style padded batch
    mask = torch.tensor([[True] * 3 + [False] * 3])
    with torch.no_grad():
        expected = videomae(pixels)
        torch.testing.assert_close(videomae(padded, mask), expected, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(videomae(clip[None]), expected, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="clip 0 has no valid frame"):
        videomae(padded, torch.zeros(1, 6, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"\[B, T, 3, H, W\]"):
        videomae(torch.randn(2, 3, 32, 32))
    with pytest.raises(ValueError, match=r"frame_mask must be \[B, T\] = \[1, 6\]"):
        videomae(padded, torch.ones(1, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"uint8 \[T, H, W, 3\]"):
        videomae.preprocess([torch.zeros(4, 3, 32, 32, dtype=torch.uint8)])


def test_videomae_gradients() -> None:
    torch.manual_seed(0)
    encoder = TransformersVideoEncoder.from_config(VIDEOMAE).train()
    batch = encoder.preprocess(clips(3, 5))
    (encoder(**batch).square().sum() + encoder.encode_frames(**batch).sum()).backward()
    grads = [p.grad for p in encoder.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert encoder.model.embeddings.patch_embeddings.projection.weight.grad.abs().sum() > 0


def test_videomae_save_load(videomae: TransformersVideoEncoder, tmp_path: Path) -> None:
    from transformers import AutoModel

    folder = videomae.save_pretrained(tmp_path / "videomae")
    assert sorted(path.name for path in folder.iterdir()) == [
        "config.json",
        "mmcontrast_video.json",
        "model.safetensors",
    ]
    assert (
        json.loads((folder / "mmcontrast_video.json").read_text())["format"] == "mmcontrast-transformers-video-encoder"
    )
    batch = videomae.preprocess(clips(2, 6, seed=1))
    with torch.no_grad():
        expected, expected_frames = videomae(**batch), videomae.encode_frames(**batch)
    for loaded in (TransformersVideoEncoder.from_pretrained(folder), load_video_encoder(folder)):
        assert isinstance(loaded, TransformersVideoEncoder) and not loaded.training
        with torch.no_grad():
            torch.testing.assert_close(loaded(**batch), expected, atol=0, rtol=0)
            torch.testing.assert_close(loaded.encode_frames(**batch), expected_frames, atol=0, rtol=0)
    assert type(AutoModel.from_pretrained(folder)).__name__ == "VideoMAEModel"  # still a transformers folder


def test_videomae_from_a_transformers_folder(videomae: TransformersVideoEncoder, tmp_path: Path) -> None:
    folder = tmp_path / "plain"
    videomae.model.save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps({"image_mean": [0.5] * 3, "image_std": [0.5] * 3}))
    loaded = load_video_encoder(folder)
    assert loaded.mean == (0.5, 0.5, 0.5) and loaded.std == (0.5, 0.5, 0.5)
    pixels = torch.randn(1, 4, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(pixels), videomae(pixels), atol=0, rtol=0)
    from safetensors.torch import load_file, save_file

    weights = load_file(folder / "model.safetensors")
    save_file({key: value for key, value in weights.items() if "layer.0." not in key}, folder / "model.safetensors")
    with pytest.raises(ValueError, match=r"lacks .* weights of its videomae video model"):
        TransformersVideoEncoder.from_pretrained(folder)
    (folder / "model.safetensors").rename(folder / "pytorch_model.bin")
    with pytest.raises(FileNotFoundError, match=r"holds no model\.safetensors"):
        TransformersVideoEncoder.from_pretrained(folder)


def test_xclip_matches_xclip_model_and_round_trips(tmp_path: Path) -> None:
    from transformers import XCLIPConfig, XCLIPModel

    vision = {key: value for key, value in XCLIP_VISION.items() if key != "model_type"}
    text = {"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 32}
    torch.manual_seed(0)
    full = XCLIPModel(XCLIPConfig(vision_config=vision, text_config=text, projection_dim=16)).eval()
    full.save_pretrained(tmp_path / "xclip-full")
    encoder = TransformersVideoEncoder.from_pretrained(tmp_path / "xclip-full")  # the text side is left out
    assert isinstance(encoder.model, XCLIPVideoModel) and not hasattr(encoder.model, "text_model")
    assert encoder.embedding_dim == 16 and encoder.num_frames == 4 and encoder.sees_position
    batch = encoder.preprocess(clips(2, 7))
    assert batch["pixel_values"].shape == (2, 4, 3, 32, 32)
    with torch.no_grad():
        embeddings, frames = encoder(**batch), encoder.encode_frames(**batch)
        torch.testing.assert_close(embeddings, full.get_video_features(batch["pixel_values"]).pooler_output)
    assert embeddings.shape == (2, 16) and frames.shape == (2, 4, 16)
    folder = encoder.save_pretrained(tmp_path / "xclip-video")
    assert json.loads((folder / "config.json").read_text())["model_type"] == "xclip"
    loaded = load_video_encoder(folder)
    with torch.no_grad():
        torch.testing.assert_close(loaded(**batch), embeddings, atol=0, rtol=0)


def test_xclip_from_config(xclip: TransformersVideoEncoder) -> None:
    batch = xclip.preprocess(clips(1, 4))
    with torch.no_grad():
        assert xclip(**batch).shape == (2, 16) and xclip.encode_frames(**batch).shape == (2, 4, 16)
    with pytest.raises(ValueError, match=r"projection_dim \(8\) must equal vision_config.mit_hidden_size \(16\)"):
        TransformersVideoEncoder.from_config(
            {"model_type": "xclip", "projection_dim": 8, "vision_config": XCLIP_VISION | {"model_type": None}}
        )
    with pytest.raises(ValueError, match="model_type must be videomae, xclip or xclip_vision_model"):
        TransformersVideoEncoder.from_config(CLIP_VISION)


@pytest.mark.parametrize("pooling", POOLINGS)
def test_frames_tower(pooling: str) -> None:
    config = VideoTowerConfig(image=ImageTowerConfig(config=CLIP_VISION), pooling=pooling, layers=1, heads=2)
    encoder = build_video_tower(config).eval()
    assert isinstance(encoder, VideoEncoder) and encoder.pooling == pooling and encoder.embedding_dim == 32
    with torch.no_grad():
        assert encoder(**encoder.preprocess(clips(2, 3))).shape == (2, 32)


def test_transformers_tower_and_errors(videomae: TransformersVideoEncoder, tmp_path: Path) -> None:
    encoder = build_video_tower(VideoTowerConfig(kind="transformers", config=VIDEOMAE))
    assert isinstance(encoder, TransformersVideoEncoder) and encoder.model_type == "videomae"
    folder = videomae.save_pretrained(tmp_path / "tower")
    assert isinstance(
        build_video_tower(VideoTowerConfig(kind="transformers", path=str(folder))), TransformersVideoEncoder
    )
    with pytest.raises(ValueError, match="exactly one of config"):
        build_video_tower(VideoTowerConfig(kind="transformers", config=VIDEOMAE, path=str(folder)))
    with pytest.raises(ValueError, match="exactly one of config"):
        build_video_tower(VideoTowerConfig(kind="transformers"))
    with pytest.raises(ValueError, match=r"model.video.image is the frame tower"):
        build_video_tower(VideoTowerConfig(kind="transformers", config=VIDEOMAE, image=ImageTowerConfig(config={})))
    with pytest.raises(ValueError, match=r"model.video.config / model.video.path are for kind transformers"):
        build_video_tower(VideoTowerConfig(config=VIDEOMAE))
    with pytest.raises(ValueError, match=r"needs an image tower: model.video.image"):
        build_video_tower(VideoTowerConfig())


def test_recipe_section_from_yaml_dict() -> None:
    from mmcontrast.typed_config import ConfigError, build

    config = build(VideoTowerConfig, {"kind": "transformers", "config": VIDEOMAE}, source="recipe")
    assert config.config == VIDEOMAE
    with pytest.raises(ConfigError, match="pooling"):
        build(VideoTowerConfig, {"pooling": "max"}, source="recipe")


def test_load_video_encoder_dispatch(tmp_path: Path) -> None:
    from transformers import CLIPVisionConfig, CLIPVisionModel

    frames = build_video_tower(VideoTowerConfig(image=ImageTowerConfig(config=CLIP_VISION))).eval()
    folder = frames.save_pretrained(tmp_path / "frames")
    assert isinstance(load_video_encoder(folder), VideoEncoder)
    options = {key: value for key, value in CLIP_VISION.items() if key != "model_type"}
    CLIPVisionModel(CLIPVisionConfig(**options)).save_pretrained(tmp_path / "image")
    with pytest.raises(ValueError, match=r"is not a video encoder .*model_type 'clip_vision_model'"):
        load_video_encoder(tmp_path / "image")
    with pytest.raises(ValueError, match="is not a transformers video model config"):
        TransformersVideoEncoder.from_pretrained(folder)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_video_encoder(tmp_path / "missing")
