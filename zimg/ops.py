"""Pipelines of named image ops: pure functions ``ndarray -> ndarray`` with keyword params.

The public face of the op registry (``op``, ``get_op``, ``registered_ops``: zimg._op_registry)
and of the shipped ops (``threshold``, ``label``...: zimg._op_library, registered as this module
is imported); here are the specs a job carries, their parsing and checks, and the runner.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import sys
import time
from collections.abc import Mapping, Sequence, Sized
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from zimg._errors import OpError
from zimg._op_library import blur, grayscale, label, resize, threshold
from zimg._op_registry import (
    IDENTIFIER,
    MAX_NAME_CHARS,
    MAX_OPS,
    MAX_PARAMS,
    MAX_SEQUENCE,
    MAX_STR_CHARS,
    RESERVED,
    Entry,
    Image,
    get_op,
    is_number,
    lookup,
    max_output_bytes,
    op,
    output_limit,
    registered_ops,
    short_repr,
)

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


_SYNTAX = (
    "NAME[:KEY=VALUE[,KEY=VALUE...]], e.g. threshold:thresh=100,type=binary or label:org=10/30"
)
_INT = re.compile(r"[+-]?\d+\Z")
_FLOAT = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\Z")

_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1  # what msgpack carries


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
        if all(is_number(v) and _in_range(v) for v in value):
            return tuple(value)
    raise OpError(
        f"{where} must be None, an int, float, str, bool or up to {MAX_SEQUENCE} numbers, "
        f"got {short_repr(value)}"
    )


def _is_name(name: object) -> bool:
    return isinstance(name, str) and len(name) <= MAX_NAME_CHARS and bool(IDENTIFIER.match(name))


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

    if not IDENTIFIER.match(name):
        raise bad(f"op name {short_repr(name)} is not an identifier")
    params: dict[str, Any] = {}
    if sep:
        for item in rest.split(","):
            key, eq, value = item.partition("=")
            key = key.strip()
            if not eq or not IDENTIFIER.match(key):
                raise bad(f"{short_repr(item)} is not KEY=VALUE")
            if key in params:
                raise bad(f"param {short_repr(key)} given twice")
            params[key] = _parse_value(value)
    return OpSpec(name, params)


def _check_params(spec: OpSpec, entry: Entry) -> None:
    taken = {"node": entry.takes_node, "in_place": entry.takes_in_place}
    for reserved in sorted(RESERVED & set(spec.params)):
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
    """Check the op count, that every op exists and takes every param given, and the values
    with each op's own check (``@op(check=...)``), without an image.

    Raises:
        OpError: more than ``MAX_OPS`` ops, an unknown op, a param the op does not accept (the
            message names it and lists the accepted params), or a value its check refuses
            (the message names the op, the param, the value and what is allowed).
    """
    check_op_count(specs)
    for spec in specs:
        entry = lookup(spec.name)
        _check_params(spec, entry)
        entry.check_params(spec.name, spec.params)


class DeadlinePassed(OpError):
    """:func:`run_pipeline` found its ``deadline`` passed before an op."""


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
    entries = [lookup(spec.name) for spec in specs]
    for spec, entry in zip(specs, entries, strict=True):
        _check_params(spec, entry)
    with output_limit(max_bytes):
        result = _run(image, specs, entries, node, consume, deadline, max_bytes)
    given = consume and image.flags.writeable
    if result is image and not given:
        result = image.view()
        result.flags.writeable = False
    return result


def _run(
    image: Image,
    specs: Sequence[OpSpec],
    entries: list[Entry],
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
    if not all(IDENTIFIER.match(part) for part in module_name.split(".")):
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
    if not IDENTIFIER.match(name):
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
"""The notebook's job: ``threshold(127, 255, binary)`` (scaled to the image's depth: 32639 and
65535 for uint16) then the node name at (10, 30)."""
