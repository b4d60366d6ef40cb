"""The registry of named image ops: pure functions ``ndarray -> ndarray`` with keyword params."""

from __future__ import annotations

import contextlib
import contextvars
import importlib
import importlib.util
import inspect
import re
import reprlib
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence, Sized
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, overload

import numpy as np
from numpy.typing import NDArray

from zimg import images
from zimg._errors import OpError
from zimg._registry import same_source

__all__ = [
    "DEFAULT_PIPELINE",
    "MAX_NAME_CHARS",
    "MAX_OPS",
    "MAX_PARAMS",
    "MAX_SEQUENCE",
    "MAX_STR_CHARS",
    "DeadlinePassed",
    "OpSpec",
    "blur",
    "check_op_count",
    "get_op",
    "grayscale",
    "label",
    "load_module",
    "max_output_bytes",
    "op",
    "parse_op",
    "registered_ops",
    "resize",
    "run_pipeline",
    "short_repr",
    "threshold",
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

# Bounds on a pipeline as a JOB carries it. They keep what one job may ask of a worker small
# and predictable (every op's own params bound its cost: see zimg._op_library), and every
# message that repeats a param short. The client checks the same bounds (``parse_op`` builds an
# OpSpec), so ``zimg send`` refuses such a pipeline up front (exit code 2).
MAX_OPS = 32
"""The most ops in one pipeline. The shipped ops each cost at most a few seconds on the largest
image a worker decodes, so a job's time stays bounded; the job's ``deadline_s`` (checked
between ops) is the bound on the whole."""
MAX_PARAMS = 16
"""The most params of one op."""
MAX_STR_CHARS = 256
"""The longest str param (label text, choices)."""
MAX_SEQUENCE = 16
"""The most numbers in a list/tuple param (colours, points)."""
MAX_NAME_CHARS = 64
"""The longest op or param name."""
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1  # what msgpack carries

_short = reprlib.Repr()
_short.maxlevel, _short.maxstring, _short.maxother = 2, 40, 40
_short.maxlist = _short.maxtuple = _short.maxdict = _short.maxset = 6


def short_repr(value: object, limit: int = 80) -> str:
    """``repr(value)`` shortened for a message: long strings and sequences elided, at most
    ``limit`` characters. Never builds the full repr of a large value."""
    text = _short.repr(value)
    if isinstance(value, list | tuple | dict | str) and len(value) > _short.maxlist:
        text += f" ({len(value)} {'characters' if isinstance(value, str) else 'entries'})"
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _in_range(value: object) -> bool:
    """A float, or an int msgpack can carry."""
    return not isinstance(value, int) or _INT_MIN <= value <= _INT_MAX


def _check_value(name: str, key: str, value: object) -> Any:
    """Return ``value`` as a param value (lists become tuples) or raise OpError."""
    where = f"op {name!r}: param {key!r}"
    if value is None or isinstance(value, bool | int | float):
        if not _in_range(value):
            raise OpError(f"{where}: the integer {short_repr(value)} does not fit in 64 bits")
        return value
    if isinstance(value, str):
        if len(value) > MAX_STR_CHARS:
            raise OpError(
                f"{where} is a string of {len(value)} characters, over the limit of "
                f"{MAX_STR_CHARS}: {short_repr(value)}"
            )
        return value
    if isinstance(value, list | tuple):
        if len(value) > MAX_SEQUENCE:
            raise OpError(
                f"{where} has {len(value)} entries, over the limit of {MAX_SEQUENCE}: "
                f"{short_repr(value)}"
            )
        if all(_is_number(v) and _in_range(v) for v in value):
            return tuple(value)
    raise OpError(
        f"{where} must be None, an int, float, str, bool or up to {MAX_SEQUENCE} numbers, "
        f"got {short_repr(value)}"
    )


def _is_name(name: object) -> bool:
    return isinstance(name, str) and len(name) <= MAX_NAME_CHARS and bool(_NAME.match(name))


@dataclass(frozen=True)
class OpSpec:
    """One step of a pipeline: an op name and its keyword params.

    Param values are None, int, float, str, bool or tuples of numbers; the constructor checks
    this and the bounds: names of at most ``MAX_NAME_CHARS`` characters, at most ``MAX_PARAMS``
    params, strings of at most ``MAX_STR_CHARS`` characters, at most ``MAX_SEQUENCE`` numbers
    in a tuple, ints that fit in 64 bits.
    """

    name: str
    params: dict[str, Any]

    def __post_init__(self) -> None:
        if not _is_name(self.name):
            raise OpError(
                f"op name must be an identifier of at most {MAX_NAME_CHARS} characters, "
                f"got {short_repr(self.name)}"
            )
        if not isinstance(self.params, Mapping):
            raise OpError(f"op {self.name!r}: params must be a dict, got {short_repr(self.params)}")
        if len(self.params) > MAX_PARAMS:
            raise OpError(
                f"op {self.name!r}: {len(self.params)} params, over the limit of {MAX_PARAMS}"
            )
        checked = {}
        for key, value in self.params.items():
            if not _is_name(key):
                raise OpError(
                    f"op {self.name!r}: param name must be an identifier of at most "
                    f"{MAX_NAME_CHARS} characters, got {short_repr(key)}"
                )
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
            raise OpError(f"an op on the wire must be [name, params], got {short_repr(obj)}")
        name, params = obj
        return cls(name, params)


@dataclass(frozen=True)
class _Entry:
    fn: Callable[..., Image]
    params: frozenset[str]  # keyword params a user may set
    takes_node: bool
    takes_in_place: bool  # may draw on its input when run_pipeline says so
    any_params: bool  # the op takes **kwargs


_REGISTRY: dict[str, _Entry] = {}
_RESERVED = frozenset({"node", "in_place"})  # keywords run_pipeline sets, never the user


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
        params=frozenset(keywords - _RESERVED),
        takes_node="node" in keywords,
        takes_in_place="in_place" in keywords,
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
    the worker's node name by :func:`run_pipeline`. An op that declares ``in_place`` is told
    ``in_place=True`` when the image it gets is a writeable intermediate the pipeline owns, so
    it may draw on it instead of copying. Usable as ``@op`` or ``@op("name")``.

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
        if old is not None and not same_source(old.fn, fn):
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
    if len(bare) > MAX_STR_CHARS:
        return text  # no number is that long: OpSpec refuses it as a string
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
        return OpError(f"bad op {short_repr(text)}: {why}; expected {_SYNTAX}")

    if not _NAME.match(name):
        raise bad(f"op name {short_repr(name)} is not an identifier")
    params: dict[str, Any] = {}
    if sep:
        for item in rest.split(","):
            key, eq, value = item.partition("=")
            key = key.strip()
            if not eq or not _NAME.match(key):
                raise bad(f"{short_repr(item)} is not KEY=VALUE")
            if key in params:
                raise bad(f"param {short_repr(key)} given twice")
            params[key] = _parse_value(value)
    return OpSpec(name, params)


def _check_params(spec: OpSpec, entry: _Entry) -> None:
    taken = {"node": entry.takes_node, "in_place": entry.takes_in_place}
    for reserved in sorted(_RESERVED & set(spec.params)):
        if taken[reserved]:
            raise OpError(f"op {spec.name!r}: {reserved!r} is set by the worker, not by a param")
    unknown = sorted(set(spec.params) - entry.params)
    if unknown and not entry.any_params:
        accepted = ", ".join(sorted(entry.params)) or "none"
        raise OpError(f"op {spec.name!r} has no param {unknown[0]!r}; accepted params: {accepted}")


def check_op_count(specs: Sized) -> None:
    """Refuse a pipeline of more than ``MAX_OPS`` ops (a JOB's ``ops``, before parsing them).

    Raises:
        OpError: too many ops.
    """
    if len(specs) > MAX_OPS:
        raise OpError(f"a pipeline has at most {MAX_OPS} ops, got {len(specs)}")


def validate(specs: Sequence[OpSpec]) -> None:
    """Check the op count, that every op exists and takes every param given.

    Raises:
        OpError: more than ``MAX_OPS`` ops, an unknown op, or a param the op does not accept
            (the message names it and lists the accepted params).
    """
    check_op_count(specs)
    for spec in specs:
        _check_params(spec, _lookup(spec.name))


class DeadlinePassed(OpError):
    """:func:`run_pipeline` found its ``deadline`` passed before an op."""


_max_output_bytes: contextvars.ContextVar[int] = contextvars.ContextVar(
    "zimg_max_output_bytes", default=images.DEFAULT_MAX_IMAGE_BYTES
)


def max_output_bytes() -> int:
    """The largest image, in bytes, an op may make: the limit of the pipeline running now
    (``run_pipeline(max_bytes=...)``; a worker passes its ``max_image_bytes``), else
    ``images.DEFAULT_MAX_IMAGE_BYTES``. An op whose output size follows from its params
    (``resize``) checks it before allocating anything."""
    return _max_output_bytes.get()


@contextlib.contextmanager
def _output_limit(max_bytes: int | None) -> Iterator[None]:
    if max_bytes is None:
        yield
        return
    token = _max_output_bytes.set(max_bytes)
    try:
        yield
    finally:
        _max_output_bytes.reset(token)


def run_pipeline(
    image: Image,
    specs: Sequence[OpSpec],
    *,
    node: str,
    consume: bool = False,
    deadline: float | None = None,
    max_bytes: int | None = None,
) -> Image:
    """Apply ``specs`` in order to ``image`` and return the result.

    ``image`` is not modified unless ``consume`` says the caller gives it up: ops that can work
    in place (``threshold``, ``label``) then write on it instead of allocating a new image. A
    worker consumes the image it has just decoded: for a 1080p image that saves a 6 MB buffer
    and half a millisecond (``docs/performance-notes.md``).

    Args:
        image: the input; it may be read-only (it is then never written, even with ``consume``).
        specs: the ops to apply; checked with :func:`validate` first.
        node: the node name given to ops that declare a ``node`` keyword.
        consume: ops may write on ``image``; only for an array nobody else reads.
        deadline: a ``time.monotonic()`` time; checked before each op, none starts after it.
        max_bytes: the largest image an op may return (default: unchecked, and ops that
            check their output size before allocating use ``images.DEFAULT_MAX_IMAGE_BYTES``;
            see :func:`max_output_bytes`).

    Returns:
        The last op's output (the input itself, viewed read-only, if ``specs`` is empty; with
        ``consume``, possibly ``image`` itself, written on).

    Raises:
        DeadlinePassed: ``deadline`` passed before an op could start.
        OpError: validation failed, an op cannot handle the image, or returned a non-array
            or an image over ``max_bytes``.
    """
    if not isinstance(image, np.ndarray):
        raise OpError(f"run_pipeline needs a numpy array, got {type(image).__name__}")
    check_op_count(specs)
    entries = [_lookup(spec.name) for spec in specs]
    for spec, entry in zip(specs, entries, strict=True):
        _check_params(spec, entry)
    with _output_limit(max_bytes):
        result = _run(image, specs, entries, node, consume, deadline, max_bytes)
    given = consume and image.flags.writeable
    if result is image and not given:
        result = image.view()
        result.flags.writeable = False
    return result


def _run(
    image: Image,
    specs: Sequence[OpSpec],
    entries: list[_Entry],
    node: str,
    consume: bool,
    deadline: float | None,
    max_bytes: int | None,
) -> Image:
    result = image
    given = consume and image.flags.writeable  # the caller's array is ours to write on
    for spec, entry in zip(specs, entries, strict=True):
        if deadline is not None and time.monotonic() > deadline:
            raise DeadlinePassed(f"the deadline passed before op {spec.name!r}")
        kwargs = dict(spec.params)
        if entry.takes_node:
            kwargs["node"] = node
        if entry.takes_in_place and ((given and result is image) or _owned(result, image)):
            kwargs["in_place"] = True  # an array only we hold: work on it, no copy
            arg = result
        else:
            arg = result.view()
            arg.flags.writeable = False  # an op that draws on its input fails loudly
        result = entry.fn(arg, **kwargs)
        if not isinstance(result, np.ndarray):
            raise OpError(f"op {spec.name!r} returned {type(result).__name__}, not an ndarray")
        if max_bytes is not None and result.nbytes > max_bytes:
            raise OpError(
                f"op {spec.name!r} returned a {result.dtype} image of shape {result.shape}: "
                f"{result.nbytes} bytes, over the limit of {max_bytes} bytes"
            )
    return result


def _owned(array: Image, caller_input: Image) -> bool:
    """Is ``array`` an intermediate of this pipeline (writeable, not the caller's memory)?

    Ops get read-only views, so a writeable array an op returned is one it allocated.
    """
    return (
        array is not caller_input
        and array.flags.writeable
        and not np.may_share_memory(array, caller_input)
    )


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
    if existing is not None:
        if getattr(existing, "__file__", None) == str(file):
            return
        raise OpError(
            f"cannot import {path!r}: a module named {name!r} is already loaded from "
            f"{getattr(existing, '__file__', None) or 'built-in'}; rename the file"
        )
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


DEFAULT_PIPELINE: tuple[OpSpec, ...] = (OpSpec("threshold", {}), OpSpec("label", {}))
"""The notebook's job: ``threshold(127, 255, binary)`` then the node name at (10, 30)."""


# The shipped ops register as this import runs; it comes last because _op_library imports op
# from here. Re-exported (and in __all__) so ``zimg.ops.threshold`` and the rest keep working.
from zimg._op_library import blur, grayscale, label, resize, threshold  # noqa: E402 (see above)
