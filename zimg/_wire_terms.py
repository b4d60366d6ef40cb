"""The terms of the wire: what every part of the codec shares.

The magic and the commands, the lead frame and protocol version 1's HELLO and REJECT, the ext
codes, :class:`Pid`, :class:`Ref`, :class:`Limits` and :class:`Message`, the allowed dtypes, and
the small helpers that encoding, peeking and decoding all call (byte views, packing, the cached
pid ext). The wire format itself is described in :mod:`zimg.wire`, the module to import.
"""

from __future__ import annotations

import enum
import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import msgpack
import numpy as np

from zimg._errors import WireError

MAGIC = b"ZIMG2"


class Command(enum.IntEnum):
    """The one-byte command that follows the magic in a message's lead frame."""

    HELLO = 0x01
    WELCOME = 0x02
    REJECT = 0x03
    HEARTBEAT = 0x04
    DISCONNECT = 0x05
    NODES = 0x06
    SPAWN = 0x10
    SPAWNED = 0x11
    SEND = 0x12
    LINK = 0x13
    UNLINK = 0x14
    MONITOR = 0x15
    DEMONITOR = 0x16
    EXIT = 0x17
    DOWN = 0x18
    NODEDOWN = 0x19
    WATCH = 0x1A
    UNWATCH = 0x1B
    LANE = 0x1C  # a direct lane between two nodes: asked, accepted, switched to, closed
    JOB = 0x20
    RESULT = 0x21
    PEER = 0x30  # a failover pair's state, broker to broker on the peer link only
    ERROR = 0x7F


_COMMANDS = {int(c): c for c in Command}
_COMMAND_BYTES = {c: bytes((int(c),)) for c in Command}
_PREFIX = len(MAGIC) + 1  # the lead frame starts with the magic and the command byte


def lead_frame(command: Command, header: bytes) -> bytes:
    """A message's first frame: the magic, the command byte, then the packed ``header``."""
    return b"".join((MAGIC, _COMMAND_BYTES[command], header))


_V1_HELLO = (b"ZIMG1", _COMMAND_BYTES[Command.HELLO])


def is_v1_hello(frames: Sequence[Any]) -> bool:
    """Is this a HELLO in protocol version 1's layout (magic, command and header as three
    frames)? Never raises, and never copies more than the first two frames' 6 bytes."""
    try:
        return (
            len(frames) == 3
            and memoryview(frames[0]).nbytes == len(_V1_HELLO[0])
            and memoryview(frames[1]).nbytes == 1
            and (bytes(frames[0]), bytes(frames[1])) == _V1_HELLO
        )
    except Exception:  # not buffers at all
        return False


def v1_reject(reason: str) -> list[bytes]:
    """A REJECT that a version-1 node can read, so that it stops with ``reason`` instead of
    waiting for a WELCOME that never comes."""
    return [_V1_HELLO[0], _COMMAND_BYTES[Command.REJECT], _pack({"reason": reason})]


class Ext(enum.IntEnum):
    """msgpack ext type codes used inside headers."""

    PID = 1
    REF = 2
    TUPLE = 3
    ARRAY = 4
    BLOB = 5


@dataclass(frozen=True, slots=True)
class Pid:
    """A process (actor) identifier: node name, node incarnation and a serial on that node."""

    node: str
    incarnation: int
    serial: int

    def __repr__(self) -> str:
        return f"<{self.node}.{self.serial}>"


@dataclass(frozen=True, slots=True)
class Ref:
    """A unique reference, as made by ``make_ref`` or ``monitor``."""

    node: str
    incarnation: int
    serial: int

    def __repr__(self) -> str:
        return f"#Ref<{self.node}.{self.serial}>"


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds enforced on every message, encoded or decoded.

    Attributes:
        max_header_bytes: largest msgpack header (the lead frame after its magic and command).
        max_frames: most raw frames after the header.
        max_frame_bytes: largest raw frame.
        max_depth: deepest nesting of lists, tuples and dicts in the header.
        max_ndim: most dimensions of an array.
        inline_bytes_max: byte strings longer than this travel as a raw frame.
    """

    max_header_bytes: int = 1 << 20
    max_frames: int = 256
    max_frame_bytes: int = 256 << 20  # as much as a broker holds of one client's jobs
    max_depth: int = 32
    max_ndim: int = 8
    inline_bytes_max: int = 64 << 10

    @property
    def largest_frame(self) -> int:
        """The largest frame a message within these limits can have (for ``MAXMSGSIZE``)."""
        return max(self.max_frame_bytes, self.max_header_bytes + _PREFIX)


DEFAULT_LIMITS = Limits()

# Plain numeric dtypes only: never object, void, unicode or datetime.
_DTYPE_RE = re.compile(r"\|(b1|i1|u1)|[<>](i2|u2|i4|u4|i8|u8|f2|f4|f8|c8|c16)")


@functools.lru_cache(maxsize=64)  # _DTYPE_RE admits 25 strings: every one fits
def _allowed_dtype(dtype_str: str) -> np.dtype[Any] | None:
    """The dtype a wire dtype string names, or None if it is not one the wire allows."""
    return np.dtype(dtype_str) if _DTYPE_RE.fullmatch(dtype_str) else None


@dataclass(slots=True)
class Message:
    """A decoded message: its command and its header (a dict of terms)."""

    command: Command
    header: dict[str, Any] = field(default_factory=dict)


def _is_pid_parts(parts: Any) -> bool:
    ok = isinstance(parts, list) and len(parts) == 3 and isinstance(parts[0], str)
    return ok and all(type(p) is int for p in parts[1:])


def _byte_view(buf: Any, what: str) -> memoryview:
    """A flat unsigned-byte view of any buffer; copies only a non-contiguous one."""
    try:
        view = memoryview(buf)
    except TypeError as exc:
        raise WireError(f"{what} is not a buffer but a {type(buf).__name__}") from exc
    if view.ndim == 1 and view.format == "B" and view.c_contiguous:  # bytes, zmq frames
        return view
    if not view.c_contiguous:
        return memoryview(view.tobytes())
    if view.ndim == 1 and view.format == "B":
        return view
    if view.nbytes == 0:  # memoryview.cast refuses shapes with a zero in them
        return memoryview(b"")
    return view.cast("B")


@functools.lru_cache(maxsize=4096)
def _pid_ext(pid: Pid) -> msgpack.ExtType:
    """A pid's ext, cached: the same few pids travel in most messages."""
    return msgpack.ExtType(Ext.PID, _pack([pid.node, pid.incarnation, pid.serial]))


# A pid of a valid node name (at most 64 ASCII characters) and two 64-bit ints packs into 85
# bytes. Only payloads up to this size are cached, so the cache holds at most 4096 of them, not
# 4096 payloads of any size a peer chose.
_PID_CACHE_BYTES = 96


def _decode_pid(data: bytes) -> Pid:
    if len(data) <= _PID_CACHE_BYTES:
        return _decode_small_pid(data)
    return _decode_ids(data, Pid)


@functools.lru_cache(maxsize=4096)
def _decode_small_pid(data: bytes) -> Pid:
    """A pid, cached: the same few pids travel in most messages."""
    return _decode_ids(data, Pid)


_Ids = TypeVar("_Ids", Pid, Ref)


def _decode_ids(data: bytes, kind: type[_Ids]) -> _Ids:
    parts = msgpack.unpackb(data, raw=False, strict_map_key=True)
    if not _is_pid_parts(parts):
        raise WireError("pid/ref ext must be [str, int, int]")
    return kind(parts[0], parts[1], parts[2])


def _pack(obj: Any) -> bytes:
    try:
        packed: bytes = msgpack.packb(obj, use_bin_type=True)
    except (OverflowError, ValueError, TypeError) as exc:
        raise WireError(f"cannot encode: {exc}") from exc
    return packed


# The ext codes as plain ints, for the decoder's and the peek's comparisons.
_EXT_PID, _EXT_REF, _EXT_TUPLE = int(Ext.PID), int(Ext.REF), int(Ext.TUPLE)
