"""Moving digits: a small synthetic, deterministic video dataset with synchronised camera views.

Each video shows one handwritten digit from scikit-learn's ``load_digits`` (1797 grey 8x8 images, upscaled with
bilinear interpolation to a ``side`` of about 40% of the canvas, 8 to 16 px) moving in a straight line on a black
``size`` x ``size`` canvas, in one of four directions (:data:`DIRECTIONS`: up, down, left, right). The digit
crosses the whole free range of the canvas (``size - side`` pixels) at constant speed over ``num_frames`` frames;
the digit is placed with sub-pixel precision (bilinear blending of two integer placements), so its position is
strictly monotone in time and every frame's content tells its time. Its offset on the perpendicular axis is random.

``num_views`` synchronised "cameras" film the same scene (same digit, same trajectory, same time steps): view 0 is the
canonical rendering (a white digit on black); view ``v > 0`` sees it through a fixed perspective warp (four corner
offsets, :func:`torchvision.transforms.v2.functional.perspective`), a zoom and its own foreground / background
colours (:func:`camera`). A camera depends on the view index and the seed only, never on the video, so views differ
in appearance but agree frame by frame: the multi-view time-contrastive setting (positives are the same time seen
by two cameras).

Everything is drawn from ``numpy.random.default_rng(seed)`` (the videos) and ``default_rng([seed, view])`` (the
cameras): the same arguments give the same videos, bit for bit. The directions are balanced (a seeded permutation
of ``0, 1, 2, 3, 0, 1, ...``: counts differ by at most one).

**Splits.** Make training and test sets with *different seeds* (new digits, offsets and directions) and, for digit
images never seen in training, ``digits_subset="train"`` / ``"test"``: the even / odd indices of sklearn's 1797
images. The cameras depend on the seed too, unless ``camera_seed`` is given: a held-out set of new videos filmed by
the training cameras takes another ``seed`` and the training seed as ``camera_seed``.

A row (one video)::

    {"views": uint8 [V, T, size, size, 3], "label": 7, "digit": 7, "direction": "up", "direction_label": 0,
     "caption": "a seven moving up", "positions": float32 [T, 2], "image_index": 1234}

``positions`` is the centre of the digit in view 0's pixel coordinates, ``(x, y)`` = (column, row) per frame;
``image_index`` is the digit's index among sklearn's images.

:func:`write_moving_digits` writes every view as an mp4 (libx264, else mpeg4; yuv420p, so ``size`` must be even)
plus a ``metadata.csv`` (``file_name, caption, label, direction, view, sync``), which decodes back with
:func:`mmcontrast.data.video.decode_video` at the same fps with the same number of frames.
"""

from __future__ import annotations

import csv
import functools
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import torch

DIRECTIONS = ("up", "down", "left", "right")
"""The four directions of motion; a row's ``direction_label`` indexes this tuple."""
DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
DIGITS_SUBSETS = ("all", "train", "test")
_MIN_SIZE = 12


def caption_for(digit: int, direction: str) -> str:
    """The caption of a video, e.g. ``caption_for(7, "up") == "a seven moving up"``."""
    if direction not in DIRECTIONS:
        raise ValueError(f"caption_for: direction must be one of {DIRECTIONS}, got {direction!r}")
    if not 0 <= int(digit) <= 9:
        raise ValueError(f"caption_for: digit must be in 0..9, got {digit}")
    return f"a {DIGIT_NAMES[int(digit)]} moving {direction}"


def digit_side(size: int) -> int:
    """The digit's side in pixels on a ``size`` canvas: about 40% of it, between 8 and 16."""
    return max(8, min(16, round(0.4 * size)))


@functools.lru_cache(maxsize=4)
def _digit_images(side: int) -> tuple[np.ndarray, np.ndarray]:
    """sklearn's digits upscaled to ``side`` px as float32 intensities in [0, 1], and their labels (read-only)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.from_numpy(digits.images.astype(np.float32) / 16.0)[:, None]
    upscaled = torch.nn.functional.interpolate(images, size=(side, side), mode="bilinear", align_corners=False)
    out = upscaled[:, 0].clamp(0, 1).numpy()
    labels = digits.target.astype(np.int64)
    out.flags.writeable = False
    labels.flags.writeable = False
    return out, labels


@dataclass(frozen=True)
class Camera:
    """One synchronised view: where the canvas corners land (a perspective warp that includes the zoom) and colours.

    Attributes:
        endpoints: the output positions ``(x, y)`` of the canvas corners (top-left, top-right, bottom-right,
            bottom-left); the canvas corners themselves for view 0.
        zoom: the scale of the view about the canvas centre (1 for view 0; below 1 the scene looks smaller).
        foreground, background: RGB colours (0..255) of the digit and of the canvas.
    """

    endpoints: tuple[tuple[float, float], ...]
    zoom: float
    foreground: tuple[int, int, int]
    background: tuple[int, int, int]


def _corners(size: int) -> np.ndarray:
    last = float(size - 1)
    return np.array([[0.0, 0.0], [last, 0.0], [last, last], [0.0, last]])


def camera(view: int, *, size: int, seed: int = 0) -> Camera:
    """The camera of view ``view`` on a ``size`` canvas: view 0 is the canonical one (identity, white on black);
    any other view draws a zoom in [0.7, 0.95], corner offsets up to 8% of ``size`` and contrasting colours (the digit
    darker than the background half of the time) from ``default_rng([seed, view])``."""
    if view < 0:
        raise ValueError(f"camera: view must be >= 0, got {view}")
    corners = _corners(size)
    if view == 0:
        return Camera(tuple(map(tuple, corners.tolist())), 1.0, (255, 255, 255), (0, 0, 0))
    rng = np.random.default_rng([int(seed), int(view)])
    zoom = float(rng.uniform(0.7, 0.95))
    centre = (size - 1) / 2
    endpoints = centre + zoom * (corners - centre) + rng.uniform(-0.08, 0.08, size=(4, 2)) * size
    foreground = rng.integers(180, 256, size=3)
    background = rng.integers(0, 76, size=3)
    if rng.random() < 0.5:
        foreground, background = background, foreground
    return Camera(
        tuple(map(tuple, endpoints.tolist())),
        zoom,
        tuple(int(c) for c in foreground),
        tuple(int(c) for c in background),
    )


def _render(
    digit: np.ndarray, direction: str, offset: int, num_frames: int, size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Intensities ``[T, size, size]`` of ``digit`` moving in ``direction``, and its centre ``(x, y)`` per frame."""
    side = digit.shape[0]
    travel = size - side
    along = np.linspace(0.0, float(travel), num_frames)
    if direction in ("up", "left"):
        along = travel - along
    canvas = np.zeros((num_frames, size + 1, size + 1), dtype=np.float32)
    horizontal = direction in ("left", "right")
    for t, position in enumerate(along):
        start = int(np.floor(position))
        fraction = np.float32(position - start)
        # sub-pixel placement: blend the digit at `start` and at `start + 1` along the motion
        if horizontal:
            canvas[t, offset : offset + side, start : start + side] += (1 - fraction) * digit
            canvas[t, offset : offset + side, start + 1 : start + 1 + side] += fraction * digit
        else:
            canvas[t, start : start + side, offset : offset + side] += (1 - fraction) * digit
            canvas[t, start + 1 : start + 1 + side, offset : offset + side] += fraction * digit
    centre_along = along + (side - 1) / 2
    centre_across = np.full(num_frames, offset + (side - 1) / 2)
    xy = np.stack([centre_along, centre_across] if horizontal else [centre_across, centre_along], axis=1)
    return canvas[:, :size, :size], xy.astype(np.float32)


def _film(intensities: torch.Tensor, cam: Camera, size: int) -> torch.Tensor:
    """Intensities ``[N, T, S, S]`` in [0, 1] -> uint8 ``[N, T, S, S, 3]`` seen through ``cam``."""
    from torchvision.transforms.v2 import InterpolationMode
    from torchvision.transforms.v2 import functional as F

    corners = _corners(size).tolist()
    if [list(p) for p in cam.endpoints] != corners:
        flat = intensities.reshape(-1, 1, size, size)
        flat = F.perspective(
            flat, corners, [list(p) for p in cam.endpoints], interpolation=InterpolationMode.BILINEAR, fill=0.0
        )
        intensities = flat.reshape(intensities.shape)
    foreground = torch.tensor(cam.foreground, dtype=torch.float32)
    background = torch.tensor(cam.background, dtype=torch.float32)
    rgb = background + (foreground - background) * intensities.clamp(0, 1)[..., None]
    return rgb.round_().to(torch.uint8)


def moving_digits(
    num_videos: int,
    *,
    num_frames: int = 16,
    size: int = 32,
    num_views: int = 1,
    seed: int = 0,
    digits_subset: str = "all",
    camera_seed: int | None = None,
) -> list[dict[str, Any]]:
    """``num_videos`` moving-digit videos, each filmed by ``num_views`` synchronised cameras (module docstring).

    Args:
        num_videos: how many videos (rows).
        num_frames: frames per video (>= 2, so that the digit moves).
        size: side of the square canvas in pixels (>= 12; even if the videos are to be written as mp4).
        num_views: synchronised cameras per video (>= 1); view 0 is the canonical rendering.
        seed: the seed of the digits, directions, offsets and (without ``camera_seed``) the cameras.
        digits_subset: ``"all"`` of sklearn's images, or the ``"train"`` (even indices) / ``"test"`` (odd
            indices) half, so that test digits are images never seen in training.

    Returns:
        One row per video: ``views`` (uint8 ``[V, T, size, size, 3]``), ``label`` and ``digit`` (the digit),
        ``direction`` and ``direction_label``, ``caption``, ``positions`` (float32 ``[T, 2]``, the digit's centre
        ``(x, y)`` in view 0's pixels) and ``image_index`` (the digit's index among sklearn's images).
    """
    if num_videos < 0:
        raise ValueError(f"moving_digits: num_videos must be >= 0, got {num_videos}")
    if num_frames < 2:
        raise ValueError(f"moving_digits: num_frames must be >= 2 (the digit moves between frames), got {num_frames}")
    if size < _MIN_SIZE:
        raise ValueError(f"moving_digits: size must be at least {_MIN_SIZE} pixels (room to move), got {size}")
    if num_views < 1:
        raise ValueError(f"moving_digits: num_views must be >= 1, got {num_views}")
    if digits_subset not in DIGITS_SUBSETS:
        raise ValueError(f"moving_digits: digits_subset must be one of {DIGITS_SUBSETS}, got {digits_subset!r}")
    side = digit_side(size)
    images, labels = _digit_images(side)
    pool = np.arange(len(images))
    if digits_subset != "all":
        pool = pool[0 if digits_subset == "train" else 1 :: 2]

    rng = np.random.default_rng(seed)
    directions = rng.permutation(np.arange(num_videos) % len(DIRECTIONS))
    chosen = rng.choice(pool, size=num_videos)
    offsets = rng.integers(0, size - side + 1, size=num_videos)

    intensities = np.empty((num_videos, num_frames, size, size), dtype=np.float32)
    positions = []
    for n in range(num_videos):
        intensities[n], xy = _render(images[chosen[n]], DIRECTIONS[directions[n]], int(offsets[n]), num_frames, size)
        positions.append(xy)
    scene = torch.from_numpy(intensities)
    cameras = [camera(v, size=size, seed=seed if camera_seed is None else camera_seed) for v in range(num_views)]
    views = torch.stack([_film(scene, cam, size) for cam in cameras], dim=1)

    rows = []
    for n in range(num_videos):
        digit = int(labels[chosen[n]])
        direction = DIRECTIONS[directions[n]]
        rows.append(
            {
                "views": views[n].clone(),
                "label": digit,
                "digit": digit,
                "direction": direction,
                "direction_label": int(directions[n]),
                "caption": caption_for(digit, direction),
                "positions": positions[n],
                "image_index": int(chosen[n]),
            }
        )
    return rows


def _encoder() -> str:
    """libx264 when this PyAV build can encode it, else FFmpeg's native mpeg4."""
    import av

    try:
        av.Codec("libx264", "w")
    except Exception:  # an FFmpeg build without libx264
        return "mpeg4"
    return "libx264"


def _write_mp4(path: Path, frames: np.ndarray, fps: float, codec: str) -> None:
    import av

    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
        stream.height, stream.width = frames.shape[1], frames.shape[2]
        stream.pix_fmt = "yuv420p"
        stream.codec_context.thread_count = 1
        if codec == "libx264":
            stream.options = {"crf": "12", "preset": "veryfast"}
        else:
            stream.codec_context.bit_rate = 4_000_000
        for array in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(array), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def write_moving_digits(folder: str | Path, rows: Sequence[dict[str, Any]], *, fps: float = 8.0) -> Path:
    """Write every view of every row as ``video{sync:05d}_view{v}.mp4`` in ``folder``, plus ``metadata.csv``.

    ``metadata.csv`` has the columns ``file_name`` (relative to ``folder``), ``caption``, ``label``, ``direction``,
    ``view`` and ``sync`` (the row's position in ``rows``, shared by its synchronised views). Files are encoded with
    libx264 (mpeg4 when the PyAV build lacks it) in yuv420p at ``fps``; they decode back with
    :func:`mmcontrast.data.video.decode_video` at ``fps`` with ``num_frames`` frames (colours close to, not equal
    to, the rows': the encoding is lossy and halves the chroma resolution).

    Returns:
        The path of ``metadata.csv``.

    Raises:
        ValueError: ``fps`` is not positive, a row has no ``views``, or the frames have an odd side (yuv420p needs
            even sizes: generate with an even ``size``).
    """
    if not fps > 0:
        raise ValueError(f"write_moving_digits: fps must be positive, got {fps}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    codec = _encoder()
    records = []
    for sync, row in enumerate(rows):
        if "views" not in row:
            raise ValueError(f"write_moving_digits: row {sync} has no 'views' (keys: {sorted(row)})")
        views = torch.as_tensor(row["views"])
        if views.ndim != 5 or views.shape[-1] != 3 or views.dtype != torch.uint8:
            raise ValueError(
                f"write_moving_digits: row {sync}: views must be uint8 [V, T, H, W, 3], "
                f"got {views.dtype} {list(views.shape)}"
            )
        height, width = views.shape[2], views.shape[3]
        if height % 2 or width % 2:
            raise ValueError(
                f"write_moving_digits: row {sync}: frames are {height}x{width}; yuv420p mp4 needs an even height "
                "and width, generate the videos with an even size"
            )
        for view in range(views.shape[0]):
            name = f"video{sync:05d}_view{view}.mp4"
            _write_mp4(folder / name, views[view].numpy(), fps, codec)
            records.append(
                {
                    "file_name": name,
                    "caption": row.get("caption", ""),
                    "label": row.get("label", ""),
                    "direction": row.get("direction", ""),
                    "view": view,
                    "sync": sync,
                }
            )
    metadata = folder / "metadata.csv"
    with metadata.open("w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=["file_name", "caption", "label", "direction", "view", "sync"])
        writer.writeheader()
        writer.writerows(records)
    return metadata


__all__ = [
    "DIGIT_NAMES",
    "DIRECTIONS",
    "Camera",
    "camera",
    "caption_for",
    "digit_side",
    "moving_digits",
    "write_moving_digits",
]
