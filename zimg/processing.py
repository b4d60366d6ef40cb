"""What a worker does to one image: read or take it, check its limits, run the ops, encode it.

:func:`process` is the whole of it, with no socket or thread: a worker calls it for each item
of a JOB (``zimg.worker``), and calling it in-process gives the reference output for a test.
"""

from __future__ import annotations

import time
from typing import Any

from zimg import images, ops
from zimg._errors import ImageError, OpError, WireError
from zimg.jobs import JobItem

__all__ = ["process"]


def process(
    item: JobItem,
    mode: str,
    specs: list[ops.OpSpec],
    *,
    node: str,
    max_pixels: int = images.DEFAULT_MAX_PIXELS,
    max_bytes: int = images.DEFAULT_MAX_IMAGE_BYTES,
    deadline: float | None = None,
) -> Any:
    """Run the pipeline on one item: decode if needed, apply ``specs``, encode if needed.

    This is exactly what a worker does, so calling it in-process gives the reference output.
    ``path`` items are read and encoded here too; writing them is :meth:`Worker`'s part.

    Args:
        max_pixels: the largest image decoded (or taken raw), in pixels.
        max_bytes: the largest image decoded (or taken raw), and the largest an op may
            return, in bytes.
        deadline: a ``time.monotonic()`` time after which no op, and no encoding, starts.

    Returns:
        A 1-D uint8 array of the encoded output (``encoded`` and ``path`` modes) or the
        processed image (``raw``).

    Raises:
        ops.DeadlinePassed: ``deadline`` passed before an op or the encoding.
        ZimgError: the image was refused, or an op failed; the message names the item.
    """
    if mode == "path":
        data: Any = images.read_file(item.name)
    elif item.payload is None:
        raise WireError(f"{item.name}: a {mode} item without a payload")
    else:
        data = item.payload
    if mode == "raw":
        image = data
        _check_raw(image, item.name, max_pixels, max_bytes)
    else:
        image = images.decode(data, name=item.name, max_pixels=max_pixels, max_bytes=max_bytes)
    # A decoded image is ours to write on; a raw payload is a view of the received frame.
    try:
        out = ops.run_pipeline(
            image,
            specs,
            node=node,
            consume=mode != "raw",
            deadline=deadline,
            max_bytes=max_bytes,
        )
    except ops.DeadlinePassed:
        raise
    except OpError as exc:
        raise OpError(f"{item.name}: {exc}") from exc
    if mode == "raw":
        return out
    if deadline is not None and time.monotonic() > deadline:  # encoding may take seconds
        raise ops.DeadlinePassed("the deadline passed before encoding")
    return images.encode(out, item.ext, name=item.name)


def _check_raw(image: Any, name: str, max_pixels: int, max_bytes: int) -> None:
    """The limits a decoded image gets, for a raw payload (an image already)."""
    try:
        if image.ndim >= 2 and image.shape[0] * image.shape[1] > max_pixels:
            h, w = image.shape[:2]
            raise ImageError(f"{w}x{h} is {w * h} pixels, over the limit of {max_pixels} pixels")
        images.check_bytes(image, max_bytes)
    except ImageError as exc:
        raise ImageError(f"{name}: {exc}") from None
