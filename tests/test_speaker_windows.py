"""CPC's training view and sampler: windows cut from each speaker's concatenated clips, batches of one speaker."""

from __future__ import annotations

import pytest
import torch

from mmcontrast.data.samplers import GroupedBatchSampler
from mmcontrast.views.windows import SpeakerWindows


def _clips():
    """Clips whose samples encode (speaker, clip, position), so a window tells where it was cut."""
    clips, speakers = [], []
    for speaker, name in enumerate(["ann", "bob", "cy"]):
        for clip in range(6):
            length = 300 + 37 * clip + 11 * speaker
            clips.append(speaker * 1_000_000 + clip * 10_000 + torch.arange(length, dtype=torch.float64))
            speakers.append(name)
    return clips, speakers


def test_windows_come_from_one_speakers_concatenated_audio():
    clips, speakers = _clips()
    windows = SpeakerWindows(clips, speakers, window=256, seed=3)
    assert windows.speaker_names == ["ann", "bob", "cy"]
    for epoch in range(3):
        windows.set_epoch(epoch)
        for index in range(len(windows)):
            row = windows[index]
            values = row["waveform"].double()
            assert values.shape == (256,)
            assert torch.all(values // 1_000_000 == row["speaker"]), "a window mixes speakers"
            # consecutive samples, except where one clip of the speaker ends and the next begins
            steps = values[1:] - values[:-1]
            assert int((steps != 1).sum()) <= 1


def test_window_count_is_the_same_every_epoch_and_cuts_move():
    clips, speakers = _clips()
    windows = SpeakerWindows(clips, speakers, window=256, seed=3)
    totals = [sum(len(c) for c, s in zip(clips, speakers, strict=True) if s == name) for name in ("ann", "bob", "cy")]
    assert totals == [len(signal) for signal in windows.signals]
    assert len(windows) == sum((total - 128) // 256 for total in totals)
    first = [windows[i]["waveform"].clone() for i in range(len(windows))]
    windows.set_epoch(1)
    second = [windows[i]["waveform"].clone() for i in range(len(windows))]
    assert len(first) == len(second)
    assert any(not torch.equal(a, b) for a, b in zip(first, second, strict=True))
    windows.set_epoch(0)  # the same (seed, epoch) cuts the same windows: a resumed run sees them again
    assert all(torch.equal(a, windows[i]["waveform"]) for i, a in enumerate(first))
    assert all(0 <= windows.offset(s) < 128 for s in range(3))


def test_windows_without_speakers_stay_inside_each_clip():
    clips, _ = _clips()
    windows = SpeakerWindows(clips, None, window=200)
    for index in range(len(windows)):
        values = windows[index]["waveform"].double()
        assert torch.all(values[1:] - values[:-1] == 1)


def test_too_long_a_window_is_an_error():
    clips, speakers = _clips()
    with pytest.raises(ValueError, match="no window of 100000 samples fits the audio"):
        SpeakerWindows(clips, speakers, window=100_000)


@pytest.mark.parametrize(("drop_last", "replicas"), [(False, 1), (True, 1), (True, 2)])
def test_grouped_batches_hold_one_group_and_cover_the_rows(drop_last, replicas):
    groups = ["a"] * 23 + ["b"] * 9 + ["c"] * 16
    samplers = [
        GroupedBatchSampler(groups, 4, seed=1, drop_last=drop_last, num_replicas=replicas, rank=rank)
        for rank in range(replicas)
    ]
    for epoch in (0, 1):
        for sampler in samplers:
            sampler.set_epoch(epoch)
        per_rank = [list(sampler) for sampler in samplers]
        assert all(len(batches) == len(samplers[0]) for batches in per_rank)
        seen = []
        for step in zip(*per_rank, strict=True):
            rows = [row for batch in step for row in batch]
            assert len({groups[row] for row in rows}) == 1, "a batch mixes groups"
            if replicas > 1:
                assert all(len(batch) == 4 for batch in step)
            seen += rows
        assert len(seen) == len(set(seen))
        if not drop_last:
            assert sorted(seen) == list(range(len(groups)))
        else:
            assert len(seen) == sum(n // (4 * replicas) * 4 * replicas for n in (23, 9, 16))


def test_grouped_order_is_a_function_of_seed_and_epoch():
    groups = [i % 3 for i in range(60)]
    a, b = GroupedBatchSampler(groups, 5, seed=7), GroupedBatchSampler(groups, 5, seed=7)
    assert list(a) == list(b)
    b.set_epoch(1)
    assert list(a) != list(b)


def test_no_group_large_enough_is_an_error():
    with pytest.raises(ValueError, match="no group has 8 rows for one global batch"):
        GroupedBatchSampler([0] * 5 + [1] * 5, 4, num_replicas=2)
