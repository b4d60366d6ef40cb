"""The registry of named image ops: pure functions ``ndarray -> ndarray`` with keyword params."""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import inspect
import math
import re
import string
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, overload

import cv2
import numpy as np
from numpy.typing import NDArray

from zimg._errors import OpError

__all__ = [
    "DEFAULT_PIPELINE",
    "OpSpec",
    "get_op",
    "load_module",
    "op",
    "parse_op",
    "registered_ops",
    "run_pipeline",
    "validate",
]

Image = NDArray[Any]
F = TypeVar("F", bound=Callable[..., Image])

_SYNTAX = (
    "NAME[:KEY=VALUE[,KEY=VALUE...]], e.g. threshold:thresh=100,type=binary or label:org=10/30"
)
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_INT = re.compile(r"[+-]?\d+\Z")
_FLOAT = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\Z")
_MAX_OUTPUT_PIXELS = 200_000_000  # same bound as images.DEFAULT_MAX_PIXELS
_INT32 = 2**31 - 1  # OpenCV takes C ints
_MAX_KSIZE = 1001  # GaussianBlur allocates and runs a ksize-long kernel


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_value(name: str, key: str, value: object) -> Any:
    """Return ``value`` as a param value (lists become tuples) or raise OpError."""
    if isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple) and all(_is_number(v) for v in value):
        return tuple(value)
    raise OpError(
        f"op {name!r}: param {key!r} must be an int, float, str, bool or tuple of numbers, "
        f"got {value!r}"
    )


@dataclass(frozen=True)
class OpSpec:
    """One step of a pipeline: an op name and its keyword params.

    Param values are int, float, str, bool or tuples of numbers; the constructor checks this.
    """

    name: str
    params: dict[str, Any]

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise OpError(f"op name must be an identifier, got {self.name!r}")
        if not isinstance(self.params, Mapping):
            raise OpError(f"op {self.name!r}: params must be a dict, got {self.params!r}")
        checked = {}
        for key, value in self.params.items():
            if not isinstance(key, str) or not _NAME.match(key):
                raise OpError(f"op {self.name!r}: param name must be an identifier, got {key!r}")
            checked[key] = _check_value(self.name, key, value)
        object.__setattr__(self, "params", checked)

    def to_wire(self) -> list[Any]:
        """Return ``[name, params]``, a term the wire codec can carry."""
        return [self.name, dict(self.params)]

    @classmethod
    def from_wire(cls, obj: object) -> OpSpec:
        """Rebuild an OpSpec from :meth:`to_wire` output.

        Raises:
            OpError: ``obj`` is not ``[name, params]`` with valid types.
        """
        if not isinstance(obj, list | tuple) or len(obj) != 2:
            raise OpError(f"an op on the wire must be [name, params], got {obj!r:.200}")
        name, params = obj
        return cls(name, params)


@dataclass(frozen=True)
class _Entry:
    fn: Callable[..., Image]
    params: frozenset[str]  # keyword params a user may set
    takes_node: bool
    any_params: bool  # the op takes **kwargs


_REGISTRY: dict[str, _Entry] = {}


def _entry(name: str, fn: Callable[..., Image]) -> _Entry:
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError) as exc:
        raise OpError(f"op {name!r}: cannot read the signature of {fn!r}") from exc
    params = list(sig.parameters.values())
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    if not params or params[0].kind not in positional:
        raise OpError(f"op {name!r}: the first parameter must be the image (positional)")
    keywords = {
        p.name
        for p in params[1:]
        if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    }
    return _Entry(
        fn=fn,
        params=frozenset(keywords - {"node"}),
        takes_node="node" in keywords,
        any_params=any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params),
    )


@overload
def op(name: F) -> F: ...
@overload
def op(name: str | None = None) -> Callable[[F], F]: ...
def op(name: str | F | None = None) -> F | Callable[[F], F]:
    """Register an op under ``name`` (default: the function's ``__name__``).

    The op receives a read-only image first, then keyword params; it must return a new array
    and never draw on its input (copy first). An op that declares a keyword ``node`` is given
    the worker's node name by :func:`run_pipeline`. Usable as ``@op`` or ``@op("name")``.

    Raises:
        OpError: the name is not an identifier, the function takes no image, or another
            function is already registered under that name.
    """
    if callable(name):
        return op(None)(name)

    def register(fn: F) -> F:
        key = fn.__name__ if name is None else name
        if not isinstance(key, str) or not _NAME.match(key):
            raise OpError(f"op name must be an identifier, got {key!r}")
        old = _REGISTRY.get(key)
        if old is not None and _qualname(old.fn) != _qualname(fn):
            raise OpError(f"op {key!r} is already registered by {_qualname(old.fn)}")
        _REGISTRY[key] = _entry(key, fn)
        return fn

    return register


def _qualname(fn: Callable[..., Any]) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"


def _lookup(name: str) -> _Entry:
    entry = _REGISTRY.get(name)
    if entry is None:
        raise OpError(f"unknown op {name!r}; known: {', '.join(registered_ops())}")
    return entry


def get_op(name: str) -> Callable[..., Image]:
    """Return the function registered as ``name``.

    Raises:
        OpError: no op has that name; the message lists the known ones.
    """
    return _lookup(name).fn


def registered_ops() -> list[str]:
    """Return the names of all registered ops, sorted."""
    return sorted(_REGISTRY)


def _parse_value(text: str) -> Any:
    bare = text.strip()
    if bare.lower() in ("true", "false"):
        return bare.lower() == "true"
    parts = [p.strip() for p in bare.split("/")]
    if all(_INT.match(p) or _FLOAT.match(p) for p in parts):
        numbers = [int(p) if _INT.match(p) else float(p) for p in parts]
        return tuple(numbers) if len(numbers) > 1 else numbers[0]
    return text


def parse_op(text: str) -> OpSpec:
    """Parse the CLI form ``NAME[:KEY=VALUE[,KEY=VALUE...]]``.

    A value is a bool (``true``/``false``, any case), an int, a float, a tuple of numbers
    written with ``/`` (``color=255/0/0``) or else a string (which cannot contain a comma).

    Returns:
        The OpSpec; whether the op exists is checked later, by :func:`validate`.

    Raises:
        OpError: the text does not follow the syntax; the message quotes it.
    """
    name, sep, rest = text.partition(":")
    name = name.strip()

    def bad(why: str) -> OpError:
        return OpError(f"bad op {text!r}: {why}; expected {_SYNTAX}")

    if not _NAME.match(name):
        raise bad(f"op name {name!r} is not an identifier")
    params: dict[str, Any] = {}
    if sep:
        for item in rest.split(","):
            key, eq, value = item.partition("=")
            key = key.strip()
            if not eq or not _NAME.match(key):
                raise bad(f"{item!r} is not KEY=VALUE")
            if key in params:
                raise bad(f"param {key!r} given twice")
            params[key] = _parse_value(value)
    return OpSpec(name, params)


def _check_params(spec: OpSpec, entry: _Entry) -> None:
    if "node" in spec.params and entry.takes_node:
        raise OpError(f"op {spec.name!r}: 'node' is set by the worker, not by a param")
    unknown = sorted(set(spec.params) - entry.params)
    if unknown and not entry.any_params:
        accepted = ", ".join(sorted(entry.params)) or "none"
        raise OpError(f"op {spec.name!r} has no param {unknown[0]!r}; accepted params: {accepted}")


def validate(specs: Sequence[OpSpec]) -> None:
    """Check that every op exists and takes every param given.

    Raises:
        OpError: an unknown op, or a param the op does not accept (the message names it and
            lists the accepted params).
    """
    for spec in specs:
        _check_params(spec, _lookup(spec.name))


def run_pipeline(image: Image, specs: Sequence[OpSpec], *, node: str) -> Image:
    """Apply ``specs`` in order to ``image`` and return the result. ``image`` is never modified.

    Args:
        image: the input; it may be read-only.
        specs: the ops to apply; checked with :func:`validate` first.
        node: the node name given to ops that declare a ``node`` keyword.

    Returns:
        The last op's output (the input itself, viewed read-only, if ``specs`` is empty).

    Raises:
        OpError: validation failed, an op cannot handle the image, or returned a non-array.
    """
    if not isinstance(image, np.ndarray):
        raise OpError(f"run_pipeline needs a numpy array, got {type(image).__name__}")
    entries = [_lookup(spec.name) for spec in specs]
    for spec, entry in zip(specs, entries, strict=True):
        _check_params(spec, entry)
    result = image
    for spec, entry in zip(specs, entries, strict=True):
        view = result.view()
        view.flags.writeable = False  # an op that draws on its input fails loudly
        kwargs = dict(spec.params)
        if entry.takes_node:
            kwargs["node"] = node
        result = entry.fn(view, **kwargs)
        if not isinstance(result, np.ndarray):
            raise OpError(f"op {spec.name!r} returned {type(result).__name__}, not an ndarray")
    if result is image:
        result = image.view()
        result.flags.writeable = False
    return result


def load_module(module_name: str) -> None:
    """Import ``module_name`` so the ops it defines register (``zimg worker --import``).

    Only for names a user typed: never call it with a name that came from a message.

    Raises:
        OpError: the name is not a dotted module name, or importing it failed.
    """
    if module_name.endswith(".py"):
        _load_file(module_name)
        return
    if not all(_NAME.match(part) for part in module_name.split(".")):
        raise OpError(
            f"--import wants a dotted module name like mypkg.ops or a file.py, got {module_name!r}"
        )
    try:
        importlib.import_module(module_name)
    except ImportError as exc:
        raise OpError(f"cannot import op module {module_name!r}: {exc}") from exc
    except Exception as exc:
        raise OpError(
            f"importing op module {module_name!r} failed: {type(exc).__name__}: {exc}"
        ) from exc


def _load_file(path: str) -> None:
    """Run a Python file as a module named after its stem (not ``__main__``), once."""
    file = Path(path).resolve()
    name = file.stem
    if not _NAME.match(name):
        raise OpError(f"cannot import {path!r}: {name!r} is not a valid module name")
    existing = sys.modules.get(name)
    if existing is not None and getattr(existing, "__file__", None) == str(file):
        return
    spec = importlib.util.spec_from_file_location(name, file)
    if spec is None or spec.loader is None or not file.is_file():
        raise OpError(f"cannot import {path!r}: no such Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[name]
        raise OpError(f"importing {path!r} failed: {type(exc).__name__}: {exc}") from exc


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
        raise OpError(f"{name}: {key} must be a finite number, got {value!r:.40}")
    if not minimum <= number <= maximum:
        raise OpError(f"{name}: {key} must be in [{minimum}, {maximum}], got {value!r}")
    return number


def _integer(name: str, key: str, value: object, *, minimum: int, maximum: int = _INT32) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not minimum <= value <= maximum:
        raise OpError(
            f"{name}: {key} must be an integer in [{minimum}, {maximum}], got {value!r:.40}"
        )
    return value


def _choice(name: str, key: str, value: object, choices: Mapping[str, int]) -> int:
    if not isinstance(value, str) or value not in choices:
        raise OpError(f"{name}: {key} must be one of {', '.join(choices)}, got {value!r}")
    return choices[value]


# ---- the shipped ops -------------------------------------------------------------------------

_THRESHOLD_TYPES = {
    "binary": cv2.THRESH_BINARY,
    "binary_inv": cv2.THRESH_BINARY_INV,
    "trunc": cv2.THRESH_TRUNC,
    "tozero": cv2.THRESH_TOZERO,
    "tozero_inv": cv2.THRESH_TOZERO_INV,
}

_INTERPOLATIONS = {
    "nearest": cv2.INTER_NEAREST,
    "linear": cv2.INTER_LINEAR,
    "area": cv2.INTER_AREA,
    "cubic": cv2.INTER_CUBIC,
    "lanczos": cv2.INTER_LANCZOS4,
}


@op()
def threshold(
    image: Image, *, thresh: float = 127, maxval: float = 255, type: str = "binary"
) -> Image:
    """Apply ``cv2.threshold`` to every channel (8/16-bit unsigned, int16, float images).

    Args:
        image: the input.
        thresh: the threshold value.
        maxval: the value given to pixels that pass (binary types).
        type: binary, binary_inv, trunc, tozero or tozero_inv.

    Returns:
        A new image of the same dtype.

    Raises:
        OpError: a bad param, or an image OpenCV cannot threshold.
    """
    _check_image("threshold", image)
    t = _number("threshold", "thresh", thresh)
    m = _number("threshold", "maxval", maxval)
    kind = _choice("threshold", "type", type, _THRESHOLD_TYPES)
    out: Image = _cv2_call("threshold", image, lambda: cv2.threshold(image, t, m, kind)[1])
    return out


def _text(template: object, node: str) -> str:
    if not isinstance(template, str):
        raise OpError(f"label: text must be a string, got {template!r}")
    try:
        fields = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise OpError(f"label: bad text {template!r}: {exc}; write {{{{ for a brace") from exc
    for _, field, spec, conversion in fields:
        if field is not None and (field != "node" or spec or conversion):
            raise OpError(f"label: text {template!r} may use only {{node}}, got {{{field}}}")
    return template.format(node=node)


@op()
def label(
    image: Image,
    *,
    node: str,
    text: str = "{node}",
    org: tuple[int, int] = (10, 30),
    scale: float = 1.0,
    color: float | tuple[float, ...] = (0, 0, 0),
    thickness: int = 2,
) -> Image:
    """Write text on a copy with ``cv2.putText`` in FONT_HERSHEY_SIMPLEX, as the notebook does.

    ``color`` follows OpenCV's scalar rules: missing channels are 0, so on a BGRA image a
    3-tuple draws with alpha 0 (give 4 numbers to keep the text opaque); on a gray image only
    the first number counts.

    Args:
        image: the input (gray, BGR or BGRA; 8- or 16-bit).
        node: the worker's node name (set by :func:`run_pipeline`).
        text: the text; ``{node}`` is replaced by the node name.
        org: bottom-left corner of the text, (x, y).
        scale: font scale.
        color: 1 to 4 numbers, or one number.
        thickness: stroke thickness in pixels.

    Returns:
        A new image with the text drawn.

    Raises:
        OpError: a bad param, or an image OpenCV cannot draw on.
    """
    _check_image("label", image)
    words = _text(text, node)
    if not (isinstance(org, tuple) and len(org) == 2) or not all(
        isinstance(v, int) and not isinstance(v, bool) and abs(v) <= _INT32 for v in org
    ):
        raise OpError(f"label: org must be two integers x/y, got {org!r}")
    size = _number("label", "scale", scale, minimum=0, maximum=1000)
    colour = (color,) if _is_number(color) else color
    if not (isinstance(colour, tuple) and 1 <= len(colour) <= 4):
        raise OpError(f"label: color must be 1 to 4 numbers such as 255/0/0, got {color!r}")
    scalar = tuple(_number("label", "color", v) for v in colour)
    width = _integer("label", "thickness", thickness, minimum=1, maximum=32767)  # cv2's limit
    out = image.copy()
    _cv2_call(
        "label",
        image,
        lambda: cv2.putText(out, words, org, cv2.FONT_HERSHEY_SIMPLEX, size, scalar, width),
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


@op()
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
        OpError: no size or both a size and a scale, a bad value, or a result over 200 Mpixel.
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
    out: Image = _cv2_call("resize", image, lambda: cv2.resize(image, size, interpolation=mode))
    return out


@op()
def blur(image: Image, *, ksize: int = 5, sigma: float = 0.0) -> Image:
    """Gaussian blur with ``cv2.GaussianBlur(image, (ksize, ksize), sigma)``.

    Args:
        image: the input.
        ksize: kernel size, an odd positive integer.
        sigma: Gaussian sigma; 0 lets OpenCV derive it from ``ksize``.

    Returns:
        The blurred image.

    Raises:
        OpError: an even or non-positive ksize, a negative sigma, or an unsupported image.
    """
    _check_image("blur", image)
    k = _integer("blur", "ksize", ksize, minimum=1, maximum=_MAX_KSIZE)
    if k % 2 == 0:
        raise OpError(f"blur: ksize must be odd, got {k}")
    s = _number("blur", "sigma", sigma, minimum=0)
    out: Image = _cv2_call("blur", image, lambda: cv2.GaussianBlur(image, (k, k), s))
    return out


DEFAULT_PIPELINE: tuple[OpSpec, ...] = (OpSpec("threshold", {}), OpSpec("label", {}))
"""The notebook's job: ``threshold(127, 255, binary)`` then the node name at (10, 30)."""
