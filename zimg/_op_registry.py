"""The op registry, and what the shipped ops share with the pipelines that run them: param
bounds, short reprs for messages, the output limit. zimg.ops is the public face of all this."""

from __future__ import annotations

import contextlib
import contextvars
import inspect
import re
import reprlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar, overload

from numpy.typing import NDArray

from zimg import images
from zimg._errors import OpError
from zimg._registry import same_source

__all__ = [
    "IDENTIFIER",
    "MAX_NAME_CHARS",
    "MAX_OPS",
    "MAX_PARAMS",
    "MAX_SEQUENCE",
    "MAX_STR_CHARS",
    "RESERVED",
    "Check",
    "Entry",
    "Image",
    "get_op",
    "is_number",
    "lookup",
    "max_output_bytes",
    "op",
    "output_limit",
    "registered_ops",
    "short_repr",
]

Image = NDArray[Any]
F = TypeVar("F", bound=Callable[..., Image])
Check = Callable[[Mapping[str, Any]], None]
"""An op's check of its params without an image (``@op(check=...)``): it gets every keyword
param, the defaults filled in, and raises OpError on a value the op would refuse."""

IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")

# Bounds on a pipeline as a JOB carries it (zimg.ops.OpSpec checks them). They keep what one job
# may ask of a worker small and predictable (every op's own params bound its cost: see
# zimg._op_library), and every message that repeats a param short. The client checks the same
# bounds (``parse_op`` builds an OpSpec), so ``zimg send`` refuses such a pipeline up front
# (exit code 2).
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


def is_number(value: object) -> bool:
    """An int or a float, not a bool."""
    return isinstance(value, int | float) and not isinstance(value, bool)


@dataclass(frozen=True)
class Entry:
    """A registered op and what its signature says."""

    fn: Callable[..., Image]
    params: frozenset[str]  # keyword params a user may set
    takes_node: bool
    takes_in_place: bool  # may draw on its input when run_pipeline says so
    any_params: bool  # the op takes **kwargs
    check: Check | None = None  # checks params without an image (the CLI, before sending)
    defaults: Mapping[str, Any] = field(default_factory=dict)  # the keyword params' defaults

    def check_params(self, name: str, params: Mapping[str, Any]) -> None:
        """Run the op's check, if it has one, on ``params`` over the defaults.

        Raises:
            OpError: the check refused a value (or failed: its error becomes an OpError).
        """
        if self.check is None:
            return
        try:
            self.check({**self.defaults, **params})
        except OpError:
            raise
        except Exception as exc:  # a user's check must not take a worker down with it
            raise OpError(f"op {name!r}: its check failed: {type(exc).__name__}: {exc}") from exc


_REGISTRY: dict[str, Entry] = {}
RESERVED = frozenset({"node", "in_place"})  # keywords run_pipeline sets, never the user


def _entry(name: str, fn: Callable[..., Image], check: Check | None) -> Entry:
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError) as exc:
        raise OpError(f"op {name!r}: cannot read the signature of {fn!r}") from exc
    params = list(sig.parameters.values())
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    if not params or params[0].kind not in positional:
        raise OpError(f"op {name!r}: the first parameter must be the image (positional)")
    named = [
        p
        for p in params[1:]
        if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    ]
    keywords = {p.name for p in named}
    return Entry(
        fn=fn,
        params=frozenset(keywords - RESERVED),
        takes_node="node" in keywords,
        takes_in_place="in_place" in keywords,
        any_params=any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params),
        check=check,
        defaults={
            p.name: p.default
            for p in named
            if p.name not in RESERVED and p.default is not inspect.Parameter.empty
        },
    )


@overload
def op(name: F) -> F: ...
@overload
def op(name: str | None = None, *, check: Check | None = None) -> Callable[[F], F]: ...
def op(name: str | F | None = None, *, check: Check | None = None) -> F | Callable[[F], F]:
    """Register an op under ``name`` (default: the function's ``__name__``).

    The op receives a read-only image first, then keyword params; it must return a new array
    and never draw on its input (copy first). An op that declares a keyword ``node`` is given
    the worker's node name by :func:`run_pipeline`. An op that declares ``in_place`` is told
    ``in_place=True`` when the image it gets is a writeable intermediate the pipeline owns, so
    it may draw on it instead of copying. Usable as ``@op`` or ``@op("name")``.

    ``check`` (optional) checks the params without an image: it gets every keyword param, the
    defaults filled in, and raises OpError on a value the op would refuse. :func:`zimg.ops.validate`
    runs it, so ``zimg send`` and ``zimg run`` refuse such a value before they connect (exit
    code 2). The op keeps its own checks: a worker may get params no check has seen.

    Raises:
        OpError: the name is not an identifier, the function takes no image, or another
            function is already registered under that name.
    """
    if callable(name):
        return op(None)(name)

    def register(fn: F) -> F:
        key = fn.__name__ if name is None else name
        if not isinstance(key, str) or not IDENTIFIER.match(key):
            raise OpError(f"op name must be an identifier, got {key!r}")
        old = _REGISTRY.get(key)
        if old is not None and not same_source(old.fn, fn):
            raise OpError(f"op {key!r} is already registered by {_qualname(old.fn)}")
        _REGISTRY[key] = _entry(key, fn, check)
        return fn

    return register


def _qualname(fn: Callable[..., Any]) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"


def lookup(name: str) -> Entry:
    """Return the entry registered as ``name``.

    Raises:
        OpError: no op has that name; the message lists the known ones.
    """
    entry = _REGISTRY.get(name)
    if entry is None:
        raise OpError(f"unknown op {name!r}; known: {', '.join(registered_ops())}")
    return entry


def get_op(name: str) -> Callable[..., Image]:
    """Return the function registered as ``name``.

    Raises:
        OpError: no op has that name; the message lists the known ones.
    """
    return lookup(name).fn


def registered_ops() -> list[str]:
    """Return the names of all registered ops, sorted."""
    return sorted(_REGISTRY)


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
def output_limit(max_bytes: int | None) -> Iterator[None]:
    """Make :func:`max_output_bytes` return ``max_bytes`` inside the block (None: leave it)."""
    if max_bytes is None:
        yield
        return
    token = _max_output_bytes.set(max_bytes)
    try:
        yield
    finally:
        _max_output_bytes.reset(token)
