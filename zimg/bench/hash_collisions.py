"""Python values that all share one ``hash()`` whatever the process's hash secret
(``PYTHONHASHSEED``): 2-tuples of ints, pids, ints, floats, and all of them mixed, built from
CPython's tuple and int hashes. The keys of the collision headers that ``python -m
zimg.bench.decode`` times and the tests send."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from zimg.wire import Pid

# CPython's tuple hash (xxHash's round, Objects/tupleobject.c, 3.8 onwards) and int hash.
_M64 = (1 << 64) - 1
_P1 = 11400714785074694791
_P2 = 14029467366897019727
_P5 = 2870177450012600261
_INV_P2 = pow(_P2, -1, 1 << 64)
_INV_P2_31 = pow(_P2, -1, 1 << 31)
_MODULUS = (1 << 61) - 1  # an int hashes to itself modulo this Mersenne prime


def _rotl31(x: int) -> int:
    return ((x << 31) | (x >> 33)) & _M64


def _int_hashing_to(u: int) -> int | None:
    """An int whose ``hash()``, read as 64 unsigned bits, is ``u``; None if no int has it."""
    s = u - (1 << 64) if u >= 1 << 63 else u
    if 0 <= s < _MODULUS or -_MODULUS < s < -1:
        return s
    return None


def colliding_tuples(n: int, target: int = 0x5EED) -> list[tuple[int, int]]:
    """``n`` pairs of ints that all have one ``hash()``, whatever ``PYTHONHASHSEED`` is.

    For ``(a, b)`` the hash runs ``acc = rotl(acc + hash(x) * P2, 31) * P1`` over the items; for
    each ``a``, the ``b`` whose hash brings ``acc`` to the same value before the last rotation is
    computed. About one ``a`` in four has such a ``b`` in the int range.
    """
    out: list[tuple[int, int]] = []
    a = 0
    while len(out) < n:
        acc = _rotl31((_P5 + (a & _M64) * _P2) & _M64) * _P1 & _M64
        b = _int_hashing_to((target - acc) * _INV_P2 & _M64)
        if b is not None:
            out.append((a, b))
        a += 1
    return out


def colliding_ids(n: int, node: str = "x") -> list[tuple[str, int, int]]:
    """``n`` (node, incarnation, serial) triples whose :class:`Pid` (or :class:`Ref`) all have one
    hash in every process, although ``node``'s str hash is secret.

    A pid hashes as the tuple of its fields. With incarnations ``j * 2**33`` the secret part only
    shifts the high 31 bits of the accumulator by ``d = j * P2 mod 2**31``, a known amount (bar a
    carry once in about ``2**31 / d`` sets), and each serial is chosen to cancel it.
    """
    out: list[tuple[str, int, int]] = [(node, 0, 0)]
    d = 0
    while len(out) < n:
        d += 1
        j = d * _INV_P2_31 % (1 << 31)
        if j >= 1 << 28:  # the incarnation j * 2**33 must stay under 2**61 to hash to itself
            continue
        serial = _int_hashing_to(-d * _P1 * _INV_P2 & _M64)
        if serial is not None:
            out.append((node, j << 33, serial))
    return out


def colliding_pids(n: int) -> list[Pid]:
    return [Pid(*parts) for parts in colliding_ids(n)]


def colliding_ints(n: int) -> list[int]:
    """Ints in groups of up to nine that share a hash (they differ by multiples of 2**61 - 1),
    the groups' hashes all multiples of 2**32 (one probe sequence for longer)."""
    out: list[int] = []
    base = 0
    while len(out) < n:
        base += 1 << 32
        out.extend(v for k in range(9) if (v := base + k * _MODULUS) < 1 << 64)
    return out[:n]


def colliding_floats(n: int) -> list[float]:
    """Floats in groups that share a hash: ``x * 2**61`` hashes as ``x`` does."""
    out: list[float] = []
    base = 0.5
    while len(out) < n:
        base += 1.0
        out.extend(math.ldexp(base, 61 * k) for k in range(-17, 17))
    return out[:n]


def colliding_mixed(n: int) -> list[Any]:
    """Tuples, the int and the float of their hash, pids, None, True: one hash for most."""
    pairs = colliding_tuples(n)
    code = hash(pairs[0])
    out: list[Any] = [None, True, code, float(code)]
    for i, (pair, parts) in enumerate(zip(pairs, colliding_ids(n), strict=False)):
        out.append(pair if i % 2 else Pid(*parts))
    return out[:n]


KINDS: dict[str, Callable[[int], list[Any]]] = {
    "tuples": colliding_tuples,
    "pids": colliding_pids,
    "ints": colliding_ints,
    "floats": colliding_floats,
    "mixed": colliding_mixed,
}
"""The collision generators by name: each gives ``n`` keys, as Python values."""
