"""The headers ``python -m zimg.bench.decode`` times and the tests send, as packed msgpack bytes:
maps whose keys all collide (:mod:`zimg.bench.hash_collisions`), floods of what costs the decoder
most per byte, and plain headers of the same size to compare them with."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import msgpack

from zimg.bench.hash_collisions import KINDS
from zimg.wire import Ext, Pid, Ref

MB = 1 << 20


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
