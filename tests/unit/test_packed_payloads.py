"""Packed payloads (issue 18): an encoded job's images travel as one array with their sizes in
the header (``pack`` and ``payloads``), and so do a RESULT's outputs; the unpacked form, a
payload per item, is still read. Sizes that do not fit the array are refused, never trusted."""

from __future__ import annotations

import queue
from typing import Any

import cv2
import numpy as np
import pytest

from zimg import wire
from zimg._errors import WireError
from zimg.jobs import (
    ItemResult,
    JobItem,
    JobRequest,
    JobResult,
    pack_result_items,
    unpack_payloads,
)
from zimg.wire import Command, Message
from zimg.worker import Worker

pytestmark = pytest.mark.timeout(30)

OPS = [["threshold", {}]]
PAYLOADS = [np.frombuffer(bytes(range(n)) * 3, np.uint8) for n in (5, 0, 200, 17)]


def encoded_job(payloads: list[np.ndarray] = PAYLOADS) -> JobRequest:
    items = [JobItem(i, f"img{i}.jpg", ".jpg", payload=p) for i, p in enumerate(payloads)]
    return JobRequest(0, "encoded", OPS, items)


def roundtrip(command: Command, header: dict[str, Any]) -> dict[str, Any]:
    return wire.decode(wire.encode(command, header)).header


def packed_header(pack: Any, payloads: Any = None, **extra: Any) -> dict[str, Any]:
    header = {
        "id": 1,
        "mode": "encoded",
        "ops": OPS,
        "items": [{"name": f"img{i}.jpg", "ext": ".jpg"} for i in range(4)],
        "pack": pack,
        "payloads": np.zeros(60, np.uint8) if payloads is None else payloads,
    }
    header.update(extra)
    return header


def test_an_encoded_job_is_two_frames_and_its_payloads_come_back_as_views_of_one():
    frames = wire.encode(Command.JOB, encoded_job().header(9))
    assert len(frames) == 2  # the lead frame and the one of all payloads
    header = wire.decode(frames).header
    assert header["pack"] == [15, 0, 600, 51]
    assert all("payload" not in item for item in header["items"])
    back = JobRequest.from_header(header)
    joined = header["payloads"]
    for got, want in zip(back.items, PAYLOADS, strict=True):
        assert got.payload is not None
        assert np.array_equal(got.payload, want)
        assert got.payload.base is joined.base or got.payload.base is joined  # not copied
        assert not got.payload.flags.writeable


def test_the_unpacked_form_is_still_read_the_same():
    request = encoded_job()
    unpacked = roundtrip(Command.JOB, request.header(9, pack=False))
    assert "pack" not in unpacked
    assert len(wire.encode(Command.JOB, request.header(9, pack=False))) == 1 + len(PAYLOADS)
    packed = JobRequest.from_header(roundtrip(Command.JOB, request.header(9)))
    for a, b in zip(JobRequest.from_header(unpacked).items, packed.items, strict=True):
        assert (a.index, a.name, a.ext) == (b.index, b.name, b.ext)
        assert np.array_equal(a.payload, b.payload)


@pytest.mark.parametrize("mode", ["raw", "path"])
def test_only_encoded_jobs_are_packed(mode):
    image = np.zeros((2, 3), np.uint8)
    item = JobItem(0, "a.png", ".png", payload=image if mode == "raw" else None, output="/o/.a")
    header = JobRequest(0, mode, OPS, [item]).header(1)
    assert "pack" not in header


@pytest.mark.parametrize(
    ("pack", "fragment"),
    [
        ([20, 20, 20, 21], "0 to the 0 bytes left"),  # over: one more byte than there is
        ([10, 20, 20, 9], "add up to 59 bytes, but 'payloads' holds 60"),  # under
        ([70, -10, 0, 0], "0 to the 60 bytes left"),  # a negative size to make up an excess
        ([-1, 61, 0, 0], "0 to the 60 bytes left"),
        ([2**64 - 1, 61, 0, 0], "0 to the 60 bytes left"),  # 2**64 - 1 + 61 wraps to 60 in C
        ([2**63, 2**63, 60, 0], "0 to the 60 bytes left"),  # so does 2**63 + 2**63 + 60
        ([True, 59, 0, 0], "not bool"),
        ([30.0, 30, 0, 0], "not float"),
        ([None, 60, 0, 0], "not NoneType"),  # a JOB's item always has a payload
        ([60, 0, 0], "a list of 4 sizes, one per item, not 3 entries"),
        ([0] * 100_000, "a list of 4 sizes, one per item, not 100000 entries"),
        ([0] * 5, "not 5 entries"),
        ({"0": 60}, "a list of 4 sizes"),
        (60, "a list of 4 sizes"),
    ],
)
def test_sizes_that_do_not_fit_the_payloads_are_refused(pack, fragment):
    with pytest.raises(WireError, match=fragment):
        JobRequest.from_header(roundtrip(Command.JOB, packed_header(pack)))


@pytest.mark.parametrize(
    "payloads",
    [np.zeros((6, 10), np.uint8), np.zeros(15, "<u4"), b"\x00" * 60, "x" * 60],
    ids=["2-D", "uint32", "bytes", "str"],
)
def test_packed_payloads_must_be_one_1d_uint8_array(payloads):
    with pytest.raises(WireError, match="'payloads' field: a 1-D uint8 array"):
        JobRequest.from_header(roundtrip(Command.JOB, packed_header([60, 0, 0, 0], payloads)))


def test_a_packed_job_without_payloads_is_refused():
    header = packed_header([60, 0, 0, 0])
    del header["payloads"]
    with pytest.raises(WireError, match="'payloads' field"):
        JobRequest.from_header(roundtrip(Command.JOB, header))


def test_an_item_with_a_payload_of_its_own_in_a_packed_job_is_refused():
    header = packed_header([60, 0, 0, 0])
    header["items"][2]["payload"] = np.zeros(3, np.uint8)
    with pytest.raises(WireError, match="job item 2 has a payload of its own"):
        JobRequest.from_header(roundtrip(Command.JOB, header))


@pytest.mark.parametrize("mode", ["raw", "path"])
def test_a_packed_job_in_another_mode_is_refused(mode):
    with pytest.raises(WireError, match=f"not {mode} ones"):
        JobRequest.from_header(roundtrip(Command.JOB, packed_header([60, 0, 0, 0], mode=mode)))


def test_sizes_of_every_int_kind_msgpack_reads_are_checked_the_same():
    """Sizes near the 64-bit limits, written as msgpack uint64 and int64."""
    for pack in ([2**64 - 1, 0, 0, 0], [-(2**63), 0, 0, 0]):
        with pytest.raises(WireError, match="0 to the 60 bytes left"):
            unpack_payloads(pack, np.zeros(60, np.uint8), 4, missing=False)


# ---- RESULTs ----------------------------------------------------------------------------------


def result_header(items: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    header = {"id": 3, "ticket": 8, "attempt": 1, "node": "w1", "ok": True, "error": None}
    header["items"] = items
    header.update(extra)
    return header


def test_a_result_packs_its_outputs_and_leaves_failed_items_without_one():
    items = [
        ItemResult(ok=True, ms=1.0, payload=PAYLOADS[0]).to_wire(),
        ItemResult(ok=False, error="b.jpg: not an image").to_wire(),
        ItemResult(ok=True, ms=2.0, payload=PAYLOADS[2]).to_wire(),
        ItemResult(ok=True, ms=0.5, payload=PAYLOADS[1]).to_wire(),  # an empty output
    ]
    header = result_header(items, **pack_result_items(items, 1 << 20))
    frames = wire.encode(Command.RESULT, header)
    assert len(frames) == 2
    back = wire.decode(frames).header
    assert back["pack"] == [15, None, 600, 0]
    result = JobResult.from_header(back)
    assert np.array_equal(result.item(0).payload, PAYLOADS[0])
    assert result.item(1) == ItemResult(ok=False, error="b.jpg: not an image")
    assert np.array_equal(result.item(2).payload, PAYLOADS[2])
    assert result.item(3).ok
    assert result.item(3).payload is not None
    assert result.item(3).payload.nbytes == 0


def test_outputs_that_cannot_be_packed_stay_in_their_items():
    image = ItemResult(ok=True, payload=np.zeros((2, 2), np.uint8)).to_wire()  # raw output
    failed = ItemResult(ok=False, error="x").to_wire()
    for items in ([image], [failed]):
        assert pack_result_items(items, 1 << 20) == {}
    assert "payload" in image


def test_outputs_too_large_for_one_frame_together_stay_in_their_items():
    items = [ItemResult(ok=True, payload=p).to_wire() for p in PAYLOADS]
    assert pack_result_items([dict(i) for i in items], 670)["pack"] == [15, 0, 600, 51]
    assert pack_result_items(items, 665) == {}  # 666 bytes in all
    assert all("payload" in item for item in items)


@pytest.mark.parametrize(
    "pack",
    [[15, None, 601, 0], [15, None, 599, 0], [15, -1, 601, 0], [2**64 - 1, None, 616, 0], [15]],
)
def test_a_result_with_sizes_that_do_not_fit_fails_each_item_and_still_answers(pack):
    items = [{"ok": True, "ms": 1.0, "error": None} for _ in range(4)]
    joined = np.zeros(615, np.uint8)
    result = JobResult.from_header(
        roundtrip(Command.RESULT, result_header(items, pack=pack, payloads=joined))
    )
    assert result.ok
    assert result.id == 3
    for position in range(4):
        item = result.item(position)
        assert not item.ok
        assert item.payload is None
        assert item.error is not None
        assert item.error.startswith("the worker sent malformed packed payloads: 'pack'")


# ---- the worker answers in the form it was asked in ------------------------------------------


def jpeg(seed: int) -> np.ndarray:
    image = np.random.default_rng(seed).integers(0, 256, (8 + seed, 12, 3), np.uint8)
    ok, data = cv2.imencode(".jpg", image)
    assert ok
    return np.frombuffer(data.tobytes(), np.uint8)


@pytest.mark.parametrize("pack", [True, False], ids=["packed", "unpacked"])
def test_a_worker_answers_packed_to_a_packed_job(pack):
    payloads = [jpeg(0), np.frombuffer(b"not an image", np.uint8), jpeg(1)]
    request = encoded_job(payloads)
    worker = Worker("tcp://127.0.0.1:9", "w1")  # never started: what it sends is caught
    sent: queue.SimpleQueue[list[Any]] = queue.SimpleQueue()
    worker.connection.send_frames = sent.put  # type: ignore[method-assign]
    try:
        job = wire.decode(wire.encode(Command.JOB, {**request.header(4, pack=pack), "ticket": 6}))
        worker._on_job(Message(Command.JOB, job.header))
        frames = sent.get(timeout=10)
    finally:
        worker.stop()
    header = wire.decode(frames).header
    assert len(frames) == (2 if pack else 3)  # the failed item has no output
    assert ("pack" in header) is pack
    if pack:
        assert header["pack"][1] is None
        assert all("payload" not in item for item in header["items"])
    result = JobResult.from_header(header)
    assert [result.item(i).ok for i in range(3)] == [True, False, True]
    for position in (0, 2):
        out = result.item(position).payload
        assert out is not None
        decoded = cv2.imdecode(out, cv2.IMREAD_UNCHANGED)
        assert decoded.shape[:2] == (8 + position // 2, 12)
