"""Pure wire codec: Python terms to ZeroMQ frames and back, with limits. Never imports zmq.

A message, as a DEALER sends it, is ``[MAGIC + command + header, *frames]``: one lead frame, then
the raw frames.

- ``MAGIC`` is ``b"ZIMG2"`` (protocol name and version);
- ``command`` is one byte, a :class:`Command`;
- ``header`` is a msgpack map with string keys, each given once, whose values are *terms*;
- ``frames`` are raw buffers: array data and large byte strings, referenced from the header.

Magic, command and header share one frame because every frame costs a ZeroMQ call on each side
of each hop: a small message in two frames (routing id and lead) crosses the broker about 45 %
faster than in four (``docs/decisions.md``).

Terms are None, bool, int, float, str, bytes, list, tuple, dict (with str or bytes keys),
:class:`Pid`, :class:`Ref` and numpy arrays of a numeric dtype. Tuples, pids, refs, arrays and
large byte strings are msgpack ext types (see ``docs/protocol.md``). Arrays are made contiguous on
the way out and rebuilt zero-copy and read-only on the way in. Nothing is ever pickled.

Map keys are str or bytes because their hashes are randomised per process: ints, floats, tuples
and pids hash predictably, so a peer could send thousands of keys with one hash and make building
the dict quadratic. :func:`decode` refuses any other key as msgpack reads it, and costs time
linear in the message's size whatever it holds (``python -m zimg.bench.decode``).
"""

from __future__ import annotations

import enum
import functools
import gc
import math
import operator
import re
import reprlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import chain, compress
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


# ---------------------------------------------------------------- encoding


class _Encoder:
    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.frames: list[Any] = []

    def _frame(self, buf: Any, nbytes: int) -> int:
        if nbytes > self.limits.max_frame_bytes:
            raise WireError(
                f"frame of {nbytes} bytes exceeds the limit of {self.limits.max_frame_bytes}"
            )
        if len(self.frames) >= self.limits.max_frames:
            raise WireError(f"more than {self.limits.max_frames} raw frames in one message")
        self.frames.append(buf)
        return len(self.frames) - 1

    def walk(self, obj: Any, depth: int) -> Any:
        kind = type(obj)
        if kind in _PLAIN:  # the common cases first, by exact type (subclasses go the long way)
            return obj
        if kind is list or kind is dict:
            if depth > self.limits.max_depth:
                raise WireError(f"term nested deeper than {self.limits.max_depth} levels")
            if kind is list:
                return [x if type(x) in _PLAIN else self.walk(x, depth + 1) for x in obj]
            return {
                k if type(k) is str else self._key(k, depth + 1): v
                if type(v) in _PLAIN
                else self.walk(v, depth + 1)
                for k, v in obj.items()
            }
        if kind is tuple:  # actor messages are mostly small tuples of plain values and pids
            if depth > self.limits.max_depth:
                raise WireError(f"term nested deeper than {self.limits.max_depth} levels")
            items = [x if type(x) in _PLAIN else self.walk(x, depth + 1) for x in obj]
            return msgpack.ExtType(Ext.TUPLE, _pack(items))
        if (
            kind is Pid
            and type(obj.node) is str
            and type(obj.incarnation) is int
            and type(obj.serial) is int
        ):
            return _pid_ext(obj)  # exact types only: Pid("n", True, 1) == Pid("n", 1, 1)
        if obj is None or isinstance(obj, bool | int | float | str):
            return obj
        if isinstance(obj, bytes | bytearray | memoryview):
            data = _byte_view(obj, "a memoryview") if isinstance(obj, memoryview) else obj
            if len(data) > self.limits.inline_bytes_max:
                return msgpack.ExtType(Ext.BLOB, _pack(self._frame(data, len(data))))
            return bytes(data)
        if isinstance(obj, np.ndarray):
            return self._array(obj)
        if isinstance(obj, Pid | Ref):
            code = Ext.PID if isinstance(obj, Pid) else Ext.REF
            if not _is_pid_parts([obj.node, obj.incarnation, obj.serial]):
                raise WireError(f"{type(obj).__name__} fields must be (str, int, int), got {obj!r}")
            return msgpack.ExtType(code, _pack([obj.node, obj.incarnation, obj.serial]))
        if isinstance(obj, np.generic):
            return self.walk(obj.item(), depth)
        if depth > self.limits.max_depth:
            raise WireError(f"term nested deeper than {self.limits.max_depth} levels")
        if isinstance(obj, list):
            return [self.walk(x, depth + 1) for x in obj]
        if isinstance(obj, tuple):
            return msgpack.ExtType(Ext.TUPLE, _pack([self.walk(x, depth + 1) for x in obj]))
        if isinstance(obj, dict):
            return {self._key(k, depth + 1): self.walk(v, depth + 1) for k, v in obj.items()}
        raise WireError(f"cannot send a value of type {type(obj).__name__}")

    def _key(self, key: Any, depth: int) -> Any:
        """A map key: str or bytes only, the types whose hashes an attacker cannot aim
        (``docs/protocol.md`` §3); a receiver refuses any other."""
        if isinstance(key, str | bytes):
            return self.walk(key, depth)
        raise WireError(f"map keys must be str or bytes, not {type(key).__name__}")

    def _array(self, arr: np.ndarray[Any, Any]) -> msgpack.ExtType:
        if not _DTYPE_RE.fullmatch(arr.dtype.str):
            raise WireError(f"arrays of dtype {arr.dtype} cannot be sent")
        if arr.ndim > self.limits.max_ndim:
            raise WireError(f"array has {arr.ndim} dimensions; the limit is {self.limits.max_ndim}")
        if not arr.flags.c_contiguous:  # np.ascontiguousarray would also turn 0-d into 1-d
            arr = np.ascontiguousarray(arr)
        index = self._frame(arr, arr.nbytes)
        return msgpack.ExtType(Ext.ARRAY, _pack([index, arr.dtype.str, list(arr.shape)]))


_PLAIN = frozenset({str, int, float, bool, type(None)})


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


def encode(
    command: Command, header: Mapping[str, Any], limits: Limits = DEFAULT_LIMITS
) -> list[Any]:
    """Encode a message into the frames a DEALER sends.

    Args:
        command: the message's command.
        header: a mapping of string keys to terms.
        limits: the bounds to enforce.

    Returns:
        ``[lead frame, *raw frames]`` (see :func:`lead_frame`); raw frames are the arrays
        themselves (contiguous) or memoryviews, ready for ``send_multipart(..., copy=False)``.

    Raises:
        WireError: a value cannot be sent, or a limit is exceeded.
    """
    if type(command) not in (Command, int) or command not in _COMMANDS:
        raise WireError(f"unknown command {command!r}")
    enc = _Encoder(limits)
    body = {}
    for key, value in header.items():
        if not isinstance(key, str):
            raise WireError(f"header keys must be str, not {type(key).__name__}")
        body[key] = enc.walk(value, 1)
    packed = _pack(body)
    if len(packed) > limits.max_header_bytes:
        raise WireError(
            f"header of {len(packed)} bytes exceeds the limit of {limits.max_header_bytes}"
        )
    return [lead_frame(_COMMANDS[command], packed), *enc.frames]


# ---------------------------------------------------------------- decoding


_EXT_PID, _EXT_REF, _EXT_TUPLE = int(Ext.PID), int(Ext.REF), int(Ext.TUPLE)

# A Pid ext is at most ~90 bytes (a 64-byte node name and two ints), so the ``to`` entry of a
# header that starts with it lies within its first bytes.
_PEEK_BYTES = 160
_TO_KEY = b"\xa2to"
ACTOR_COMMANDS = frozenset(c for c in Command if Command.SPAWN <= c <= Command.DOWN)
"""SPAWN to DOWN (0x10-0x18): the commands routed by their ``to`` field."""
_ACTOR_COMMANDS = {int(c): c for c in ACTOR_COMMANDS}
_PEEK_LEAD = _PREFIX + _PEEK_BYTES  # the bytes of a lead frame that peek_to reads at most


def command_of(frames: Sequence[Any]) -> Command | None:
    """The command of a message whose lead frame starts with the magic and a known command byte,
    else None.

    Nothing else is looked at, and this never raises.
    """
    try:
        if not frames:
            return None
        lead = bytes(memoryview(frames[0])[:_PREFIX])
        if len(lead) != _PREFIX or lead[:-1] != MAGIC:
            return None
        return _COMMANDS.get(lead[-1])
    except Exception:  # not buffers at all
        return None


def _peekable(
    frames: Sequence[Any], limits: Limits, command: Command | None = None
) -> tuple[Command, Any] | None:
    """The command and header bytes of a message within ``limits`` (frame count, header size),
    as the peeks need them; None otherwise. May raise on frames that are not buffers.
    ``command``: the caller read it already with :func:`command_of`."""
    if command is None:
        command = command_of(frames)
    if (
        command is None
        or len(frames) > limits.max_frames + 1
        or len(frames[0]) - _PREFIX > limits.max_header_bytes
    ):
        return None
    return command, memoryview(frames[0])[_PREFIX:]


def peek_to(frames: Sequence[Any], limits: Limits = DEFAULT_LIMITS) -> tuple[Command, Pid] | None:
    """The command and the ``to`` Pid of an actor message, read without decoding the rest of it.

    Only actor commands (SPAWN to DOWN, 0x10-0x18) are read; any other gives None at once.
    Only the frame count, the magic, the command byte, the header's size and its **first**
    entry are looked at: when that entry is ``"to"`` with a Pid value (as every zimg node writes
    SEND, LINK, MONITOR and the like), this costs a few slices and a cached Pid decode, where
    :func:`decode` walks the whole header. Anything else (another first key, another kind of
    ``to``, any malformation) gives None and the caller decodes fully; this never raises. The
    rest of the message is **not** validated: whoever receives it must :func:`decode` it.

    Args:
        frames: the message's frames without any routing frame, as bytes-like objects (bytes,
            ``zmq.Frame``, byte memoryviews).
        limits: a message with more raw frames, or a larger header, than these allow gives None.
    """
    try:
        # One copy of the lead frame's first bytes, then plain byte arithmetic: this runs for
        # every message the broker forwards.
        if not frames or len(frames) > limits.max_frames + 1:
            return None
        lead = frames[0]
        size = len(lead)
        head = bytes(lead) if size <= _PEEK_LEAD else bytes(memoryview(lead)[:_PEEK_LEAD])
        command = _ACTOR_COMMANDS.get(head[_PREFIX - 1])
        if command is None or head[: _PREFIX - 1] != MAGIC:
            return None
        if size - _PREFIX > limits.max_header_bytes:
            return None
        first = head[_PREFIX]
        if 0x81 <= first <= 0x8F:  # fixmap with 1 to 15 entries
            pos = _PREFIX + 1
        elif first == 0xDE and head[_PREFIX + 1 : _PREFIX + 3] != b"\0\0":  # map 16
            pos = _PREFIX + 3
        elif first == 0xDF and head[_PREFIX + 1 : _PREFIX + 5] != b"\0\0\0\0":  # map 32
            pos = _PREFIX + 5
        else:
            return None
        if head[pos : pos + 3] != _TO_KEY:
            return None
        pos += 3
        marker = head[pos]
        if 0xD4 <= marker <= 0xD8:  # fixext 1, 2, 4, 8, 16
            size, pos = 1 << (marker - 0xD4), pos + 1
        elif marker == 0xC7:  # ext 8
            size, pos = head[pos + 1], pos + 2
        else:
            return None
        if head[pos] != _EXT_PID or pos + 1 + size > len(head):
            return None
        return command, _decode_pid(head[pos + 1 : pos + 1 + size])
    except Exception:  # any malformation: the caller decodes fully and finds out what
        return None


def peek_head(
    frames: Sequence[Any],
    entries: int,
    limits: Limits = DEFAULT_LIMITS,
    command: Command | None = None,
) -> tuple[Command, dict[str, Any]] | None:
    """The command and the first ``entries`` entries of a message's header, read without
    decoding the rest of it.

    Only plain msgpack values count (None, bool, int, float, str, bytes): an ext, a list or a map
    among the first entries, a non-str or repeated key, fewer entries than asked for, or any
    malformation gives None, and the caller decodes fully; this never raises. As with
    :func:`peek_to`, the rest of the message is **not** validated: whoever receives it must
    :func:`decode` it.

    ``command``: the message's command, when the caller has read it with :func:`command_of`
    already (it is not read again).
    """
    try:
        found = _peekable(frames, limits, command)
        if found is None:
            return None
        command, header = found
        unpacker = msgpack.Unpacker(
            raw=False, strict_map_key=True, max_buffer_size=limits.max_header_bytes
        )
        unpacker.feed(header)
        if unpacker.read_map_header() < entries:
            return None
        head: dict[str, Any] = {}
        for _ in range(entries):
            key, value = unpacker.unpack(), unpacker.unpack()
            if type(key) is not str or type(value) not in _PEEKABLE or key in head:
                return None  # a repeated key is malformed (decode says so)
            head[key] = value
        return command, head
    except Exception:  # any malformation: the caller decodes fully and finds out what
        return None


_PEEKABLE = frozenset({type(None), bool, int, float, str, bytes})


class _Decoder:
    def __init__(self, frames: list[memoryview], limits: Limits, arrays: bool = True) -> None:
        self.frames = frames
        self.used = [False] * len(frames)
        self.limits = limits
        self.arrays = arrays
        self.ext_depth = 0

    def unpack(self, data: bytes | memoryview) -> Any:
        # strict_map_key: msgpack refuses a map key that is not str or bytes as it reads it,
        # before the key goes into any dict (docs/protocol.md §3).
        return msgpack.unpackb(
            data,
            raw=False,
            use_list=True,
            strict_map_key=True,
            ext_hook=self.ext_hook,
        )

    def ext_hook(self, code: int, data: bytes) -> Any:
        if code == _EXT_PID:  # the commonest ext, then tuples
            if len(data) <= _PID_CACHE_BYTES:
                return _decode_small_pid(data)
            return _decode_ids(data, Pid)
        if code == _EXT_TUPLE:
            if data == b"\x90":
                return ()
            self.ext_depth += 1
            if self.ext_depth > self.limits.max_depth:
                raise WireError(f"term nested deeper than {self.limits.max_depth} levels")
            try:
                items = self.unpack(data)
            finally:
                self.ext_depth -= 1
            if not isinstance(items, list):
                raise WireError("tuple ext does not hold an array")
            return tuple(items)
        if code == _EXT_REF:
            return _decode_ids(data, Ref)
        if code == Ext.ARRAY:
            return self._array(msgpack.unpackb(data, raw=False, strict_map_key=True))
        if code == Ext.BLOB:
            index = msgpack.unpackb(data, raw=False, strict_map_key=True)
            return bytes(self._take(index))
        raise WireError(f"unknown ext type {code}")

    def _take(self, index: Any) -> memoryview:
        if type(index) is not int or not 0 <= index < len(self.frames):
            raise WireError(
                f"reference to frame {_brief(index)}, but the message has {len(self.frames)}"
            )
        if self.used[index]:
            raise WireError(f"frame {index} is referenced twice")
        self.used[index] = True
        return self.frames[index]

    def _array(self, spec: Any) -> np.ndarray[Any, Any] | None:
        if type(spec) is not list or len(spec) != 3:
            raise WireError("array ext must be [frame, dtype, shape]")
        index, dtype_str, shape = spec
        dtype = _allowed_dtype(dtype_str) if type(dtype_str) is str else None
        if dtype is None:
            raise WireError(f"array dtype {_brief(dtype_str)} is not allowed")
        if (
            type(shape) is not list
            or len(shape) > self.limits.max_ndim
            or not all(type(n) is int and n >= 0 for n in shape)
        ):
            raise WireError(
                f"array shape {_brief(shape)} is not a list of at most "
                f"{self.limits.max_ndim} non-negative ints"
            )
        buf = self._take(index)
        count = math.prod(shape)
        if count * dtype.itemsize != buf.nbytes:
            raise WireError(
                f"array frame {index} holds {buf.nbytes} bytes but dtype {dtype_str} and shape "
                f"{tuple(shape)} need {count * dtype.itemsize}"
            )
        if count and not self.arrays:
            # Checked, not built (decode(arrays=False)): a non-empty array whose bytes match its
            # shape always builds. An empty one is built, for numpy's word on its shape.
            return None
        try:
            arr = np.frombuffer(buf, dtype=dtype, count=count).reshape(shape)
        except ValueError as exc:  # e.g. a zero-size array with a dimension over 2**63
            raise WireError(f"array shape {tuple(shape)} cannot be built: {exc}") from exc
        arr.flags.writeable = False
        return arr


# What a peer sent is quoted in error texts (which get logged) at most this long.
_REPR = reprlib.Repr()
_REPR.maxlevel = 3
_REPR.maxstring = _REPR.maxother = _REPR.maxlong = 40
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = 6


def _brief(value: Any) -> str:
    """``repr(value)``, cut short: a bad field may be a megabyte long or deeply nested."""
    return _REPR.repr(value)


_LEAF_TYPES = frozenset({type(None), bool, int, float, str, bytes, Pid, Ref, np.ndarray})
_TERM_TYPES = _LEAF_TYPES | {list, tuple, dict}
_SEQUENCE_TYPES = frozenset({list, tuple})
_MAP_TYPES = frozenset({dict})
_is_sequence = _SEQUENCE_TYPES.__contains__
_is_map = _MAP_TYPES.__contains__
_STR = frozenset({str})


def _check_term(term: Any, max_depth: int, depth: int = 0) -> None:
    """Check nesting depth, and that msgpack gave back only terms (it decodes ext -1 itself).

    Recursion is bounded: a container deeper than ``max_depth`` raises before going further.
    The fastest check of a small header; :func:`_check_terms` is for large ones.
    """
    kind = type(term)
    if kind is list or kind is tuple:
        children: Any = term
    elif kind is dict:
        children = term.values()  # keys are str or bytes (strict_map_key)
    elif kind in _LEAF_TYPES:
        return
    else:
        raise WireError(f"header holds a {kind.__name__}, which is not a term")
    if depth > max_depth:
        raise WireError(f"term nested deeper than {max_depth} levels")
    for child in children:
        if type(child) not in _LEAF_TYPES:
            _check_term(child, max_depth, depth + 1)


def _check_terms(header: dict[str, Any], max_depth: int) -> None:
    """:func:`_check_term` for a large header, the same checks in another order.

    The walk goes one depth at a time, each in a few passes of C code (``map``, ``compress``,
    ``list +=``) over all the items at that depth, instead of a Python call per container: a
    megabyte of nested empty lists is checked in about half the time.
    """
    level: list[Any] = list(header.values())
    depth = 1
    while level:
        found = set(map(type, level))
        if found <= _LEAF_TYPES:
            return
        if not found <= _TERM_TYPES:
            odd = min(kind.__name__ for kind in found - _TERM_TYPES)
            raise WireError(f"header holds a {odd}, which is not a term")
        if depth > max_depth:
            raise WireError(f"term nested deeper than {max_depth} levels")
        if found <= _SEQUENCE_TYPES:
            level = functools.reduce(operator.iadd, level, [])
        elif found <= _MAP_TYPES:
            level = functools.reduce(operator.iadd, map(dict.values, level), [])
        else:
            kinds = list(map(type, level))
            sequences = compress(level, map(_is_sequence, kinds))
            maps = map(dict.values, compress(level, map(_is_map, kinds)))
            level = functools.reduce(operator.iadd, chain(sequences, maps), [])
        depth += 1


# Headers up to this size are checked by the recursive walk, larger ones a depth at a time.
_LEVEL_WALK_BYTES = 1024

# Headers larger than this are decoded with the cyclic garbage collector paused. Decoding makes
# no reference cycles, only new containers, and a megabyte of empty lists made the collector
# run a thousand times: 0.5 s instead of 0.06 s.
_GC_PAUSE_BYTES = 16 << 10


def _map_size(header: memoryview) -> int:
    """The entry count a msgpack map's first bytes declare (the header is known to be a map)."""
    first = header[0]
    if first == 0xDE:
        return int.from_bytes(header[1:3], "big")
    if first == 0xDF:
        return int.from_bytes(header[1:5], "big")
    return int(first & 0x0F)


def decode(
    frames: Sequence[Any], limits: Limits = DEFAULT_LIMITS, *, arrays: bool = True
) -> Message:
    """Decode the frames of one message (without any routing frame).

    Costs time linear in the message's size, whatever it holds: map keys are str or bytes,
    whose hashes are randomised per process, so no choice of keys makes the dicts slow, and a
    key of any other type is refused as msgpack reads it (``docs/protocol.md`` §3).

    Args:
        frames: buffers (bytes, memoryview, zmq.Frame, ...): the lead frame, then raw frames.
        limits: the bounds to enforce.
        arrays: False checks every array as usual but puts None in its place instead of
            building it (a broker that forwards the message and never reads its arrays).

    Returns:
        The message. Arrays in its header are read-only views of the raw frames.

    Raises:
        WireError: anything about the message is malformed or over a limit; the text says what.
    """
    if not frames:
        raise WireError("a message needs at least 1 frame, got none")
    if len(frames) - 1 > limits.max_frames:
        raise WireError(f"{len(frames) - 1} raw frames exceed the limit of {limits.max_frames}")
    lead = _byte_view(frames[0], "frame 0")
    if lead[: _PREFIX - 1] != MAGIC:
        raise WireError(f"bad magic {bytes(lead[: _PREFIX - 1])!r}, expected {MAGIC!r}")
    if lead.nbytes < _PREFIX:
        raise WireError("the lead frame ends after the magic, with no command byte")
    if lead[_PREFIX - 1] not in _COMMANDS:
        raise WireError(f"unknown command byte {lead[_PREFIX - 1]:#04x}")
    command = _COMMANDS[lead[_PREFIX - 1]]
    header_frame = lead[_PREFIX:]
    if header_frame.nbytes > limits.max_header_bytes:
        raise WireError(
            f"header of {header_frame.nbytes} bytes exceeds the limit of {limits.max_header_bytes}"
        )
    raw = [_byte_view(f, f"frame {i + 1}") for i, f in enumerate(frames[1:])]
    for i, v in enumerate(raw):
        if v.nbytes > limits.max_frame_bytes:
            raise WireError(f"frame {i + 1} of {v.nbytes} bytes exceeds {limits.max_frame_bytes}")
    decoder = _Decoder(raw, limits, arrays)
    paused = header_frame.nbytes > _GC_PAUSE_BYTES and gc.isenabled()
    if paused:
        gc.disable()
    try:
        header = decoder.unpack(header_frame)
        if type(header) is not dict:
            raise WireError("header must be a map with string keys")
        if not set(map(type, header)) <= _STR:
            raise WireError("header must be a map with string keys")
        if len(header) != _map_size(header_frame):
            raise WireError("header has a key more than once")
        if header_frame.nbytes <= _LEVEL_WALK_BYTES:
            _check_term(header, limits.max_depth)
        else:
            _check_terms(header, limits.max_depth)
    except WireError:
        raise
    except msgpack.StackError as exc:
        raise WireError("header nested too deeply for msgpack to unpack") from exc
    except ValueError as exc:
        if "for map key" in str(exc):  # msgpack's words for a key that strict_map_key refuses
            raise WireError(f"map keys must be str or bytes: {exc}") from exc
        raise WireError(f"bad msgpack header: {type(exc).__name__}: {exc}") from exc
    except Exception as exc:  # msgpack raises many types on garbage; all mean "malformed"
        raise WireError(f"bad msgpack header: {type(exc).__name__}: {exc}") from exc
    finally:
        if paused:
            gc.enable()
    if raw and not all(decoder.used):
        unused = [i for i, u in enumerate(decoder.used) if not u]
        raise WireError(f"raw frames {unused} are not referenced by the header")
    return Message(command, header)
