"""Tests for the pure wire codec: round-trips, zero-copy, limits and garbage input."""

from __future__ import annotations

import math
import re
import struct
from collections.abc import Callable, Sequence
from typing import Any

import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from zimg._errors import WireError
from zimg.wire import (
    DEFAULT_LIMITS,
    MAGIC,
    Command,
    Ext,
    Limits,
    Message,
    Pid,
    Ref,
    command_of,
    decode,
    decode_common,
    decode_send,
    encode,
    encode_send,
    lead_frame,
    peek_head,
    peek_to,
)

FAST = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

DTYPES = ["b1", "i1", "u1", "i2", "u2", "i4", "u4", "i8", "u8", "f2", "f4", "f8", "c8", "c16"]
BIG_ENDIAN = [">i2", ">u2", ">i4", ">u4", ">i8", ">u8", ">f2", ">f4", ">f8", ">c8", ">c16"]
SEND = bytes([Command.SEND])
RESULT = bytes([Command.RESULT])
OLD_MAGIC = b"ZIMG1"  # protocol version 1: magic, command and header in three frames
PREFIX = len(MAGIC) + 1  # the lead frame starts with the magic and the command byte
INT64_MIN, UINT64_MAX = -(2**63), 2**64 - 1


# ---------------------------------------------------------------- helpers


def pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def ext(code: int, obj: Any) -> msgpack.ExtType:
    return msgpack.ExtType(int(code), pack(obj))


def message(header: Any, *frames: Any, command: Command = Command.SEND) -> list[Any]:
    """Frames of a hand-made message; ``header`` is a term for msgpack, or raw bytes."""
    return [lead_frame(command, header if isinstance(header, bytes) else pack(header)), *frames]


def lead(header: bytes = b"", command: bytes = SEND, magic: bytes = MAGIC) -> bytes:
    """A hand-made lead frame from raw bytes, which need not be a valid magic or command."""
    return magic + command + header


def header_of(frames: Sequence[Any]) -> bytes:
    """The msgpack header of a message: its lead frame after the magic and the command byte."""
    return bytes(memoryview(frames[0])[PREFIX:])


def nest(levels: int, *wraps: Callable[[Any], Any]) -> Any:
    """``levels`` nested containers around None, made by cycling through ``wraps``."""
    wraps = wraps or (lambda x: [x],)
    term = None
    for i in range(levels):
        term = wraps[i % len(wraps)](term)
    return term


def assert_term_equal(got: Any, want: Any) -> None:
    """Equal terms: same types (tuples stay tuples), float bits, array dtype/shape/bytes."""
    if isinstance(want, np.ndarray):
        assert type(got) is np.ndarray
        assert got.dtype.str == want.dtype.str
        assert got.shape == want.shape
        assert got.tobytes() == want.tobytes()  # exact, so NaNs compare equal
        assert not got.flags.writeable
    elif isinstance(want, float):
        assert type(got) is float
        assert struct.pack("<d", got) == struct.pack("<d", want)  # NaN, -0.0
    elif isinstance(want, bytes | bytearray | memoryview):
        assert type(got) is bytes
        assert got == bytes(want)
    elif isinstance(want, list | tuple):
        assert type(got) is type(want)
        assert len(got) == len(want)
        for g, w in zip(got, want, strict=True):
            assert_term_equal(g, w)
    elif isinstance(want, dict):
        assert type(got) is dict
        assert len(got) == len(want)
        for (gk, gv), (wk, wv) in zip(got.items(), want.items(), strict=True):
            assert_term_equal(gk, wk)
            assert_term_equal(gv, wv)
    else:
        assert type(got) is type(want)
        assert got == want


def as_zmq_bytes(frame: Any) -> bytes:
    """What ``zmq.Frame.bytes`` would give (``tobytes`` also copes with zero-size shapes)."""
    return memoryview(frame).tobytes()


def as_zmq_buffer(frame: Any) -> memoryview:
    """What ``zmq.Frame.buffer`` would give: a flat, writeable byte view."""
    return memoryview(bytearray(memoryview(frame).tobytes()))


TRANSPORTS = {
    "objects": lambda f: f,
    "bytes": as_zmq_bytes,
    "cast-bytes": lambda f: bytes(memoryview(f).cast("B")) if memoryview(f).nbytes else b"",
    "memoryview": memoryview,
    "flat-buffer": as_zmq_buffer,
}


def roundtrip(
    header: Any,
    transport: Callable[[Any], Any] = lambda f: f,
    command: Command = Command.SEND,
    limits: Limits = DEFAULT_LIMITS,
) -> dict[str, Any]:
    frames = encode(command, header, limits)
    got = decode([transport(f) for f in frames], limits)
    assert isinstance(got, Message)
    assert got.command is command
    return got.header


# ---------------------------------------------------------------- strategies


@st.composite
def arrays(draw: st.DrawFn) -> np.ndarray[Any, Any]:
    dtype = np.dtype(draw(st.sampled_from(DTYPES + BIG_ENDIAN)))
    native = dtype.newbyteorder("=")
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=4))
    arr = draw(hnp.arrays(native, shape)).astype(dtype)
    view = draw(st.sampled_from(["as-is", "step", "transpose", "reverse"]))
    if arr.ndim and view == "step":
        arr = arr[..., ::2]
    elif arr.ndim and view == "transpose":
        arr = arr.T
    elif arr.ndim and view == "reverse":
        arr = arr[::-1]
    return arr


pid_fields = st.tuples(
    st.text(max_size=8), st.integers(0, UINT64_MAX), st.integers(INT64_MIN, 2**63 - 1)
)
# What encode_send and decode_send take as they are, alone or in a flat tuple.
flat_leaves = (
    st.none()
    | st.booleans()
    | st.integers(INT64_MIN, UINT64_MAX)
    | st.floats()
    | st.text(max_size=16)
    | st.binary(max_size=32)
    | pid_fields.map(lambda t: Pid(*t))
)
leaves = flat_leaves | pid_fields.map(lambda t: Ref(*t)) | arrays()
keys = st.text(max_size=6) | st.binary(max_size=6)  # the only key types (protocol.md §3)
terms = st.recursive(
    leaves,
    lambda kids: (
        st.lists(kids, max_size=4)
        | st.lists(kids, max_size=4).map(tuple)
        | st.dictionaries(keys, kids, max_size=4)
    ),
    max_leaves=10,
)
headers = st.dictionaries(st.text(max_size=8), terms, max_size=4)


# ---------------------------------------------------------------- encode_send


def _outcome(encoder: Callable[[], list[Any]]) -> Any:
    """The frames an encoder gives, as bytes, or the type of error it raises."""
    try:
        return [f if isinstance(f, bytes) else np.asarray(f).tobytes() for f in encoder()]
    except WireError:
        return WireError


class _Str(str):
    pass


SMALL_INLINE = Limits(inline_bytes_max=16)  # Hypothesis cannot draw 64 KiB byte strings
send_terms = (
    terms
    | st.lists(leaves, max_size=6).map(tuple)  # flat tuples: the quick path
    | st.binary(min_size=15, max_size=17)  # about the inline bound
    | st.text(max_size=4).map(_Str)  # a subclass: the long way
    | st.integers(UINT64_MAX + 1, UINT64_MAX + 2)  # too large to encode
)
odd_pids = st.builds(Pid, st.just("n"), st.sampled_from([1, True]), st.sampled_from([1, True, 1.5]))


@FAST
@given(
    to=pid_fields.map(lambda t: Pid(*t))
    | odd_pids
    | st.tuples(st.text(max_size=4), st.text(max_size=4)),
    message=send_terms | odd_pids | st.lists(odd_pids, max_size=2).map(tuple),
)
def test_encode_send_gives_what_encode_gives(to: Any, message: Any) -> None:
    assert _outcome(lambda: encode_send(to, message, SMALL_INLINE)) == _outcome(
        lambda: encode(Command.SEND, {"to": to, "msg": message}, SMALL_INLINE)
    )


@pytest.mark.parametrize("size", [1, 2, 3, 4, 8, 15, 16, 17, 255, 256, 0xFFFF, 0x10000])
def test_encode_send_writes_each_size_of_tuple_as_msgpack_does(size: int) -> None:
    # The empty tuple packs into 1 byte; a tuple of one str into 1 byte of array head, the
    # str's head (1, 2 or 3 bytes), then the str: its ext holds `size` bytes, and msgpack picks
    # fixext, ext 8, 16 or 32 by that size.
    head = 3 if size > 0xFFFC else 2 if size > 33 else 1
    message = () if size == 1 else ("x" * (size - 1 - head),)
    assert len(msgpack.packb(list(message))) == size
    assert encode_send(Pid("n", 1, 1), message) == encode(
        Command.SEND, {"to": Pid("n", 1, 1), "msg": message}
    )


def test_encode_send_keeps_the_header_limit() -> None:
    limits = Limits(max_header_bytes=100)
    message = (b"x" * 60, b"y" * 60)  # each short, together too large
    with pytest.raises(WireError, match="header of"):
        encode_send(Pid("n", 1, 1), message, limits)


# ---------------------------------------------------------------- decode_send


def _decoded(decoder: Callable[[], Message | None]) -> Any:
    """What a decoder gives, as its command and header encoded again (NaN equals itself so),
    or None, or the type of error it raises."""
    try:
        msg = decoder()
    except WireError:
        return WireError
    return None if msg is None else (msg.command, encode(msg.command, msg.header)[0])


LIMITS = st.sampled_from([DEFAULT_LIMITS, Limits(max_header_bytes=24), Limits(max_depth=0)])
flat_messages = flat_leaves | st.lists(flat_leaves, max_size=6).map(tuple)


@FAST
@given(to=pid_fields.map(lambda t: Pid(*t)), message=flat_messages)
def test_decode_send_takes_the_commonest_sends(to: Pid, message: Any) -> None:
    (lead,) = encode(Command.SEND, {"to": to, "msg": message})
    assert decode_send(lead) is not None
    assert _decoded(lambda: decode_send(lead)) == _decoded(lambda: decode([lead]))


@FAST
@given(
    to=pid_fields.map(lambda t: Pid(*t)) | st.tuples(st.text(max_size=4), st.text(max_size=4)),
    message=send_terms,
    limits=LIMITS,
)
def test_decode_send_gives_what_decode_gives_or_leaves_it_to_decode(
    to: Any, message: Any, limits: Limits
) -> None:
    try:
        frames = encode(Command.SEND, {"to": to, "msg": message}, SMALL_INLINE)
    except WireError:
        return  # nothing to decode
    fast = _decoded(lambda: decode_send(frames[0], limits))
    slow = _decoded(lambda: decode(frames, limits))
    assert fast is None or (len(frames) == 1 and fast == slow)
    assert _decoded(lambda: decode_common(frames, limits)) == slow


@FAST
@given(
    header=st.binary(max_size=40),
    flip=st.tuples(st.integers(0, 40), st.integers(0, 255)),
    limits=LIMITS,
)
def test_decode_send_never_takes_what_decode_refuses(
    header: bytes, flip: tuple[int, int], limits: Limits
) -> None:
    good = encode(Command.SEND, {"to": Pid("n", 1, 2), "msg": ("m", 1, b"x")})[0]
    index, value = flip
    mutated = bytearray(good)
    mutated[min(index, len(good) - 1)] = value
    for lead in (MAGIC + SEND + header, bytes(mutated)):
        fast = _decoded(lambda lead=lead: decode_send(lead, limits))
        slow = _decoded(lambda lead=lead: decode([lead], limits))
        assert fast is None or fast == slow
        assert _decoded(lambda lead=lead: decode_common([memoryview(lead)], limits)) == slow


# ---------------------------------------------------------------- round-trips


@pytest.mark.parametrize("transport", TRANSPORTS.values(), ids=TRANSPORTS.keys())
@FAST
@given(header=headers)
def test_roundtrip(transport: Callable[[Any], Any], header: dict[str, Any]) -> None:
    assert_term_equal(roundtrip(header, transport), header)


@pytest.mark.parametrize("dtype", DTYPES + BIG_ENDIAN)
@pytest.mark.parametrize("shape", [(), (0,), (3,), (2, 0, 3), (2, 3, 4, 5)])
@pytest.mark.parametrize("transport", TRANSPORTS.values(), ids=TRANSPORTS.keys())
def test_every_dtype_and_shape(
    dtype: str, shape: tuple[int, ...], transport: Callable[[Any], Any]
) -> None:
    arr = (np.arange(math.prod(shape)) % 7).reshape(shape).astype(dtype)
    got = roundtrip({"a": arr, "t": (arr,)}, transport)
    assert_term_equal(got, {"a": arr, "t": (arr,)})


def test_special_floats_and_int_extremes() -> None:
    header = {"f": [math.nan, -math.inf, math.inf, -0.0, 5e-324], "i": [INT64_MIN, UINT64_MAX]}
    assert_term_equal(roundtrip(header), header)


@pytest.mark.parametrize("command", list(Command))
def test_every_command(command: Command) -> None:
    assert roundtrip({}, command=command) == {}


def test_numpy_scalars_become_python_values() -> None:
    got = roundtrip({"a": np.int64(-3), "b": np.float32(1.5), "c": np.bool_(True)})
    assert_term_equal(got, {"a": -3, "b": 1.5, "c": True})


def test_non_contiguous_and_fortran_arrays_are_made_contiguous() -> None:
    base = np.arange(60, dtype="i4").reshape(3, 4, 5)
    for arr in (base[:, ::2, 1:], base.T, np.asfortranarray(base), base[..., ::-1]):
        frames = encode(Command.SEND, {"a": arr})
        assert len(frames) == 2
        assert frames[1].flags.c_contiguous
        assert_term_equal(decode(frames).header["a"], np.ascontiguousarray(arr))


@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
@pytest.mark.parametrize("transport", TRANSPORTS.values(), ids=TRANSPORTS.keys())
def test_large_bytes_travel_as_a_raw_frame(
    kind: Callable[[bytes], Any], transport: Callable[[Any], Any]
) -> None:
    data, other = kind(bytes(range(256)) * 257), kind(b"\xfe" * (64 << 10) + b"!")  # > 64 KiB
    header = {"big": data, "small": kind(b"x" * (64 << 10)), "a": np.arange(3), "t": (other,)}
    frames = encode(Command.SEND, header)
    assert len(frames) == 4  # the lead frame and 3 raw: exactly inline_bytes_max stays inline
    assert np.shares_memory(np.frombuffer(frames[1], np.uint8), np.frombuffer(data, np.uint8))
    assert_term_equal(decode([transport(f) for f in frames]).header, header)


def test_non_contiguous_memoryview_is_sent() -> None:
    for view in (
        memoryview(bytes(range(40)))[::3],
        np.arange(40, dtype="u2").reshape(4, 10)[:, ::3].data,  # an array's memoryview
        np.zeros((0, 3)).data,
        np.array(7, "<u2").data,
    ):
        assert roundtrip({"v": view})["v"] == view.tobytes()
    big = memoryview(bytes(range(256)) * 600)[::2]  # > 64 KiB, so a raw frame
    frames = encode(Command.SEND, {"v": big})
    assert len(frames) == 2
    assert memoryview(frames[1]).c_contiguous
    assert decode(frames).header["v"] == big.tobytes()


def spaced_out(buf: Any) -> np.ndarray[Any, Any]:
    """The bytes of ``buf`` as a non-contiguous array (every other byte of a larger one)."""
    data = np.frombuffer(buf, "u1")
    spaced = np.zeros(2 * data.size, "u1")
    spaced[::2] = data
    return spaced[::2]


LEAD_LAYOUTS = {
    "2-d": lambda b: np.frombuffer(b, "u1").reshape(-1, 1),
    "signed bytes": lambda b: np.frombuffer(b, "i1"),
    "non-contiguous": spaced_out,
}


@pytest.mark.parametrize("layout", LEAD_LAYOUTS.values(), ids=LEAD_LAYOUTS.keys())
def test_decode_accepts_any_layout_of_the_right_bytes(layout: Callable[[Any], Any]) -> None:
    arr, one = np.arange(6, dtype="<u2"), np.array([9], "u1")
    head, data, byte = encode(Command.SEND, {"a": arr, "b": one})
    frames = [
        layout(head),  # the lead frame
        spaced_out(data),  # non-contiguous
        np.array(memoryview(byte).tobytes()[0], "u1"),  # 0-d
    ]
    assert_term_equal(decode(frames).header, {"a": arr, "b": one})


def _list(x: Any) -> list[Any]:
    return [x]


def _tuple(x: Any) -> tuple[Any]:
    return (x,)


def _dict(x: Any) -> dict[str, Any]:
    return {"k": x}


def _bytes_key_dict(x: Any) -> dict[bytes, Any]:
    return {b"k": x}


WRAPS = {
    "list": (_list,),
    "tuple": (_tuple,),
    "dict": (_dict,),
    "bytes-key dict": (_bytes_key_dict,),
    "mixed": (_list, _tuple, _dict),
}


@pytest.mark.parametrize("wraps", WRAPS.values(), ids=WRAPS.keys())
@pytest.mark.parametrize("limit", [1, 3, 32])
def test_depth_limit_is_the_same_for_encode_and_decode(
    limit: int, wraps: tuple[Callable[[Any], Any], ...]
) -> None:
    """``limit`` levels of lists, tuples and dicts pass both ways; one more fails both ways."""
    limits = Limits(max_depth=limit)
    ok, deep = {"a": nest(limit, *wraps)}, {"a": nest(limit + 1, *wraps)}
    assert_term_equal(roundtrip(ok, limits=limits), ok)
    with pytest.raises(WireError, match=f"nested deeper than {limit} levels"):
        encode(Command.SEND, deep, limits)
    lenient = encode(Command.SEND, deep, Limits(max_depth=99))
    assert_term_equal(decode(lenient, Limits(max_depth=99)).header, deep)
    with pytest.raises(WireError, match=f"nested deeper than {limit} levels"):
        decode(lenient, limits)


def test_limits_are_inclusive() -> None:
    arr = np.zeros(8, "u1")
    limits = Limits(max_frames=2, max_frame_bytes=8, max_ndim=2)
    header = {"a": arr, "b": arr.reshape(2, 4)}
    assert_term_equal(roundtrip(header, limits=limits), header)
    size = len(header_of(encode(Command.SEND, header)))
    assert_term_equal(roundtrip(header, limits=Limits(max_header_bytes=size)), header)


def test_largest_frame_covers_a_lead_frame_with_the_largest_header() -> None:
    # MAXMSGSIZE is set from it: a header at its limit, plus magic and command, must fit.
    lead = encode(Command.SEND, {"s": "x" * 90})[0]
    limits = Limits(max_header_bytes=len(header_of([lead])), max_frame_bytes=10)
    assert limits.largest_frame == len(lead)
    assert Limits(max_header_bytes=10, max_frame_bytes=500).largest_frame == 500


# ---------------------------------------------------------------- zero-copy


def test_decoded_array_is_a_view_of_the_frame() -> None:
    arr = np.arange(12, dtype="<u2").reshape(3, 4)
    frames = encode(Command.SEND, {"a": arr})
    buf = bytearray(memoryview(frames[1]).tobytes())
    got = decode([frames[0], buf]).header["a"]
    assert np.shares_memory(got, np.frombuffer(buf, np.uint8))
    assert not got.flags.writeable
    buf[0] = 99
    assert got[0, 0] == 99  # the very same memory
    np.testing.assert_array_equal(got.ravel()[1:], arr.ravel()[1:])


def test_encode_puts_contiguous_array_itself_in_the_frames() -> None:
    arr = np.arange(12, dtype="f4").reshape(3, 4)
    scalar = np.array(7, dtype="i8")
    frames = encode(Command.SEND, {"a": arr, "s": scalar})
    assert len(frames) == 3
    assert frames[1] is arr
    assert frames[2] is scalar


def test_encode_puts_magic_command_and_header_in_one_lead_frame() -> None:
    frames = encode(Command.HEARTBEAT, {})
    assert len(frames) == 1
    assert frames[0].startswith(b"ZIMG2\x04")
    assert frames[0] == b"ZIMG2\x04" + pack({})
    arr = np.arange(3, dtype="<i8")
    head, raw = encode(Command.SEND, {"to": Pid("n1", 1, 2), "a": arr, "s": "x"})
    assert head.startswith(MAGIC + SEND)
    want = {"to": ext(Ext.PID, ["n1", 1, 2]), "a": ext(Ext.ARRAY, [0, "<i8", [3]]), "s": "x"}
    assert header_of([head]) == pack(want)  # raw frames follow, indexed from 0
    assert raw is arr


@pytest.mark.parametrize("command", list(Command))
def test_lead_frame_is_magic_command_byte_and_header(command: Command) -> None:
    header = pack({"k": [1, "v"]})
    assert lead_frame(command, header) == MAGIC + bytes([command]) + header
    assert lead_frame(command, b"") == MAGIC + bytes([command])
    assert encode(command, {"k": [1, "v"]}) == [lead_frame(command, header)]


# ---------------------------------------------------------------- garbage input

TOO_DEEP_BY_HAND = b"\x81\xa1a" + b"\x91" * 10_000 + b"\xc0"
ARR = np.zeros(4, "<u2")

GARBAGE = {
    "no frames": ([], "a message needs at least 1 frame, got none"),
    "magic alone": ([MAGIC], "the lead frame ends after the magic, with no command byte"),
    "command in its own frame": ([MAGIC, SEND], "ends after the magic, with no command byte"),
    "version 1 layout": ([MAGIC, SEND, pack({})], "ends after the magic, with no command byte"),
    "wrong magic": ([lead(pack({}), magic=OLD_MAGIC)], "bad magic b'ZIMG1', expected b'ZIMG2'"),
    "version 1 message": ([OLD_MAGIC, SEND, pack({})], "bad magic b'ZIMG1', expected b'ZIMG2'"),
    "empty lead": ([b""], "bad magic b''"),
    "no magic": ([SEND + pack({})], "bad magic b'\\x12\\x80'"),
    "magic prefix": ([b"ZIMG"], "bad magic b'ZIMG'"),
    "magic cut short": ([lead(pack({}), magic=b"ZIMG")], "bad magic b'ZIMG\\x12'"),
    "doubled command byte": ([lead(SEND + pack({}))], "bad msgpack header"),
    "unknown command": ([lead(pack({}), b"\xee")], "unknown command byte 0xee"),
    "zero command": ([lead(pack({}), b"\x00")], "unknown command byte 0x00"),
    "command alone": ([lead(b"", b"\x99")], "unknown command byte 0x99"),
    "non-buffer frame": (message({}, "text"), "frame 1 is not a buffer but a str"),
    "non-buffer second frame": (
        message({"a": ext(Ext.ARRAY, [0, "<u2", [4]])}, ARR, None),
        "frame 2 is not a buffer but a NoneType",
    ),
    "None lead": ([None], "frame 0 is not a buffer but a NoneType"),
    "str lead": (
        [(MAGIC + SEND + pack({})).decode("latin-1")],
        "frame 0 is not a buffer but a str",
    ),
    "not msgpack": (message(b"\xc1"), "bad msgpack header"),
    "empty header": (message(b""), "bad msgpack header"),
    "truncated": (message(pack({"a": [1, 2, "xyz"]})[:-2]), "bad msgpack header"),
    "trailing bytes": (message(pack({}) + b"\x00"), "bad msgpack header"),
    "bad utf-8": (message(b"\x81\xa1a\xa2\xff\xfe"), "bad msgpack header"),
    "unhashable key": (message(b"\x81\xa1a\x81\x91\x01\x02"), "map keys must be str or bytes"),
    "header is a list": (message([1, 2]), "header must be a map with string keys"),
    "header is an int": (message(7), "header must be a map"),
    "int header key": (message({"a": 1, 2: 3}), "map keys must be str or bytes"),
    "bytes header key": (message({b"a": 1}), "header must be a map with string keys"),
    "40 nested lists": (message({"a": nest(40)}), "nested deeper than 32"),
    "40 nested maps": (message({"a": nest(40, _dict)}), "nested deeper than 32"),
    "10k nested lists": (message(TOO_DEEP_BY_HAND), "nested too deeply"),
    "40 nested tuples": (message({"a": nest(40, lambda x: ext(Ext.TUPLE, [x]))}), "nested deeper"),
    "10k nested tuples": (
        message({"a": nest(10_000, lambda x: ext(Ext.TUPLE, [x]))}),
        "nested deeper than 32",
    ),
    "tuple not array": (message({"a": ext(Ext.TUPLE, 5)}), "tuple ext does not hold an array"),
    "unknown ext": (message({"a": msgpack.ExtType(42, b"")}), "unknown ext type 42"),
    "ext zero": (message({"a": msgpack.ExtType(0, b"x")}), "unknown ext type 0"),
    "timestamp ext": (message({"a": msgpack.Timestamp(1, 2)}), "Timestamp, which is not a term"),
    "pid too short": (message({"p": ext(Ext.PID, ["n", 1])}), "pid/ref ext must be"),
    "pid too long": (message({"p": ext(Ext.PID, ["n", 1, 2, 3])}), "pid/ref ext must be"),
    "pid int node": (message({"p": ext(Ext.PID, [1, 2, 3])}), "pid/ref ext must be"),
    "pid str serial": (message({"p": ext(Ext.PID, ["n", 1, "3"])}), "pid/ref ext must be"),
    "pid bool": (message({"p": ext(Ext.PID, ["n", True, 3])}), "pid/ref ext must be"),
    "pid map": (message({"p": ext(Ext.PID, {"n": 1})}), "pid/ref ext must be"),
    "ref float": (message({"r": ext(Ext.REF, ["n", 1.0, 3])}), "pid/ref ext must be"),
    "pid garbage": (message({"p": msgpack.ExtType(Ext.PID, b"\xc1")}), "bad msgpack header"),
    "array spec short": (message({"a": ext(Ext.ARRAY, [0, "|u1"])}, b"x"), "array ext must be"),
    "array spec map": (message({"a": ext(Ext.ARRAY, {"i": 0})}, b"x"), "array ext must be"),
    "dtype O": (message({"a": ext(Ext.ARRAY, [0, "|O", [1]])}, b"x" * 8), "dtype '|O'"),
    "dtype V8": (message({"a": ext(Ext.ARRAY, [0, "|V8", [1]])}, b"x" * 8), "dtype '|V8'"),
    "dtype U4": (message({"a": ext(Ext.ARRAY, [0, "<U4", [1]])}, b"x" * 16), "dtype '<U4'"),
    "dtype M8": (message({"a": ext(Ext.ARRAY, [0, "<M8", [1]])}, b"x" * 8), "dtype '<M8'"),
    "dtype M8[ns]": (message({"a": ext(Ext.ARRAY, [0, "<M8[ns]", [1]])}, b"x" * 8), "dtype"),
    "dtype newline": (message({"a": ext(Ext.ARRAY, [0, "f8\n", [1]])}, b"x" * 8), "dtype"),
    "dtype native order": (message({"a": ext(Ext.ARRAY, [0, "=u2", [1]])}, b"xx"), "dtype '=u2'"),
    "dtype no order": (message({"a": ext(Ext.ARRAY, [0, "u2", [1]])}, b"xx"), "dtype 'u2'"),
    "dtype name": (message({"a": ext(Ext.ARRAY, [0, "float64", [1]])}, b"x" * 8), "dtype"),
    "dtype int": (message({"a": ext(Ext.ARRAY, [0, 8, [1]])}, b"x" * 8), "dtype 8"),
    "negative shape": (message({"a": ext(Ext.ARRAY, [0, "|u1", [-1]])}, b""), "array shape [-1]"),
    "shape not list": (message({"a": ext(Ext.ARRAY, [0, "|u1", 3])}, b"xxx"), "array shape 3"),
    "shape float": (message({"a": ext(Ext.ARRAY, [0, "|u1", [3.0]])}, b"xxx"), "array shape"),
    "shape bool": (message({"a": ext(Ext.ARRAY, [0, "|u1", [True]])}, b"x"), "array shape"),
    "too many dims": (message({"a": ext(Ext.ARRAY, [0, "|u1", [1] * 9])}, b"x"), "at most 8"),
    "frame too short": (
        message({"a": ext(Ext.ARRAY, [0, "<u2", [4]])}, b"x" * 7),
        "holds 7 bytes but dtype <u2 and shape (4,) need 8",
    ),
    "frame too long": (message({"a": ext(Ext.ARRAY, [0, "<u2", [4]])}, b"x" * 9), "need 8"),
    "huge shape": (
        message({"a": ext(Ext.ARRAY, [0, "|u1", [2**40, 2**40]])}, b"tiny"),
        "holds 4 bytes",
    ),
    "huge empty shape": (
        message({"a": ext(Ext.ARRAY, [0, "|u1", [0, 2**63]])}, b""),
        "cannot be built",
    ),
    "missing frame": (message({"a": ext(Ext.ARRAY, [1, "<u2", [4]])}, ARR), "reference to frame 1"),
    "no frames at all": (message({"a": ext(Ext.ARRAY, [0, "|u1", [0]])}), "message has 0"),
    "negative frame": (message({"a": ext(Ext.ARRAY, [-1, "<u2", [4]])}, ARR), "frame -1"),
    "str frame index": (message({"a": ext(Ext.ARRAY, ["0", "<u2", [4]])}, ARR), "frame '0'"),
    "frame used twice": (
        message({"a": ext(Ext.ARRAY, [0, "<u2", [4]]), "b": ext(Ext.ARRAY, [0, "|u1", [8]])}, ARR),
        "frame 0 is referenced twice",
    ),
    "blob and array": (
        message({"a": ext(Ext.ARRAY, [0, "<u2", [4]]), "b": ext(Ext.BLOB, 0)}, ARR),
        "referenced twice",
    ),
    "blob missing": (message({"b": ext(Ext.BLOB, 0)}), "reference to frame 0"),
    "blob bad index": (message({"b": ext(Ext.BLOB, [0])}, b"x"), "reference to frame [0]"),
    "extra frame": (message({}, b"spare"), "raw frames [0] are not referenced"),
    "extra frame after used": (
        message({"a": ext(Ext.ARRAY, [0, "<u2", [4]])}, ARR, b"x", b"y"),
        "raw frames [1, 2] are not referenced",
    ),
}


@pytest.mark.parametrize(("frames", "fragment"), GARBAGE.values(), ids=GARBAGE.keys())
@pytest.mark.parametrize("arrays", [True, False], ids=["arrays", "checked-only"])
def test_garbage_raises_wire_error(frames: list[Any], fragment: str, arrays: bool) -> None:
    # A broker decodes JOBs with arrays=False: it must refuse exactly what a full decode does.
    with pytest.raises(WireError, match=re.escape(fragment)):
        decode(frames, arrays=arrays)


@pytest.mark.parametrize("shape", [(0,), (3,), (2, 0, 3), (2, 3, 4)])
def test_a_decode_without_arrays_checks_them_and_builds_only_empty_ones(
    shape: tuple[int, ...],
) -> None:
    arr = np.arange(math.prod(shape), dtype="<u2").reshape(shape)
    frames = encode(Command.JOB, {"id": 1, "items": [{"payload": arr, "name": "x"}]})
    header = decode(frames, arrays=False).header
    assert header["id"] == 1
    assert header["items"][0]["name"] == "x"
    got = header["items"][0]["payload"]
    if arr.size:
        assert got is None  # checked, not built
    else:
        np.testing.assert_array_equal(got, arr)
    np.testing.assert_array_equal(decode(frames).header["items"][0]["payload"], arr)


def test_over_limits_raise_wire_error() -> None:
    arr = message({"a": ext(Ext.ARRAY, [0, "|u1", [9]])}, b"x" * 9)
    with pytest.raises(WireError, match="header of 17 bytes exceeds the limit of 16"):
        decode(message({"a": "x" * 13}), Limits(max_header_bytes=16))
    with pytest.raises(WireError, match="3 raw frames exceed the limit of 2"):
        decode(message({}, b"", b"", b""), Limits(max_frames=2))
    with pytest.raises(WireError, match="frame 1 of 9 bytes exceeds 8"):
        decode(arr, Limits(max_frame_bytes=8))
    with pytest.raises(WireError, match="nested deeper than 2"):
        decode(message({"a": [[[1]]]}), Limits(max_depth=2))
    with pytest.raises(WireError, match="at most 1 non-negative"):
        decode(message({"a": ext(Ext.ARRAY, [0, "|u1", [3, 3]])}, b"x" * 9), Limits(max_ndim=1))
    assert decode(arr, Limits(max_frame_bytes=9, max_frames=1)).header["a"].shape == (9,)


# ---------------------------------------------------------------- fuzzing

ext_payloads = st.recursive(
    st.integers(-3, 3) | st.text(max_size=4) | st.sampled_from([*DTYPES, "|O", "<U2"]),
    lambda kids: st.lists(kids, max_size=4),
    max_leaves=6,
)
ext_values = (
    st.builds(msgpack.ExtType, st.integers(0, 127), st.binary(max_size=24))
    | st.builds(ext, st.sampled_from(list(Ext)), ext_payloads)
    | st.builds(msgpack.Timestamp, st.integers(0, 2**34), st.integers(0, 999_999_999))
)
msgpack_terms = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(INT64_MIN, UINT64_MAX)
    | st.floats()
    | st.text(max_size=8)
    | st.binary(max_size=8)
    | ext_values,
    lambda kids: (
        st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=4), kids, max_size=4)
    ),
    max_leaves=12,
)


def decode_or_wire_error(frames: list[Any]) -> None:
    """Decode must give a message or a WireError; a message it gives must re-encode the same.

    ``peek_to`` must never raise, and what it reads of a message that decodes must agree with
    the decoded header.
    """
    peeked, head, command = peek_to(frames), peek_head(frames, 2), command_of(frames)
    try:
        got = decode(frames)
    except WireError:
        return
    assert command is got.command
    assert isinstance(got, Message)
    again = decode(encode(got.command, got.header))
    assert_term_equal(again.header, got.header)
    # A header that decodes has each key once, so the peeks read what decode does.
    assert len(set(top_level_keys(header_of(frames)))) == len(got.header)
    if peeked is not None:
        assert peeked[0] is got.command
        assert peeked[1] == got.header["to"]
    if head is not None:
        assert head[0] is got.command
        for key, value in head[1].items():
            assert_term_equal(value, got.header[key])


def top_level_keys(header: bytes) -> list[Any]:
    """The keys of a msgpack map in order, repeats included (decode refuses repeats)."""
    pairs = msgpack.unpackb(header, object_pairs_hook=list, strict_map_key=False, raw=False)
    return [k for k, _ in pairs]


@FAST
@given(frames=st.lists(st.binary(max_size=40), max_size=8))
def test_fuzz_random_frames(frames: list[bytes]) -> None:
    decode_or_wire_error(frames)


@FAST
@given(
    command=st.binary(min_size=1, max_size=1),
    header=st.binary(max_size=64),
    raw=st.lists(st.binary(max_size=16), max_size=4),
)
def test_fuzz_random_header_bytes(command: bytes, header: bytes, raw: list[bytes]) -> None:
    decode_or_wire_error([lead(header, command), *raw])


@FAST
@given(
    header=st.dictionaries(st.text(max_size=4), msgpack_terms, max_size=4),
    raw=st.lists(st.binary(max_size=16), max_size=4),
)
def test_fuzz_random_msgpack_with_exts(header: dict[str, Any], raw: list[bytes]) -> None:
    decode_or_wire_error(message(header, *raw))


@st.composite
def mutated_messages(draw: st.DrawFn) -> list[bytes]:
    frames = [as_zmq_bytes(f) for f in encode(Command.SEND, draw(headers))]
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(frames) - 1)) if frames else 0
        op = draw(st.sampled_from(["flip", "truncate", "drop", "duplicate", "insert", "swap"]))
        if op == "flip" and frames and frames[i]:
            frame = bytearray(frames[i])
            at = draw(st.integers(0, len(frame) - 1))
            frame[at] ^= draw(st.integers(1, 255))
            frames[i] = bytes(frame)
        elif op == "truncate" and frames:
            frames[i] = frames[i][: draw(st.integers(0, max(0, len(frames[i]) - 1)))]
        elif op == "drop" and frames:
            del frames[i]
        elif op == "duplicate" and frames:
            frames.insert(i, frames[i])
        elif op == "insert":
            frames.insert(i, draw(st.binary(max_size=16)))
        elif op == "swap" and len(frames) > 1:
            j = draw(st.integers(0, len(frames) - 1))
            frames[i], frames[j] = frames[j], frames[i]
    return frames


@FAST
@given(frames=mutated_messages())
def test_fuzz_mutated_messages(frames: list[bytes]) -> None:
    decode_or_wire_error(frames)


# ---------------------------------------------------------------- encode rejects


def _function() -> None:
    return None


class _Thing:
    pass


UNSENDABLE = {
    "object": (object(), "cannot send a value of type object"),
    "instance": (_Thing(), "type _Thing"),
    "set": ({1, 2}, "type set"),
    "frozenset": (frozenset(), "type frozenset"),
    "function": (_function, "type function"),
    "lambda": (lambda: None, "type function"),
    "builtin": (len, "type builtin_function_or_method"),
    "class": (_Thing, "type type"),
    "complex": (1j, "type complex"),
    "numpy complex": (np.complex128(1j), "type complex"),
    "range": (range(3), "type range"),
    "nested set": ([1, (2, {3})], "type set"),
    "set in dict": ({"k": {1}}, "type set"),
    "set as key": ({frozenset(): 1}, "map keys must be str or bytes, not frozenset"),
    "object array": (np.array([object()], dtype=object), "arrays of dtype object"),
    "unicode array": (np.array(["ab"]), "arrays of dtype <U2"),
    "bytes array": (np.array([b"ab"]), "arrays of dtype |S2"),
    "void array": (np.zeros(2, "V8"), "arrays of dtype |V8"),
    "datetime array": (np.array(["2020-01-01"], dtype="M8[D]"), "arrays of dtype datetime64"),
    "timedelta array": (np.zeros(2, "m8[s]"), "arrays of dtype timedelta64"),
    "structured array": (np.zeros(2, [("a", "u2")]), "cannot be sent"),
    "9-dim array": (np.zeros((1,) * 9), "array has 9 dimensions; the limit is 8"),
    "int over uint64": (2**64, "cannot encode"),
    "int under int64": (INT64_MIN - 1, "cannot encode"),
    "big int in tuple": ((1, [2**70]), "cannot encode"),
    "int dict key": ({2**64: 1}, "map keys must be str or bytes, not int"),
    "surrogate str": ("\ud800", "cannot encode"),
    "pid int node": (Pid(1, 2, 3), "Pid fields must be (str, int, int)"),  # type: ignore[arg-type]
    "pid bool incarnation": (Pid("n", True, 3), "Pid fields must be"),
    "ref float serial": (Ref("n", 1, 2.0), "Ref fields must be"),  # type: ignore[arg-type]
    "pid big serial": (Pid("n", 1, 2**64), "cannot encode"),
    "33 nested lists": (nest(33), "nested deeper than 32 levels"),
    "33 nested tuples": (nest(33, _tuple), "nested deeper than 32 levels"),
    "33 nested dicts": (nest(33, _dict), "nested deeper than 32 levels"),
}


@pytest.mark.parametrize(("value", "fragment"), UNSENDABLE.values(), ids=UNSENDABLE.keys())
def test_encode_rejects(value: Any, fragment: str) -> None:
    with pytest.raises(WireError, match=re.escape(fragment)):
        encode(Command.SEND, {"v": value})


def test_encode_rejects_self_referential_list() -> None:
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(WireError, match="nested deeper than 32"):
        encode(Command.SEND, {"v": loop})


@pytest.mark.parametrize("key", [1, b"k", ("a",), None, 1.5])
def test_encode_rejects_non_str_header_keys(key: Any) -> None:
    with pytest.raises(WireError, match="header keys must be str"):
        encode(Command.SEND, {"ok": 1, key: 2})


@pytest.mark.parametrize("command", [0, 0x99, 256, -1, "SEND", None, True])
def test_encode_rejects_unknown_commands(command: Any) -> None:
    with pytest.raises(WireError, match="unknown command"):
        encode(command, {})


def test_encode_enforces_limits() -> None:
    arr = np.zeros(9, "u1")
    with pytest.raises(WireError, match="frame of 9 bytes exceeds the limit of 8"):
        encode(Command.SEND, {"a": arr}, Limits(max_frame_bytes=8))
    with pytest.raises(WireError, match="frame of 9 bytes exceeds the limit of 8"):
        encode(Command.SEND, {"b": b"x" * 9}, Limits(max_frame_bytes=8, inline_bytes_max=4))
    with pytest.raises(WireError, match="more than 2 raw frames"):
        encode(Command.SEND, {"a": [arr, arr, arr]}, Limits(max_frames=2))
    with pytest.raises(WireError, match=r"header of \d+ bytes exceeds the limit of 10"):
        encode(Command.SEND, {"s": "x" * 10}, Limits(max_header_bytes=10))
    with pytest.raises(WireError, match="array has 3 dimensions; the limit is 2"):
        encode(Command.SEND, {"a": arr.reshape(1, 3, 3)}, Limits(max_ndim=2))


# ---------------------------------------------------------------- peek_to


TO_PID = pack({"to": ext(Ext.PID, ["n1", 1, 2])})  # a header that peek_to reads
ROUTED = [Command.SEND, Command.LINK, Command.UNLINK, Command.MONITOR, Command.EXIT, Command.DOWN]


@pytest.mark.parametrize("transport", TRANSPORTS.values(), ids=TRANSPORTS.keys())
@pytest.mark.parametrize(
    "pid",
    [
        Pid("n1", 42, 3),  # ext 8
        Pid("main", 7, 0),  # exactly 8 bytes of pid: fixext 8
        Pid("a", 0, 0),  # 6 bytes: ext 8
        Pid("n" * 64, UINT64_MAX, INT64_MIN),  # the longest name, the widest ints
        Pid("ünï", 1, 1),
    ],
)
def test_peek_reads_the_pid_a_message_starts_with(
    pid: Pid, transport: Callable[[Any], Any]
) -> None:
    for command in ROUTED:
        frames = [transport(f) for f in encode(command, {"to": pid, "msg": ("x", [1] * 100)})]
        assert peek_to(frames) == (command, pid)


def test_peek_reads_past_a_16_bit_map_header_and_a_long_header() -> None:
    header = {"to": Pid("n1", 1, 2), **{f"k{i}": "v" * 50 for i in range(20)}}
    frames = encode(Command.SEND, header)
    assert header_of(frames)[0] == 0xDE
    assert len(header_of(frames)) > 1000
    assert peek_to(frames) == (Command.SEND, Pid("n1", 1, 2))


@pytest.mark.parametrize(
    "frames",
    [
        encode(Command.SEND, {"msg": 1, "to": Pid("n1", 1, 2)}),  # `to` is not first
        encode(Command.SEND, {"to": ("name", "n1"), "msg": 1}),  # a registered name
        encode(Command.SPAWN, {"to": "*"}),
        encode(Command.JOB, {"to": Pid("n1", 1, 2)}),  # not an actor command
        encode(Command.NODES, {"to": Pid("n1", 1, 2)}),
        encode(Command.SEND, {"to": Ref("n1", 1, 2)}),  # a ref is not a pid
        encode(Command.SEND, {}),
        encode(Command.SEND, {"tox": Pid("n1", 1, 2)}),
        [lead(TO_PID, magic=OLD_MAGIC)],
        [OLD_MAGIC, SEND, TO_PID],  # a version 1 message
        [MAGIC, SEND, TO_PID],  # the version 1 layout with the version 2 magic
        [lead(SEND + TO_PID)],  # a doubled command byte
        [lead(TO_PID, b"\x99")],
        [MAGIC],
        [lead(b"")],
        [lead(b"\x80")],
        [lead(b"\x81\xa2to")],  # cut after the key
        [lead(b"\x81\xa2to\xc7\x06\x01\x93\xa2n1")],  # cut inside the pid
        [lead(b"\x81\xa2to\xc7\x02\x01\x93\xc1")],  # a reserved byte in the pid
        [lead(b"\x81\xa2to" + pack(ext(Ext.PID, ["n1", 1])))],
        [lead(b"\x81\xa2to" + pack(ext(Ext.PID, ["n1", True, 2])))],
        [lead(b"\xde\x00\x00\xa2to" + pack(ext(Ext.PID, ["n1", 1, 2])))],  # 0 entries
        [lead(TO_PID), *[b"x"] * 257],
        [lead(pack({"to": ext(Ext.PID, ["n1", 1, 2]), "pad": "p" * (1 << 20)}))],
        [5],  # not a buffer at all
        [None],
        [(MAGIC + SEND + TO_PID).decode("latin-1")],  # a str, not a buffer
    ],
    ids=lambda f: repr([bytes(x)[:24] if isinstance(x, bytes) else x for x in f[:3]])[:80],
)
def test_peek_gives_none_for_anything_it_cannot_read_at_once(frames: list[Any]) -> None:
    assert peek_to(frames) is None


def test_peek_applies_the_header_and_frame_count_limits() -> None:
    frames = encode(Command.SEND, {"to": Pid("n1", 1, 2), "msg": b"x" * 100_000})
    assert peek_to(frames) == (Command.SEND, Pid("n1", 1, 2))
    assert peek_to(frames, Limits(max_frames=1)) == (Command.SEND, Pid("n1", 1, 2))
    assert peek_to(frames, Limits(max_frames=0)) is None
    size = len(header_of(frames))
    assert peek_to(frames, Limits(max_header_bytes=size)) == (Command.SEND, Pid("n1", 1, 2))
    assert peek_to(frames, Limits(max_header_bytes=size - 1)) is None
    assert peek_to(frames, Limits(max_header_bytes=10)) is None


@FAST
@given(to=pid_fields.map(lambda t: Pid(*t)), header=headers, cut=st.integers(0, 200))
def test_peek_of_a_cut_header_is_right_or_none(to: Pid, header: dict[str, Any], cut: int) -> None:
    frames = encode(Command.SEND, {"to": to, **{k: v for k, v in header.items() if k != "to"}})
    whole = peek_to(frames)
    assert whole == (Command.SEND, to)
    assert peek_to([frames[0][: PREFIX + cut], *frames[1:]]) in (None, whole)


# ---------------------------------------------------------------- peek_head and command_of


def test_peek_head_reads_the_first_plain_entries() -> None:
    header = {"id": 7, "client": b"c/1/2", "attempt": 2, "items": [{"ok": True}] * 50}
    frames = encode(Command.RESULT, header)
    assert peek_head(frames, 3) == (Command.RESULT, {"id": 7, "client": b"c/1/2", "attempt": 2})
    assert peek_head(frames, 1) == (Command.RESULT, {"id": 7})
    assert len(frames) == 1
    assert peek_head([frames[0] + b"\xc1"], 3) is not None  # the rest: unread


@pytest.mark.parametrize(
    "frames",
    [
        encode(Command.RESULT, {"id": 7, "client": b"c"}),  # fewer entries than asked for
        encode(Command.RESULT, {"id": 7, "client": b"c", "items": []}),  # a list among them
        encode(Command.RESULT, {"id": (7,), "client": b"c", "x": 1}),  # an ext
        encode(Command.RESULT, {"id": Pid("n", 1, 2), "client": b"c", "x": 1}),
        message({1: 2, "client": b"c", "x": 1}, command=Command.RESULT),  # a non-str key
        message(b"\x83\xa2id\xc1", command=Command.RESULT),  # a reserved byte
        message(b"\x83\xa2id", command=Command.RESULT),  # cut short
        message(b"\x93\x01\x02\x03", command=Command.RESULT),  # not a map
        message(b"", command=Command.RESULT),  # no header at all
        [lead(pack({"id": 7, "client": b"c", "x": 1}), RESULT, OLD_MAGIC)],
        [OLD_MAGIC, RESULT, pack({"id": 7, "client": b"c", "x": 1})],  # a version 1 message
        [MAGIC, RESULT, pack({"id": 7, "client": b"c", "x": 1})],  # the version 1 layout
        [lead(pack({"id": 7, "client": b"c", "x": 1}), b"\x99")],
        [MAGIC],
        [None],
    ],
)
def test_peek_head_gives_none_for_what_it_cannot_read_plainly(frames: list[Any]) -> None:
    assert peek_head(frames, 3) is None


def test_command_of() -> None:
    assert command_of(encode(Command.SEND, {})) is Command.SEND
    assert command_of([lead(b"\x80", b"\x99")]) is None
    assert command_of([lead(b"\x80", SEND + SEND)]) is Command.SEND  # the header is not read,
    assert command_of([lead(b"", SEND)]) is Command.SEND  # even when there is none,
    assert command_of([lead(b"\x80"), 5]) is Command.SEND  # nor are the raw frames
    assert command_of([memoryview(bytearray(lead(b"\x80", RESULT)))]) is Command.RESULT
    assert command_of([lead(b"\x80", magic=OLD_MAGIC)]) is None
    assert command_of([OLD_MAGIC, SEND, b"\x80"]) is None  # a version 1 message
    assert command_of([MAGIC, SEND, b"\x80"]) is None  # the command in its own frame
    assert command_of([MAGIC]) is None
    assert command_of([b""]) is None
    assert command_of([]) is None
    assert command_of([5, lead(b"\x80")]) is None
    assert command_of([None]) is None
    assert command_of([lead(b"\x80").decode("latin-1")]) is None
