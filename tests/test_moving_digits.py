"""Moving digits (mmcontrast.data.moving_digits): determinism, balanced directions, monotone motion, synchronised
camera views, captions, digit splits, speed, and the mp4 + metadata.csv round trip through decode_video."""

from __future__ import annotations

import csv
import time
from collections import Counter

import numpy as np
import pytest
import torch

from mmcontrast.data.moving_digits import (
    DIRECTIONS,
    camera,
    caption_for,
    moving_digits,
    write_moving_digits,
)
from mmcontrast.data.video import decode_video, probe_video

_AXIS = {"up": (1, -1), "down": (1, 1), "left": (0, -1), "right": (0, 1)}  # (x = 0 / y = 1, sign)


def _centres(frames: torch.Tensor, background: tuple[int, int, int]) -> np.ndarray:
    """Centre of mass ``(x, y)`` per frame of uint8 ``[T, H, W, 3]``, weighted by the distance to the background."""
    weights = (frames.double() - torch.tensor(background, dtype=torch.float64)).abs().sum(-1).numpy()
    ys, xs = np.mgrid[: frames.shape[1], : frames.shape[2]]
    total = weights.sum(axis=(1, 2))
    return np.stack([(weights * xs).sum(axis=(1, 2)) / total, (weights * ys).sum(axis=(1, 2)) / total], axis=1)


def test_deterministic_and_seeded():
    a = moving_digits(6, num_frames=8, num_views=2, seed=3)
    b = moving_digits(6, num_frames=8, num_views=2, seed=3)
    for row_a, row_b in zip(a, b, strict=True):
        assert torch.equal(row_a["views"], row_b["views"])
        np.testing.assert_array_equal(row_a["positions"], row_b["positions"])
        assert {k: v for k, v in row_a.items() if k not in ("views", "positions")} == {
            k: v for k, v in row_b.items() if k not in ("views", "positions")
        }
    other = moving_digits(6, num_frames=8, num_views=2, seed=4)
    assert not all(torch.equal(x["views"], y["views"]) for x, y in zip(a, other, strict=True))


def test_row_format_and_balanced_directions():
    rows = moving_digits(10, num_frames=6, size=24, num_views=3, seed=0)
    row = rows[0]
    assert row["views"].dtype == torch.uint8 and row["views"].shape == (3, 6, 24, 24, 3)
    assert row["positions"].shape == (6, 2) and row["positions"].dtype == np.float32
    assert row["label"] == row["digit"] and 0 <= row["digit"] <= 9
    assert DIRECTIONS[row["direction_label"]] == row["direction"]
    counts = Counter(r["direction"] for r in rows)
    assert set(counts) == set(DIRECTIONS) and max(counts.values()) - min(counts.values()) <= 1


def test_captions():
    assert caption_for(7, "up") == "a seven moving up"
    assert caption_for(0, "left") == "a zero moving left"
    for row in moving_digits(8, num_frames=4, seed=1):
        assert row["caption"] == caption_for(row["digit"], row["direction"])
    with pytest.raises(ValueError, match="direction"):
        caption_for(1, "sideways")


def test_motion_is_monotone_in_the_stated_direction():
    rows = moving_digits(12, num_frames=16, size=32, num_views=1, seed=5)
    for row in rows:
        axis, sign = _AXIS[row["direction"]]
        centres = _centres(row["views"][0], (0, 0, 0))
        steps = np.diff(centres[:, axis]) * sign
        assert (steps > 0.3).all(), (row["direction"], centres[:, axis])
        assert np.ptp(centres[:, 1 - axis]) < 0.5  # no motion across
        # the positions are the digit's box: its centre of mass stays at a fixed offset from them
        assert np.ptp(centres - row["positions"], axis=0).max() < 0.3
        assert (np.diff(row["positions"][:, axis]) * sign > 0).all()


def test_views_are_synchronised_and_look_different():
    rows = moving_digits(8, num_frames=12, size=32, num_views=3, seed=2)
    cams = [camera(v, size=32, seed=2) for v in range(3)]
    assert cams[1] == camera(1, size=32, seed=2) and cams[1] != cams[2]
    for row in rows:
        views = row["views"]
        assert not torch.equal(views[0], views[1]) and not torch.equal(views[1], views[2])
        axis, sign = _AXIS[row["direction"]]
        for view in (1, 2):
            # every camera sees the same motion at the same time steps: its centre moves the same way every frame
            centres = _centres(views[view], cams[view].background)
            assert (np.diff(centres[:, axis]) * sign > 0).all(), (view, row["direction"])
    # a camera does not depend on the video: the corner pixel is its background in every video and frame
    for view in (1, 2):
        corners = torch.stack([row["views"][view, :, 0, 0] for row in rows])
        assert (corners == torch.tensor(cams[view].background, dtype=torch.uint8)).all()


def test_digit_subsets_split_the_images():
    train = moving_digits(40, num_frames=2, digits_subset="train", seed=0)
    test = moving_digits(40, num_frames=2, digits_subset="test", seed=0)
    assert all(row["image_index"] % 2 == 0 for row in train)
    assert all(row["image_index"] % 2 == 1 for row in test)
    with pytest.raises(ValueError, match="digits_subset"):
        moving_digits(1, digits_subset="validation")


def test_bad_arguments_name_the_fix():
    with pytest.raises(ValueError, match="num_frames"):
        moving_digits(2, num_frames=1)
    with pytest.raises(ValueError, match="size"):
        moving_digits(2, size=8)


def test_generation_is_fast():
    moving_digits(4, num_views=2)  # loads and upscales sklearn's digits once
    start = time.perf_counter()
    rows = moving_digits(200, num_frames=16, size=32, num_views=2, seed=0)
    elapsed = time.perf_counter() - start
    assert len(rows) == 200
    assert elapsed < 5.0, f"200 videos took {elapsed:.2f} s"  # about 0.4 s on one idle core


def test_write_and_decode_back(tmp_path):
    rows = moving_digits(4, num_frames=8, size=32, num_views=2, seed=0)
    metadata = write_moving_digits(tmp_path, rows, fps=8.0)
    with metadata.open() as handle:
        records = list(csv.DictReader(handle))
    assert len(records) == 8
    assert list(records[0]) == ["file_name", "caption", "label", "direction", "view", "sync"]
    for record in records:
        row = rows[int(record["sync"])]
        assert record["caption"] == row["caption"] and int(record["label"]) == row["label"]
        path = tmp_path / record["file_name"]
        assert probe_video(path).fps == pytest.approx(8.0)
        frames = decode_video(path, 8.0)
        assert frames.shape == (8, 32, 32, 3)
        error = (frames.float() - row["views"][int(record["view"])].float()).abs().mean()
        assert error < 8, f"{path}: mean absolute error {error:.1f} after encoding"


def test_write_refuses_odd_sizes(tmp_path):
    with pytest.raises(ValueError, match="even"):
        write_moving_digits(tmp_path, moving_digits(1, num_frames=2, size=33))
