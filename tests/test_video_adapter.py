"""The video adapter (mmcontrast.modalities.video): an image tower per frame + temporal pooling, on tiny timm towers
with random input and one real clip from shared/data/video (skipped when the clips are absent)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mmcontrast.modalities.image import ImageEncoder
from mmcontrast.modalities.video import POOLINGS, VideoEncoder

VIDEO_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "video"
if not VIDEO_DIR.is_dir():
    VIDEO_DIR = Path("/work/shared/data/video")


def make(pooling: str, tower: str = "timm/test_vit") -> VideoEncoder:
    torch.manual_seed(0)
    encoder = VideoEncoder(ImageEncoder.create(tower, image_size=32), pooling, layers=1, heads=4, max_frames=16)
    return encoder.eval()


@pytest.fixture(scope="module")
def encoders() -> dict[str, VideoEncoder]:
    return {pooling: make(pooling) for pooling in POOLINGS}


def clips(*lengths: int, seed: int = 0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 256, (n, 40, 48, 3), dtype=torch.uint8, generator=generator) for n in lengths]


@pytest.mark.parametrize("pooling", POOLINGS)
def test_shapes(encoders: dict[str, VideoEncoder], pooling: str) -> None:
    encoder = encoders[pooling]
    batch = encoder.preprocess(clips(3, 5))
    assert batch["pixel_values"].shape == (2, 5, 3, 32, 32)
    assert batch["frame_mask"].tolist() == [[True] * 3 + [False] * 2, [True] * 5]
    with torch.no_grad():
        frames = encoder.encode_frames(batch["pixel_values"], batch["frame_mask"])
        clip = encoder(batch["pixel_values"], batch["frame_mask"])
    assert frames.shape == (2, 5, encoder.embedding_dim)
    assert clip.shape == (2, encoder.embedding_dim) and torch.isfinite(clip).all()
    assert (frames[0, 3:] == 0).all()  # padded frames are not encoded
    # per-frame embeddings are the tower's outputs, whatever the pooling (before any temporal transformer)
    with torch.no_grad():
        tower = encoder.image_encoder(batch["pixel_values"][1])
    torch.testing.assert_close(frames[1], tower, atol=1e-5, rtol=1e-5)


def test_preprocess_matches_tower_and_uint8_input(encoders: dict[str, VideoEncoder]) -> None:
    encoder = encoders["mean"]
    (clip,) = clips(4)
    pixels = encoder.preprocess([clip])["pixel_values"][0]
    per_frame = encoder.image_encoder.preprocess(list(clip.permute(0, 3, 1, 2)))
    torch.testing.assert_close(pixels, per_frame, atol=0, rtol=0)
    with torch.no_grad():  # uint8 [B, T, H, W, 3] goes through preprocess inside
        torch.testing.assert_close(encoder(clip[None]), encoder(pixels[None]), atol=0, rtol=0)


@pytest.mark.parametrize("pooling", ["mean", "attention"])
def test_padding_does_not_change_the_clip(encoders: dict[str, VideoEncoder], pooling: str) -> None:
    encoder = encoders[pooling]
    (clip,) = clips(4)
    alone = encoder.preprocess([clip])
    junk = torch.randn(1, 3, 3, 32, 32) * 10
    padded = torch.cat([alone["pixel_values"], junk], dim=1)
    mask = torch.tensor([[True] * 4 + [False] * 3])
    with torch.no_grad():
        expected = encoder(alone["pixel_values"])
        got = encoder(padded, mask)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_padding_with_a_batch_norm_tower_in_training() -> None:
    encoder = make("mean", "timm/test_resnet").train()
    (clip,) = clips(4)
    pixels = encoder.preprocess([clip])["pixel_values"]
    padded = torch.cat([pixels, torch.randn(1, 2, 3, 32, 32) * 10], dim=1)
    with torch.no_grad():
        torch.testing.assert_close(
            encoder(padded, torch.tensor([[True] * 4 + [False] * 2])), encoder(pixels), atol=1e-5, rtol=1e-5
        )


@pytest.mark.parametrize("pooling", POOLINGS)
def test_sees_position(encoders: dict[str, VideoEncoder], pooling: str) -> None:
    encoder = encoders[pooling]
    assert encoder.sees_position is (pooling == "transformer")
    pixels = encoder.preprocess(clips(6))["pixel_values"]
    order = torch.tensor([3, 0, 5, 1, 4, 2])
    with torch.no_grad():
        straight, shuffled = encoder(pixels), encoder(pixels[:, order])
        frames, shuffled_frames = encoder.encode_frames(pixels), encoder.encode_frames(pixels[:, order])
    torch.testing.assert_close(shuffled_frames, frames[:, order], atol=1e-5, rtol=1e-5)
    if encoder.sees_position:
        assert (straight - shuffled).abs().max() > 1e-4
    else:
        torch.testing.assert_close(shuffled, straight, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("pooling", POOLINGS)
def test_save_load_round_trip(encoders: dict[str, VideoEncoder], pooling: str, tmp_path: Path) -> None:
    import json

    encoder = encoders[pooling]
    folder = encoder.save_pretrained(tmp_path / pooling)
    config = json.loads((folder / "config.json").read_text())
    assert config["format"] == "mmcontrast-video-encoder" and config["pooling"] == pooling
    assert config["image_encoder"]["format"] == "mmcontrast-image-encoder"
    assert sorted(path.name for path in folder.iterdir()) == ["config.json", "model.safetensors"]
    loaded = VideoEncoder.from_pretrained(folder)
    assert loaded.sees_position == encoder.sees_position and loaded.embedding_dim == encoder.embedding_dim
    batch = encoder.preprocess(clips(2, 5, seed=1))
    with torch.no_grad():
        torch.testing.assert_close(loaded(**batch), encoder(**batch), atol=0, rtol=0)
        torch.testing.assert_close(loaded.encode_frames(**batch), encoder.encode_frames(**batch), atol=0, rtol=0)


def test_load_refuses_an_image_encoder_folder(tmp_path: Path) -> None:
    folder = ImageEncoder.create("timm/test_vit", image_size=32).save_pretrained(tmp_path / "image")
    with pytest.raises(ValueError, match="not an mmcontrast video encoder config"):
        VideoEncoder.from_pretrained(folder)


def test_wrong_shapes_name_the_expected_shape(encoders: dict[str, VideoEncoder]) -> None:
    encoder = encoders["attention"]
    with pytest.raises(ValueError, match=r"\[B, T, 3, H, W\]"):
        encoder(torch.randn(2, 3, 32, 32))
    with pytest.raises(ValueError, match=r"\[B, T, 3, H, W\]"):
        encoder.encode_frames(torch.randn(2, 4, 32, 32, 3))  # channels last needs uint8
    with pytest.raises(ValueError, match=r"uint8 \[B, T, H, W, 3\]"):
        encoder(torch.zeros(2, 4, 32, 32, 4, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"frame_mask must be \[B, T\] = \[2, 4\]"):
        encoder(torch.randn(2, 4, 3, 32, 32), torch.ones(2, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="clip 1 has no valid frame"):
        encoder(torch.randn(2, 4, 3, 32, 32), torch.tensor([[True] * 4, [False] * 4]))
    with pytest.raises(ValueError, match=r"uint8 \[T, H, W, 3\]"):
        encoder.preprocess([torch.zeros(4, 3, 32, 32, dtype=torch.uint8)])
    with pytest.raises(ValueError, match="max_frames"):
        encoders["transformer"](torch.randn(1, 17, 3, 32, 32))
    with pytest.raises(ValueError, match="pooling must be one of"):
        VideoEncoder(encoder.image_encoder, "max")


def test_a_real_clip() -> None:
    path = VIDEO_DIR / "car-detection.mp4"
    if not path.is_file():
        pytest.skip(f"no real clip at {path}")
    pytest.importorskip("av")
    from mmcontrast.data.video import decode_clip

    clip = decode_clip(path, start=1.0, num_frames=4, fps=4, size=48)
    short = decode_clip(path, start=1.0, num_frames=2, fps=4, size=48)
    for pooling in POOLINGS:
        encoder = make(pooling)
        batch = encoder.preprocess([clip, short])
        assert batch["pixel_values"].shape == (2, 4, 3, 32, 32)
        with torch.no_grad():
            embeddings = encoder(**batch)
            alone = encoder(**encoder.preprocess([short]))
        assert embeddings.shape == (2, encoder.embedding_dim) and torch.isfinite(embeddings).all()
        torch.testing.assert_close(embeddings[1:], alone, atol=1e-5, rtol=1e-5)
