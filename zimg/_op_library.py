"""The shipped ops: threshold, label, grayscale, resize and blur, registered by zimg.ops."""

from __future__ import annotations

import contextlib
import math
import string
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from zimg._errors import OpError
from zimg._lazy import LazyModule
from zimg._op_registry import MAX_STR_CHARS, Image, is_number, max_output_bytes, op, short_repr

cv2: Any = LazyModule("cv2")  # imported when an image is decoded or encoded

__all__ = ["blur", "grayscale", "label", "resize", "threshold"]

_MAX_OUTPUT_PIXELS = 200_000_000  # same bound as images.DEFAULT_MAX_PIXELS
_INT32 = 2**31 - 1  # OpenCV takes C ints
# GaussianBlur is separable: two passes of ksize taps per sample, whatever the sigma. Measured
# on one core (OpenCV 4.14, 2000 x 2000 x 3): 0.3 ns per tap and sample for uint8, float32 and
# uint16 up to ksize 255, 1.2 ns for float64; beyond 255 it slows to 1.3-2.7 ns (ksize 1001 took
# 15 s on that image). So ksize stops at 255, and ksize * samples at 2**31: at most ~0.7 s per
# blur for 8-bit images, ~2.5 s for float64, on any image a worker accepts.
_MAX_KSIZE = 255
_BLUR_BUDGET = 2**31  # ksize * height * width * channels
# putText draws each stroke as a disc-capped line `thickness` pixels wide: 256 characters at
# thickness 32767 took 1.3 s on 4 Mpx (clipped to the image, so more on larger ones); at 255,
# 0.05 s, whatever the image size.
_MAX_THICKNESS = 255


# ---- helpers for the shipped ops -------------------------------------------------------------


def _check_image(name: str, image: Image) -> None:
    if not isinstance(image, np.ndarray):
        raise OpError(f"{name}: expected a numpy array, got {type(image).__name__}")
    if image.dtype.kind not in "uif":
        raise OpError(f"{name}: cannot handle a {image.dtype} image (needs integers or floats)")
    if image.ndim not in (2, 3) or (image.ndim == 3 and not 1 <= image.shape[2] <= 4):
        raise OpError(
            f"{name}: expected an image of shape (h, w) or (h, w, 1..4), got {image.shape}"
        )
    if image.size == 0:
        raise OpError(f"{name}: the image is empty (shape {image.shape})")


def _cv2_call(name: str, image: Image, fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except cv2.error as exc:
        why = getattr(exc, "err", "") or str(exc).strip().splitlines()[-1]
        raise OpError(
            f"{name}: OpenCV cannot handle this {image.dtype} image of shape {image.shape}: {why}"
        ) from exc


def _number(
    name: str, key: str, value: object, *, minimum: float = -math.inf, maximum: float = math.inf
) -> float:
    number = math.nan
    if isinstance(value, int | float) and not isinstance(value, bool):
        with contextlib.suppress(OverflowError):  # an int beyond the float range
            number = float(value)
    if not math.isfinite(number):
        raise OpError(f"{name}: {key} must be a finite number, got {short_repr(value)}")
    if not minimum <= number <= maximum:
        raise OpError(f"{name}: {key} must be in [{minimum}, {maximum}], got {short_repr(value)}")
    return number


def _integer(name: str, key: str, value: object, *, minimum: int, maximum: int = _INT32) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not minimum <= value <= maximum:
        raise OpError(
            f"{name}: {key} must be an integer in [{minimum}, {maximum}], got {short_repr(value)}"
        )
    return value


def _option(name: str, key: str, value: object, choices: Mapping[str, str]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise OpError(f"{name}: {key} must be one of {', '.join(choices)}, got {short_repr(value)}")
    return value


def _choice(name: str, key: str, value: object, choices: Mapping[str, str]) -> int:
    """The OpenCV constant that ``value`` names among ``choices`` (option -> constant name)."""
    constant: int = getattr(cv2, choices[_option(name, key, value, choices)])
    return constant


# ---- checks without an image (``@op(check=...)``: zimg.ops.validate runs them up front) -----


def _check_threshold(params: Mapping[str, Any]) -> None:
    for key in ("thresh", "maxval"):
        if params[key] is not None:  # None: scaled to the image's depth when it runs
            _number("threshold", key, params[key])
    _option("threshold", "type", params["type"], _THRESHOLD_TYPES)


def _label_params(
    org: object, scale: object, color: object, thickness: object
) -> tuple[tuple[int, int], float, tuple[float, ...], int]:
    """``label``'s org, scale, colour and thickness, checked: what putText takes."""
    if not (isinstance(org, tuple) and len(org) == 2) or not all(
        isinstance(v, int) and not isinstance(v, bool) and abs(v) <= _INT32 for v in org
    ):
        raise OpError(f"label: org must be two integers x/y, got {short_repr(org)}")
    size = _number("label", "scale", scale, minimum=0, maximum=1000)
    colour = (color,) if is_number(color) else color
    if not (isinstance(colour, tuple) and 1 <= len(colour) <= 4):
        raise OpError(
            f"label: color must be 1 to 4 numbers such as 255/0/0, got {short_repr(color)}"
        )
    scalar = tuple(_number("label", "color", v) for v in colour)
    width = _integer("label", "thickness", thickness, minimum=1, maximum=_MAX_THICKNESS)
    return (org[0], org[1]), size, scalar, width


def _check_label(params: Mapping[str, Any]) -> None:
    _text(params["text"], "node")
    _label_params(params["org"], params["scale"], params["color"], params["thickness"])


def _check_resize(params: Mapping[str, Any]) -> None:
    _option("resize", "interpolation", params["interpolation"], _INTERPOLATIONS)
    width, height, scale = params["width"], params["height"], params["scale"]
    if scale is not None:
        if width is not None or height is not None:
            raise OpError("resize: give either scale or width/height, not both")
        _number("resize", "scale", scale, minimum=0, maximum=100_000)
    elif width is None and height is None:
        raise OpError("resize: give width, height or scale (e.g. resize:width=320)")
    for key, value in (("width", width), ("height", height)):
        if value is not None:
            _integer("resize", key, value, minimum=1)


def _blur_ksize(ksize: object) -> int:
    k = _integer("blur", "ksize", ksize, minimum=1, maximum=_MAX_KSIZE)
    if k % 2 == 0:
        raise OpError(f"blur: ksize must be odd, an integer in [1, {_MAX_KSIZE}], got {k}")
    return k


def _check_blur(params: Mapping[str, Any]) -> None:
    _blur_ksize(params["ksize"])
    _number("blur", "sigma", params["sigma"], minimum=0)


# ---- the shipped ops -------------------------------------------------------------------------

# Option values and the names of their OpenCV constants (looked up when an op runs).
_THRESHOLD_TYPES = {
    "binary": "THRESH_BINARY",
    "binary_inv": "THRESH_BINARY_INV",
    "trunc": "THRESH_TRUNC",
    "tozero": "THRESH_TOZERO",
    "tozero_inv": "THRESH_TOZERO_INV",
}

_INTERPOLATIONS = {
    "nearest": "INTER_NEAREST",
    "linear": "INTER_LINEAR",
    "area": "INTER_AREA",
    "cubic": "INTER_CUBIC",
    "lanczos": "INTER_LANCZOS4",
}


def _threshold_defaults(dtype: np.dtype[Any]) -> tuple[float, float]:
    """``threshold``'s default thresh and maxval for images of ``dtype``: the notebook's 127 and
    255 for 8 bits, scaled to the full range of other integers (127/255 and 255/255 of its
    maximum: 32639 and 65535 for uint16, so a 16-bit copy of an 8-bit image, x * 257, gives the
    same pixels), and 0.5 and 1.0 for floats, taken to be in [0, 1]."""
    if dtype.kind == "f":
        return 0.5, 1.0
    top = float(np.iinfo(dtype).max)
    return 127 * top / 255, top


@op(check=_check_threshold)
def threshold(
    image: Image,
    *,
    thresh: float | None = None,
    maxval: float | None = None,
    type: str = "binary",
    in_place: bool = False,
) -> Image:
    """Apply ``cv2.threshold`` to every channel (8/16-bit unsigned, int16, float images).

    Left out, ``thresh`` and ``maxval`` follow the image's depth: 127 and 255 for uint8, 32639
    and 65535 for uint16 (x 257), 16319.25 and 32767 for int16, 0.5 and 1.0 for float images
    (taken to be in [0, 1]). Given values are used as they are.

    Args:
        image: the input.
        thresh: the threshold value (default: 127/255 of the depth's full scale).
        maxval: the value given to pixels that pass, binary types (default: the full scale).
        type: binary, binary_inv, trunc, tozero or tozero_inv.
        in_place: write on ``image`` itself (set by run_pipeline for arrays it may write on).

    Returns:
        A new image of the same dtype, or ``image`` itself with ``in_place``.

    Raises:
        OpError: a bad param, or an image OpenCV cannot threshold.
    """
    _check_image("threshold", image)
    default_t, default_m = _threshold_defaults(image.dtype)
    t = default_t if thresh is None else _number("threshold", "thresh", thresh)
    m = default_m if maxval is None else _number("threshold", "maxval", maxval)
    kind = _choice("threshold", "type", type, _THRESHOLD_TYPES)
    # In place, OpenCV writes into ``image`` and returns it; it would return a new array if it
    # could not use it, so its answer is what we return. A strided view always gets a new one.
    dst = image if in_place and image.flags.c_contiguous else None
    out: Image = _cv2_call("threshold", image, lambda: cv2.threshold(image, t, m, kind, dst=dst)[1])
    return out


def _text(template: object, node: str) -> str:
    if not isinstance(template, str):
        raise OpError(f"label: text must be a string, got {short_repr(template)}")
    if len(template) > MAX_STR_CHARS:
        raise OpError(
            f"label: text of {len(template)} characters, over the limit of {MAX_STR_CHARS}"
        )
    shown = short_repr(template)
    try:
        fields = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise OpError(f"label: bad text {shown}: {exc}; write {{{{ for a brace") from exc
    for _, field, spec, conversion in fields:
        if field is not None and (field != "node" or spec or conversion):
            raise OpError(
                f"label: text {shown} may use only {{node}}, got {{{short_repr(field, 40)}}}"
            )
    return template.format(node=node)


@op(check=_check_label)
def label(
    image: Image,
    *,
    node: str,
    text: str = "{node}",
    org: tuple[int, int] = (10, 30),
    scale: float = 1.0,
    color: float | tuple[float, ...] = (0, 0, 0),
    thickness: int = 2,
    in_place: bool = False,
) -> Image:
    """Write text on a copy with ``cv2.putText`` in FONT_HERSHEY_SIMPLEX, as the notebook does.

    ``color`` follows OpenCV's scalar rules: missing channels are 0, so on a BGRA image a
    3-tuple draws with alpha 0 (give 4 numbers to keep the text opaque); on a gray image only
    the first number counts.

    Args:
        image: the input (gray, BGR or BGRA; 8- or 16-bit).
        node: the worker's node name (set by :func:`zimg.ops.run_pipeline`).
        text: the text (at most 256 characters); ``{node}`` is replaced by the node name.
        org: bottom-left corner of the text, (x, y).
        scale: font scale.
        color: 1 to 4 numbers, or one number.
        thickness: stroke thickness in pixels, 1 to 255.
        in_place: draw on ``image`` itself (set by run_pipeline for its own intermediates).

    Returns:
        The image with the text drawn: a new one, or ``image`` itself with ``in_place``.

    Raises:
        OpError: a bad param, or an image OpenCV cannot draw on.
    """
    _check_image("label", image)
    words = _text(text, node)
    xy, size, scalar, width = _label_params(org, scale, color, thickness)
    out = image if in_place else image.copy()
    _cv2_call(
        "label",
        image,
        lambda: cv2.putText(out, words, xy, cv2.FONT_HERSHEY_SIMPLEX, size, scalar, width),
    )
    return out


@op()
def grayscale(image: Image) -> Image:
    """Convert BGR or BGRA to gray with ``cv2.cvtColor``; a gray image is returned as a copy.

    Raises:
        OpError: a 2-channel image, or a dtype cvtColor rejects (it takes uint8, uint16, float32).
    """
    _check_image("grayscale", image)
    channels = 1 if image.ndim == 2 else image.shape[2]
    if channels == 1:
        return image.reshape(image.shape[:2]).copy()
    if channels == 2:
        raise OpError("grayscale: cannot convert a 2-channel image (expected gray, BGR or BGRA)")
    code = cv2.COLOR_BGR2GRAY if channels == 3 else cv2.COLOR_BGRA2GRAY
    out: Image = _cv2_call("grayscale", image, lambda: cv2.cvtColor(image, code))
    return out


@op(check=_check_resize)
def resize(
    image: Image,
    *,
    width: int | None = None,
    height: int | None = None,
    scale: float | None = None,
    interpolation: str = "area",
) -> Image:
    """Resize with ``cv2.resize`` to ``width`` and/or ``height`` or by ``scale``.

    Give either ``scale`` or at least one of ``width`` and ``height``; with only one of them the
    aspect ratio is kept (the other side is rounded, and at least 1).

    Args:
        image: the input.
        width: target width in pixels.
        height: target height in pixels.
        scale: factor applied to both sides.
        interpolation: nearest, linear, area, cubic or lanczos.

    Returns:
        The resized image (OpenCV drops a trailing channel axis of size 1).

    Raises:
        OpError: no size or both a size and a scale, a bad value, or a result over 200 Mpixel
            or over :func:`zimg.ops.max_output_bytes` bytes (checked before allocating it).
    """
    _check_image("resize", image)
    h, w = image.shape[:2]
    mode = _choice("resize", "interpolation", interpolation, _INTERPOLATIONS)
    if scale is not None:
        if width is not None or height is not None:
            raise OpError("resize: give either scale or width/height, not both")
        factor = _number("resize", "scale", scale, minimum=0, maximum=100_000)
        size = (max(1, round(w * factor)), max(1, round(h * factor)))
    elif width is not None or height is not None:
        if width is not None:
            new_w = _integer("resize", "width", width, minimum=1)
            new_h = (
                max(1, round(h * new_w / w))
                if height is None
                else _integer("resize", "height", height, minimum=1)
            )
        else:
            new_h = _integer("resize", "height", height, minimum=1)
            new_w = max(1, round(w * new_h / h))
        size = (new_w, new_h)
    else:
        raise OpError("resize: give width, height or scale (e.g. resize:width=320)")
    if size[0] * size[1] > _MAX_OUTPUT_PIXELS:
        raise OpError(f"resize: {size[0]}x{size[1]} exceeds {_MAX_OUTPUT_PIXELS} pixels")
    channels = image.shape[2] if image.ndim == 3 else 1
    nbytes = size[0] * size[1] * channels * image.itemsize
    if nbytes > (limit := max_output_bytes()):
        raise OpError(
            f"resize: {size[0]}x{size[1]} of {channels} {image.dtype} channels is {nbytes} "
            f"bytes, over the limit of {limit} bytes"
        )
    out: Image = _cv2_call("resize", image, lambda: cv2.resize(image, size, interpolation=mode))
    return out


@op(check=_check_blur)
def blur(image: Image, *, ksize: int = 5, sigma: float = 0.0) -> Image:
    """Gaussian blur with ``cv2.GaussianBlur(image, (ksize, ksize), sigma)``.

    The cost is bounded: ``ksize`` is at most 255, and ``ksize`` times the image's samples
    (height * width * channels) at most 2**31 (so ksize 255 up to 8.4 M samples, e.g. 1920 x
    1080 RGB; ksize 85 on a 4K RGB image). Resize first to blur a larger image widely.

    Args:
        image: the input.
        ksize: kernel size, an odd integer from 1 to 255.
        sigma: Gaussian sigma; 0 lets OpenCV derive it from ``ksize``.

    Returns:
        The blurred image.

    Raises:
        OpError: an even, non-positive or too large ksize, a negative sigma, or an
            unsupported image.
    """
    _check_image("blur", image)
    k = _blur_ksize(ksize)
    if k * image.size > _BLUR_BUDGET:
        raise OpError(
            f"blur: ksize {k} on a {image.dtype} image of shape {image.shape} is "
            f"{k * image.size} taps per pass, over the budget of {_BLUR_BUDGET}; "
            f"use ksize <= {max(1, (_BLUR_BUDGET // image.size - 1) | 1)} or resize first"
        )
    s = _number("blur", "sigma", sigma, minimum=0)
    out: Image = _cv2_call("blur", image, lambda: cv2.GaussianBlur(image, (k, k), s))
    return out
