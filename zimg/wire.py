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

This module encodes, and is the one to import: it re-exports every public name of the parts
the codec is split into, each with one job: ``_wire_terms`` (the magic, the commands, the term
types, the limits), ``_wire_peek`` (reading a few bytes of a message to route it) and
``_wire_decode`` (checking and decoding a whole message).
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Mapping
from typing import Any

import msgpack
import numpy as np

from zimg import _wire_terms
from zimg._errors import WireError
from zimg._wire_decode import _SEND_PREFIX, decode, decode_common, decode_send
from zimg._wire_peek import ACTOR_COMMANDS, SENDER_FIELD, command_of, peek_head, peek_to
from zimg._wire_terms import (
    _COMMANDS,
    _PREFIX,
    DEFAULT_LIMITS,
    MAGIC,
    Command,
    Ext,
    Limits,
    Message,
    Pid,
    Ref,
    _byte_view,
    _is_pid_parts,
    _pack,
    _pid_ext,
    is_v1_hello,
    lead_frame,
    v1_reject,
)

__all__ = [
    "ACTOR_COMMANDS",
    "DEFAULT_LIMITS",
    "MAGIC",
    "SENDER_FIELD",
    "Command",
    "Ext",
    "Limits",
    "Message",
    "Pid",
    "Ref",
    "command_of",
    "decode",
    "decode_common",
    "decode_send",
    "encode",
    "encode_send",
    "is_v1_hello",
    "lead_frame",
    "peek_head",
    "peek_to",
    "v1_reject",
]

# Bound here, not imported: CPython compiles ``name.method()`` on an imported name without
# LOAD_METHOD, building a bound method on every call (``_DTYPE_RE.fullmatch`` in _array).
_DTYPE_RE = _wire_terms._DTYPE_RE

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
_SLOW = object()  # a term encode_send leaves to encode


def _flat_term(term: Any, limits: Limits) -> Any:
    """``term`` as ``_Encoder.walk`` would give it, for a plain value, a pid or short bytes;
    ``_SLOW`` for anything else (containers, arrays, subclasses, long bytes)."""
    kind = type(term)
    if kind in _PLAIN:
        return term
    if (
        kind is Pid
        and type(term.node) is str
        and type(term.incarnation) is int
        and type(term.serial) is int
    ):
        return _pid_ext(term)
    if kind is bytes and len(term) <= limits.inline_bytes_max:
        return term
    return _SLOW


def encode_send(to: Any, message: Any, limits: Limits = DEFAULT_LIMITS) -> list[Any]:
    """``encode(Command.SEND, {"to": to, "msg": message}, limits)``, the same frames, in under
    half the time for the commonest actor messages: a plain value, a pid or short bytes,
    or a flat tuple of those, sent to a pid. Anything else goes through :func:`encode`.

    Raises:
        WireError: as :func:`encode`.
    """
    if (
        type(to) is Pid
        and type(to.node) is str
        and type(to.incarnation) is int
        and type(to.serial) is int
    ):
        packer = _packer()
        kind = type(message)
        try:
            if kind is tuple:
                items = [x if type(x) in _PLAIN else _flat_term(x, limits) for x in message]
                term = None if _SLOW in items else _ext(_EXT_TUPLE_CODE, packer.pack(items))
            elif kind in _PLAIN:
                term = packer.pack(message)
            else:
                flat = _flat_term(message, limits)
                term = None if flat is _SLOW else packer.pack(flat)
        except (OverflowError, ValueError, TypeError):
            term = None  # encode says what is wrong
        if term is not None:
            lead = b"".join((_SEND_TO, _packed_pid(to), _MSG_KEY, term))
            if len(lead) - _PREFIX <= limits.max_header_bytes:
                return [lead]
    return encode(Command.SEND, {"to": to, "msg": message}, limits)


# A SEND's lead frame, as encode_send builds it: the prefix, a map of two entries, "to", the
# pid's ext, "msg", the message.
_SEND_TO = _SEND_PREFIX + b"\x82\xa2to"
_MSG_KEY = b"\xa3msg"
_EXT_TUPLE_CODE = int(Ext.TUPLE)
_FIXEXT = {1: 0xD4, 2: 0xD5, 4: 0xD6, 8: 0xD7, 16: 0xD8}
_PACKERS = threading.local()


def _packer() -> msgpack.Packer:
    """This thread's packer (``msgpack.packb`` builds a new one per call: 1 us more)."""
    try:
        packer: msgpack.Packer = _PACKERS.packer
    except AttributeError:
        packer = _PACKERS.packer = msgpack.Packer(use_bin_type=True)
    return packer


@functools.lru_cache(maxsize=4096)
def _packed_pid(pid: Pid) -> bytes:
    """A pid's ext, packed (a cache of the few pids most messages go to)."""
    return _pack(_pid_ext(pid))


def _ext(code: int, data: bytes) -> bytes:
    """``msgpack.packb(msgpack.ExtType(code, data))``, without building the ExtType."""
    size = len(data)
    if size in _FIXEXT:
        head = bytes((_FIXEXT[size], code))
    elif size < 0x100:
        head = bytes((0xC7, size, code))
    elif size < 0x10000:
        head = b"\xc8" + size.to_bytes(2, "big") + bytes((code,))
    else:
        head = b"\xc9" + size.to_bytes(4, "big") + bytes((code,))
    return head + data


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
