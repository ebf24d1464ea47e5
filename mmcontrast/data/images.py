"""Image data: labelled and captioned image rows from sklearn's digits, an image folder or a table of paths.

Every image file is decoded once before training; a corrupted or truncated file is skipped, counted and
reported (not a crash mid-run, and batches stay full and equal across processes). Images are decoded to 8-bit RGB
by :func:`to_rgb`, which scales 16-bit, 32-bit and float pixels by what their values mean (PIL's own
``convert("RGB")`` clips them, turning a 16-bit PNG white and a float TIFF black). A table of image paths is read
by :func:`mmcontrast.data.tables.read_records`, so that its errors name the file and the line.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from mmcontrast.data.streaming import TEXT_MEMBERS, BadSample, stream_column
from mmcontrast.data.tables import RECORD_SUFFIXES, read_records
from mmcontrast.modalities.image import to_rgb

DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
DIGIT_CAPTIONS = (
    "a photo of the digit {}.",
    "a handwritten {}.",
    "the number {}.",
    "a blurry picture of a {}.",
)
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
IMAGE_MEMBERS = ("jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff")  # a tar sample's image, in this order


@dataclass
class ImageRows:
    """Image rows plus the bookkeeping of what was dropped.

    Attributes:
        rows: dicts with ``image`` (a PIL image, or a path decoded on access) and ``label`` and/or ``caption``.
        classes: class names when the rows are labelled.
        skipped: (source, reason) of every unreadable image that was dropped.
    """

    rows: list[dict[str, Any]]
    classes: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)


class DecodedImages(Sequence):
    """Rows whose ``image`` path is opened as an 8-bit RGB PIL image (:func:`to_rgb`) when a row is read (in
    DataLoader workers)."""

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, Any]:  # type: ignore[override]
        row = dict(self.rows[index])
        if isinstance(row["image"], (str, Path)):
            with Image.open(row["image"]) as image:
                row["image"] = to_rgb(image)
        return row


def digits(split: str = "train", *, image_size: int = 32, test_fraction: float = 0.2, seed: int = 0) -> ImageRows:
    """sklearn's 1797 8x8 hand-written digits as RGB images of ``image_size``, split by a stratified seed."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    if split not in ("train", "test", "all"):
        raise ValueError(f"digits split must be train, test or all, got '{split}'")
    data = load_digits()
    indices = np.arange(len(data.target))
    if split != "all":
        train, test = train_test_split(indices, test_size=test_fraction, stratify=data.target, random_state=seed)
        indices = train if split == "train" else test
    rows = []
    for i in indices:
        pixels = (data.images[i] * (255.0 / 16.0)).astype(np.uint8)
        image = Image.fromarray(pixels, mode="L").resize((image_size, image_size), Image.Resampling.BICUBIC)
        rows.append({"image": to_rgb(image), "label": int(data.target[i])})
    return ImageRows(rows, list(DIGIT_NAMES))


def caption_rows(rows: ImageRows, templates: Sequence[str] = DIGIT_CAPTIONS) -> ImageRows:
    """Give labelled rows generated captions: row i gets template ``i mod len(templates)`` with its class name."""
    captioned = [
        {**row, "caption": templates[i % len(templates)].format(rows.classes[row["label"]])}
        for i, row in enumerate(rows.rows)
    ]
    return ImageRows(captioned, rows.classes, rows.skipped)


def _check_image(path: Path) -> str | None:
    """None if the file decodes completely, else the reason it does not."""
    try:
        with Image.open(path) as image:
            image.load()
    except Exception as error:  # PIL raises many types for bad files
        return f"{type(error).__name__}: {error}"
    return None


def _drop_unreadable(rows: list[dict[str, Any]], desc: str) -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
    good, skipped = [], []
    for row in tqdm(rows, desc=desc, leave=False, disable=len(rows) < 500):
        reason = _check_image(Path(row["image"]))
        if reason is None:
            good.append(row)
        else:
            skipped.append((str(row["image"]), reason))
    return good, skipped


def captioned_table(path: str | Path, *, image_column: str = "file_name", caption_column: str = "text") -> ImageRows:
    """A csv / tsv / json / jsonl table of image paths (relative to the table's folder) and captions.

    Raises:
        ValueError: the table cannot be read, or a record lacks its image path or caption; the message names the
            table and the line.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image-caption table '{path}' does not exist")
    format = RECORD_SUFFIXES.get(path.suffix.lower())
    if format is None:
        raise ValueError(
            f"image-caption table '{path}' is not a .csv, .tsv, .json or .jsonl file; give the table of image paths "
            "and captions one of these suffixes"
        )
    records = read_records(path, format)
    rows = []
    for record, line in zip(records.rows, records.lines, strict=True):
        if image_column not in record or caption_column not in record:
            raise ValueError(
                f"{path}, line {line}: needs '{image_column}' and '{caption_column}' (set data.image_column "
                f"and data.caption_column), found {sorted(record)}"
            )
        name = record[image_column]
        if not isinstance(name, str) or not name.strip():
            raise ValueError(
                f"{path}, line {line}: '{image_column}' holds {name!r}, not an image file name; give every record "
                f"the path of its image, relative to {path.parent}"
            )
        if not str(record[caption_column] or "").strip():
            raise ValueError(f"{path}, line {line}: caption '{caption_column}' is empty")
        rows.append({"image": path.parent / name, "caption": str(record[caption_column])})
    good, skipped = _drop_unreadable(rows, "checking images")
    return ImageRows(good, [], skipped)


def image_folder(root: str | Path, *, caption_column: str = "text") -> ImageRows:
    """An image folder: ``metadata.csv`` / ``metadata.jsonl`` with ``file_name`` and a caption column
    (captioned rows), or one sub-folder per class (labelled rows, classes sorted by name)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder '{root}' does not exist")
    for name in ("metadata.csv", "metadata.jsonl"):
        if (root / name).is_file():
            return captioned_table(root / name, caption_column=caption_column)
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    if not classes:
        raise ValueError(f"image folder '{root}' has neither metadata.csv/metadata.jsonl nor class sub-folders")
    rows = [
        {"image": path, "label": label}
        for label, name in enumerate(classes)
        for path in sorted((root / name).iterdir())
        if path.suffix.lower() in IMAGE_SUFFIXES
    ]
    good, skipped = _drop_unreadable(rows, "checking images")
    return ImageRows(good, classes, skipped)


def load_image_rows(
    source: str,
    *,
    split: str = "train",
    image_size: int = 32,
    image_column: str = "file_name",
    caption_column: str = "text",
) -> ImageRows:
    """``sklearn:digits`` (``split`` train / test / all), an image folder, or a csv / json(l) of paths + captions."""
    if source == "sklearn:digits":
        return digits(split, image_size=image_size)
    if Path(source).is_file():
        return captioned_table(source, image_column=image_column, caption_column=caption_column)
    return image_folder(source, caption_column=caption_column)


class StreamedImageRows:
    """A streamed image row as a method takes it: ``{"image": RGB PIL image}``, with ``"caption"`` when a caption
    column is named (CLIP); other methods (the views methods) take the image alone.

    The image is a column's ``{"bytes", "path"}`` (a webdataset tar member or a parquet image column), raw bytes,
    or a file path. Columns not in a sample fall back to webdataset's member names: the first image suffix
    (``jpg``, ``png``...) for the image, ``txt`` for the caption. An image that does not decode, or a missing or
    empty caption, raises :class:`~mmcontrast.data.streaming.BadSample` (the stream skips and counts it).
    """

    def __init__(self, image_column: str, caption_column: str | None = None) -> None:
        self.image_column, self.caption_column = image_column, caption_column

    def __call__(self, raw: dict[str, Any]) -> dict[str, Any]:
        image_field = stream_column(raw, self.image_column, IMAGE_MEMBERS, "data.image_column")
        row: dict[str, Any] = {}
        if self.caption_column is not None:
            caption_field = stream_column(raw, self.caption_column, TEXT_MEMBERS, "data.caption_column")
            caption = raw[caption_field]
            if not isinstance(caption, str) or not caption.strip():
                raise BadSample(f"caption '{caption_field}' is missing or empty")
            row["caption"] = caption
        value = raw[image_field]
        if isinstance(value, dict):
            value = value.get("bytes") or value.get("path")
        if value is None:
            raise BadSample(f"image '{image_field}' is missing")
        try:
            with Image.open(io.BytesIO(value) if isinstance(value, bytes) else value) as image:
                image.load()
                return {"image": to_rgb(image), **row}
        except Exception as error:  # PIL raises many types for a damaged image
            raise BadSample(f"image '{image_field}' does not decode: {type(error).__name__}: {error}") from error
