"""Backpressure: 20,000 tiny images through one worker of capacity 1. The sender's window and the
worker's credit bound what is in flight, so the peak memory of the sender and of the broker is
the same as for 1,000 images, and nothing is dropped."""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.fault.helpers import (
    BROKER_ARGS,
    SLOW_OPS,
    BrokerSampler,
    assert_clean_log,
    assert_no_tracebacks,
    report,
    start_send,
    vm_hwm_kb,
    wait_with_rusage,
)
from tests.fault.invariants import check_exactly_once

WINDOW = 16
RSS_TOLERANCE = 0.20  # the 20,000-image peak may exceed the 1,000-image peak by this much
SMALL, LARGE = 1_000, 20_000
PIPELINE = ("--op", "threshold", "--op", "label", "--op", "sleepy:ms=0.2")


def tiny_pngs(target: Path, n: int) -> list[Path]:
    """``n`` 8x8 PNGs (16 different ones, written over and over: quick to make)."""
    target.mkdir(parents=True)
    rng = np.random.default_rng(7)
    blobs = [cv2.imencode(".png", rng.integers(0, 256, (8, 8, 3), np.uint8))[1] for _ in range(16)]
    files = []
    for i in range(n):
        path = target / f"{i:05d}.png"
        path.write_bytes(blobs[i % 16].tobytes())
        files.append(path)
    return files


def run_and_measure(procs, url: str, files: list[Path], out: Path, broker_pid: int) -> dict:
    sender, log = start_send(procs, url, out, files, "--window", str(WINDOW), pipeline=PIPELINE)
    started = time.monotonic()
    with BrokerSampler(url, every_s=0.2) as sampler:
        code, sender_kb = wait_with_rusage(sender, 120)  # its exact peak, from wait4
    elapsed = time.monotonic() - started
    assert code == 0, log.read_text()[-3000:]
    assert_clean_log(log.read_text())
    broker_kb = vm_hwm_kb(broker_pid)  # the broker's peak so far (it keeps running)
    assert broker_kb is not None
    return {
        "sender_kb": sender_kb,
        "broker_kb": broker_kb,
        "seconds": elapsed,
        "max_queued": sampler.max_queued,
        "max_active": sampler.max_active,
        "samples": sampler.samples,
    }


@pytest.mark.timeout(180)
def test_memory_stays_flat_from_1000_to_20000_images(procs, tcp_url, short_tmp):
    broker = procs.broker(tcp_url, *BROKER_ARGS)
    worker = procs.worker(tcp_url, "n1", "--capacity", "1", "--import", SLOW_OPS)
    small_files = tiny_pngs(short_tmp / "s", SMALL)
    large_files = tiny_pngs(short_tmp / "l", LARGE)

    small = run_and_measure(procs, tcp_url, small_files, short_tmp / "so", broker.pid)
    large = run_and_measure(procs, tcp_url, large_files, short_tmp / "lo", broker.pid)
    worker_kb = vm_hwm_kb(worker.pid)
    print(
        f"\nMEASURED {SMALL}: {small['seconds']:.1f} s; {LARGE}: {large['seconds']:.1f} s "
        f"({LARGE / large['seconds']:.0f}/s)\n"
        f"MEASURED sender peak RSS {small['sender_kb']} kB -> {large['sender_kb']} kB; "
        f"broker {small['broker_kb']} kB -> {large['broker_kb']} kB; worker {worker_kb} kB\n"
        f"MEASURED max queued at the broker {small['max_queued']}/{large['max_queued']}, "
        f"max held by the worker {small['max_active']}/{large['max_active']} "
        f"({large['samples']} samples)"
    )

    # Nothing dropped, nothing twice, every output exact.
    check_exactly_once(short_tmp / "so", small_files)
    check_exactly_once(short_tmp / "lo", large_files)
    stats = report(tcp_url)["stats"]
    assert stats["jobs_done"] == SMALL + LARGE
    assert stats.get("dropped_hwm", 0) == 0
    # The mechanism: at most a window of jobs waits at the broker, and the worker holds at most
    # its capacity.
    assert large["samples"] > 10
    assert 0 < large["max_queued"] <= WINDOW
    assert large["max_active"] == 1
    # The outcome: peak memory does not grow with the number of inputs.
    for what in ("sender_kb", "broker_kb"):
        assert large[what] <= small[what] * (1 + RSS_TOLERANCE), (what, small, large)
    assert_no_tracebacks(procs)
