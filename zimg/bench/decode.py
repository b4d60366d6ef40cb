"""``python -m zimg.bench.decode``: what one megabyte of header costs :func:`zimg.wire.decode`.

Issue 12, item 1: a header map whose keys all share one Python hash made decoding quadratic
(36.8 s of broker CPU for one 1 MB message). ``wire.decode`` now refuses, as msgpack reads
them, map keys that are not str or bytes, whose hashes are randomised per process. This script
prints, per megabyte of header (CPU time of the decoding thread, best of a few runs):

- **plain** headers: a RESULT-like list of small maps, and one map of str keys;
- **collision** headers, the worst this module can build (2-tuples of ints, pids, ints, floats,
  and all of them mixed), as the decoder meets them now (refused) and as the decoder before the
  fix met them (msgpack building every map into a dict, as it did; timed on two small headers,
  then scaled to 1 MB by the growth between them: quadratic for tuples and pids);
- **floods**: valid headers made of what costs the decoder most per byte (empty containers, tiny
  exts): the worst case left, which is linear.

It also times typical messages (a small SEND, a RESULT of 8 items, a JOB with one array), here
and, with ``--compare-with OLD_WIRE.py`` (e.g. ``git show ed44dd1:zimg/wire.py > /tmp/w.py``),
with another version of the codec.

The collision generators are also what the tests use (``tests/unit/test_wire_collisions.py``,
``tests/integration/test_hostile_decode.py`` and the fuzz in
``tests/integration/test_fuzz_broker.py``). None of them needs to know the process's hash secret.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import importlib.util
import math
import sys
import time
import timeit
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import msgpack
import numpy as np

from zimg import wire
from zimg._errors import WireError
from zimg.wire import Command, Ext, Pid, Ref

MB = 1 << 20

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


def as_msgpack(key: Any) -> Any:
    """A key as msgpack packs it on the wire: tuples, pids and refs as their ext types."""
    if isinstance(key, tuple):
        return msgpack.ExtType(Ext.TUPLE, _pack([as_msgpack(x) for x in key]))
    if isinstance(key, Pid | Ref):
        code = Ext.PID if isinstance(key, Pid) else Ext.REF
        return msgpack.ExtType(code, _pack([key.node, key.incarnation, key.serial]))
    return key


def _pack(obj: Any) -> bytes:
    packed: bytes = msgpack.packb(obj, use_bin_type=True)
    return packed


def _map_head(count: int) -> bytes:
    if count < 16:
        return bytes([0x80 | count])
    if count < 1 << 16:
        return b"\xde" + count.to_bytes(2, "big")
    return b"\xdf" + count.to_bytes(4, "big")


def packed_map(keys: list[Any], value: Any = None) -> bytes:
    """A msgpack map of ``keys`` (as :func:`as_msgpack` packs them), each to ``value``."""
    packed_value = _pack(value)
    body = b"".join(_pack(as_msgpack(k)) + packed_value for k in keys)
    return _map_head(len(keys)) + body


def collision_header(
    kind: str, size: int = MB - 64, where: str = "nested", keys: list[Any] | None = None
) -> bytes:
    """A packed header of at most ``size`` bytes whose map keys all collide.

    Args:
        kind: a name in :data:`KINDS`.
        size: the most bytes the header may take (the default fits under ``max_header_bytes``).
        where: ``"nested"`` puts the map at ``{"msg": {...}}``; ``"top"`` makes it the header.
        keys: the keys to use instead of generating them (cut to fit).
    """
    if keys is None:
        per_key = max(2, len(_pack(as_msgpack(KINDS[kind](8)[-1]))) + 1)
        keys = KINDS[kind](size // per_key + 16)
    prefix = b"\x81\xa3msg" if where == "nested" else b""
    room = size - len(prefix) - 5
    count, used = 0, 0
    for key in keys:
        cost = len(_pack(as_msgpack(key))) + 1
        if used + cost > room:
            break
        used += cost
        count += 1
    header = prefix + packed_map(keys[:count])
    assert len(header) <= size, (len(header), size)
    return header


def str_key_header(size: int = MB - 64) -> bytes:
    """The same shape as :func:`collision_header` (one map of ~1 MB), with str keys."""
    keys: Iterator[str] = (f"k{i:07d}" for i in range(size))
    chosen = [next(keys) for _ in range((size - 16) // 11)]
    return b"\x81\xa3msg" + packed_map(chosen)


def plain_header(size: int = MB - 64) -> bytes:
    """A RESULT-like header of ~``size`` bytes: many small maps of plain values."""
    item = {"name": "img_0000.png", "ok": True, "ms": 12.5, "error": None, "n": 1234}
    count = (size - 64) // len(_pack(item))
    return _pack({"id": 7, "node": "n1", "ok": True, "items": [item] * count})


def flood_header(kind: str, size: int = MB - 64, *, bad_end: bool = False) -> bytes:
    """A header of cheap-to-send, costly-to-decode items: ``{"msg": [item, item, ...]}``.

    With ``bad_end``, the last item is ``{1: None}``, so that the decoder must read all the rest
    before it can refuse the message.
    """
    unit = {
        "empty lists": b"\x90",
        "empty maps": b"\x80",
        "lists and ints": b"\x90\x00",  # two items
        "1-tuples": b"\xd5\x03\x91\xc0",
        "pids": None,
        "refs": None,
        "nested lists": b"\x91" * 30 + b"\x90",
    }[kind]
    tail = b"\x81\x01\xc0" if bad_end else b""  # {1: None}: refused after all the rest
    room = size - 16 - len(tail)
    if unit is None:
        code = Ext.PID if kind == "pids" else Ext.REF
        items = []
        used = 0
        serial = 0
        while True:
            item = _pack(msgpack.ExtType(code, _pack(["n1", 1, serial])))
            if used + len(item) > room:
                break
            items.append(item)
            used += len(item)
            serial += 1
        body = b"".join(items)
        count = len(items)
    else:
        units = room // len(unit)
        body = unit * units
        count = units * (2 if kind == "lists and ints" else 1)
    array = b"\xdd" + (count + bool(tail)).to_bytes(4, "big") + body + tail
    return b"\x81\xa3msg" + array


FLOODS = ("empty lists", "empty maps", "lists and ints", "1-tuples", "pids", "refs", "nested lists")


def _frames(header: bytes) -> list[bytes]:
    return [wire.lead_frame(Command.SEND, header)]


def cpu_seconds(call: Callable[[], Any], repeat: int = 3) -> float:
    """The least CPU time (of this thread) that ``call`` took over ``repeat`` runs."""
    best = math.inf
    for _ in range(repeat):
        started = time.thread_time()
        call()
        best = min(best, time.thread_time() - started)
    return best


def decode_seconds(header: bytes, repeat: int = 3, codec: ModuleType = wire) -> float:
    """CPU seconds that ``codec.decode`` takes on a SEND with this header (refused or not)."""
    frames = _frames(header)

    def run() -> None:
        with contextlib.suppress(WireError):
            codec.decode(frames)

    return cpu_seconds(run, repeat)


def old_decode_seconds(header: bytes) -> float:
    """CPU seconds that the decoder before the fix took: msgpack built every map into a dict
    whatever its keys (``strict_map_key=False``), decoding tuples and pids on the way."""

    def hook(code: int, data: bytes) -> Any:
        if code == Ext.TUPLE:
            return tuple(msgpack.unpackb(data, strict_map_key=False, ext_hook=hook))
        parts = msgpack.unpackb(data)
        return (Pid if code == Ext.PID else Ref)(*parts)

    return cpu_seconds(
        lambda: msgpack.unpackb(header, raw=False, strict_map_key=False, ext_hook=hook), 1
    )


def typical_us(codec: ModuleType, rounds: int = 30, number: int = 2000) -> dict[str, float]:
    """CPU microseconds ``codec.decode`` takes on typical messages (best of ``rounds``)."""
    command, pid = codec.Command, codec.Pid
    me, to = pid("main", 123456789012345, 0), pid("n1", 987654321098765, 3)
    items = [
        {"ok": True, "ms": 12.345, "error": None, "payload": np.zeros(1000 + i, np.uint8)}
        for i in range(8)
    ]
    result = {"id": 42, "ticket": 7, "attempt": 1, "node": "n1", "ok": True, "error": None}
    job = {
        "id": 7,
        "mode": "encoded",
        "ops": [["threshold", {"thresh": 127}]],
        "items": [{"name": "a.png", "ext": ".png", "payload": np.zeros(5000, np.uint8)}],
    }
    messages = {
        "small SEND": codec.encode(command.SEND, {"to": to, "msg": ("echo", me, "hi")}),
        "RESULT, 8 items": codec.encode(command.RESULT, {**result, "items": items}),
        "JOB, 1 array": codec.encode(command.JOB, job),
    }
    best = dict.fromkeys(messages, math.inf)
    for _ in range(rounds):
        for name, frames in messages.items():
            timer = timeit.Timer(functools.partial(codec.decode, frames), timer=time.thread_time)
            best[name] = min(best[name], timer.timeit(number) / number * 1e6)
    return best


def _load(path: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location("zimg_wire_compared", Path(path))
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot load {path} as a module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m zimg.bench.decode", description=__doc__)
    parser.add_argument(
        "--before-kb",
        type=int,
        default=48,
        help="the larger of the two collision headers the old decoder is timed on (default 48)",
    )
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure (the best counts)")
    parser.add_argument(
        "--compare-with", metavar="WIRE_PY", help="another wire.py to time typical messages with"
    )
    args = parser.parse_args(argv)
    codecs = {"this": wire} | ({"other": _load(args.compare_with)} if args.compare_with else {})
    times = {label: typical_us(codec) for label, codec in codecs.items()}
    print("typical messages: CPU us per decode (best of 30 rounds)")
    for name, now in times["this"].items():
        other = times.get("other", {}).get(name)
        versus = f"   other {other:7.2f} us (this / other {now / other:.3f})" if other else ""
        print(f"  {name:34s} {now:7.2f} us{versus}")
    print(f"wire.decode: CPU ms per MB of header, best of {args.repeat} (gc {gc.isenabled()})")
    plain: dict[str, float] = {}
    plains = {"RESULT-like items": plain_header(), "one map of str keys": str_key_header()}
    for name, header in plains.items():
        plain[name] = decode_seconds(header, args.repeat) / (len(header) / MB)
        print(f"  plain: {name:27s} {plain[name] * 1e3:9.1f} ms/MB")
    typical = plain["RESULT-like items"]

    print(
        f"collisions (~1 MB, refused now); before: the old decoder on {args.before_kb // 2} and "
        f"{args.before_kb} kB, scaled to 1 MB by the growth between them"
    )
    worst_before = worst_now = 0.0
    for kind in KINDS:
        header = collision_header(kind)
        now = decode_seconds(header, args.repeat) / (len(header) / MB)
        half = collision_header(kind, size=args.before_kb * 512)
        small = collision_header(kind, size=args.before_kb * 1024)
        t_half, t_small = old_decode_seconds(half), old_decode_seconds(small)
        growth = min(2.0, max(1.0, math.log(t_small / t_half, len(small) / len(half))))
        before = t_small * (MB / len(small)) ** growth
        worst_before, worst_now = max(worst_before, before), max(worst_now, now)
        print(
            f"  {kind:34s} {now * 1e3:9.3f} ms/MB now {before:9.1f} s/MB before "
            f"(time ~ size^{growth:.2f})"
        )

    print("floods (~1 MB, valid: the costliest headers left, all linear)")
    worst_flood, worst_name = 0.0, ""
    for kind in FLOODS:
        header = flood_header(kind)
        seconds = decode_seconds(header, args.repeat) / (len(header) / MB)
        if seconds > worst_flood:
            worst_flood, worst_name = seconds, kind
        versus = ""
        if "other" in codecs:
            other = decode_seconds(header, args.repeat, codecs["other"]) / (len(header) / MB)
            versus = f"   other {other * 1e3:7.1f} ms/MB"
        print(f"  {kind:34s} {seconds * 1e3:9.1f} ms/MB{versus}")

    print("summary (x: times the RESULT-like plain header)")
    print(f"  plain header:                    {typical * 1e3:11.1f} ms/MB")
    print(
        f"  worst collision header, before:  {worst_before * 1e3:11.0f} ms/MB "
        f"({worst_before / typical:,.0f} x)"
    )
    print(
        f"  worst collision header, now:     {worst_now * 1e3:11.3f} ms/MB "
        f"({worst_now / typical:.4f} x)"
    )
    print(
        f"  worst header of any kind, now:   {worst_flood * 1e3:11.1f} ms/MB "
        f"({worst_flood / typical:.1f} x; {worst_name})"
    )


if __name__ == "__main__":
    main()
