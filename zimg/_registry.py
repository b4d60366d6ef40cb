"""Registered behaviours: the only code a SPAWN may run, looked up by name, never imported."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar, overload

from zimg._errors import NameTakenError

Behaviour = Callable[..., Any]
B = TypeVar("B", bound=Behaviour)

_behaviours: dict[str, Behaviour] = {}
_lock = threading.Lock()


def behaviour_name(fn: Behaviour) -> str:
    """The default registered name of ``fn``: ``module:qualname``."""
    return f"{fn.__module__}:{fn.__qualname__}"


@overload
def behaviour(name: B) -> B: ...
@overload
def behaviour(name: str | None = None) -> Callable[[B], B]: ...
def behaviour(name: str | B | None = None) -> B | Callable[[B], B]:
    """Register a function as a behaviour that ``spawn`` may run on this node.

    A behaviour takes an actor context and the spawn's arguments: ``fn(ctx, *args)``. Returning
    is a ``normal`` exit; raising is an abnormal one.

    Use as ``@behaviour`` (registered as ``module:qualname``) or ``@behaviour("name")``.

    Raises:
        NameTakenError: another function is already registered under that name.
    """

    def register(fn: B, as_name: str | None = None) -> B:
        key = as_name or behaviour_name(fn)
        with _lock:
            existing = _behaviours.get(key)
            if existing is not None and not same_source(existing, fn):
                raise NameTakenError(f"behaviour {key!r} is already registered to {existing!r}")
            _behaviours[key] = fn
            if as_name is None:
                return fn
            _behaviours.setdefault(behaviour_name(fn), fn)
        return fn

    if callable(name):
        return register(name)
    return lambda fn: register(fn, name)


def same_source(a: Behaviour, b: Behaviour) -> bool:
    """The same function defined again: a module run twice (as ``__main__``, then imported by
    name in a forked worker), not a second function claiming the name."""
    if a is b:
        return True
    code_a, code_b = getattr(a, "__code__", None), getattr(b, "__code__", None)
    return (
        code_a is not None
        and code_b is not None
        and a.__qualname__ == b.__qualname__
        and code_a.co_filename == code_b.co_filename
        and code_a.co_firstlineno == code_b.co_firstlineno
    )


def get_behaviour(name: str) -> Behaviour | None:
    """The behaviour registered under ``name``, or None. Never imports anything."""
    with _lock:
        return _behaviours.get(name)


def registered_behaviours() -> list[str]:
    """Every registered name, sorted."""
    with _lock:
        return sorted(_behaviours)
