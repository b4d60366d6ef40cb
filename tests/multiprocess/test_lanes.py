"""Lanes between real processes (``zimg._lanes``): a broker and workers run as `python -m zimg`
subprocesses with ``--lanes``; the test process is the node "main", with lanes too.

The actor tests of ``test_actors.py`` all run on lanes as well; these check what only lanes
have: the switch in the middle of a stream, strangers on a lane's port, and a close whose last
signals go on lanes."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
import zmq

import zimg
from tests.multiprocess import zt_behaviours  # noqa: F401  (registers zt.* in this process)
from zimg import _lane_terms, wire
from zimg._lanes import State
from zimg.cluster import wait_for_workers
from zimg.wire import Command

pytestmark = pytest.mark.timeout(120)

BEHAVIOURS = str(Path(__file__).with_name("zt_behaviours.py"))
HEARTBEAT_S = 0.5
WAIT = 10.0


@pytest.fixture
def cluster(procs, ipc_url):
    procs.broker(ipc_url, "--heartbeat", str(HEARTBEAT_S), "--liveness", "3")
    workers = {
        name: procs.worker(ipc_url, name, "--import", BEHAVIOURS, "--lanes", wait=False)
        for name in ("n1", "n2")
    }
    wait_for_workers(ipc_url, list(workers), timeout_s=30, processes=workers)
    with zimg.connect(ipc_url, name="main", lanes=True) as node:
        yield node, ipc_url


def entry(node: zimg.Node, name: str) -> dict:
    return next(n for n in node.report()["nodes"] if n["name"] == name)


def wait_for_lane_count(node: zimg.Node, name: str, key: str, at_least: int) -> int:
    """Poll NODES until node ``name`` reported (in a heartbeat) ``key`` >= ``at_least``."""
    deadline = time.monotonic() + WAIT
    while True:
        seen = entry(node, name)["lanes"][key]
        if seen >= at_least or time.monotonic() > deadline:
            return seen
        time.sleep(HEARTBEAT_S / 5)  # polling a count that only heartbeats carry


def test_a_stream_and_the_down_after_it_keep_their_order_across_the_switch(cluster):
    """n1 streams to main until main has seen n1's lane to it switch and 200 more messages
    come: the first messages go through the broker (behind the lane's ask), later ones on the
    lane, all in one order, and the DOWN comes after the last. main stops the stream itself, so
    the switch falls inside it however long the lane takes to open on a loaded machine."""
    node, _ = cluster
    lanes = node.connection.lanes
    assert lanes is not None
    most = 90_000  # within main's mailbox bound (100,000) even if main read nothing
    pid, ref = node.spawn_monitor("n1", "zt.count_until_stopped", node.self(), "a", most)
    got = []
    switched_at = None  # how many messages had come when main saw the lane switched
    while not got or got[-1][0] != "sent":
        got.append(node.receive(timeout=WAIT))
        if switched_at is None:
            lane = lanes.inbound_of.get("n1")
            if lane is not None and lane.switched:  # a flag the I/O thread sets
                switched_at = len(got)
        elif len(got) == switched_at + 200:
            node.send(pid, "stop")
    count = got[-1][1]
    assert switched_at is not None, f"n1's lane to main never switched in {count} messages"
    assert count >= switched_at + 200
    assert got[:-1] == [("a", i) for i in range(count)]
    assert node.receive(timeout=WAIT) == ("DOWN", ref, pid, "normal")
    assert wait_for_lane_count(node, "n1", "sent", 1) >= 1
    assert node.report()["stats"]["lanes_opened"] >= 1


def test_streams_from_several_senders_keep_their_order_into_a_lane(cluster):
    node, _ = cluster
    n = 2000
    collector = node.spawn("n2", "zt.collect", node.self(), 3 * n)
    node.spawn(node.name, "zt.count_to", collector, "x", n)
    node.spawn(node.name, "zt.count_to", collector, "y", n)
    for i in range(n):
        node.send(collector, ("m", i))
    _, got = node.receive(lambda m: m[0] == "collected", timeout=WAIT * 3)
    for tag in "xym":
        assert [i for t, i in got if t == tag] == list(range(n)), tag
    assert wait_for_lane_count(node, "main", "sent", 1) >= 1


def test_a_burst_while_the_switch_is_stuck_at_the_broker_loses_nothing(procs, ipc_url):
    """main's switch to its new lane waits in a stopped broker while main sends n1 a burst on
    the lane. n1 holds at most MAX_HELD messages before a switch, and main sends at most
    SWITCH_WINDOW on the lane before n1 says (through the broker) that it has the switch; the
    rest waits in main. Once the broker goes on, every message arrives, in order."""
    # More than the peer may hold; what waits in main fits its queue (MAX_BACKLOG), so the
    # sender does not wait for room while the broker sleeps.
    n = _lane_terms.MAX_HELD + 2_000
    # Liveness far longer than the pause: nobody may be declared gone while the broker sleeps.
    broker = procs.broker(ipc_url, "--heartbeat", "1", "--liveness", "60")
    worker = procs.worker(ipc_url, "n1", "--import", BEHAVIOURS, "--lanes", wait=False)
    wait_for_workers(ipc_url, ["n1"], timeout_s=30, processes={"n1": worker})
    with zimg.connect(ipc_url, name="main", lanes=True) as node:
        # The SPAWN asks for the lane; nothing else goes to n1 until the burst, so the lane
        # waits in READY, its switch not sent yet.
        collector = node.spawn("n1", "zt.collect", node.self(), n)
        lanes = node.connection.lanes
        assert lanes is not None
        deadline = time.monotonic() + WAIT
        while (lane := lanes.state("n1")) is None or lane.state is not State.READY:
            assert time.monotonic() < deadline, "the lane never became ready"
            time.sleep(0.01)  # polling a state only the I/O thread changes
        os.kill(broker.pid, signal.SIGSTOP)
        try:
            sender = threading.Thread(target=lambda: [node.send(collector, i) for i in range(n)])
            sender.start()
            sender.join(WAIT)  # what does not fit the window waits in main's queue, in batches
            assert not sender.is_alive()
            with lane.cond:
                assert lane.unswitched <= _lane_terms.SWITCH_WINDOW
                assert lane.unswitched + lane.queued + len(lane.batch) == n
        finally:
            os.kill(broker.pid, signal.SIGCONT)
        _, got = node.receive(lambda m: m[0] == "collected", timeout=WAIT * 3)
        assert got == list(range(n))


def _kill_connections_to(port: int) -> bool:
    """Kill every TCP connection to 127.0.0.1:``port`` (``ss -K``: what a middlebox reset or a
    dead path does to a connection). False where ``ss`` cannot."""
    if shutil.which("ss") is None:
        return False
    done = subprocess.run(
        ["ss", "-K", "dst", "127.0.0.1", "dport", "=", f":{port}"],
        capture_output=True,
        text=True,
        check=False,
    )
    return done.returncode == 0 and f":{port}" in done.stdout


def test_a_lane_that_loses_its_connection_ends_links_and_monitors_with_noconnection(cluster):
    """main's lane to n1 loses its TCP connection while both nodes stay joined. After the
    grace (no NODEDOWN of n1 comes), main declares the lane broken: its monitor of a process
    on n1 says noconnection, and n1, told through the broker, ends the link from that process
    to one on main with noconnection too. Messages then flow again (through the broker, or on
    a new lane)."""
    node, _ = cluster
    waiter = node.spawn(node.name, "zt.waiter")
    trapper = node.spawn("n1", "zt.trapper", node.self(), waiter)
    assert node.receive(timeout=WAIT) == ("linked", trapper)
    ref = node.monitor(trapper)
    echo = node.spawn("n1", "zimg.behaviours:echo")
    lanes = node.connection.lanes
    assert lanes is not None
    deadline = time.monotonic() + WAIT
    while not ((lane := lanes.state("n1")) and lane.state is State.ACTIVE and lane.connected):
        assert time.monotonic() < deadline, f"main's lane to n1 never went active: {lane}"
        node.send(echo, ("echo", node.self(), "warm"))
        assert node.receive(timeout=WAIT) == ("echo", "warm")
    port = int(entry(node, "n1")["lanes"]["endpoint"].rsplit(":", 1)[1])
    if not _kill_connections_to(port):
        pytest.skip("ss -K cannot kill sockets here")
    started = time.monotonic()
    got = node.receive(lambda m: m[0] == "DOWN", timeout=WAIT)
    assert got == ("DOWN", ref, trapper, "noconnection")
    assert time.monotonic() - started >= _lane_terms.BREAK_GRACE_S * 0.9
    _, exit_message = node.receive(lambda m: m[0] == "trapped", timeout=WAIT)
    assert exit_message == ("EXIT", waiter, "noconnection")
    assert lanes.broken == 1
    node.send(echo, ("echo", node.self(), "after"))
    assert node.receive(timeout=WAIT) == ("echo", "after")
    # Both sides count it, and their heartbeats tell the broker (NODES, `zimg nodes`).
    assert wait_for_lane_count(node, "main", "broken", 1) == 1
    assert wait_for_lane_count(node, "n1", "broken", 1) == 1


def test_strangers_on_a_lane_port_are_refused_counted_and_change_nothing(cluster):
    node, _ = cluster
    echo = node.spawn("n1", "zimg.behaviours:echo")
    node.send(echo, ("echo", node.self(), "warm"))
    assert node.receive(timeout=WAIT) == ("echo", "warm")
    endpoint = entry(node, "n1")["lanes"]["endpoint"]
    ctx: zmq.Context = zmq.Context()
    try:
        stranger = ctx.socket(zmq.DEALER)
        stranger.setsockopt(zmq.LINGER, 0)
        stranger.connect(endpoint)
        forged = wire.encode(Command.SEND, {"to": echo, "msg": ("echo", node.self(), "forged")})
        for _ in range(200):
            stranger.send_multipart(forged)
        for _ in range(5000):
            stranger.send_multipart([b"\xff" * 64, b"junk"])
        assert wait_for_lane_count(node, "n1", "refused", 5200) >= 5200
    finally:
        ctx.destroy(linger=0)
    node.send(echo, ("echo", node.self(), "after"))
    assert node.receive(timeout=WAIT) == ("echo", "after")  # and never "forged"


CLOSES = 25


def test_a_close_whose_last_signals_go_on_lanes_says_shutdown_every_time(cluster):
    """As test_actors' close test, with the leaver's lane to main switched on before it
    closes: its DOWNs and exit signals go on the lane, its DISCONNECT through the broker, and
    main must still hear ``shutdown`` from every one."""
    node, url = cluster
    me = node.self()
    wrong: list[tuple[int, str, object]] = []
    for i in range(CLOSES):
        leaver = zimg.connect(url, name=f"leaver{i}", lanes=True)
        try:
            pids = [leaver.spawn(leaver.name, "zimg.behaviours:echo") for _ in range(8)]
            refs = {node.monitor(pid): pid for pid in pids}
            for pid in pids:  # each answers after the MONITOR that went to it before
                node.send(pid, ("echo", me, "monitored"))
            for _ in pids:
                node.receive(lambda m: m == ("echo", "monitored"), timeout=WAIT)
            node.spawn("n1", "zt.trap_echo_link", me, pids[0])
            assert node.receive(lambda m: m == ("echo", "linked"), timeout=WAIT)
            lanes = leaver.connection.lanes
            assert lanes is not None
            for k in range(100):  # echoes until the leaver's lane to main is switched on
                lane = lanes.state("main")
                if lane is not None and lane.state is State.ACTIVE:
                    break
                leaver.send(pids[k % 8], ("echo", me, k))
                node.receive(lambda m, k=k: m == ("echo", k), timeout=WAIT)
            else:
                pytest.fail("the leaver's lane to main never switched on")
        finally:
            leaver.close()
        for _ in range(len(refs)):
            _, ref, pid, reason = node.receive(lambda m: m[0] == "DOWN", timeout=WAIT)
            assert refs.pop(ref) == pid
            if reason != "shutdown":
                wrong.append((i, "monitor", reason))
        _, (_, sender, reason) = node.receive(lambda m: m[0] == "trapped", timeout=WAIT)
        assert sender == pids[0]
        if reason != "shutdown":
            wrong.append((i, "link", reason))
    assert wrong == []
