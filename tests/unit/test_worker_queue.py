"""A worker starts a job the broker sent ``queued`` only when one of the jobs it runs ends,
even with a thread free (the broker counts one job per CPU of the host)."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

import zimg
from zimg import wire
from zimg.jobs import JobItem, JobRequest
from zimg.wire import Command, Message
from zimg.worker import Worker

pytestmark = pytest.mark.timeout(30)

STARTED: queue.SimpleQueue[str] = queue.SimpleQueue()
RELEASE: dict[str, threading.Event] = {}


@zimg.op("test_gate_hold")
def hold(image: np.ndarray, *, tag: str) -> np.ndarray:
    """Say that job ``tag`` started, then wait until the test releases it."""
    STARTED.put(tag)
    RELEASE[tag].wait(20)
    return image


def job(tag: str, *, queued: int = 0) -> Message:
    RELEASE[tag] = threading.Event()
    request = JobRequest(
        id=0,
        mode="raw",
        ops=[["test_gate_hold", {"tag": tag}]],
        items=[JobItem(0, f"{tag}.png", ".png", payload=np.zeros((4, 4, 3), np.uint8))],
    )
    header = request.header(ord(tag))
    if queued:
        header["queued"] = queued  # how many jobs the broker saw running here
    return Message(Command.JOB, header)


@pytest.fixture
def worker() -> Iterator[Worker]:
    w = Worker("tcp://127.0.0.1:9", "gate", capacity=3, threads=2)  # never started
    results: list[dict[str, Any]] = []
    w.connection.send_frames = lambda frames: results.append(wire.decode(frames).header)  # type: ignore[method-assign]
    w.results = results  # type: ignore[attr-defined]
    try:
        yield w
    finally:
        for event in RELEASE.values():
            event.set()
        w.stop()
        RELEASE.clear()
        while not STARTED.empty():
            STARTED.get()


def test_a_queued_job_waits_for_a_running_one_to_end_not_for_a_free_thread(worker):
    worker._on_job(job("A"))
    assert STARTED.get(timeout=10) == "A"
    worker._on_job(job("B", queued=1))
    assert [job.header["id"] for job in worker._queued] == [ord("B")]  # held, a thread free
    worker._on_job(job("C"))  # not queued: runs at once, on the free thread
    assert STARTED.get(timeout=10) == "C"
    RELEASE["A"].set()
    assert STARTED.get(timeout=10) == "B"
    RELEASE["B"].set()
    RELEASE["C"].set()
    worker._pool.shutdown(wait=True)
    assert sorted(r["id"] for r in worker.results) == [ord("A"), ord("B"), ord("C")]
    assert worker._running == 0


def test_a_queued_job_starts_at_once_when_nothing_runs(worker):
    worker._on_job(job("A", queued=1))
    assert STARTED.get(timeout=10) == "A"
    assert not worker._queued


def test_a_queued_job_starts_at_once_if_a_job_it_waited_for_has_ended(worker):
    # The broker saw A and B running; A ended while this job was on its way (its RESULT
    # crossed the JOB), so the broker counts it as started: it must not wait for B.
    worker._on_job(job("B"))
    assert STARTED.get(timeout=10) == "B"
    worker._on_job(job("C", queued=2))
    assert STARTED.get(timeout=10) == "C"
    assert not worker._queued


def test_a_stopping_worker_leaves_its_queued_jobs_to_the_broker(worker):
    worker._on_job(job("A"))
    assert STARTED.get(timeout=10) == "A"
    worker._on_job(job("B", queued=1))
    worker.request_stop()
    RELEASE["A"].set()
    worker._pool.shutdown(wait=True)
    assert [r["id"] for r in worker.results] == [ord("A")]
    assert STARTED.empty()
