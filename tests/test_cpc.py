"""The CPC method on the engine: it learns to predict the future of predictable signals, and resumes exactly."""

from __future__ import annotations

import math
import shutil

import pytest
import torch

from mmcontrast.data.samplers import GroupedBatchSampler, ShuffledBatchSampler
from mmcontrast.engine.trainer import Trainer, TrainingConfig
from mmcontrast.methods.cpc import CPC
from mmcontrast.modalities.audio import AudioEncoder
from mmcontrast.views.windows import SpeakerWindows

RATE, WINDOW = 8000, 160 * 24  # 24 frames of the CPC encoder per window


@pytest.fixture(autouse=True)
def one_thread():
    """Bitwise-reproducible CPU kernels: with several threads, convolution gradients are summed in varying order."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _tones(count: int = 48, seed: int = 0):
    """Clips whose 20 ms frames step through a cycle of 8 tones (step 1 or 3, a random phase per clip): the
    future frames are predictable from the past ones, and frames of other tones are told apart."""
    generator = torch.Generator().manual_seed(seed)
    frequencies = torch.linspace(300.0, 1700.0, 8)
    clips, speakers = [], []
    for i in range(count):
        phase, step = int(torch.randint(8, (1,), generator=generator)), (1, 3)[i % 2]
        samples = torch.arange(160 * 25)
        tone = frequencies[(phase + step * (samples // 160)) % 8]
        noise = 0.01 * torch.randn(len(samples), generator=generator)
        clips.append(0.5 * torch.sin(2 * math.pi * tone * samples / RATE) + noise)
        speakers.append(f"s{i % 4}")
    return clips, speakers


def _method(**options) -> CPC:
    torch.manual_seed(0)
    encoder = AudioEncoder("cpc", sample_rate=RATE, width=32, context={"type": "gru", "dim": 32})
    return CPC(encoder, steps=4, negatives=8, **options)


def _trainer(tmp_path, method: CPC, grouped: bool = True, **overrides) -> Trainer:
    clips, speakers = _tones()
    windows = SpeakerWindows(clips, speakers, WINDOW, seed=1)
    settings = {"batch_size": 8, "lr": 2e-3, "warmup_ratio": 0.0, "progress_bar": False, "logging_steps": 5}
    config = TrainingConfig(**{**settings, **overrides})
    sampler = (
        GroupedBatchSampler(windows.speakers, config.batch_size, seed=config.seed, drop_last=True)
        if grouped
        else ShuffledBatchSampler(len(windows), config.batch_size, seed=config.seed, drop_last=True)
    )
    return Trainer(method, windows, sampler, config, tmp_path)


def test_loss_and_shapes_at_initialisation():
    method = _method()
    clips, speakers = _tones(8)
    windows = SpeakerWindows(clips, speakers, WINDOW)
    batch = method.collate([windows[i] for i in range(4)])
    embeddings = method.embed(batch)
    assert embeddings["frames"].shape == (4, 24, 32) and embeddings["context"].shape == (4, 24, 32)
    output = method.loss(embeddings, batch)
    assert torch.isfinite(output.loss)
    assert set(output.metrics) == {"accuracy", "accuracy_step1", "accuracy_step2", "accuracy_step3", "accuracy_step4"}


def test_cpc_learns_to_predict_the_future(tmp_path):
    """A real but fragile check on a toy (the FSDD recipe is the real one): with the linear predictors, seeds 0, 1,
    3 and 7 learn (loss 8.8 -> 5.5-6.5 in 200-500 steps); with seed 42 the run stays at 8.4 for 600 steps at lr 2e-3 or
    5e-3, with 69% of the encoder's output units dead (ReLU) against 49% in a run that learns; the transformer
    predictor did not learn within 200 steps at seed 0, nor did speaker negatives or speaker-grouped batches (loss
    8.4-8.5, accuracy 0.13-0.16). Neither the cosine / 0.1 score nor a warm-up (lr 2e-3, 100 of 300 steps) made
    those runs learn. Not understood: the seed and the sampling are fixed here. (On FSDD the causes of no learning
    were the input level, fixed by `normalize`, and a too short warm-up: tests below.)"""
    method = _method(predictor="linear", sampling="batch")
    trainer = _trainer(tmp_path, method, grouped=False, max_steps=200, lr=5e-3, scheduler="constant", seed=0)
    history = trainer.train().log_history
    first, last = history[0], history[-3:]
    chance = 1 / (1 + method.negatives)
    assert first["loss"] > 0.97 * 4 * math.log(1 + method.negatives)  # K ln(1 + N) at initialisation
    assert sum(r["loss"] for r in last) / 3 < 0.85 * first["loss"], (first, last)
    assert sum(r["accuracy"] for r in last) / 3 > 2.5 * chance, last


@pytest.mark.parametrize("similarity, temperature", [("dot", 1.0), ("dot", 0.5), ("cosine", 0.1)])
def test_loss_scores_each_prediction_against_its_future_frame_and_its_negatives(similarity, temperature):
    """The method's loss re-derived by hand: s(p, z) = p . z / d (CPC_audio) or cos(p, z), divided by the
    temperature; cross-entropy with the true future frame at index 0, mean over positions, sum over steps."""
    from mmcontrast.losses import sample_cpc_negatives

    method = _method(sampling="batch", similarity=similarity, temperature=temperature).double()
    clips, speakers = _tones(8)
    windows = SpeakerWindows(clips, speakers, WINDOW)
    batch = method.collate([windows[i] for i in range(3)])
    batch["input_values"] = batch["input_values"].double()
    embeddings = method.embed(batch)
    torch.manual_seed(5)
    loss = method.loss(embeddings, batch).loss
    frames, context = embeddings["frames"], embeddings["context"]
    size, length, dim = frames.shape
    positions = length - method.steps
    torch.manual_seed(5)
    indices = sample_cpc_negatives(size, length, method.negatives, num_positions=positions, mode="batch")
    flat = frames.reshape(size * length, dim)
    expected = torch.zeros((), dtype=torch.float64)
    for k, predict in enumerate(method.predictors, start=1):
        step = []
        for b in range(size):
            for t in range(positions):
                p = predict(context[b, t])
                candidates = torch.cat([frames[b, t + k][None], flat[indices[b, t]]])
                if similarity == "dot":
                    scores = candidates @ p / dim
                else:
                    scores = torch.nn.functional.cosine_similarity(candidates, p[None], dim=1)
                step.append(-torch.log_softmax(scores / temperature, dim=0)[0])
        expected = expected + torch.stack(step).mean()
    torch.testing.assert_close(loss.double(), expected, rtol=1e-5, atol=1e-6)


def test_unknown_similarity_and_bad_temperature_are_refused():
    with pytest.raises(ValueError, match="similarity must be 'dot' or 'cosine'"):
        _method(similarity="euclidean")
    with pytest.raises(ValueError, match="temperature must be positive"):
        _method(temperature=0.0)


def test_too_short_windows_name_the_keys():
    method = _method()
    batch = {"input_values": torch.zeros(2, 160 * 4), "speakers": torch.zeros(2, dtype=torch.long)}
    with pytest.raises(ValueError, match=r"predicts 4 frames ahead but the windows give only 4 frames"):
        method.loss(method.embed(batch), batch)


def test_resume_draws_the_same_negatives_and_ends_bitwise_equal(tmp_path):
    reference = _trainer(tmp_path / "reference", _method(), max_steps=8)
    reference.train()
    run = tmp_path / "run"
    _trainer(run, _method(), max_steps=8, save_steps=4, save_total_limit=0).train()
    shutil.rmtree(run / "checkpoints" / "checkpoint-00000008")
    resumed = _trainer(run, _method(), max_steps=8, save_steps=4, save_total_limit=0)
    resumed.train(resume_from="latest")
    expected, actual = reference.method.state_dict(), resumed.method.state_dict()
    assert all(torch.equal(expected[name], actual[name]) for name in expected)


def test_cpc_recipe_trains_and_exports_an_encoder_of_contexts(tmp_path):
    from conftest import SHARED_DATA
    from huggingface_hub import ModelCard

    from mmcontrast.cli import main
    from mmcontrast.data.audio import load_audio

    recordings = SHARED_DATA / "fsdd" / "recordings"
    if not recordings.is_dir():
        pytest.skip(f"shared spoken digits not found at {recordings}")
    small = ["model.audio.options={width: 32, norm: channel}", "model.audio.context.dim=32", "model.negatives=16"]
    run = ["train.max_steps=3", "train.batch_size=4", "train.progress_bar=false", "data.limit=120"]
    assert main(["train", "recipes/cpc_fsdd.yaml", f"output_dir={tmp_path}", *small, *run]) == 0
    encoder = AudioEncoder.from_pretrained(tmp_path / "model")
    waveform, _ = load_audio(recordings / "3_theo_7.wav", encoder.sample_rate)
    contexts = encoder(waveform[None])
    assert contexts.shape == (1, (len(waveform) + 1) // 160, 32)
    assert encoder.embed(waveform[None]).shape == (1, 32)
    card = ModelCard.load(tmp_path / "model" / "README.md")
    assert card.data.pipeline_tag == "feature-extraction" and "cpc" in card.data.tags


def test_audiofolder_recipe_trains_on_librispeech_flac_with_speakers_from_the_file_names(tmp_path, capsys):
    from conftest import SHARED_DATA

    from mmcontrast.cli import main

    folder = SHARED_DATA / "librispeech-mini" / "test_db"
    if not folder.is_dir():
        pytest.skip(f"shared LibriSpeech clips not found at {folder}")
    small = ["model.audio.options={width: 32, norm: channel}", "model.audio.context.dim=32", "model.negatives=16"]
    run = ["train.max_steps=2", "train.batch_size=2", "train.progress_bar=false"]
    assert main(["train", "recipes/cpc_audiofolder.yaml", f"output_dir={tmp_path}", *small, *run]) == 0
    assert "9 clips of 6 speaker(s)" in capsys.readouterr().out  # 9 flac files under SPEAKER/CHAPTER/, 6 speakers
    encoder = AudioEncoder.from_pretrained(tmp_path / "model")
    assert encoder.sample_rate == 16000 and encoder.hop == 160  # 10 ms frames: the phone labels' rate


@pytest.mark.slow
def test_cpc_recipe_learns_on_spoken_digits(tmp_path):
    """The shipped recipe's settings for 150 steps, with its 100-step warm-up (5% of 1980 steps): the loss falls
    from K ln(1 + N) = 58.3 and the one-step accuracy leaves chance (1/129). The warm-up matters: squeezed to
    5% of 150 steps (lr 2e-3 at step 7) the loss stayed at 57.9. (Without `model.audio.normalize` the loss stayed
    at 58.3 for 400 steps with the first recipe's settings: FSDD's RMS is 0.01 and the frames barely differ.)"""
    import json

    from conftest import SHARED_DATA

    from mmcontrast.cli import main

    if not (SHARED_DATA / "fsdd" / "recordings").is_dir():
        pytest.skip("shared spoken digits not found")
    run = ["train.max_steps=150", "train.warmup_ratio=0.66", "train.logging_steps=25", "train.save_steps=0"]
    assert main(["train", "recipes/cpc_fsdd.yaml", f"output_dir={tmp_path}", *run, "train.progress_bar=false"]) == 0
    history = json.loads((tmp_path / "training_log.json").read_text())
    assert history[-1]["loss"] < 0.92 * 12 * math.log(129), history[-1]
    assert history[-1]["accuracy_step1"] > 10 / 129, history[-1]
