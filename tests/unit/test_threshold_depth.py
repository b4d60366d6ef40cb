"""``threshold``'s default thresh and maxval follow the image's depth; given ones do not
(issue 15 §2 item 8: a 16-bit image came out as 0/255, black to the eye)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from zimg import ops
from zimg.ops import OpSpec, run_pipeline, validate

RAMP8 = np.arange(256, dtype=np.uint8).reshape(16, 16)


@pytest.mark.parametrize(
    ("dtype", "thresh", "maxval"),
    [
        (np.uint8, 127, 255),
        (np.uint16, 32639, 65535),  # 127 * 257, 255 * 257
        (np.int16, 127 * 32767 / 255, 32767),
        (np.float32, 0.5, 1.0),
        (np.float64, 0.5, 1.0),
    ],
)
def test_defaults_follow_the_depth(dtype: type, thresh: float, maxval: float) -> None:
    info = np.finfo(dtype) if np.dtype(dtype).kind == "f" else None
    top = 1.0 if info is not None else np.iinfo(dtype).max
    image = np.linspace(0, top, 4096).astype(dtype).reshape(64, 64)
    result = ops.threshold(image)
    assert result.dtype == image.dtype
    assert np.array_equal(result, np.where(image > thresh, maxval, 0).astype(dtype))
    assert set(np.unique(result).tolist()) == {0, maxval}


def test_uint16_copy_of_an_8bit_image_gives_the_same_pixels() -> None:
    wide = RAMP8.astype(np.uint16) * 257  # the usual 8 -> 16-bit widening
    assert np.array_equal(ops.threshold(wide), ops.threshold(RAMP8).astype(np.uint16) * 257)


def test_uint16_default_is_not_black() -> None:
    image = np.array([[0, 1000], [40000, 65535]], np.uint16)
    assert ops.threshold(image).tolist() == [[0, 0], [65535, 65535]]


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16, np.float32])
def test_given_values_stay_as_given(dtype: type) -> None:
    image = np.array([[0, 50], [100, 200]], dtype)
    expected = cv2.threshold(image, 60, 200, cv2.THRESH_BINARY)[1]
    assert np.array_equal(ops.threshold(image, thresh=60, maxval=200), expected)


def test_one_given_the_other_scaled() -> None:
    image = np.array([[0, 1000], [40000, 65535]], np.uint16)
    assert ops.threshold(image, thresh=500).tolist() == [[0, 65535], [65535, 65535]]
    assert ops.threshold(image, maxval=7).tolist() == [[0, 0], [7, 7]]


def test_pipeline_and_validate_leave_the_defaults_to_the_image() -> None:
    validate([OpSpec("threshold", {}), OpSpec("threshold", {"thresh": 3})])
    image = np.array([[0, 65535]], np.uint16)
    out = run_pipeline(image, [OpSpec("threshold", {})], node="n1")
    assert out.tolist() == [[0, 65535]]


def test_in_place_keeps_the_scaled_defaults() -> None:
    image = np.array([[0, 40000]], np.uint16)
    out = ops.threshold(image, in_place=True)
    assert out is image
    assert image.tolist() == [[0, 65535]]
