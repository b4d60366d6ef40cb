"""Peeking: a message's command, its ``to`` pid or its first header entries, without decoding it.

The broker forwards most messages on what these read: a few slices of the lead frame, never the
whole header. They never raise and never validate the rest of the message: anything they cannot
read at once gives None, and the caller decodes fully (:func:`zimg.wire.decode`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgpack

from zimg import _wire_terms
from zimg._wire_terms import (
    _EXT_PID,
    _PREFIX,
    DEFAULT_LIMITS,
    MAGIC,
    Command,
    Limits,
    Pid,
    _decode_pid,
)

# Bound here, not imported: CPython compiles ``name.method()`` on an imported name without
# LOAD_METHOD, building a bound method on every call (``_COMMANDS.get`` in command_of).
_COMMANDS = _wire_terms._COMMANDS

# A Pid ext is at most ~90 bytes (a 64-byte node name and two ints), so the ``to`` entry of a
# header that starts with it lies within its first bytes.
_PEEK_BYTES = 160
_TO_KEY = b"\xa2to"
ACTOR_COMMANDS = frozenset(c for c in Command if Command.SPAWN <= c <= Command.DOWN)
# Which header field names the sender of an actor command: it must be a pid (or, for DEMONITOR,
# a ref) of the node the message comes from. SEND names no sender, as in Erlang.
SENDER_FIELD = {
    Command.SPAWN: "from",
    Command.LINK: "from",
    Command.UNLINK: "from",
    Command.MONITOR: "from",
    Command.EXIT: "from",
    Command.DOWN: "pid",
    Command.DEMONITOR: "ref",
}
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
