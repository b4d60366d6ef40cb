"""A worker always answers (issue 12): RESULT's first entries, capped error texts, a compact
failure when the reply cannot be encoded, byte limits, and the job's deadline.

The Worker here is never started: JOBs are handed to ``_on_job`` as the I/O thread would, and
what it sends is decoded from the frames it would put on the wire.
"""

from __future__ import annotations

import queue
import threading
import time
import types
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

import zimg
import zimg.ops
import zimg.worker
from zimg import wire
from zimg._errors import OpError
from zimg.jobs import MAX_ERROR_CHARS, MAX_ITEMS, JobItem, JobRequest
from zimg.wire import Command, Message
from zimg.worker import Worker, result_head

pytestmark = pytest.mark.timeout(30)

STARTED: queue.SimpleQueue[str] = queue.SimpleQueue()
RELEASE: dict[str, threading.Event] = {}


@zimg.op("test_results_hold")
def hold(image: np.ndarray, *, tag: str) -> np.ndarray:
    """Say that job ``tag`` started, then wait until the test releases it."""
    STARTED.put(tag)
    RELEASE[tag].wait(20)
    return image


@zimg.op("test_results_shout")
def shout(image: np.ndarray, *, n: int) -> np.ndarray:
    """Fail with a message of ``n`` characters."""
    raise OpError("shout: " + "!" * n)


def raw_job(job_id: int, ops: list[list[Any]], *, items: int = 1, **extra: Any) -> Message:
    image = np.zeros((4, 4, 3), np.uint8)
    request = JobRequest(
        id=0,
        mode="raw",
        ops=ops,
        items=[JobItem(i, f"i{i}.png", ".png", payload=image) for i in range(items)],
    )
    return Message(Command.JOB, {**request.header(job_id), **extra})


class Sent:
    """What the worker sends: each RESULT header, as the broker would decode it."""

    def __init__(self) -> None:
        self.results: queue.SimpleQueue[dict[str, Any]] = queue.SimpleQueue()

    def __call__(self, frames: list[Any]) -> None:
        msg = wire.decode(frames)
        assert msg.command is Command.RESULT
        self.results.put(msg.header)

    def next(self) -> dict[str, Any]:
        return self.results.get(timeout=10)


def make_worker(**kwargs: Any) -> tuple[Worker, Sent]:
    worker = Worker("tcp://127.0.0.1:9", "w1", **kwargs)  # never started
    sent = Sent()
    worker.connection.send_frames = sent  # type: ignore[method-assign]
    return worker, sent


@pytest.fixture
def worker() -> Iterator[tuple[Worker, Sent]]:
    w, sent = make_worker(capacity=2, threads=1)
    try:
        yield w, sent
    finally:
        for event in RELEASE.values():
            event.set()
        w.stop()
        RELEASE.clear()
        while not STARTED.empty():
            STARTED.get()


def run(worker: Worker, sent: Sent, msg: Message) -> dict[str, Any]:
    worker._on_job(msg)
    return sent.next()


# ---- the first entries ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("route", "value"), [("ticket", 77), ("client", b"route")], ids=["protocol-3", "protocol-2"]
)
def test_every_reply_starts_with_id_then_ticket_or_client_then_attempt(route, value):
    """Ok, whole-job failure, or the compact failure sent when the reply cannot be encoded:
    the JOB's ``ticket`` comes back (never ``client`` beside it), or else its ``client``."""
    w, sent = make_worker(limits=wire.Limits(max_frame_bytes=40))
    try:
        ok = run(w, sent, raw_job(1, [["grayscale", {}]], **{route: value}, attempt=2))  # 16 B
        failed = run(w, sent, raw_job(2, [["nosuchop", {}]], **{route: value}, attempt=2))
        unsendable = run(w, sent, raw_job(3, [["threshold", {}]], **{route: value}, attempt=2))
    finally:
        w.stop()
    assert ok["ok"]
    assert not failed["ok"]
    assert unsendable["error"].startswith("worker w1 could not send the result: frame of 48")
    for job_id, result in enumerate((ok, failed, unsendable), 1):
        assert list(result)[:6] == ["id", route, "attempt", "node", "ok", "error"]
        assert (result["id"], result[route], result["attempt"]) == (job_id, value, 2)
        assert {"ticket", "client"} & set(result) == {route}


def test_result_head_keeps_exactly_one_route():
    assert result_head({"id": 1, "ticket": 3, "client": b"x"}) == {
        "id": 1,
        "ticket": 3,
        "attempt": 1,
    }
    assert result_head({"id": 1}) == {"id": 1, "client": None, "attempt": 1}


# ---- capped errors and the compact failure ----------------------------------------------------


def test_item_errors_are_capped(worker):
    w, sent = worker
    result = run(w, sent, raw_job(1, [["test_results_shout", {"n": 50_000}]], items=3))
    assert result["ok"]
    for i, item in enumerate(result["items"]):
        assert len(item["error"]) == MAX_ERROR_CHARS
        assert item["error"].startswith(f"i{i}.png: shout: !!!")
        assert item["error"].endswith("\u2026")


def test_a_whole_job_error_is_capped(worker):
    w, sent = worker
    msg = raw_job(2, [["threshold", {}]])
    msg.header["mode"] = "m" * 100_000
    result = run(w, sent, msg)
    assert not result["ok"]
    assert result["error"].startswith("payload mode 'mmm")
    assert len(result["error"]) == MAX_ERROR_CHARS


def test_a_param_of_380k_numbers_fails_the_job_in_a_short_message(worker):
    w, sent = worker
    result = run(w, sent, raw_job(3, [["label", {"color": [0] * 380_000}]]))
    assert not result["ok"]
    assert result["error"].startswith("op 'label': param 'color' has 380000 entries")
    assert len(result["error"]) < 200


def test_a_result_too_large_to_encode_becomes_a_compact_failure():
    # 64 items of 1,000-character errors cannot fit a 16 kB header: the worker says so.
    w, sent = make_worker(limits=wire.Limits(max_header_bytes=16_000))
    try:
        shout_job = raw_job(4, [["test_results_shout", {"n": 5000}]], items=MAX_ITEMS, ticket=9)
        result = run(w, sent, shout_job)
    finally:
        w.stop()
    assert list(result) == ["id", "ticket", "attempt", "node", "ok", "error"]
    assert (result["id"], result["ticket"], result["ok"]) == (4, 9, False)
    assert result["error"].startswith("worker w1 could not send the result: header of ")
    assert "exceeds the limit of 16000" in result["error"]


def test_an_output_over_the_frame_limit_becomes_a_compact_failure():
    w, sent = make_worker(limits=wire.Limits(max_frame_bytes=40))
    try:
        result = run(w, sent, raw_job(5, [["threshold", {}]], attempt=3))  # a 48-byte image
    finally:
        w.stop()
    assert (result["id"], result["attempt"], result["ok"]) == (5, 3, False)
    assert "could not send the result" in result["error"]
    assert "items" not in result


def test_a_failure_whose_id_alone_does_not_fit_goes_back_with_an_empty_id():
    # A client's str id of nearly a header: the job fails (ids are ints here), and even the
    # compact failure would not fit with it. The broker settles the RESULT on its ticket.
    w, sent = make_worker(limits=wire.Limits(max_header_bytes=4000))
    try:
        msg = raw_job(0, [["threshold", {}]], ticket=5, attempt=1)
        msg.header["id"] = "x" * 3990
        result = run(w, sent, msg)
    finally:
        w.stop()
    assert list(result)[:3] == ["id", "ticket", "attempt"]
    assert (result["id"], result["ticket"], result["ok"]) == ("", 5, False)
    assert result["error"].startswith("worker w1 could not send the result: header of")


# ---- limits in bytes and ops ------------------------------------------------------------------


def test_a_raw_image_over_max_image_bytes_fails_its_item():
    w, sent = make_worker(max_image_bytes=47)
    try:
        result = run(w, sent, raw_job(6, [["threshold", {}]]))
    finally:
        w.stop()
    assert result["items"][0]["error"] == (
        "i0.png: a uint8 image of shape (4, 4, 3) is 48 bytes, over the limit of 47 bytes"
    )


def test_an_op_output_over_max_image_bytes_fails_its_item():
    w, sent = make_worker(max_image_bytes=1000)
    try:
        result = run(w, sent, raw_job(7, [["resize", {"scale": 10}]]))  # 40 x 40 x 3
    finally:
        w.stop()
    error = result["items"][0]["error"]
    assert error.startswith("i0.png: resize: 40x40 of 3 uint8 channels is 4800 bytes")


def test_more_than_32_ops_fail_the_job_before_any_is_parsed(worker):
    w, sent = worker
    result = run(w, sent, raw_job(8, [["blur", {"ksize": 3}]] * 1000))
    assert result["error"] == "a pipeline has at most 32 ops, got 1000"


def test_max_image_bytes_must_be_positive():
    with pytest.raises(ValueError, match="max_image_bytes"):
        Worker("tcp://127.0.0.1:9", "w1", max_image_bytes=0)


# ---- the deadline -----------------------------------------------------------------------------


def test_items_after_the_deadline_fail_and_the_result_is_still_sent(worker):
    w, sent = worker
    # Received long ago: every item finds the deadline passed.
    msg = raw_job(9, [["threshold", {}]], items=3, deadline_s=0.5)
    w._run_job(msg.header, time.monotonic() - 1.0)
    result = sent.next()
    assert result["ok"]
    assert [item["error"] for item in result["items"]] == [
        f"i{i}.png: the job's deadline of 0.5 s passed" for i in range(3)
    ]
    assert not any(item["ok"] for item in result["items"])
    # Without deadline_s there is no deadline, however long ago the JOB came.
    w._run_job(raw_job(10, [["threshold", {}]]).header, time.monotonic() - 10**6)
    assert sent.next()["items"][0]["ok"]


def test_the_wait_behind_a_running_job_counts_against_the_deadline(worker, monkeypatch):
    w, sent = worker  # one thread
    clock = types.SimpleNamespace(now=1000.0)
    fake = types.SimpleNamespace(monotonic=lambda: clock.now, perf_counter=time.perf_counter)
    monkeypatch.setattr(zimg.worker, "time", fake)
    monkeypatch.setattr(zimg.ops, "time", fake)
    RELEASE["A"] = threading.Event()
    w._on_job(raw_job(11, [["test_results_hold", {"tag": "A"}]]))
    assert STARTED.get(timeout=10) == "A"
    w._on_job(raw_job(12, [["threshold", {}]], deadline_s=0.2, queued=1))  # received at 1000
    assert len(w._queued) == 1  # B waits for A
    clock.now += 0.25  # A runs on past B's deadline
    RELEASE["A"].set()
    assert sent.next()["id"] == 11
    late = sent.next()
    assert late["id"] == 12
    assert late["items"][0]["error"] == "i0.png: the job's deadline of 0.2 s passed"
