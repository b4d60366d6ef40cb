"""Messages to a node that has just vanished (SIGKILL) are never dropped silently. The broker
sends with ROUTER_MANDATORY, so the first message it routes to the dead node fails at once: the
node is declared down (DOWN/EXIT noconnection, a failed spawn) and the jobs sent to it are
requeued. The broker here sends no heartbeat during the test and waits a minute before it
gives up on a silent node, so nothing but the failed send can explain a prompt answer."""

from __future__ import annotations

import signal
import time

import pytest

import zimg
from tests.fault.helpers import (
    MARGIN_S,
    SLOW_OPS,
    assert_no_tracebacks,
    kill,
    make_images,
    report,
    workers,
)
from tests.fault.invariants import check_exactly_once
from zimg import ops
from zimg.batch import BatchOptions, run_batch

SLOW_BROKER_ARGS = ("--heartbeat", "20", "--liveness", "3")
ECHO = "zimg.behaviours:echo"


@pytest.fixture
def victim_first(procs, tcp_url):
    """A broker with no heartbeat due for 20 s; worker n2 (the victim, joined first) and n1."""
    procs.broker(tcp_url, *SLOW_BROKER_ARGS)
    victim = procs.worker(tcp_url, "n2", "--import", SLOW_OPS)
    procs.worker(tcp_url, "n1", "--import", SLOW_OPS)
    return victim


def assert_only_the_failed_send_explains_it(url: str) -> None:
    table = report(url)
    assert table["uptime_s"] < 20, "a heartbeat may have been sent: the test proves nothing"
    assert "n2" not in workers(url)
    assert table["stats"]["nodes_down"] == 1
    assert table["stats"]["unroutable"] >= 1


@pytest.mark.timeout(60)
@pytest.mark.parametrize("first", ["monitor", "link", "spawn"])
def test_actor_command_to_a_node_just_killed_is_answered_noconnection(
    procs, tcp_url, victim_first, first
):
    with zimg.connect(tcp_url, name="main") as node:
        node.trap_exit = True
        watched = node.spawn("n2", ECHO)
        linked = node.spawn("n2", ECHO)
        kill(victim_first, signal.SIGKILL)

        def monitor() -> None:
            ref = node.monitor(watched)
            assert node.receive(timeout=MARGIN_S) == ("DOWN", ref, watched, "noconnection")

        def link() -> None:
            node.link(linked)
            assert node.receive(timeout=MARGIN_S) == ("EXIT", linked, "noconnection")

        def spawn() -> None:
            with pytest.raises(zimg.SpawnError, match="n2"):
                node.spawn("n2", ECHO, timeout=MARGIN_S + 5)

        steps = {"monitor": monitor, "link": link, "spawn": spawn}
        timings = {}
        # The first message routed to n2 finds it gone; the others are answered for it.
        for name in [first, *(s for s in steps if s != first)]:
            started = time.monotonic()
            steps[name]()
            timings[name] = time.monotonic() - started
            assert timings[name] < MARGIN_S, (name, timings)
        assert_only_the_failed_send_explains_it(tcp_url)
        # The survivor is untouched.
        echo = node.spawn("n1", ECHO)
        node.send(echo, ("echo", node.self(), "still here"))
        assert node.receive(timeout=5) == ("echo", "still here")
        print("\nMEASURED " + ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in timings.items()))
    assert_no_tracebacks(procs)


@pytest.mark.timeout(60)
def test_a_job_dispatched_to_a_node_just_killed_is_requeued_at_once(
    procs, tcp_url, tmp_path, victim_first
):
    files = make_images(tmp_path / "in", 1, seed=8)
    out = tmp_path / "out"
    ops.load_module(SLOW_OPS)
    pipeline = [ops.parse_op(t) for t in ("threshold", "label", "sleepy:ms=40")]
    with zimg.Connection(tcp_url, "sink").start() as conn:
        kill(victim_first, signal.SIGKILL)
        started = time.monotonic()
        result = run_batch(conn, files, BatchOptions(outdir=out, pipeline=pipeline))
        elapsed = time.monotonic() - started
        assert_only_the_failed_send_explains_it(tcp_url)
    # The broker gave the job to n2 (joined first, so first among equals), the send failed,
    # n2 was declared down and the job went to n1 with its attempt spent.
    entry = check_exactly_once(out, files)[str(files[0])]
    assert (entry["node"], entry["attempts"]) == ("n1", 2), entry
    assert result.failed == 0
    assert elapsed < MARGIN_S, elapsed
    stats = report(tcp_url)["stats"]
    assert stats["jobs_requeued"] == 1
    assert stats["jobs_dispatched"] == 2
    assert "n1" in workers(tcp_url)
    print(f"\nMEASURED job to a dead node answered by n1 after {elapsed * 1000:.0f} ms")
    assert_no_tracebacks(procs)
