"""A worker frozen with SIGSTOP past the liveness bound, then thawed with SIGCONT: the broker
drops it in time and redelivers its jobs; its late replies change nothing in the output; it
rejoins; and its actors learn that their links into other nodes were cut."""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path

import pytest

import zimg
from tests.fault.helpers import (
    BROKER_ARGS,
    EXPIRY_S,
    HEARTBEAT_S,
    MARGIN_S,
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
from zimg import ops
from zimg.batch import BatchOptions, run_batch
from zimg.cluster import wait_for_workers
from zimg.distribute import JobRouter  # the client's result router: what it dropped, and why


def manifest_so_far(outdir: Path) -> list[dict]:
    """The complete lines of a manifest still being written."""
    text = (outdir / "manifest.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines(keepends=True) if line.endswith("\n")]


@pytest.mark.timeout(60)
def test_frozen_worker_is_dropped_its_jobs_redelivered_and_its_late_replies_ignored(
    procs, tcp_url, tmp_path
):
    procs.broker(tcp_url, *BROKER_ARGS)
    started = {n: procs.worker(tcp_url, n, "--import", SLOW_OPS, wait=False) for n in ("n1", "n2")}
    wait_for_workers(tcp_url, list(started), timeout_s=30, processes=started)
    incarnation = workers(tcp_url)["n1"]["incarnation"]
    files = make_images(tmp_path / "in", 200, seed=3)
    out = tmp_path / "out"
    sender, log = start_send(procs, tcp_url, out, files)

    wait_for(lambda: lines_written(out) >= 20, 20, "20 results")
    wait_for(lambda: workers(tcp_url)["n1"]["active"] > 0, 10, "n1 to hold a job")
    stopped_at = kill(started["n1"], signal.SIGSTOP)
    wait_for(lambda: "n1" not in workers(tcp_url), EXPIRY_S + 5, "the broker to drop n1")
    dropped_s = time.monotonic() - stopped_at
    # Silence, not a closed connection, gives it away: not before its last heartbeat expires.
    assert EXPIRY_S - HEARTBEAT_S <= dropped_s < EXPIRY_S + MARGIN_S, dropped_s
    at_drop = report(tcp_url)["stats"]
    requeued = at_drop["jobs_requeued"]
    assert requeued >= 1, at_drop
    assert at_drop["unknown_peer"] == at_drop["late_results"] == 0
    # Its jobs are delivered again, to n2, and answered: what n1 says about them will be late.
    wait_for(
        lambda: sum(e["attempts"] == 2 for e in manifest_so_far(out)) >= requeued,
        10,
        "n1's jobs to be answered by n2",
    )
    assert lines_written(out) < len(files), "the run ended before n1 came back"

    # Thaw it: the ops it was running finish and it sends their results.
    kill(started["n1"], signal.SIGCONT)
    resumed_at = time.monotonic()
    back = wait_for(lambda: workers(tcp_url).get("n1"), 10, "n1 to rejoin")
    rejoin_s = time.monotonic() - resumed_at
    assert back["incarnation"] == incarnation  # the same process, joining again
    # Within a heartbeat, or two if the broker saw n1's new connection before the old one's
    # close (it never hands a live connection's id over, and ignores that first HELLO).
    assert rejoin_s < 2 * HEARTBEAT_S + MARGIN_S, rejoin_s

    assert sender.wait(45) == 0, log.read_text()
    entries = check_exactly_once(out, files)
    stats = report(tcp_url)["stats"]
    redelivered = [e for e in entries.values() if e["attempts"] == 2]
    assert len(redelivered) == stats["jobs_requeued"] == requeued, (redelivered, stats)
    assert {e["node"] for e in redelivered} == {"n2"}
    # n1's late RESULTs change nothing: none became a second line (above). Each one that reached
    # the broker was counted, as a message from a node it had dropped (before n1 rejoined) or as
    # a late result (after). Not all need arrive: what n1 sends on its new connection before the
    # broker has seen its old one close is dropped by libzmq (docs/reliability.md), and under
    # load that window can hold all of them (seen in 1 run of 5 on a busy machine), so the
    # count is reported, not asserted; test_late_reply_that_reaches_the_sink_is_discarded_there
    # makes a late reply reach the client.
    late = stats["late_results"] + stats["unknown_peer"]
    print(
        f"\nMEASURED stop->dropped {dropped_s:.3f} s (requeued {requeued}); cont->rejoined "
        f"{rejoin_s:.3f} s; late_results {stats['late_results']}, "
        f"unknown_peer {stats['unknown_peer']}"
    )
    assert late <= stats["jobs_dispatched"], stats
    assert_no_tracebacks(procs)


@pytest.mark.timeout(60)
def test_late_reply_that_reaches_the_sink_is_discarded_there(procs, tcp_url, tmp_path):
    """Slow jobs, a window of 2. n1 (capacity 1) freezes holding one; the broker gives it to n2
    (capacity 2). n1 thaws, rejoins and answers it first: a late result, which the broker
    forwards. n2's answer to the same job comes while the batch still runs: the client drops it."""
    procs.broker(tcp_url, *BROKER_ARGS)
    n1 = procs.worker(tcp_url, "n1", "--import", SLOW_OPS, "--capacity", "1")
    n2 = procs.worker(tcp_url, "n2", "--import", SLOW_OPS, "--capacity", "2")
    files = make_images(tmp_path / "in", 3, seed=4)
    out = tmp_path / "out"
    ops.load_module(SLOW_OPS)
    slow_ms = 3000  # > EXPIRY_S + MARGIN_S: n1 answers after it is back
    mark = tmp_path / "started"
    pipeline = [ops.parse_op("threshold"), ops.parse_op("label")]
    pipeline.append(ops.OpSpec("sleepy", {"ms": slow_ms, "mark": str(mark)}))
    options = BatchOptions(outdir=out, pipeline=pipeline, window=2, idle_timeout_s=30)
    outcome: list[zimg.BatchReport] = []

    with zimg.Connection(tcp_url, "sink").start() as conn:
        router = JobRouter(conn)
        batch = threading.Thread(target=lambda: outcome.append(run_batch(router, files, options)))
        batch.start()
        try:
            wait_for(
                lambda: all(w["active"] for w in workers(tcp_url).values()), 10, "2 jobs running"
            )
            # Handed out is not started: n1 must be running its job when it freezes, or it
            # would start it on thawing, no earlier than n2 starts it again.
            n1_started = Path(f"{mark}-{n1.pid}")
            wait_for(n1_started.exists, 10, "n1 to start its job")
            stopped_at = kill(n1, signal.SIGSTOP)
            wait_for(lambda: workers(tcp_url).get("n2", {}).get("active") == 2, 5, "redelivery")
            assert time.monotonic() - stopped_at < EXPIRY_S + MARGIN_S
            kill(n1, signal.SIGCONT)
            wait_for(lambda: "n1" in workers(tcp_url), 10, "n1 to rejoin")
            assert time.monotonic() - stopped_at < slow_ms / 1000, "n1 came back too late"
        finally:
            batch.join(30)
        unrouted = router.unrouted
    assert not batch.is_alive()
    assert n2.poll() is None
    entries = check_exactly_once(out, files)
    first_two = sorted(entries.values(), key=lambda e: e["index"])[:2]
    # n1 and n2 each ran one of the first two jobs; n1's late answer to its own came before
    # n2's second go at it (attempt 2), and was the one kept.
    assert sorted((e["node"], e["attempts"]) for e in first_two) == [("n1", 1), ("n2", 1)]
    # n2's answer to the same job reached the client too, which dropped it: counted in the
    # report's ``duplicates`` if it came while the batch ran (answered jobs keep their route a
    # while), else by the router as unrouted once the batch had ended.
    assert outcome[0].duplicates + unrouted == 1
    final = report(tcp_url)
    assert final["stats"]["late_results"] == 1
    assert final["stats"]["jobs_requeued"] == 1
    done = {w["name"]: w["done"] for w in final["nodes"] if w["role"] == "worker"}
    assert done["n2"] == 2  # its own job, and n1's again
    assert_no_tracebacks(procs)


@pytest.mark.timeout(60)
def test_frozen_node_actor_gets_noconnection_for_its_links_when_it_rejoins(procs, ipc_url):
    procs.broker(ipc_url, *BROKER_ARGS)
    started = {n: procs.worker(ipc_url, n, "--import", SLOW_OPS, wait=False) for n in ("n1", "n2")}
    wait_for_workers(ipc_url, list(started), timeout_s=30, processes=started)
    with zimg.connect(ipc_url, name="main") as node:
        far = node.spawn("n1", "fault.trap_and_report", node.self())
        assert node.receive(timeout=10) == ("ready", "n1", far)
        near = node.spawn("n2", "fault.trap_and_report", node.self(), far)
        assert node.receive(timeout=10) == ("ready", "n2", near)
        node.monitor_node("n2")

        stopped_at = kill(started["n2"], signal.SIGSTOP)
        # The broker drops n2 for silence and tells n1: the actor there sees its link cut.
        assert node.receive(timeout=EXPIRY_S + 5) == ("nodedown", "n2")
        dropped_s = time.monotonic() - stopped_at
        assert dropped_s < EXPIRY_S + MARGIN_S, dropped_s
        assert node.receive(timeout=MARGIN_S) == ("exit", "n1", ("EXIT", near, "noconnection"))

        # n2 wakes up: it rejoins, learns it had been dropped, and cuts its own side.
        kill(started["n2"], signal.SIGCONT)
        resumed_at = time.monotonic()
        message = node.receive(timeout=HEARTBEAT_S + 5)
        seen_s = time.monotonic() - resumed_at
        assert message == ("exit", "n2", ("EXIT", far, "noconnection"))
        # Within a heartbeat, or two: n2 replaces its DEALER (same routing id), and the broker,
        # which never hands an id to a second connection while the first lives, may see the
        # new connection before the old one's close; then it ignores n2's first HELLO, and n2
        # is in with the next, one interval later.
        assert seen_s < 2 * HEARTBEAT_S + MARGIN_S, seen_s
        assert "n2" in workers(ipc_url)
        print(f"\nMEASURED stop->nodedown {dropped_s:.3f} s; cont->EXIT on n2 {seen_s:.3f} s")
    assert_no_tracebacks(procs)
