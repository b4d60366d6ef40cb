"""Actors across a broker failover (issue 17): to the nodes it is a broker restart, so links and
monitors between nodes that all reach the backup survive, and a death after it is reported."""

from __future__ import annotations

import signal

import pytest

import zimg
from tests.fault.helpers import (
    EXPIRY_S,
    MARGIN_S,
    Pair,
    assert_no_tracebacks,
    kill,
    nodes,
    wait_for,
    wait_pair_ready,
)
from zimg.cluster import wait_for_workers
from zimg.testing import Processes

WAIT = 10.0


def is_tag(tag: str):  # type: ignore[no-untyped-def]
    return lambda m: isinstance(m, tuple) and m[0] == tag


@pytest.mark.timeout(60)
def test_monitors_survive_a_failover_and_a_later_death_is_reported(procs: Processes) -> None:
    pair = Pair.on_loopback()
    pair.start_primary(procs)
    pair.start_backup(procs)
    wait_pair_ready(pair)
    workers = {n: procs.worker(pair.urls, n, wait=False) for n in ("n1", "n2")}
    wait_for_workers(pair.primary_url, list(workers), timeout_s=30, processes=workers)
    with zimg.connect(pair.urls, name="main") as node:
        p1, p2 = node.spawn("n1", "zimg.behaviours:echo"), node.spawn("n2", "zimg.behaviours:echo")
        ref1, ref2 = node.monitor(p1), node.monitor(p2)
        node.send(p1, ("echo", node.self(), "before"))
        assert node.receive(timeout=WAIT) == ("echo", "before")
        assert pair.primary is not None

        kill(pair.primary, signal.SIGKILL)
        wait_for(
            lambda: {"main", "n1", "n2"} <= set(nodes(pair.backup_url)),
            15,
            "main, n1 and n2 on the backup",
            every_s=0.05,
        )
        # The same pids answer through the backup.
        node.send(p1, ("echo", node.self(), "after"))
        assert node.receive(timeout=WAIT) == ("echo", "after")
        # Each node resyncs liveness x heartbeat after rejoining; everyone is back, so no
        # monitor fires.
        with pytest.raises(zimg.ZimgTimeout):
            node.receive(is_tag("DOWN"), timeout=EXPIRY_S + MARGIN_S)
        # A death after the failover is reported through the backup.
        kill(workers["n2"], signal.SIGKILL)
        down = node.receive(is_tag("DOWN"), timeout=WAIT)
        assert down == ("DOWN", ref2, p2, "noconnection")
        node.send(p1, ("echo", node.self(), "still"))
        assert node.receive(timeout=WAIT) == ("echo", "still")
        assert ref1 is not None
    assert_no_tracebacks(procs)
