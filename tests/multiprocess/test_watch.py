"""NODEDOWN goes only to the nodes that WATCH the dead node's name (protocol 3): the node side
WATCHes before it links or monitors, UNWATCHes lazily, WATCHes again after a broker restart, and
ends its links into a node the broker would not watch for it (``system_limit``).

Brokers and workers are real processes (or, for a broker with a small ``max_watches``, a broker
thread here); this test process is the node ``main``.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

import zimg
from zimg.cluster import wait_for_workers
from zimg.wire import Command

pytestmark = pytest.mark.timeout(120)

HERE = Path(__file__).parent
IMPORTS = ["--import", str(HERE / "zt_behaviours.py"), "--import", str(HERE / "zt_limits.py")]
HEARTBEAT_S = 0.5
LIVENESS = 3
WAIT = 15.0
DOWN_BOUND = HEARTBEAT_S * LIVENESS + 2.0  # how soon a killed node's watchers hear of it


def is_tag(tag):
    return lambda m: m[0] == tag


def wait_until(predicate, timeout, poke=None):
    """Poll a condition that has no event to wait on (state inside the node's runtime)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        if poke is not None:
            poke()
        time.sleep(0.02)


def record_nodedowns(node):
    """Keep every NODEDOWN this node gets (then hand it to the runtime as usual)."""
    seen = []
    runtime_handler = node.runtime._on_nodedown

    def handler(msg):
        seen.append(msg.header)
        runtime_handler(msg)

    # In the runtime's place: Connection.on refuses a second handler, which is what we want here.
    node.connection._handlers[Command.NODEDOWN] = handler
    return seen


@pytest.fixture
def cluster(procs, ipc_url):
    procs.broker(ipc_url, "--heartbeat", str(HEARTBEAT_S), "--liveness", str(LIVENESS))
    workers = {n: procs.worker(ipc_url, n, *IMPORTS, wait=False) for n in ("n1", "n2")}
    wait_for_workers(ipc_url, list(workers), timeout_s=30, processes=workers)
    with zimg.connect(ipc_url, name="main") as node:
        yield node, workers


def victim_on_n2(node):
    """A process on n2 that ``main`` has a pid of but no link to, nor monitor of, and a
    watcher on n1 that monitors it and tells ``main`` what it saw."""
    node.spawn("n1", "zt.limits.spawn_on", "n2", "zimg.behaviours:echo", node.self())
    _, victim = node.receive(is_tag("spawned"), timeout=WAIT)
    node.spawn("n1", "zt.watcher", node.self(), victim)
    _, ref = node.receive(is_tag("watching"), timeout=WAIT)
    return victim, ref


def test_nodedown_goes_only_to_nodes_that_watch(cluster):
    node, workers = cluster
    seen = record_nodedowns(node)
    victim, ref = victim_on_n2(node)
    # main links into n2 (and WATCHes it), unlinks, and lets go of the WATCH lazily
    node.trap_exit = True
    node.link(victim)
    node.unlink(victim)

    def sweep():  # an actor message from the network: the I/O thread sweeps on it
        node.connection.send(Command.SEND, {"to": node.self(), "msg": "tick"})

    wait_until(lambda: "n2" not in node.runtime._watched, WAIT, poke=sweep)
    node.report()  # a round trip: the broker has the UNWATCH
    workers["n2"].send_signal(signal.SIGKILL)
    # n1 watches n2 (its process monitors the victim): it hears, and tells us, after the
    # broker sent any NODEDOWN it had for us (one path, in order)
    _, down = node.receive(is_tag("seen"), timeout=DOWN_BOUND + WAIT)
    assert down == ("DOWN", ref, victim, "noconnection")
    assert [h for h in seen if h.get("node") == "n2"] == []


def test_a_linked_node_hears_of_the_death_through_its_watch(cluster):
    node, workers = cluster
    seen = record_nodedowns(node)
    node.trap_exit = True
    victim = node.spawn("n2", "zimg.behaviours:echo", link=True)
    workers["n2"].send_signal(signal.SIGKILL)
    started = time.monotonic()
    assert node.receive(is_tag("EXIT"), timeout=DOWN_BOUND) == ("EXIT", victim, "noconnection")
    assert time.monotonic() - started < DOWN_BOUND
    assert [h["node"] for h in seen] == ["n2"]


def test_links_still_hear_of_a_death_after_a_broker_restart(procs, short_tmp):
    url = f"ipc://{short_tmp}/b"
    args = ("--heartbeat", str(HEARTBEAT_S), "--liveness", str(LIVENESS))
    broker = procs.broker(url, *args)
    n2 = procs.worker(url, "n2", *IMPORTS)
    with zimg.connect(url, name="main") as node:
        node.trap_exit = True
        victim = node.spawn("n2", "zimg.behaviours:echo", link=True)
        broker.send_signal(signal.SIGKILL)
        broker.wait(10)
        procs.broker(url, *args)
        wait_for_workers(url, ["n2"], timeout_s=WAIT)
        # main rejoins, waits for the others to rejoin, checks the table, then WATCHes again
        wait_until(lambda: node.connection.sessions >= 2, WAIT)
        wait_until(lambda: node.runtime.counters()["watched_nodes"] >= 1, WAIT)
        node.report()  # a round trip: the new broker has the WATCH
        n2.send_signal(signal.SIGKILL)
        assert node.receive(timeout=DOWN_BOUND) == ("EXIT", victim, "noconnection")


@pytest.fixture
def tight_broker(procs, ipc_url):
    """A broker (a thread here) that lets each node WATCH one name only; workers n1, n2."""
    broker = zimg.Broker(
        ipc_url,
        zimg.BrokerConfig(heartbeat_interval_s=HEARTBEAT_S, liveness=LIVENESS, max_watches=1),
    )
    broker.start()
    try:
        workers = {n: procs.worker(ipc_url, n, *IMPORTS, wait=False) for n in ("n1", "n2")}
        wait_for_workers(ipc_url, list(workers), timeout_s=30, processes=workers)
        with zimg.connect(ipc_url, name="main") as node:
            yield node
    finally:
        broker.stop()


def test_a_link_the_broker_would_not_watch_ends_with_system_limit(tight_broker):
    node = tight_broker
    victim, ref = victim_on_n2(node)
    # main holds a monitor into n1: its one WATCH is n1's, for as long as the test runs
    node.spawn_monitor("n1", "zimg.behaviours:echo")
    node.trap_exit = True
    node.link(victim)  # its WATCH of n2 is refused: the link cannot be kept
    assert node.receive(is_tag("EXIT"), timeout=WAIT) == ("EXIT", victim, "system_limit")
    # and the victim's side ended too: its link to us gave it the same signal
    _, down = node.receive(is_tag("seen"), timeout=WAIT)
    assert down == ("DOWN", ref, victim, "system_limit")
    with pytest.raises(zimg.SpawnError, match="system_limit"):
        node.spawn("n2", "zimg.behaviours:echo")
