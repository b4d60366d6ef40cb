"""The broker settles a RESULT on its first three entries, read by hand in the shape a worker
writes (``_quick_head``): whatever it reads must be what ``wire.peek_head`` reads."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zimg import wire
from zimg._broker_job_flow import _quick_head, result_head
from zimg.wire import Command, lead_frame

LIMITS = wire.Limits()
_values = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.text(max_size=40),
    st.none(),
    st.booleans(),
    st.floats(allow_nan=False),
    st.binary(max_size=8),
)
_keys = st.sampled_from(["id", "ticket", "attempt", "ok", "node", "x" * 31, "é", ""])


def _frames(entries: list[tuple[str, object]]) -> list[bytes]:
    """A RESULT whose header holds ``entries`` in this order (repeats kept)."""
    body = bytearray()
    n = len(entries)
    body += bytes((0x80 | n,)) if n <= 15 else b"\xde" + n.to_bytes(2, "big")
    for key, value in entries:
        body += msgpack.packb(key) + msgpack.packb(value, use_bin_type=True)
    return [lead_frame(Command.RESULT, bytes(body))]


def _agrees(frames: list[bytes]) -> None:
    quick = _quick_head(frames, LIMITS)
    peeked = wire.peek_head(frames, 3, LIMITS, Command.RESULT)
    if quick is not None:
        assert peeked is not None
        assert quick == peeked[1]
        assert [type(v) for v in quick.values()] == [type(v) for v in peeked[1].values()]


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(_keys, _values), min_size=0, max_size=17))
def test_the_quick_read_agrees_with_peek_head(entries):
    _agrees(_frames(entries))


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(_keys, _values), min_size=3, max_size=6), st.data())
def test_a_cut_or_damaged_header_is_never_read_otherwise(entries, data):
    frame = bytearray(_frames(entries)[0])
    if data.draw(st.booleans()):
        del frame[data.draw(st.integers(min_value=0, max_value=len(frame) - 1)) :]
    else:
        at = data.draw(st.integers(min_value=0, max_value=len(frame) - 1))
        frame[at] = data.draw(st.integers(min_value=0, max_value=255))
    _agrees([bytes(frame)])


@pytest.mark.parametrize(
    "header",
    [
        {"id": 7, "ticket": 12, "attempt": 1, "ok": True},
        {"id": "job-7", "ticket": 2**40, "attempt": 3, "node": "w1"},
        {"id": -5, "ticket": 1, "attempt": 0},
    ],
)
def test_a_workers_result_is_read_quickly(header):
    frames = wire.encode(Command.RESULT, header)
    quick = _quick_head(frames, LIMITS)
    assert quick == dict(list(header.items())[:3])
    assert result_head(frames, LIMITS) == quick


def test_a_repeated_key_or_an_oversized_message_is_left_to_peek_head():
    assert _quick_head(_frames([("id", 1), ("id", 2), ("ticket", 3)]), LIMITS) is None
    frames = _frames([("id", 1), ("ticket", 2), ("attempt", 3)])
    assert _quick_head(frames + [b"x"] * (LIMITS.max_frames + 1), LIMITS) is None
    small = wire.Limits(max_header_bytes=4)
    assert _quick_head(frames, small) is None
