"""Variable-frame-rate video: frames are chosen by presentation time, not by counting (a file written here with
irregular timestamps, each frame a different grey level)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from mmcontrast.data.video import check_video_rows, decode_clip, decode_video, probe_video

av = pytest.importorskip("av")

TIMES = [0.0, 0.05, 0.4, 0.45, 0.5, 1.3, 1.35, 2.0]
"""Presentation times (s) of the frames: gaps from 50 ms to 800 ms."""


def grey(index: int) -> int:
    return 20 + 25 * index


def write_vfr(path: Path, times: list[float] = TIMES, size: int = 32) -> Path:
    """An H.264 Matroska file whose frame ``i`` is shown at ``times[i]`` and is uniformly ``grey(i)``."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=20)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.time_base = stream.codec_context.time_base = Fraction(1, 1000)
        for index, time in enumerate(times):
            frame = av.VideoFrame.from_ndarray(np.full((size, size, 3), grey(index), np.uint8), format="rgb24")
            frame.pts, frame.time_base = round(time * 1000), Fraction(1, 1000)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def expected(times: list[float], wanted: list[float]) -> list[int]:
    """The frame shown at each wanted time: the last frame whose time is <= it."""
    return [grey(max(i for i, t in enumerate(times) if t <= w + 1e-9)) for w in wanted]


def test_a_variable_frame_rate_file_is_sampled_by_presentation_time(tmp_path: Path) -> None:
    path = write_vfr(tmp_path / "vfr.mkv")
    assert probe_video(path).duration == pytest.approx(2.05, abs=0.06)
    clip = decode_clip(path, 0.0, 11, fps=5.0)
    assert clip.shape == (11, 32, 32, 3)
    levels = clip[:, 16, 16, 0].int()
    want = expected(TIMES, [i / 5 for i in range(11)])
    assert (levels - np.array(want)).abs().max() <= 3, (levels.tolist(), want)  # lossy H.264: a few levels off
    late = decode_clip(path, 1.2, 3, fps=5.0)  # a seek into the middle gives the same frames
    assert (late[:, 16, 16, 0].int() - np.array(expected(TIMES, [1.2, 1.4, 1.6]))).abs().max() <= 3


def test_a_variable_frame_rate_file_passes_the_row_check_and_decodes_whole(tmp_path: Path) -> None:
    path = write_vfr(tmp_path / "vfr.mkv")
    rows = check_video_rows([{"video": path}])
    assert len(rows.rows) == 1 and not rows.skipped
    assert len(decode_video(path, fps=4.0)) == 9  # 2.05 s at 4 fps: times 0, 0.25, ..., 2.0
