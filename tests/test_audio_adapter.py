"""The audio adapter: CPC / log-mel / transformers encoders, frame counts, masks, pooling, save and load."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import SHARED_DATA

from mmcontrast.modalities.audio import (
    CPC_LAYERS,
    AudioEncoder,
    ChannelNorm,
    crop_or_pad,
    pad_batch,
    pool_frames,
    windows,
)


def tiny_wav2vec2_config() -> dict:
    """A 2-layer, 32-wide wav2vec2 with a two-conv feature encoder (hop 10); layer-norm feature encoder so that
    the attention mask is honoured."""
    from transformers import Wav2Vec2Config

    return Wav2Vec2Config(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        conv_dim=(16, 16),
        conv_kernel=(10, 3),
        conv_stride=(5, 2),
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
        feat_extract_norm="layer",
        do_stable_layer_norm=True,
    ).to_dict()


ENCODERS = {
    "cpc-channel": lambda: AudioEncoder("cpc", width=16),
    "cpc-batch": lambda: AudioEncoder("cpc", width=16, norm="batch"),
    "mel": lambda: AudioEncoder("mel", width=16, n_mels=20, layers=2),
    "wav2vec2": lambda: AudioEncoder("transformers", config=tiny_wav2vec2_config()),
}


def _trained_batch_norm(encoder: AudioEncoder) -> AudioEncoder:
    """Move batch-norm running statistics away from their initial values (so that a round trip must keep them)."""
    encoder.train()
    with torch.no_grad():
        encoder(torch.randn(4, 1600))
    return encoder.eval()


@pytest.mark.parametrize("length", [159, 160, 161, 319, 320, 321, 479, 1000, 1599, 1600, 8000])
def test_cpc_frame_count_is_floor_of_length_plus_one_over_160(length):
    encoder = AudioEncoder("cpc", width=4).eval()
    frames = encoder(torch.randn(1, length))
    assert frames.shape == (1, (length + 1) // 160, 4)
    assert int(encoder.frame_lengths(torch.tensor([length]))) == (length + 1) // 160


def test_cpc_frame_formula_for_every_length_up_to_2000():
    encoder = AudioEncoder("cpc", width=4)
    lengths = torch.arange(4, 2000)
    assert torch.equal(encoder.frame_lengths(lengths), (lengths + 1) // 160)
    assert encoder.hop == 160 and encoder.frame_rate == 100.0 and encoder.sample_rate == 16000


def test_cpc_architecture_matches_the_paper():
    encoder = AudioEncoder("cpc")
    convs = encoder.backbone.convs
    assert [(c.kernel_size[0], c.stride[0], c.padding[0]) for c in convs] == list(CPC_LAYERS)
    assert [c.out_channels for c in convs] == [256] * 5 and convs[0].in_channels == 1
    assert all(isinstance(n, ChannelNorm) for n in encoder.backbone.norms)
    assert all(isinstance(n, torch.nn.BatchNorm1d) for n in AudioEncoder("cpc", norm="batch").backbone.norms)
    assert encoder.embedding_dim == 256


def test_channel_norm_normalises_each_time_step_over_channels():
    x = torch.randn(2, 8, 5) * 3 + 1
    y = ChannelNorm(8)(x)
    assert torch.allclose(y.mean(dim=1), torch.zeros(2, 5), atol=1e-5)
    assert torch.allclose(y.var(dim=1), torch.ones(2, 5), atol=1e-3)  # unbiased variance, as CPC_audio


@pytest.mark.parametrize("name", list(ENCODERS))
def test_shapes_and_pooling(name):
    torch.manual_seed(0)
    encoder = ENCODERS[name]().eval()
    batch = encoder.preprocess([torch.randn(3200), torch.randn(2400), torch.randn(1600)])
    assert batch["input_values"].shape == (3, 3200) and batch["lengths"].tolist() == [3200, 2400, 1600]
    frames = encoder(batch["input_values"], batch["attention_mask"])
    assert frames.ndim == 3 and frames.shape[0] == 3 and frames.shape[2] == encoder.embedding_dim
    mask = encoder.frame_mask(batch["attention_mask"], frames.shape[1])
    assert mask.shape == frames.shape[:2]
    assert mask.sum(dim=1).tolist() == encoder.frame_lengths(batch["lengths"]).tolist()
    for mode in ("mean", "last"):
        assert encoder.pool(frames, mask, mode).shape == (3, encoder.embedding_dim)
    assert encoder.embed(batch["input_values"], batch["attention_mask"]).shape == (3, encoder.embedding_dim)


@pytest.mark.parametrize("name", list(ENCODERS))
def test_padded_row_pools_like_the_unpadded_row(name):
    torch.manual_seed(1)
    encoder = ENCODERS[name]()
    if name == "cpc-batch":
        encoder = _trained_batch_norm(encoder)
    encoder.eval()
    long, short = torch.randn(4000), torch.randn(2345)
    batch = encoder.preprocess([long, short])
    with torch.no_grad():
        frames = encoder(batch["input_values"], batch["attention_mask"])
        mask = encoder.frame_mask(batch["attention_mask"], frames.shape[1])
        alone = encoder(short[None])
        valid = int(mask[1].sum())
        assert valid == alone.shape[1]
        torch.testing.assert_close(frames[1, :valid], alone[0], atol=1e-5, rtol=1e-5)
        for mode in ("mean", "last"):
            torch.testing.assert_close(
                encoder.pool(frames, mask, mode)[1], encoder.pool(alone, None, mode)[0], atol=1e-5, rtol=1e-5
            )


@pytest.mark.parametrize("name", list(ENCODERS))
def test_save_load_round_trip_gives_identical_outputs(name, tmp_path):
    torch.manual_seed(2)
    encoder = ENCODERS[name]()
    if name == "cpc-batch":
        encoder = _trained_batch_norm(encoder)
    encoder.eval()
    batch = encoder.preprocess([torch.randn(2000), torch.randn(1700)])
    folder = encoder.save_pretrained(tmp_path / name)
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    loaded = AudioEncoder.from_pretrained(folder)
    assert not loaded.training
    assert (loaded.kind, loaded.sample_rate, loaded.hop, loaded.embedding_dim) == (
        encoder.kind,
        encoder.sample_rate,
        encoder.hop,
        encoder.embedding_dim,
    )
    with torch.no_grad():
        torch.testing.assert_close(
            loaded(batch["input_values"], batch["attention_mask"]),
            encoder(batch["input_values"], batch["attention_mask"]),
            atol=0,
            rtol=0,
        )


def test_transformers_wav2vec2_from_a_tiny_config_and_from_a_local_folder(tmp_path):
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    torch.manual_seed(3)
    encoder = AudioEncoder("transformers", config=tiny_wav2vec2_config()).eval()
    assert encoder.hop == 10 and encoder.sample_rate == 16000 and encoder.embedding_dim == 32
    assert encoder.min_samples == 20  # conv (10, stride 5) needs 3 outputs for conv (3, stride 2): 10 + 2 * 5
    waveform = torch.randn(1, 1000)
    assert encoder(waveform).shape == (1, int(encoder.frame_lengths(torch.tensor([1000]))), 32)

    model = Wav2Vec2Model(Wav2Vec2Config.from_dict(tiny_wav2vec2_config())).eval()
    model.save_pretrained(tmp_path / "hf")
    from_folder = AudioEncoder("transformers", path=str(tmp_path / "hf")).eval()
    with torch.no_grad():
        torch.testing.assert_close(from_folder(waveform), model(waveform).last_hidden_state)
    saved = json.loads((from_folder.save_pretrained(tmp_path / "ours") / "config.json").read_text())
    assert saved["options"]["config"]["model_type"] == "wav2vec2"  # the config itself, not the folder path


def test_transformers_whisper_encoder_from_a_tiny_config():
    from transformers import WhisperConfig

    config = WhisperConfig(
        d_model=32, encoder_layers=1, encoder_attention_heads=2, encoder_ffn_dim=32, decoder_layers=1, num_mel_bins=80
    )
    encoder = AudioEncoder("transformers", config=config.to_dict()).eval()
    assert not hasattr(encoder.backbone, "decoder")
    assert (encoder.hop, encoder.frame_rate, encoder.sample_rate) == (320, 50.0, 16000)
    batch = encoder.preprocess([torch.randn(8000), torch.randn(4000)])
    with torch.no_grad():
        frames = encoder(batch["input_values"], batch["attention_mask"])
        assert frames.shape == (2, 1500, 32)  # Whisper pads to 30 s
        assert encoder.frame_mask(batch["attention_mask"], 1500).sum(dim=1).tolist() == [25, 13]
        assert encoder.embed(batch["input_values"], batch["attention_mask"]).shape == (2, 32)


def test_preprocess_crops_randomly_in_training_and_centrally_at_evaluation():
    encoder = AudioEncoder("cpc", width=4)
    clip = torch.arange(1000, dtype=torch.float32)
    centre = encoder.preprocess([clip], max_samples=400)["input_values"][0]
    assert centre.tolist() == clip[300:700].tolist()
    crops = [
        encoder.preprocess([clip], max_samples=400, train=True, generator=torch.Generator().manual_seed(s))[
            "input_values"
        ][0]
        for s in (0, 0, 1)
    ]
    assert torch.equal(crops[0], crops[1]) and not torch.equal(crops[0], crops[2])
    assert crops[0].shape == (400,) and float(crops[0][1] - crops[0][0]) == 1.0  # a contiguous window


def test_short_clips_are_padded_to_the_encoders_window():
    encoder = AudioEncoder("mel", width=8, n_mels=16)
    batch = encoder.preprocess([torch.randn(100)])
    assert batch["input_values"].shape == (1, 400) and encoder.embed(**_inputs(batch)).shape == (1, 8)
    assert crop_or_pad(torch.ones(5), None, min_length=8).tolist() == [1.0] * 5 + [0.0] * 3


def _inputs(batch: dict) -> dict:
    return {"input_values": batch["input_values"], "attention_mask": batch["attention_mask"]}


def test_pad_batch_and_pool_frames():
    batch = pad_batch([torch.ones(3), torch.ones(5)])
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]
    frames = torch.arange(12, dtype=torch.float32).reshape(2, 3, 2)
    mask = torch.tensor([[True, True, False], [True, True, True]])
    assert pool_frames(frames, mask, "mean").tolist() == [[1.0, 2.0], [8.0, 9.0]]
    assert pool_frames(frames, mask, "last").tolist() == [[2.0, 3.0], [10.0, 11.0]]
    with pytest.raises(ValueError, match="row 0 has no valid frame"):
        pool_frames(frames, torch.tensor([[False] * 3, [True] * 3]))


def test_mel_encoder_accepts_log_mel_features():
    encoder = AudioEncoder("mel", width=8, n_mels=16).eval()
    waveform = torch.randn(1, 3200)
    features = encoder.backbone.features(waveform)
    assert features.shape == (1, 16, int(encoder.frame_lengths(torch.tensor([3200]))))
    torch.testing.assert_close(encoder(features), encoder(waveform))


def test_bad_options_and_folders_name_what_is_wrong(tmp_path):
    with pytest.raises(ValueError, match="kind must be one of"):
        AudioEncoder("lstm")
    with pytest.raises(ValueError, match="unknown options \\['depth'\\]"):
        AudioEncoder("cpc", depth=3)
    with pytest.raises(ValueError, match="norm must be"):
        AudioEncoder("cpc", norm="layer")
    with pytest.raises(ValueError, match="exactly one of path"):
        AudioEncoder("transformers")
    with pytest.raises(FileNotFoundError, match=r"config\.json"):
        AudioEncoder.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text('{"format": "other"}')
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(ValueError, match="not an mmcontrast audio encoder"):
        AudioEncoder.from_pretrained(tmp_path)


def test_encodes_real_fsdd_clips():
    from mmcontrast.data.audio import DecodedAudio, load_audio

    folder = SHARED_DATA / "fsdd" / "recordings"
    files = sorted(folder.glob("*_george_0.wav"))[:3] if folder.is_dir() else []
    if not files:
        pytest.skip(f"FSDD recordings not found at {folder}")
    waveform, rate = load_audio(files[0], 16000)
    assert rate == 16000 and waveform.ndim == 1 and waveform.dtype == torch.float32
    rows = DecodedAudio([{"audio": f} for f in files], 16000)
    encoder = AudioEncoder("cpc", width=16).eval()
    batch = encoder.preprocess([rows[i]["audio"] for i in range(len(rows))])
    with torch.no_grad():
        assert encoder.embed(batch["input_values"], batch["attention_mask"]).shape == (3, 16)


def test_windows_cover_the_whole_clip():
    x = torch.arange(10.0)
    assert windows(x, 4).tolist() == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 0, 0]]
    assert windows(x, 4, hop=3).tolist() == [[0, 1, 2, 3], [3, 4, 5, 6], [6, 7, 8, 9]]
    assert windows(x, 12).shape == (1, 12)


def test_padded_log_mel_features_pool_like_the_unpadded_ones():
    encoder = AudioEncoder("mel", width=8, n_mels=16).eval()
    long, short = encoder.backbone.features(torch.randn(1, 4000))[0], encoder.backbone.features(torch.randn(1, 2000))[0]
    batch = pad_batch([long, short])
    assert batch["input_values"].shape == (2, 16, long.shape[1]) and batch["lengths"].tolist() == [23, 11]
    with torch.no_grad():
        frames = encoder(batch["input_values"], batch["attention_mask"])
        pooled = encoder.pool(frames, batch["attention_mask"].bool())
        torch.testing.assert_close(pooled[1], encoder.pool(encoder(short[None]))[0], atol=1e-5, rtol=1e-5)


def _tiny_feature_model_config(name: str) -> dict:
    from transformers import ASTConfig, ClapAudioConfig

    if name == "ast":
        sizes = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
        return ASTConfig(max_length=100, num_mel_bins=32, **sizes).to_dict()
    return ClapAudioConfig(
        hidden_size=32,
        patch_embeds_hidden_size=16,
        depths=[1, 1],
        num_attention_heads=[2, 2],
        num_mel_bins=64,
        spec_size=256,
        window_size=8,
        projection_dim=16,
        enable_fusion=False,
    ).to_dict()


@pytest.mark.parametrize(("name", "rate"), [("ast", 16000), ("clap", 48000)])
def test_feature_input_models_from_tiny_configs_round_trip(name, rate, tmp_path):
    torch.manual_seed(4)
    encoder = AudioEncoder("transformers", config=_tiny_feature_model_config(name)).eval()
    assert encoder.sample_rate == rate and encoder.feature_extractor is not None
    batch = encoder.preprocess([torch.randn(rate // 4), torch.randn(rate // 8)])
    with torch.no_grad():
        pooled = encoder.embed(batch["input_values"], batch["attention_mask"])
        assert pooled.shape == (2, 32) and torch.isfinite(pooled).all()
        loaded = AudioEncoder.from_pretrained(encoder.save_pretrained(tmp_path / name))
        torch.testing.assert_close(loaded.embed(batch["input_values"], batch["attention_mask"]), pooled, atol=0, rtol=0)


@pytest.mark.parametrize("kind", ["cpc", "mel"])
def test_normalized_encoder_ignores_the_recording_level_and_the_padding(kind):
    torch.manual_seed(0)
    encoder = AudioEncoder(kind, sample_rate=8000, width=16, normalize=True).eval()
    quiet = 0.01 * torch.randn(4000)
    with torch.no_grad():
        # equal up to the variance's eps (1e-7 against a variance of 1e-4: a 5e-4 relative difference)
        assert torch.allclose(encoder(quiet[None]), encoder(30 * quiet[None]), atol=2e-3)
        batch = encoder.preprocess([quiet, quiet[:2500]])
        frames = encoder(batch["input_values"], batch["attention_mask"])
        alone = encoder(quiet[None, :2500])
        valid = alone.shape[1]
        assert torch.allclose(frames[1, :valid], alone[0], atol=1e-4)
    reloaded_config = encoder.config_dict()
    assert reloaded_config["normalize"] is True
