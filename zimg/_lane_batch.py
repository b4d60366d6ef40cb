"""Batches on a lane: several small actor messages in one ZeroMQ message.

Sending a small message costs a node far more in ZeroMQ calls and in the Python around them
than in encoding it, on both sides; so a lane that carries a burst packs the burst. A message
that goes on a lane less than ``BURST_GAP_S`` after the one before it (or while a batch is
open) joins the lane's open batch instead of going at once. The batch goes out when it holds
``BATCH_MAX`` messages or ``BATCH_BYTES`` bytes, when a message that cannot join it (one with
raw frames) must go after it, when a process of the node is about to wait in ``receive``, and
otherwise ``BATCH_DELAY_S`` after it opened (the I/O thread sends it). A message sent after a
pause goes at once, alone: a request and its reply are never held.

On the wire a batch is two frames after the routing id: ``BATCH``, then a msgpack array of the
messages' lead frames (each one a whole message, as ``zimg.wire.encode`` makes it, with no raw
frames). The receiver unpacks the array within bounds (at most ``BATCH_MAX`` items, each no
larger than a lead frame may be), then checks and delivers each message as if it had come alone.
"""

from __future__ import annotations

from typing import Any

import msgpack

from zimg import wire
from zimg._errors import WireError
from zimg._wire_terms import _PREFIX

BATCH = b"BATCH"  # the first frame of a batch
BATCH_MAX = 128  # messages in one batch
BATCH_BYTES = 64 * 1024  # a batch goes out once its messages hold this many bytes
BATCH_DELAY_S = 0.001  # the longest a message waits in an open batch
BURST_GAP_S = 50e-6  # a message this soon after the lane's last one joins a batch


def pack(leads: list[bytes]) -> list[Any]:
    """The frames of a batch of ``leads`` (at least two; one message goes alone)."""
    return [BATCH, msgpack.packb(leads, use_bin_type=True)]


def unpack(payload: memoryview | bytes, limits: wire.Limits) -> list[bytes]:
    """The lead frames a batch's payload holds.

    Raises:
        WireError: not an array of at most ``BATCH_MAX`` byte strings, each within a lead
            frame's size limit.
    """
    try:
        leads = msgpack.unpackb(
            payload,
            max_array_len=BATCH_MAX,
            max_bin_len=limits.max_header_bytes + _PREFIX,
            max_str_len=0,
            max_map_len=0,
            max_ext_len=0,
        )
    except Exception as exc:  # msgpack raises many types on garbage; all mean "malformed"
        raise WireError(f"bad batch: {type(exc).__name__}: {exc}") from exc
    if type(leads) is not list or not all(type(lead) is bytes for lead in leads):
        raise WireError("a batch must be an array of byte strings")
    return leads
