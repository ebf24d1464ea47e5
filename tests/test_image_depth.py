"""High-bit-depth and float images become 8-bit RGB with their brightness kept (finding 11 of issue 9): real 16-bit
PNG and float32 TIFF files, decoded the way training decodes them."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from mmcontrast.data.images import DecodedImages, image_folder
from mmcontrast.modalities.image import to_rgb


def _decoded(path) -> np.ndarray:
    image = DecodedImages([{"image": path}])[0]["image"]
    assert image.mode == "RGB"
    return np.asarray(image, dtype=np.float64)


def _ramp(low: float, high: float, dtype) -> np.ndarray:
    return np.linspace(low, high, 32 * 48).reshape(32, 48).astype(dtype)


def test_mid_grey_16_bit_png_stays_mid_grey(tmp_path):
    path = tmp_path / "grey16.png"
    Image.fromarray(np.full((16, 16), 32768, np.uint16)).save(path)
    assert Image.open(path).mode.startswith("I")  # really a 16-bit file
    pixels = _decoded(path)
    assert pixels.mean() == pytest.approx(128, abs=1)
    assert pixels.std() == 0


def test_16_bit_png_ramp_keeps_relative_brightness(tmp_path):
    source = _ramp(0, 65535, np.uint16)
    path = tmp_path / "ramp16.png"
    Image.fromarray(source).save(path)
    pixels = _decoded(path)
    assert pixels.shape == (32, 48, 3)
    assert pixels.mean() / 255 == pytest.approx(source.mean() / 65535, abs=0.005)
    assert pixels[..., 0].min() == 0 and pixels[..., 0].max() == 255
    assert (np.diff(pixels[..., 0].ravel()) >= 0).all()  # the ramp stays a ramp


@pytest.mark.parametrize(("low", "high"), [(0.0, 1.0), (0.2, 0.4)])
def test_float_tiff_in_zero_to_one_is_scaled_by_255(tmp_path, low, high):
    source = _ramp(low, high, np.float32)
    path = tmp_path / "unit.tif"
    Image.fromarray(source).save(path)
    assert Image.open(path).mode == "F"
    assert _decoded(path).mean() == pytest.approx(source.mean() * 255, abs=1)


def test_float_tiff_outside_zero_to_one_is_min_max_scaled(tmp_path):
    source = _ramp(-50.0, 1000.0, np.float32)
    path = tmp_path / "wide.tif"
    Image.fromarray(source).save(path)
    pixels = _decoded(path)
    assert pixels.min() == 0 and pixels.max() == 255
    assert pixels.mean() == pytest.approx(127.5, abs=1)


def test_32_bit_integer_images_are_scaled_by_their_range(tmp_path):
    sixteen = Image.fromarray(np.full((8, 8), 32768, np.int32))
    eight = Image.fromarray(np.full((8, 8), 200, np.int32))
    wide = Image.fromarray(_ramp(-100000, 100000, np.int32))
    assert sixteen.mode == eight.mode == wide.mode == "I"
    assert np.asarray(to_rgb(sixteen)).mean() == pytest.approx(128, abs=1)
    assert np.asarray(to_rgb(eight)).mean() == pytest.approx(200, abs=1)
    assert np.asarray(to_rgb(wide)).mean() == pytest.approx(127.5, abs=1)
    path = tmp_path / "int32.tif"
    sixteen.save(path)
    assert _decoded(path).mean() == pytest.approx(128, abs=1)


def test_8_bit_and_alpha_modes_convert_as_pil_does():
    for image in (
        Image.new("L", (4, 4), 77),
        Image.new("RGBA", (4, 4), (10, 20, 30, 40)),
        Image.new("LA", (4, 4), (90, 255)),
        Image.new("CMYK", (4, 4), (0, 50, 100, 0)),
    ):
        assert np.array_equal(np.asarray(to_rgb(image)), np.asarray(image.convert("RGB")))


def test_image_folder_decodes_16_bit_pngs_to_mid_grey(tmp_path):
    (tmp_path / "grey").mkdir()
    Image.fromarray(np.full((8, 8), 32768, np.uint16)).save(tmp_path / "grey" / "a.png")
    rows = image_folder(tmp_path)
    assert not rows.skipped
    assert np.asarray(DecodedImages(rows.rows)[0]["image"]).mean() == pytest.approx(128, abs=1)
