"""The results grid: images converted to 8-bit BGR and laid out like the notebook's view."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from zimg._errors import ImageError
from zimg._lazy import LazyModule
from zimg.images import encode, load, write_atomic

cv2: Any = LazyModule("cv2")  # imported when an image is decoded or encoded

__all__ = ["Picture", "grid_from_files", "make_grid", "to_bgr8"]

Image = NDArray[Any]


def to_bgr8(image: Image) -> Image:
    """Convert an image to 8-bit BGR for display.

    Gray becomes three equal channels; BGRA is composited on white; 16-bit keeps its high byte
    (``>> 8``); float is taken as 0..1 and scaled by 255, clipped.

    Returns:
        A new (h, w, 3) uint8 array.

    Raises:
        ImageError: an empty image, a 2-channel or >4-channel image, or another dtype.
    """
    if image.size == 0 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] > 4):
        raise ImageError(f"cannot display an image of shape {image.shape}")
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    elif image.dtype.kind == "f":
        image = np.rint(np.clip(image, 0.0, 1.0) * 255).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise ImageError(f"cannot display a {image.dtype} image (uint8, uint16 or float)")
    channels = 1 if image.ndim == 2 else image.shape[2]
    if channels == 1:
        gray = image.reshape(image.shape[:2])
        return np.repeat(gray[:, :, np.newaxis], 3, axis=2)
    if channels == 2:
        raise ImageError("cannot display a 2-channel image")
    if channels == 3:
        return image.copy()
    alpha = image[:, :, 3:].astype(np.float32) / 255
    over = image[:, :, :3].astype(np.float32) * alpha + 255 * (1 - alpha)
    return np.rint(over).astype(np.uint8)


class Picture:
    """An image that Jupyter shows inline: ``Picture(make_grid(results))`` as a cell's value.

    It holds the array as given (``image``); the notebook asks for ``_repr_png_``, which
    encodes it for display with :func:`to_bgr8`, so 16-bit, float, gray and BGRA images show too.
    """

    __slots__ = ("image",)

    def __init__(self, image: Image) -> None:
        self.image = image

    def __repr__(self) -> str:
        return f"Picture({self.image.shape[1]}x{self.image.shape[0]} {self.image.dtype})"

    def _repr_png_(self) -> bytes:
        """The image as PNG bytes, for Jupyter (colours as cv2.imwrite would save them).

        Raises:
            ImageError: an image that cannot be displayed (see :func:`to_bgr8`).
        """
        return encode(to_bgr8(self.image), ".png").tobytes()


def _fit(image: Image, cell_w: int, cell_h: int) -> Image:
    """Scale ``image`` (8-bit BGR) with INTER_AREA to the largest size that fits the cell."""
    h, w = image.shape[:2]
    size = (max(1, min(cell_w, round(w * cell_h / h))), max(1, min(cell_h, round(h * cell_w / w))))
    if size == (w, h):
        return image
    out: Image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    return out


def make_grid(
    images: Sequence[Image],
    *,
    columns: int = 4,
    cell_width: int = 320,
    pad: int = 4,
    background: int = 255,
) -> Image:
    """Lay images out like the notebook: a grid, ``columns`` wide, row by row.

    Every image goes through :func:`to_bgr8` and is scaled to fit a ``cell_width`` x
    ``cell_height`` cell, centred. ``cell_height`` fits the tallest aspect ratio at full width,
    capped at 4 * ``cell_width``. Cells are ``pad`` pixels apart, with no outer margin, so the
    grid is ``rows * cell_height + (rows - 1) * pad`` high, with ``min(len(images), columns)``
    columns.

    Returns:
        An (H, W, 3) uint8 BGR image.

    Raises:
        ValueError: no images, or columns or cell_width < 1, pad < 0, background not 0..255.
        ImageError: an image that cannot be displayed.
    """
    if not images:
        raise ValueError("make_grid needs at least one image, got none")
    if columns < 1 or cell_width < 1 or pad < 0 or not 0 <= background <= 255:
        raise ValueError(
            f"make_grid needs columns >= 1, cell_width >= 1, pad >= 0 and background 0..255, "
            f"got {columns}, {cell_width}, {pad}, {background}"
        )
    shown = [to_bgr8(image) for image in images]
    tallest = max(image.shape[0] / image.shape[1] for image in shown)
    cell_h = max(1, min(4 * cell_width, round(cell_width * tallest)))
    cols = min(len(shown), columns)
    rows = math.ceil(len(shown) / cols)
    grid = np.full(
        (rows * cell_h + (rows - 1) * pad, cols * cell_width + (cols - 1) * pad, 3),
        background,
        dtype=np.uint8,
    )
    for i, image in enumerate(shown):
        fitted = _fit(image, cell_width, cell_h)
        fh, fw = fitted.shape[:2]
        y = (i // cols) * (cell_h + pad) + (cell_h - fh) // 2
        x = (i % cols) * (cell_width + pad) + (cell_width - fw) // 2
        grid[y : y + fh, x : x + fw] = fitted
    return grid


def grid_from_files(
    paths: Sequence[str | os.PathLike[str]], out: str | os.PathLike[str], *, columns: int = 4
) -> Path:
    """Load ``paths``, lay them out with :func:`make_grid` and write the grid to ``out``.

    Each image is shrunk to the cell width as it is loaded, so memory stays small.

    Returns:
        ``out`` as a Path.

    Raises:
        ImageError: a file cannot be loaded, or ``out`` has no usable image extension.
        ValueError: no paths, or columns < 1.
        OSError: ``out`` cannot be written.
    """
    target = Path(out)
    if not target.suffix:
        raise ImageError(f"{target}: needs an image extension such as .png or .jpg")
    if columns < 1:
        raise ValueError(f"columns must be >= 1, got {columns}")
    cell_width = 320
    thumbs = []
    for path in paths:
        image = to_bgr8(load(path))
        thumbs.append(_fit(image, cell_width, 4 * cell_width))
    grid = make_grid(thumbs, columns=columns, cell_width=cell_width)
    write_atomic(target, encode(grid, target.suffix, name=str(target)))
    return target
