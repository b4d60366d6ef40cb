"""Decoding: a message's frames back into a :class:`~zimg.wire.Message`, every part checked.

Validates the magic, the command, the limits, the msgpack header (str keys, each given once,
only terms, nesting depth) and the raw frames (each referenced exactly once, arrays that match
their dtype and shape), in time linear in the message's size whatever it holds.
"""

from __future__ import annotations

import functools
import gc
import math
import operator
import reprlib
from collections.abc import Sequence
from itertools import chain, compress
from typing import Any

import msgpack
import numpy as np

from zimg._errors import WireError
from zimg._wire_terms import (
    _COMMANDS,
    _EXT_PID,
    _EXT_REF,
    _EXT_TUPLE,
    _PID_CACHE_BYTES,
    _PREFIX,
    DEFAULT_LIMITS,
    MAGIC,
    Command,
    Ext,
    Limits,
    Message,
    Pid,
    Ref,
    _allowed_dtype,
    _byte_view,
    _decode_ids,
    _decode_small_pid,
)


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


# ---------------------------------------------------------------------- the commonest SEND

_SEND_PREFIX = MAGIC + bytes((int(Command.SEND),))
_NOTHING = object()


class _NotFlat(Exception):
    """A term :func:`decode_send` leaves to :func:`decode`."""


_FLAT_LEAVES = frozenset({type(None), bool, int, float, str, bytes, Pid})
_FLAT_MSG = _FLAT_LEAVES | {tuple}


def _leaf_ext(code: int, data: bytes) -> Any:
    if code == _EXT_PID and len(data) <= _PID_CACHE_BYTES:
        return _decode_small_pid(data)
    raise _NotFlat


def _flat_ext(code: int, data: bytes) -> Any:
    if code == _EXT_PID and len(data) <= _PID_CACHE_BYTES:
        return _decode_small_pid(data)
    if code == _EXT_TUPLE:
        items = msgpack.unpackb(
            data, raw=False, use_list=True, strict_map_key=True, ext_hook=_leaf_ext
        )
        if type(items) is not list or not set(map(type, items)) <= _FLAT_LEAVES:
            raise _NotFlat
        return tuple(items)
    raise _NotFlat


def decode_send(lead: bytes, limits: Limits = DEFAULT_LIMITS) -> Message | None:
    """``decode([lead], limits)`` for the commonest actor message, in about half the time: a
    SEND of one frame whose ``msg`` is a plain value (None, bool, int, float, str,
    bytes, a pid) or a flat tuple of those, to a pid. None for anything else, valid or not:
    the caller then decodes it with :func:`decode`, which says what is wrong, if anything.
    """
    if (
        type(lead) is not bytes
        or not lead.startswith(_SEND_PREFIX)
        or not 0 < len(lead) - _PREFIX <= limits.max_header_bytes
        or limits.max_depth < 1
        or lead[_PREFIX] != 0x82  # a map of exactly 2 entries: no key given twice
    ):
        return None
    try:
        header = msgpack.unpackb(
            memoryview(lead)[_PREFIX:],
            raw=False,
            use_list=True,
            strict_map_key=True,
            ext_hook=_flat_ext,
        )
    except Exception:  # _NotFlat, or anything decode should judge
        return None
    if type(header) is not dict or len(header) != 2:
        return None
    to, msg = header.get("to"), header.get("msg", _NOTHING)
    if type(to) is not Pid or type(msg) not in _FLAT_MSG:
        return None
    return Message(Command.SEND, header)


_QUICK_BYTES = 512  # frames up to this size are copied to bytes to try decode_send


def decode_common(frames: Sequence[Any], limits: Limits = DEFAULT_LIMITS) -> Message:
    """:func:`decode`, by way of :func:`decode_send` when ``frames`` is one small frame that
    holds the commonest SEND; the same result, or the same error, either way."""
    if len(frames) == 1:
        lead = frames[0]
        if type(lead) is not bytes and len(lead) <= _QUICK_BYTES:
            lead = bytes(lead)
        quick = decode_send(lead, limits)
        if quick is not None:
            return quick
    return decode(frames, limits)
