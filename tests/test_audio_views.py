"""Audio views: seeded by (seed, epoch, row), measured SNR and gain, shapes, DataLoader workers, SpecAugment."""

from __future__ import annotations

import math
import pickle

import pytest
import torch

from mmcontrast.modalities.audio import AudioEncoder
from mmcontrast.views.audio import (
    AddNoise,
    AudioViews,
    AudioViewsDataset,
    CroppedAudio,
    Gain,
    LogMel,
    RandomApply,
    RandomCrop,
    SpecAugment,
    SpeedChange,
    TimeShift,
    audio_views,
    collate_audio_views,
    measured_gain_db,
    snr_db,
)

RATE = 8000


def tone(seconds: float = 0.5, frequency: float = 440.0, seed: int = 0) -> torch.Tensor:
    """A sine with a little seeded noise, as a float32 ``[T]`` waveform at 8 kHz."""
    t = torch.arange(round(seconds * RATE)) / RATE
    noise = torch.randn(t.shape, generator=torch.Generator().manual_seed(seed))
    return (0.5 * torch.sin(2 * math.pi * frequency * t) + 0.05 * noise).float()


def rows(count: int = 6) -> list[dict]:
    return [{"audio": tone(0.3 + 0.05 * i, 200.0 + 50 * i, seed=i), "label": i % 3} for i in range(count)]


def views() -> AudioViews:
    return audio_views(RATE, 0.25, noise_p=0.8, speed_p=0.8)


def test_same_seed_epoch_row_gives_the_same_views_and_others_differ():
    data = AudioViewsDataset(rows(), views(), seed=7)
    first = data[2]["views"]
    again = AudioViewsDataset(rows(), views(), seed=7)[2]["views"]
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not torch.equal(first[0], first[1])  # two views of one row differ
    data.set_epoch(1)
    assert not torch.equal(data[2]["views"][0], first[0])  # another epoch
    data.set_epoch(0)
    assert all(torch.equal(a, b) for a, b in zip(data[2]["views"], first, strict=True))
    other_row = AudioViewsDataset([rows()[2]] * 4, views(), seed=7)[3]["views"][0]
    assert not torch.equal(other_row, first[0])  # same audio, another row index
    assert not torch.equal(AudioViewsDataset(rows(), views(), seed=8)[2]["views"][0], first[0])  # another seed


def test_views_do_not_touch_the_callers_random_state():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    AudioViewsDataset(rows(), views())[0]
    assert torch.equal(torch.rand(3), expected)


def test_views_are_the_same_in_dataloader_workers():
    data = AudioViewsDataset(rows(), views(), seed=3)
    data = pickle.loads(pickle.dumps(data))
    loader = torch.utils.data.DataLoader(data, batch_size=3, num_workers=2, collate_fn=collate_audio_views)
    batches = list(loader)
    assert [b["input_values"].shape for b in batches] == [(3, 2, 2000)] * 2
    direct = collate_audio_views([data[i] for i in range(3)])
    assert torch.equal(batches[0]["input_values"], direct["input_values"])
    assert batches[0]["labels"].tolist() == [0, 1, 2]


@pytest.mark.parametrize("asked", [0.0, 5.0, 20.0, 35.0])
def test_noise_is_added_at_the_asked_snr(asked):
    clean = tone(seed=1)
    torch.manual_seed(0)
    noisy = AddNoise(asked, asked)(clean)
    assert noisy.shape == clean.shape and noisy.dtype == clean.dtype
    assert abs(snr_db(clean, noisy - clean) - asked) < 0.5


def test_noise_snr_is_drawn_in_its_range_and_silence_is_kept():
    clean = tone(seed=2)
    for seed in range(5):
        torch.manual_seed(seed)
        measured = snr_db(clean, AddNoise(10, 20)(clean) - clean)
        assert 9.5 < measured < 20.5
    assert torch.equal(AddNoise(10, 20)(torch.zeros(100)), torch.zeros(100))


@pytest.mark.parametrize("asked", [-12.0, -3.0, 0.0, 6.0])
def test_gain_is_measured_as_asked(asked):
    clean = tone(seed=3)
    louder = Gain(asked, asked)(clean)
    assert louder.shape == clean.shape
    assert abs(measured_gain_db(clean, louder) - asked) < 0.01


def test_shapes_are_preserved():
    clean = tone(seed=4)
    torch.manual_seed(0)
    for step in (Gain(), AddNoise(), TimeShift(400), TimeShift(400, circular=True), SpeedChange(0.8, 1.2)):
        assert step(clean).shape == clean.shape, type(step).__name__
    assert RandomCrop(1000)(clean).shape == (1000,)
    assert RandomCrop(9000)(clean).shape == (9000,)  # padded
    assert SpeedChange(1.25, 1.25, keep_length=False)(clean).shape == (3200,)  # 4000 / 1.25


def test_time_shift_moves_the_signal():
    x = torch.arange(1, 11, dtype=torch.float32)
    torch.manual_seed(0)
    shifted = TimeShift(3)(x)
    nonzero = shifted[shifted != 0]
    assert torch.equal(nonzero, x[int(nonzero[0]) - 1 : int(nonzero[-1])])  # a contiguous run of the input


def test_speed_change_raises_the_pitch_by_its_factor():
    clean = 0.5 * torch.sin(2 * math.pi * 500 * torch.arange(8000) / RATE)
    faster = SpeedChange(1.2, 1.2, keep_length=False)(clean)
    peak = torch.fft.rfft(faster).abs().argmax() * RATE / faster.shape[0]
    assert abs(float(peak) - 600) < 5


def test_random_apply_and_range_checks():
    x = tone()
    assert torch.equal(RandomApply(Gain(6, 6), p=0.0)(x), x)
    assert not torch.equal(RandomApply(Gain(6, 6), p=1.0)(x), x)
    with pytest.raises(ValueError, match="min <= max"):
        Gain(6, -6)
    with pytest.raises(ValueError, match="p must be"):
        RandomApply(Gain(), p=2)
    with pytest.raises(ValueError, match="needs log-mel"):
        audio_views(RATE, 0.2, spec_augment=SpecAugment())


def test_spec_augment_masks_log_mel_views_for_the_mel_encoder():
    encoder = AudioEncoder("mel", sample_rate=RATE, n_mels=32, n_fft=200, hop_length=80, width=8).eval()
    pipeline = audio_views(
        RATE, 0.25, log_mel=LogMel.from_encoder(encoder), spec_augment=SpecAugment(freq_mask=8, time_mask=5)
    )
    data = AudioViewsDataset(rows(), pipeline, seed=0)
    row = data[1]
    frames = int(encoder.frame_lengths(torch.tensor([2000])))
    assert [v.shape for v in row["views"]] == [(32, frames)] * 2
    plain = LogMel.from_encoder(encoder)(tone())
    torch.manual_seed(1)
    masked = SpecAugment(freq_mask=8, time_mask=5, freq_masks=2, time_masks=2)(plain)
    assert masked.shape == plain.shape and (masked != plain).any()
    assert torch.equal(data[1]["views"][0], row["views"][0])
    batch = collate_audio_views([data[i] for i in range(3)])
    flat = batch["input_values"].flatten(0, 1)
    with torch.no_grad():
        assert encoder.embed(flat).shape == (6, 8)


def test_training_crops_depend_on_seed_epoch_and_row_only():
    rows = [{"audio": torch.arange(1000, dtype=torch.float32) + 10_000 * i, "label": i} for i in range(3)]
    rows.append({"audio": torch.ones(50), "label": 3})  # shorter than the crop: left as it is
    crops = CroppedAudio(rows, 200, seed=7)
    first = [crops[i]["audio"] for i in range(4)]
    assert [len(a) for a in first] == [200, 200, 200, 50] and torch.equal(first[3], torch.ones(50))
    for i in range(3):  # a window of the clip itself, contiguous
        start = int(first[i][0]) - 10_000 * i
        assert torch.equal(first[i], rows[i]["audio"][start : start + 200])
    assert torch.equal(CroppedAudio(rows, 200, seed=7)[2]["audio"], first[2])  # no state carried between reads
    assert all(crops[i]["label"] == i for i in range(4))
    crops.set_epoch(1)
    moved = [crops[i]["audio"] for i in range(3)]
    assert any(not torch.equal(a, b) for a, b in zip(first, moved, strict=False))
    crops.set_epoch(0)
    assert all(torch.equal(crops[i]["audio"], first[i]) for i in range(3))
    other_seed = CroppedAudio(rows, 200, seed=8)
    assert any(not torch.equal(other_seed[i]["audio"], first[i]) for i in range(3))
    assert torch.equal(pickle.loads(pickle.dumps(crops))[1]["audio"], first[1])  # DataLoader workers get the same
