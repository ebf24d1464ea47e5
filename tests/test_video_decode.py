"""Video decoding (mmcontrast.data.video) on the real camera clips in shared/data/video, and on broken copies of them:
frame choice by presentation time, seek correctness, the end of a video, errors naming the file, the frame cache and
DataLoader workers. Small sizes and few frames, so it stays fast."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch

from mmcontrast.data import video as video_module
from mmcontrast.data.video import (
    FrameCache,
    VideoDecodeError,
    decode_clip,
    decode_video,
    probe_video,
)

VIDEO_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "video"
if not VIDEO_DIR.is_dir():
    VIDEO_DIR = Path("/work/shared/data/video")
pytestmark = pytest.mark.skipif(
    not (VIDEO_DIR / "car-detection.mp4").is_file(), reason=f"no real video clips in {VIDEO_DIR}"
)
CLIPS = ["bottle-detection.mp4", "car-detection.mp4", "one-by-one-person-detection.mp4"]
CAR = VIDEO_DIR / "car-detection.mp4"  # 30.16 s at 12.5 fps, 768x432
BOTTLE = VIDEO_DIR / "bottle-detection.mp4"  # 39.85 s at 29.83 fps, 640x360


@pytest.mark.parametrize("name", CLIPS)
def test_probe_is_plausible_and_frame_times_increase(name):
    import av

    info = probe_video(VIDEO_DIR / name)
    assert 5 < info.duration < 600
    assert 5 <= info.fps <= 60
    assert info.width >= 320 and info.height >= 240
    assert info.codec == "h264"
    with av.open(str(VIDEO_DIR / name)) as container:
        stream = container.streams.video[0]
        frames = itertools.islice(container.decode(stream), 40)
        times = [float(frame.pts * stream.time_base) for frame in frames]
    assert all(a < b for a, b in itertools.pairwise(times)), "presentation times must increase"
    assert abs((times[-1] - times[0]) / (len(times) - 1) - 1 / info.fps) < 0.01


def test_clip_shape_dtype_and_sizes():
    clip = decode_clip(CAR, 1.0, 3, 4.0, size=64)
    assert clip.dtype == torch.uint8 and clip.shape == (3, 64, 114, 3)  # shorter side 64, aspect 16:9 kept
    assert decode_clip(CAR, 1.0, 2, 4.0, size=(32, 48)).shape == (2, 32, 48, 3)
    assert decode_clip(CAR, 1.0, 1, 4.0).shape == (1, 432, 768, 3)


def test_fps_2_frames_are_every_other_fps_4_frame():
    fast = decode_clip(BOTTLE, 3.0, 8, 4.0, size=64)
    slow = decode_clip(BOTTLE, 3.0, 4, 2.0, size=64)
    assert torch.equal(slow, fast[::2])
    assert not torch.equal(fast[0], fast[1])  # distinct frames, not one repeated


def test_clip_mid_video_equals_the_same_times_decoded_from_the_start():
    from_start = decode_clip(BOTTLE, 0.0, 44, 4.0, size=64)  # 0 .. 10.75 s
    middle = decode_clip(BOTTLE, 8.5, 6, 4.0, size=64)  # 8.5 .. 9.75 s, after a seek
    assert torch.equal(middle, from_start[34:40])
    assert torch.equal(decode_video(BOTTLE, 4.0, size=64, max_frames=44), from_start)


def test_clip_near_the_end_repeats_the_last_frame():
    info = probe_video(CAR)
    clip = decode_clip(CAR, 29.5, 6, 4.0, size=32)  # wants 29.5 .. 30.75 s; the last frame is at 30.08 s
    assert clip.shape == (6, 32, 57, 3)
    assert not torch.equal(clip[2], clip[3])
    assert all(torch.equal(clip[i], clip[-1]) for i in (3, 4))
    with pytest.raises(ValueError, match=r"car-detection\.mp4.*beyond the video's duration"):
        decode_clip(CAR, info.duration + 1, 2, 4.0, size=32)


@pytest.fixture
def broken(tmp_path):
    """Broken copies of real files: empty, truncated (first 30% of the bytes), text named .mp4, audio only."""
    import soundfile

    data = CAR.read_bytes()
    files = {
        "empty": tmp_path / "empty.mp4",
        "truncated": tmp_path / "truncated.mp4",
        "text": tmp_path / "notes.mp4",
        "audio": tmp_path / "tone.wav",
    }
    files["empty"].write_bytes(b"")
    files["truncated"].write_bytes(data[: int(len(data) * 0.3)])
    files["text"].write_text("this is not a video\n" * 20)
    soundfile.write(files["audio"], (0.1 * np.sin(np.arange(8000) / 5)).astype(np.float32), 8000)
    return files


@pytest.mark.parametrize(
    "kind, message",
    [
        ("empty", "empty file"),
        ("text", "not a video FFmpeg can read"),
        ("audio", r"no video stream \(its streams: audio\)"),
    ],
)
def test_broken_files_give_errors_naming_them(broken, kind, message):
    path = broken[kind]
    for call in (lambda: probe_video(path), lambda: decode_clip(path, 0.0, 2, 2.0, size=32)):
        with pytest.raises(VideoDecodeError, match=message) as error:
            call()
        assert str(path) in str(error.value)
    with pytest.raises(FileNotFoundError, match=r"missing\.mp4"):
        decode_clip(path.parent / "missing.mp4", 0.0, 1, 1.0)


def test_truncated_file_decodes_its_readable_part_and_names_the_cut(broken):
    """Decided: a clip inside the readable part is returned (and equals the whole file's frames); a clip that needs
    the missing part raises, naming the file and where its frames stop."""
    path = broken["truncated"]
    assert torch.equal(decode_clip(path, 1.0, 4, 2.0, size=32), decode_clip(CAR, 1.0, 4, 2.0, size=32))
    for threads in (True, False):
        assert torch.equal(decode_clip(path, 5.0, 2, 2.0, size=32, threads=threads), decode_clip(CAR, 5.0, 2, 2.0, 32))
        with pytest.raises(VideoDecodeError, match=r"truncated\.mp4' is truncated \(or damaged\): its frames stop at"):
            decode_clip(path, 25.0, 2, 2.0, size=32, threads=threads)


def test_frame_cache_decodes_once_and_rebuilds_a_corrupted_file(tmp_path, monkeypatch):
    import av

    opened = []
    real_open = av.open
    monkeypatch.setattr(av, "open", lambda *a, **k: opened.append(a[0]) or real_open(*a, **k))
    cache = FrameCache(tmp_path / "cache")
    first = cache.video(CAR, 1.0, size=32)
    assert first.shape == (31, 32, 57, 3) and opened  # 0 .. 30 s at 1 fps
    count = len(opened)
    second = cache.video(CAR, 1.0, size=32)
    assert len(opened) == count, "the second read must not decode"
    assert torch.equal(first, second)
    assert torch.equal(cache.clip(CAR, 4.0, 3, 1.0, size=32), decode_clip(CAR, 4.0, 3, 1.0, size=32))

    file = cache.file(CAR, 1.0, size=32)
    file.write_bytes(file.read_bytes()[:200])  # cut the cache entry
    third = cache.video(CAR, 1.0, size=32)
    assert len(opened) > count and cache.rebuilt == 1
    assert torch.equal(third, first)
    assert torch.equal(cache.video(CAR, 1.0, size=32), first) and cache.rebuilt == 1
    assert video_module.FrameCache(tmp_path / "cache").file(CAR, 2.0, size=32) != file  # fps is in the key


class _Clips(torch.utils.data.Dataset):
    starts = (0.0, 7.25, 15.5, 28.0)

    def __len__(self):
        return len(self.starts)

    def __getitem__(self, index):
        return decode_clip(CAR, self.starts[index], 3, 4.0, size=32)


def test_dataloader_workers_give_the_same_frames():
    dataset = _Clips()
    expected = torch.stack([dataset[i] for i in range(len(dataset))])
    loader = torch.utils.data.DataLoader(dataset, batch_size=2, num_workers=2)
    assert torch.equal(torch.cat(list(loader)), expected)


def test_a_short_clip_decodes_a_few_frames_not_the_whole_file(monkeypatch):
    """The seek starts at the keyframe before ``start`` and decoding stops past the last wanted time."""
    seen = []
    real_frames = video_module._frames

    def counting(*args, **kwargs):
        for item in real_frames(*args, **kwargs):
            seen.append(item[0])
            yield item

    monkeypatch.setattr(video_module, "_frames", counting)
    person = VIDEO_DIR / "one-by-one-person-detection.mp4"  # 139.4 s at 10 fps: 1394 frames
    clip = decode_clip(person, 100.0, 4, 4.0, size=32)
    assert clip.shape[0] == 4
    assert len(seen) < 400, f"decoded {len(seen)} frames for a 1 s clip"
    assert min(seen) <= 100.0 < 100.75 < max(seen) < 101.0


def test_check_video_rows_skips_and_reports_bad_files(broken):
    rows = [{"video": CAR, "label": 0}] + [{"video": path, "label": 1} for path in broken.values()]
    with pytest.warns(UserWarning, match="skipped 4 unusable video file"):
        checked = video_module.check_video_rows(rows)
    assert [row["video"] for row in checked.rows] == [CAR] and checked.rows[0]["info"].fps == 12.5
    reasons = dict(checked.skipped)
    assert "is truncated" in reasons[str(broken["truncated"])]
    assert "no video stream" in reasons[str(broken["audio"])]
    assert "4 skipped" in checked.report() and str(broken["empty"]) in checked.report()
    with pytest.raises(ValueError, match="no usable video among 1 file"), pytest.warns(UserWarning):
        video_module.check_video_rows([{"video": broken["text"]}])
