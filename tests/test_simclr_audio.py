"""SimCLR on audio: views seeded by (seed, epoch, row) in the DataLoader, padded whole clips whose pooled embedding
ignores the padding, the loss on the views, the recipe's checks by key, a short run through the CLI whose export
loads with ``AudioEncoder.from_pretrained``, and the loss falling on a tiny model."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors import safe_open
from torch.utils.data import DataLoader

from mmcontrast.data.samplers import ShuffledBatchSampler
from mmcontrast.engine.trainer import Trainer, TrainingConfig
from mmcontrast.losses import nt_xent
from mmcontrast.methods.simclr import SimCLR
from mmcontrast.modalities.audio import AudioEncoder
from mmcontrast.modalities.heads import projection_head
from mmcontrast.recipe import load_recipe
from mmcontrast.recipes.simclr import AudioViewsConfig, SpecAugmentConfig, audio_view_pipeline, modality
from mmcontrast.views.audio import AudioViewsDataset

RATE = 8000
RECIPE = "recipes/simclr_fsdd.yaml"


@pytest.fixture(autouse=True)
def one_thread():
    """Bitwise-reproducible CPU kernels (and no oversubscription of a small machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _clip(index: int, seconds: float | None = None) -> torch.Tensor:
    """A quiet two-tone clip of 0.2-0.45 s whose tones depend on the class ``index % 4``, plus seeded noise."""
    generator = torch.Generator().manual_seed(index)
    length = round((seconds or 0.2 + 0.05 * (index % 6)) * RATE)
    t = torch.arange(length) / RATE
    low, high = 200.0 + 150 * (index % 4), 1200.0 + 300 * (index % 4)
    clip = torch.sin(2 * math.pi * low * t) + 0.5 * torch.sin(2 * math.pi * high * t)
    return (0.01 * (clip + 0.1 * torch.randn(length, generator=generator))).float()


def _rows(count: int = 8) -> list[dict]:
    return [{"audio": _clip(i), "label": i % 4} for i in range(count)]


def _encoder(**options) -> AudioEncoder:
    torch.manual_seed(0)
    settings = {"n_mels": 16, "n_fft": 200, "hop_length": 80, "width": 16, "layers": 2, **options}
    return AudioEncoder("mel", sample_rate=RATE, normalize=True, **settings)


def _method(encoder: AudioEncoder | None = None) -> SimCLR:
    encoder = encoder or _encoder()
    return SimCLR(encoder, projection_head("mlp", encoder.embedding_dim, 8, batch_norm=True), temperature=0.2)


def _whole_clip_views() -> AudioViewsConfig:
    return AudioViewsConfig(seconds=None, gain_db=None, snr_db=[5.0, 30.0], noise_p=0.5, speed=[0.85, 1.15])


def test_views_of_a_row_differ_and_depend_only_on_seed_epoch_and_row():
    dataset = AudioViewsDataset(_rows(), audio_view_pipeline(_whole_clip_views(), _encoder()), seed=5)
    dataset.set_epoch(2)
    state = torch.get_rng_state()
    first = {i: dataset[i]["views"] for i in range(len(dataset))}
    assert torch.equal(torch.get_rng_state(), state)  # the caller's RNG is left alone
    torch.manual_seed(99)  # another global RNG state, another order: the same views
    again = {i: dataset[i]["views"] for i in reversed(range(len(dataset)))}
    for i, views in first.items():
        assert len(views) == 2 and not torch.equal(views[0], views[1])  # two different views of one clip
        assert all(torch.equal(a, b) for a, b in zip(views, again[i], strict=True))

    # DataLoader workers (any split of the rows over them) draw the same views
    def collate(rows):
        return [(row["index"], row["views"]) for row in rows]

    loader = DataLoader(dataset, batch_size=3, shuffle=True, num_workers=2, collate_fn=collate)
    from_workers = {index: views for batch in loader for index, views in batch}
    assert sorted(from_workers) == list(range(len(dataset)))
    assert all(torch.equal(a, b) for i in first for a, b in zip(first[i], from_workers[i], strict=True))
    dataset.set_epoch(3)
    assert not torch.equal(dataset[0]["views"][0], first[0][0])  # another epoch, other views
    other_seed = AudioViewsDataset(_rows(), dataset.transforms[0], seed=6)
    other_seed.set_epoch(2)
    assert not torch.equal(other_seed[0]["views"][0], first[0][0])


def test_whole_clips_are_padded_with_a_mask_and_pooling_ignores_the_padding():
    method = _method().eval()
    dataset = AudioViewsDataset(_rows(6), audio_view_pipeline(_whole_clip_views(), method.encoder), seed=0)
    rows = [dataset[i] for i in range(len(dataset))]
    batch = method.collate(rows)
    values, mask = batch["input_values"], batch["attention_mask"]
    longest = max(view.shape[-1] for row in rows for view in row["views"])
    assert values.shape == (6, 2, longest) and mask.shape == (6, 2, longest)
    assert batch["labels"].tolist() == [row["label"] for row in rows]
    with torch.no_grad():
        projections = method.embed(batch)["projections"]
        for i, row in enumerate(rows):
            for v, view in enumerate(row["views"]):
                assert int(mask[i, v].sum()) == view.shape[-1]
                alone = method.head(method.encoder.embed(view[None]))  # the view unpadded, on its own
                assert torch.allclose(projections[i, v], alone[0], atol=1e-5), (i, v)
    method.train()
    embeddings = method.embed(batch)
    output = method.loss(embeddings, batch)
    z = embeddings["projections"]
    assert torch.allclose(output.loss, nt_xent(z[:, 0], z[:, 1], temperature=0.2))
    output.loss.backward()
    assert method.audio_encoder.backbone.convs[0].weight.grad is not None


def test_spec_augment_views_feed_the_mel_encoder():
    encoder = _encoder()
    config = AudioViewsConfig(seconds=0.3, spec_augment=SpecAugmentConfig(freq_mask=4, time_mask=5))
    dataset = AudioViewsDataset(_rows(4), audio_view_pipeline(config, encoder), seed=1)
    rows = [dataset[i] for i in range(4)]
    frames = int(encoder.frame_lengths(torch.tensor([round(0.3 * RATE)])))
    assert all(view.shape == (16, frames) for row in rows for view in row["views"])  # log-mel [n_mels, F]
    method = _method(encoder)
    batch = method.collate(rows)
    assert "attention_mask" not in batch and batch["input_values"].shape == (4, 2, 16, frames)
    assert method.embed(batch)["projections"].shape == (4, 2, 8)
    with pytest.raises(ValueError, match="kind mel"):
        audio_view_pipeline(config, AudioEncoder("cpc", sample_rate=RATE, width=8))
    with pytest.raises(ValueError, match=r"views\.audio\.seconds"):
        audio_view_pipeline(AudioViewsConfig(seconds=None, spec_augment=SpecAugmentConfig()), encoder)


def test_recipe_picks_the_modality_and_names_stray_keys():
    recipe = load_recipe(RECIPE)
    assert modality(recipe) == "audio"
    image = load_recipe("recipes/simclr_digits.yaml")
    assert modality(image) == "image"
    cases = {
        "views.flip": ["views.flip=false"],
        "model.image.config": ["model.image.config={model_type: vit}"],
        "eval.train": ["eval.train=sklearn:digits"],
        "data.audio.window": ["data.audio.window=4000"],
    }
    for key, overrides in cases.items():
        with pytest.raises(ValueError, match=key.replace(".", r"\.")):
            modality(load_recipe(RECIPE, overrides))
    with pytest.raises(ValueError, match=r"views\.audio\.seconds.*model\.audio"):
        modality(load_recipe("recipes/simclr_digits.yaml", ["views.audio.seconds=0.5"]))
    with pytest.raises(ValueError, match=r"data\.audio\.train"):
        modality(load_recipe(RECIPE, ["data.audio=null"]))


def test_loss_decreases_on_a_tiny_model(tmp_path):
    method = _method()
    rows = [{"audio": _clip(i), "label": i % 4} for i in range(32)]
    dataset = AudioViewsDataset(rows, audio_view_pipeline(_whole_clip_views(), method.encoder), seed=0)
    settings = {"batch_size": 16, "lr": 3e-3, "warmup_ratio": 0.0, "max_steps": 30, "logging_steps": 5}
    config = TrainingConfig(**settings, scheduler="constant", progress_bar=False, save_steps=0)
    sampler = ShuffledBatchSampler(len(dataset), config.batch_size, seed=0, drop_last=True)
    history = Trainer(method, dataset, sampler, config, tmp_path).train().log_history
    losses = [record["loss"] for record in history if "loss" in record]
    assert len(losses) == 6
    assert losses[-1] < 0.8 * losses[0], losses


def test_recipe_trains_through_the_cli_and_exports_an_audio_encoder(tmp_path):
    from conftest import SHARED_DATA
    from huggingface_hub import ModelCard

    from mmcontrast.cli import main
    from mmcontrast.data.audio import load_audio

    recordings = SHARED_DATA / "fsdd" / "recordings"
    if not recordings.is_dir():
        pytest.skip(f"shared spoken digits not found at {recordings}")
    small = ["model.audio.options={n_mels: 16, n_fft: 200, hop_length: 80, width: 16, layers: 1}"]
    run = ["train.max_steps=3", "train.batch_size=8", "train.num_workers=0", "train.progress_bar=false"]
    assert main(["train", RECIPE, f"output_dir={tmp_path}", "data.audio.limit=32", *small, *run]) == 0
    assert json.loads((tmp_path / "summary.json").read_text())["global_step"] == 3
    model_dir = tmp_path / "model"
    with safe_open(model_dir / "model.safetensors", framework="pt") as weights:
        keys = list(weights.keys())
    assert keys and not any(key.startswith("head") for key in keys)  # the projection head is dropped
    encoder = AudioEncoder.from_pretrained(model_dir)
    assert encoder.kind == "mel" and encoder.sample_rate == RATE and encoder.normalize
    waveform, _ = load_audio(recordings / "3_theo_7.wav", encoder.sample_rate)
    with torch.no_grad():
        embedding = encoder.embed(waveform[None])
    assert embedding.shape == (1, 16) and torch.isfinite(embedding).all()
    card = ModelCard.load(model_dir / "README.md")
    assert card.data.pipeline_tag == "feature-extraction" and {"simclr", "audio"} <= set(card.data.tags)
    assert "AudioEncoder.from_pretrained" in card.text
