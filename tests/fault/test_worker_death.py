"""Workers SIGKILLed while they hold jobs: the broker notices within the liveness bound and the
jobs they held are delivered again, to other workers; the output stays exactly once."""

from __future__ import annotations

import signal
import time

import pytest

from tests.fault.helpers import (
    BROKER_ARGS,
    EXPIRY_S,
    MARGIN_S,
    SLEEPY_MS,
    SLOW_OPS,
    assert_no_tracebacks,
    kill,
    lines_written,
    make_images,
    report,
    start_send,
    wait_for,
    workers,
)
from tests.fault.invariants import check_exactly_once
from zimg.cluster import wait_for_workers

CAPACITY = 2


@pytest.mark.timeout(60)
def test_sigkilled_worker_jobs_go_to_the_others_within_the_liveness_bound(procs, tcp_url, tmp_path):
    procs.broker(tcp_url, *BROKER_ARGS)
    names = ["n1", "n2", "n3"]
    started = {n: procs.worker(tcp_url, n, "--import", SLOW_OPS, wait=False) for n in names}
    wait_for_workers(tcp_url, names, timeout_s=30, processes=started)
    files = make_images(tmp_path / "in", 200)
    out = tmp_path / "out"
    sender, log = start_send(procs, tcp_url, out, files)

    # Kill a worker mid-run, at a moment the broker says it holds jobs. (With CPU slots only
    # as many workers run as there are CPUs; the others stand by, and take over.)
    wait_for(lambda: lines_written(out) >= 20, 20, "20 results")
    victim = wait_for(
        lambda: next((n for n, w in workers(tcp_url).items() if w["active"]), None),
        10,
        "a worker to hold a job",
    )
    others = set(names) - {victim}
    killed_at = kill(started[victim], signal.SIGKILL)
    wait_for(lambda: victim not in workers(tcp_url), EXPIRY_S + 5, f"the broker to drop {victim}")
    detected_s = time.monotonic() - killed_at
    lines_at_detection = lines_written(out)
    assert report(tcp_url)["stats"]["nodes_down"] == 1
    assert detected_s < EXPIRY_S + MARGIN_S, f"{victim} dropped {detected_s:.2f} s after SIGKILL"
    assert lines_at_detection < len(files), "the run ended before the kill was detected"

    assert sender.wait(45) == 0, log.read_text()
    entries = check_exactly_once(out, files)
    stats = report(tcp_url)["stats"]
    redelivered = [e for e in entries.values() if e["attempts"] == 2]
    assert 1 <= len(redelivered) <= CAPACITY, redelivered
    assert all(e["attempts"] in (1, 2) for e in entries.values())
    assert {e["node"] for e in redelivered} <= others
    assert stats["nodes_down"] == 2  # the victim, and the sender when it left
    assert stats["jobs_requeued"] == len(redelivered)
    assert stats["jobs_failed"] == 0
    assert set(workers(tcp_url)) == others
    print(f"\nMEASURED kill->dropped {detected_s:.3f} s; redelivered {len(redelivered)}")
    assert_no_tracebacks(procs)


@pytest.mark.timeout(60)
def test_all_workers_killed_then_new_names_finish_the_queued_jobs(procs, tcp_url, tmp_path):
    procs.broker(tcp_url, *BROKER_ARGS)
    first = {n: procs.worker(tcp_url, n, "--import", SLOW_OPS, wait=False) for n in ("a1", "a2")}
    wait_for_workers(tcp_url, list(first), timeout_s=30, processes=first)
    files = make_images(tmp_path / "in", 120, seed=1)
    out = tmp_path / "out"
    sender, log = start_send(procs, tcp_url, out, files)

    wait_for(lambda: lines_written(out) >= 20, 20, "20 results")
    killed_at = min(kill(p, signal.SIGKILL) for p in first.values())
    wait_for(lambda: not workers(tcp_url), EXPIRY_S + 5, "the broker to drop every worker")
    detected_s = time.monotonic() - killed_at
    assert detected_s < EXPIRY_S + MARGIN_S, f"workers dropped {detected_s:.2f} s after SIGKILL"

    # No worker: the jobs wait at the broker, and the sender waits for them (no result, no exit).
    stalled = report(tcp_url)
    assert stalled["stats"]["nodes_down"] == 2
    done_before = lines_written(out)
    assert stalled["queued"] > 0, stalled
    assert sender.poll() is None
    assert done_before < len(files)

    second = {n: procs.worker(tcp_url, n, "--import", SLOW_OPS, wait=False) for n in ("b1", "b2")}
    wait_for_workers(tcp_url, list(second), timeout_s=30, processes=second)
    joined_at = time.monotonic()
    assert sender.wait(45) == 0, log.read_text()
    finish_s = time.monotonic() - joined_at
    entries = check_exactly_once(out, files)
    redelivered = [e for e in entries.values() if e["attempts"] == 2]
    assert 1 <= len(redelivered) <= 2 * CAPACITY
    assert {e["node"] for e in redelivered} <= {"b1", "b2"}
    late = [e for e in entries.values() if e["index"] >= done_before + 16 + 2 * CAPACITY]
    assert late
    assert {e["node"] for e in late} <= {"b1", "b2"}
    stats = report(tcp_url)["stats"]
    assert stats["nodes_down"] == 3  # a1, a2, and the sender when it left
    assert stats["jobs_requeued"] == len(redelivered)
    # The rest ran at the new workers' pace: 2 workers x 2 jobs of >= 40 ms each.
    remaining = len(files) - done_before
    bound_s = remaining * (SLEEPY_MS / 1000) / (2 * CAPACITY) * 3 + MARGIN_S + 2
    assert finish_s < bound_s, f"{remaining} jobs took {finish_s:.1f} s after b1, b2 joined"
    print(f"\nMEASURED all dropped {detected_s:.3f} s; {remaining} left: {finish_s:.2f} s")
    assert_no_tracebacks(procs)
