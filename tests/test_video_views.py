"""Video views (mmcontrast.views.video): the CVRL gap density, temporally consistent augmentation, clip views and
TCN frame windows on moving digits and on a real file, seeding by (seed, epoch, index), padding of short videos,
errors naming bad files, collation and DataLoader workers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mmcontrast.data.moving_digits import moving_digits
from mmcontrast.data.video import VideoDecodeError, decode_clip
from mmcontrast.views.video import (
    ClipSampling,
    FrameWindows,
    VideoClipViews,
    collate_video_rows,
    consistent_augment,
    cvrl_gap,
)

VIDEO_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "video"
if not VIDEO_DIR.is_dir():
    VIDEO_DIR = Path("/work/shared/data/video")
CAR = VIDEO_DIR / "car-detection.mp4"  # 30.16 s at 12.5 fps, 768x432
needs_car = pytest.mark.skipif(not CAR.is_file(), reason=f"no real video clip at {CAR}")


@pytest.fixture(scope="module")
def digits() -> list[dict]:
    return moving_digits(6, num_frames=12, size=24, num_views=2, seed=0)


def _single_view(rows: list[dict]) -> list[dict]:
    return [{"frames": row["views"][0], "label": row["label"], "caption": row["caption"]} for row in rows]


def _equal_items(a: dict, b: dict) -> bool:
    for key in a:
        x, y = a[key], b[key]
        if isinstance(x, list) and x and isinstance(x[0], torch.Tensor):
            if not all(torch.equal(u, v) for u, v in zip(x, y, strict=True)):
                return False
        elif isinstance(x, torch.Tensor):
            if not torch.equal(x, y):
                return False
        elif isinstance(x, np.ndarray):
            if not np.array_equal(x, y):
                return False
        elif x != y:
            return False
    return True


@pytest.mark.parametrize(("power", "mean"), [(1.0, 1 / 3), (2.0, 1 / 4)])
def test_cvrl_gap_decreasing_density(power, mean):
    rng = np.random.default_rng(0)
    gaps = np.array([cvrl_gap(10.0, rng, power=power) for _ in range(20000)])
    assert gaps.min() >= 0 and gaps.max() <= 10.0
    assert gaps.mean() == pytest.approx(10.0 * mean, rel=0.03)
    counts, _ = np.histogram(gaps, bins=8, range=(0, 10))
    assert (np.diff(counts) < 0).all(), counts
    with pytest.raises(ValueError, match="max_gap"):
        cvrl_gap(-1.0, rng)


def test_window_starts():
    sampling = ClipSampling(num_frames=4, fps=2.0, stride=2)
    assert sampling.window_starts(11) == [0, 2, 4, 6]
    assert sampling.window_starts(5.0) == [0.0, 1.0, 2.0, 3.0]  # 10 frames at 2 fps, starts in seconds
    assert ClipSampling(num_frames=4).window_starts(2) == [0]  # shorter than a window: one (padded) window
    assert ClipSampling(num_frames=4).window_starts(12) == [0, 4, 8]
    with pytest.raises(ValueError, match="stride"):
        ClipSampling(stride=0)


def test_consistent_augment_is_consistent_in_time():
    augment = consistent_augment(16)
    frame = torch.randint(0, 256, (1, 30, 40, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    clip = frame.repeat(5, 1, 1, 1)
    for seed in range(5):
        torch.manual_seed(seed)
        out = augment(clip)
        assert out.dtype == torch.uint8 and out.shape == (5, 16, 16, 3)
        assert (out == out[:1]).all(), "one augmentation per clip, applied to every frame"
    torch.manual_seed(0)
    first = augment(clip)
    torch.manual_seed(1)
    assert not torch.equal(first, augment(clip))
    with pytest.raises(ValueError, match=r"uint8 \[T, H, W, 3\]"):
        augment(clip.float())


def test_clip_views_seeded_by_seed_epoch_index(digits):
    dataset = VideoClipViews(_single_view(digits), ClipSampling(num_frames=4), consistent_augment(16), seed=1)
    state = torch.get_rng_state()
    first = dataset[2]
    assert torch.equal(torch.get_rng_state(), state), "the caller's generator is left untouched"
    assert _equal_items(first, dataset[2])
    assert len(first["views"]) == 2 and first["views"][0].shape == (4, 16, 16, 3)
    assert first["label"] == digits[2]["label"] and first["caption"] == digits[2]["caption"]
    assert "frames" not in first and first["index"] == 2 and first["padded"] == 0
    dataset.set_epoch(1)
    assert not _equal_items(first, dataset[2])
    dataset.set_epoch(0)
    assert _equal_items(first, dataset[2])


def test_cvrl_and_same_modes(digits):
    rows = _single_view(digits)
    cvrl = VideoClipViews(rows, ClipSampling(num_frames=4), None, num_views=3)
    gaps = []
    for epoch in range(10):
        cvrl.set_epoch(epoch)
        for index in range(len(rows)):
            item = cvrl[index]
            starts = item["starts"]
            assert all(0 <= s <= 12 - 4 for s in starts) and all(s >= starts[0] for s in starts)
            for start, clip in zip(starts, item["views"], strict=True):  # no augment: the raw window
                assert torch.equal(clip, rows[index]["frames"][int(start) : int(start) + 4])
            gaps += [s - starts[0] for s in starts[1:]]
    assert 0 < np.mean(gaps) < 8 / 2  # decreasing density: mostly short gaps
    same = VideoClipViews(rows, ClipSampling(num_frames=4), consistent_augment(16), mode="same")
    item = same[0]
    assert item["starts"][0] == item["starts"][1] and not torch.equal(item["views"][0], item["views"][1])
    cameras = VideoClipViews(digits, ClipSampling(num_frames=4), None, mode="same", camera=None)[1]
    start = int(cameras["starts"][0])
    for view in range(2):  # clip k from camera k, the same window: a synchronised pair
        assert torch.equal(cameras["views"][view], digits[1]["views"][view, start : start + 4])
    with pytest.raises(ValueError, match="camera 5"):
        VideoClipViews(digits, ClipSampling(num_frames=4), None, camera=5)[0]


def test_short_videos_are_padded(digits):
    rows = [{"frames": digits[0]["views"][0][:3]}]
    item = VideoClipViews(rows, ClipSampling(num_frames=5), None)[0]
    for clip in item["views"]:
        assert clip.shape[0] == 5 and torch.equal(clip[2:], rows[0]["frames"][2:3].expand(3, -1, -1, -1))
    assert item["padded"] == 4  # two repeated frames in each of the two views
    windows = FrameWindows(rows, 5)[0]
    assert windows["frames"].shape[0] == 5 and windows["padded"] == 2
    assert windows["times"].tolist() == [0.0, 1.0, 2.0, 2.0, 2.0]


def test_frame_windows_times_and_synchronised_views(digits):
    windows = FrameWindows(digits, 5, items_per_video=3, seed=2)
    assert len(windows) == 18
    for index in range(len(windows)):
        item = windows[index]
        times = item["times"]
        assert item["video"] == index // 3 and item["label"] == digits[index // 3]["label"]
        assert (torch.diff(times) > 0).all() and times.dtype == torch.float32
        views = digits[index // 3]["views"]
        assert item["views"].shape == (2, 5, 24, 24, 3)
        for view in range(2):  # the same times in every view
            assert torch.equal(item["views"][view], views[view][times.long()])
    assert _equal_items(windows[4], windows[4])
    windows.set_epoch(1)
    item = windows[4]
    windows.set_epoch(0)
    assert not _equal_items(item, windows[4])
    augmented = FrameWindows(_single_view(digits), 4, augment=consistent_augment(16))[0]
    assert augmented["frames"].shape == (4, 16, 16, 3) and "views" not in augmented


def test_collate(digits):
    windows = FrameWindows(digits, 4, augment=consistent_augment(16))
    batch = collate_video_rows([windows[i] for i in range(3)])
    assert batch["views"].shape == (3, 2, 4, 16, 16, 3) and batch["times"].shape == (3, 4)
    assert batch["label"].dtype == torch.long and batch["video"].tolist() == [0, 1, 2]
    assert batch["caption"] == [digits[i]["caption"] for i in range(3)]
    clips = VideoClipViews(_single_view(digits), ClipSampling(num_frames=4), consistent_augment(16))
    batch = collate_video_rows([clips[i] for i in range(2)])
    assert batch["views"].shape == (2, 2, 4, 16, 16, 3) and isinstance(batch["starts"], list)
    raw = FrameWindows([{"frames": digits[0]["views"][0]}, {"frames": digits[1]["views"][0][:, :20]}], 4)
    with pytest.raises(ValueError, match="different shapes"):
        collate_video_rows([raw[0], raw[1]])


def test_dataloader_workers_give_the_same_items(digits):
    windows = FrameWindows(digits, 4, augment=consistent_augment(16), items_per_video=2, seed=3)

    def load(workers: int) -> list[dict]:
        loader = torch.utils.data.DataLoader(
            windows, batch_size=4, num_workers=workers, collate_fn=collate_video_rows, shuffle=False
        )
        return list(loader)

    serial, parallel = load(0), load(2)
    assert len(serial) == len(parallel) == 3
    for a, b in zip(serial, parallel, strict=True):
        assert torch.equal(a["views"], b["views"]) and torch.equal(a["times"], b["times"])


def test_rows_need_one_source():
    with pytest.raises(KeyError, match="exactly one of"):
        FrameWindows([{"label": 1}], 2)[0]
    with pytest.raises(ValueError, match="uint8"):
        FrameWindows([{"frames": torch.zeros(4, 8, 8, 3)}], 2)[0]


def test_bad_files_raise_naming_the_file(tmp_path):
    missing = tmp_path / "missing.mp4"
    with pytest.raises(FileNotFoundError, match=r"missing\.mp4"):
        FrameWindows([{"video": missing}], 2)[0]
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video at all" * 10)
    with pytest.raises(VideoDecodeError, match=r"broken\.mp4.*check_video_rows"):
        VideoClipViews([{"video": broken}], ClipSampling(num_frames=2), None)[0]


@needs_car
def test_views_from_a_real_file():
    sampling = ClipSampling(num_frames=3, fps=2.0)
    item = VideoClipViews([{"video": str(CAR), "label": 4}], sampling, None, size=32, mode="same")[0]
    start = item["starts"][0]
    assert item["label"] == 4 and start * 2.0 == int(start * 2.0)  # on the 2 fps grid, in seconds
    assert torch.equal(item["views"][0], decode_clip(CAR, start, 3, 2.0, size=32))
    windows = FrameWindows([{"video": str(CAR)}], 3, fps=2.0, size=32, augment=consistent_augment(16))[0]
    times = windows["times"]
    assert windows["frames"].shape == (3, 16, 16, 3)
    assert (torch.diff(times) > 0).all() and times[0] >= 0 and times[-1] < 30.16
    assert torch.equal(times * 2.0, (times * 2.0).round())
