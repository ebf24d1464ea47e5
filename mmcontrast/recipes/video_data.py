"""The `data:` and `augment:` sections shared by the video recipes (TCN, CVRL, video-text) and the rows they read."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from mmcontrast.data.moving_digits import moving_digits
from mmcontrast.data.video import FrameCache, load_video_rows, synchronised_views
from mmcontrast.typed_config import NonNegativeFloat, PositiveFloat, PositiveInt, Seed, UnitFloat
from mmcontrast.views.video import ConsistentAugment, consistent_augment

MOVING_DIGITS = "moving_digits"


@dataclass
class MovingDigitsConfig:
    """The generated moving-digits videos (`data.moving_digits:` section; synthetic, made at run time).

    sklearn's hand-written digits move in a straight line (up, down, left or right) on a canvas; every video is
    filmed by `num_views` synchronised cameras (different perspective, zoom and colours) and captioned
    ("a seven moving up"). See docs/video.md.

    Attributes:
        num_videos: videos to generate.
        num_frames: frames per video.
        size: side of the canvas (pixels).
        num_views: synchronised cameras per video.
        seed: seed of the digits, directions, offsets and cameras.
        digits: which half of sklearn's digit images to draw from: `train` (even indices), `test` (odd) or `all`.
    """

    num_videos: PositiveInt = 400
    num_frames: PositiveInt = 16
    size: PositiveInt = 32
    num_views: PositiveInt = 1
    seed: Seed = 0
    digits: Literal["train", "test", "all"] = "train"

    def rows(self) -> list[dict[str, Any]]:
        """The generated training rows."""
        return moving_digits(
            self.num_videos,
            num_frames=self.num_frames,
            size=self.size,
            num_views=self.num_views,
            seed=self.seed,
            digits_subset=self.digits,
        )

    def held_out(self, num_videos: int, seed: int, num_views: int | None = None) -> list[dict[str, Any]]:
        """New videos for evaluation: another seed (digits, directions, offsets), the test half of the digit images
        when training used the train half, and the training cameras."""
        return moving_digits(
            num_videos,
            num_frames=self.num_frames,
            size=self.size,
            num_views=max(self.num_views, num_views or 1),
            seed=seed,
            digits_subset="test" if self.digits == "train" else self.digits,
            camera_seed=self.seed,
        )


@dataclass
class VideoDataConfig:
    """Training videos (`data:` section).

    Attributes:
        train: `moving_digits` (generated, see `moving_digits`), a folder of videos (mp4, mkv, webm, avi...; with a
            `metadata.csv` / `metadata.jsonl` holding `file_name` and columns such as `caption`, `label`, `view`,
            `sync`, or one sub-folder per class, or plain files) or such a table. When every row has a `sync` value,
            the files sharing one are the synchronised cameras of one video (ordered by `view`), decoded into memory
            once at the start.
        moving_digits: the generated videos when `train` is `moving_digits`.
        fps: frames per second decoded from files (the time grid of clips and windows).
        frame_size: decode frames of files with this shorter side (null: the file's own size).
        cache: a folder for decoded frames (uint8, one file per video, fps and size): files decode once.
        min_seconds: skip (and report) files shorter than this.
        limit: use only the first N videos.
    """

    train: str = MOVING_DIGITS
    moving_digits: MovingDigitsConfig = field(default_factory=MovingDigitsConfig)
    fps: PositiveFloat = 4.0
    frame_size: PositiveInt | None = 64
    cache: str | None = None
    min_seconds: NonNegativeFloat = 0.0
    limit: PositiveInt | None = None

    @property
    def generated(self) -> bool:
        return self.train == MOVING_DIGITS

    def frame_cache(self) -> FrameCache | None:
        """The decoded-frame cache of files, if one is set."""
        return FrameCache(self.cache) if self.cache and not self.generated else None

    def report_short(self, rows: list[dict[str, Any]], num_frames: int) -> int:
        """Name the files shorter than ``num_frames`` frames at `fps` (their last frame is repeated to fill a clip or
        window: counted and reported, not an error); returns how many."""
        short = [row for row in rows if "info" in row and row["info"].duration * self.fps < num_frames]
        if short:
            names = ", ".join(Path(str(row["video"])).name for row in short[:10]) + (" ..." if len(short) > 10 else "")
            print(
                f"data.train: {len(short)} video(s) shorter than {num_frames} frames at {self.fps:g} fps are padded "
                f"by repeating their last frame: {names}"
            )
        return len(short)

    def rows(self) -> tuple[list[dict[str, Any]], int]:
        """The training rows and how many files were skipped (bad files are reported, never a crash)."""
        if self.generated:
            rows = self.moving_digits.rows()
            skipped = 0
            print(
                f"data.train: {len(rows)} generated moving-digits videos (synthetic), {self.moving_digits.num_frames} "
                f"frames, {self.moving_digits.num_views} view(s)"
            )
        elif not self.train:
            raise ValueError("data.train is not set (moving_digits, a folder of videos or a table of video paths)")
        else:
            found, _ = load_video_rows(self.train, min_seconds=self.min_seconds)
            if found.skipped:
                print(f"data.train '{self.train}': {found.report()}")
            rows, skipped = found.rows, len(found.skipped)
            if all(row.get("sync") not in (None, "") for row in rows):  # several cameras per video: group them
                rows = synchronised_views(rows, self.fps, size=self.frame_size, cache=self.frame_cache())
                print(f"data.train: {len(found.rows)} files = {len(rows)} videos x {len(rows[0]['views'])} cameras")
        return (rows[: self.limit] if self.limit else rows), skipped


@dataclass
class VideoAugmentConfig:
    """Augmentation drawn once per clip and applied to every frame of it (`augment:` section).

    Attributes:
        enabled: augment (false: frames as decoded / generated).
        size: side of the augmented frames (the random resized crop's output).
        crop_scale: `[min, max]` area fraction of the random resized crop.
        flip: random horizontal flip (p = 0.5).
        color_jitter: brightness / contrast / saturation strength (hue a quarter of it), p = 0.8; 0: none.
        grayscale: probability of a grayscale clip.
    """

    enabled: bool = True
    size: PositiveInt = 32
    crop_scale: list[UnitFloat] = field(default_factory=lambda: [0.5, 1.0])
    flip: bool = False
    color_jitter: NonNegativeFloat = 0.4
    grayscale: UnitFloat = 0.2

    def build(self) -> ConsistentAugment | None:
        """The clip augmentation (:func:`mmcontrast.views.video.consistent_augment`), or None when disabled."""
        if not self.enabled:
            return None
        if len(self.crop_scale) != 2:
            raise ValueError(f"augment.crop_scale must be [min, max], got {self.crop_scale}")
        return consistent_augment(
            self.size,
            crop_scale=self.crop_scale,
            flip=self.flip,
            color_jitter=self.color_jitter,
            grayscale=self.grayscale,
        )
