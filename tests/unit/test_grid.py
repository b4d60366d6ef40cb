"""Unit tests for zimg.grid: display conversion, the grid layout and grids from files."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

import zimg
from zimg._errors import ImageError
from zimg.grid import Picture, grid_from_files, make_grid, to_bgr8
from zimg.images import load

SAMPLES = Path(zimg.__file__).parent / "samples"


def noise(h: int, w: int, channels: int = 3, dtype: Any = np.uint8) -> np.ndarray:
    rng = np.random.default_rng(h * 1000 + w)
    top = np.iinfo(dtype).max
    shape = (h, w) if channels == 1 else (h, w, channels)
    return rng.integers(0, top, shape, dtype=dtype, endpoint=True)


def test_to_bgr8_conversions() -> None:
    gray = noise(3, 4, 1)
    assert np.array_equal(to_bgr8(gray), np.dstack([gray, gray, gray]))
    assert np.array_equal(to_bgr8(gray[:, :, np.newaxis]), np.dstack([gray, gray, gray]))
    bgr16 = noise(3, 4, 3, np.uint16)
    assert np.array_equal(to_bgr8(bgr16), (bgr16 >> 8).astype(np.uint8))
    bgr = noise(3, 4)
    out = to_bgr8(bgr)
    assert np.array_equal(out, bgr)
    assert not np.shares_memory(out, bgr)
    assert np.array_equal(to_bgr8(np.array([[0.0, 0.5, 2.0]])), [[[0] * 3, [128] * 3, [255] * 3]])


def test_to_bgr8_composites_alpha_on_white() -> None:
    bgra = np.array([[[10, 20, 30, 255], [10, 20, 30, 0], [0, 0, 0, 128]]], np.uint8)
    assert to_bgr8(bgra).tolist() == [[[10, 20, 30], [255, 255, 255], [127, 127, 127]]]


@pytest.mark.parametrize(
    "image",
    [np.zeros((0, 3), np.uint8), np.zeros((3, 3, 2), np.uint8), np.zeros((3, 3), np.int32)],
)
def test_to_bgr8_errors(image: np.ndarray) -> None:
    with pytest.raises(ImageError, match="cannot display"):
        to_bgr8(image)


def test_make_grid_notebook_shape_for_32_images() -> None:
    chelsea = cv2.imread(str(SAMPLES / "chelsea.jpg"), cv2.IMREAD_UNCHANGED)  # 451 x 300
    assert chelsea is not None
    grid = make_grid([chelsea] * 32)
    cell_h = round(320 * 300 / 451)
    assert grid.shape == (8 * cell_h + 7 * 4, 4 * 320 + 3 * 4, 3)
    assert grid.dtype == np.uint8
    expected = cv2.resize(chelsea, (320, cell_h), interpolation=cv2.INTER_AREA)
    last = grid[7 * (cell_h + 4) :, 3 * (320 + 4) :]
    assert np.array_equal(last, expected)
    assert np.all(grid[:, 320 : 320 + 4] == 255)  # the gap between columns


def test_make_grid_mixed_inputs_centred() -> None:
    pictures = [
        noise(100, 200, 1),
        noise(200, 100, 4),
        noise(50, 50, 3, np.uint16),
        noise(10, 40, 1, np.uint16),
        noise(30, 30),
    ]
    grid = make_grid(pictures, columns=2, cell_width=100, pad=2, background=0)
    cell_h = 200  # the tallest is twice as high as it is wide
    assert grid.shape == (3 * cell_h + 2 * 2, 2 * 100 + 2, 3)
    first = grid[:cell_h, :100]  # 200x100 scaled to 100x50, centred vertically
    assert np.all(first[:75] == 0)
    assert np.all(first[125:] == 0)
    assert np.array_equal(
        first[75:125], cv2.resize(to_bgr8(pictures[0]), (100, 50), interpolation=cv2.INTER_AREA)
    )
    assert np.all(grid[2 * (cell_h + 2) :, 102:] == 0)  # the empty sixth cell


def test_make_grid_caps_very_tall_images() -> None:
    grid = make_grid([noise(1000, 2, 1)], cell_width=10)
    assert grid.shape == (40, 10, 3)


def test_make_grid_errors() -> None:
    with pytest.raises(ValueError, match="at least one image"):
        make_grid([])
    with pytest.raises(ValueError, match="columns >= 1"):
        make_grid([noise(2, 2)], columns=0)
    with pytest.raises(ValueError, match=r"background 0\.\.255"):
        make_grid([noise(2, 2)], background=256)


def test_grid_from_files(tmp_path: Path) -> None:
    paths = []
    for name in ["chelsea.jpg", "brick.jpg", "coins.png", "grass.png"]:
        paths.append(tmp_path / name)
        paths[-1].write_bytes((SAMPLES / name).read_bytes())
    out = grid_from_files(paths * 2, tmp_path / "grid.png", columns=3)
    assert out == tmp_path / "grid.png"
    grid = load(out)
    expected = make_grid([load(p) for p in paths * 2], columns=3)
    assert np.array_equal(grid, expected)
    assert sorted(os.listdir(tmp_path)) == sorted([p.name for p in paths] + ["grid.png"])


def test_grid_from_files_errors(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match=r"missing\.png: no such file"):
        grid_from_files([tmp_path / "missing.png"], tmp_path / "grid.png")
    with pytest.raises(ImageError, match="needs an image extension"):
        grid_from_files([SAMPLES / "coins.png"], tmp_path / "grid")
    assert not (tmp_path / "grid.png").exists()


def test_picture_repr_png_is_a_png_of_the_image_as_displayed():
    image = np.zeros((3, 5), np.uint16)
    image[1, 2] = 65535
    picture = Picture(image)

    png = picture._repr_png_()

    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    decoded = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(decoded, to_bgr8(image))
    assert repr(picture) == "Picture(5x3 uint16)"
