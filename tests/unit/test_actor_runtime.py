"""The actor runtime across nodes, over ``zimg.testing.MemoryRouter``: no sockets, no sleeps.

Each runtime is a node; the router hosts the broker's own actor routing. Behaviours run on
threads, as in a real node, so the tests wait on mailboxes (``receive`` with a timeout).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from zimg import protocol
from zimg._actor import ANY, ActorRuntime, Process
from zimg._errors import SpawnError, ZimgTimeout
from zimg._registry import behaviour
from zimg.testing import FakeClock, MemoryRouter
from zimg.wire import Command, Pid

pytestmark = pytest.mark.timeout(20)

WAIT = 5.0  # seconds: how long a test waits for what must come


@behaviour("zt.rt.echo")
def echo(ctx: Process) -> None:
    """Answers ``(sender, x)`` with ``(own pid, x)`` until ``"stop"``."""
    while (msg := ctx.receive(timeout=WAIT * 4)) != "stop":
        ctx.send(msg[0], (ctx.self(), msg[1]))


@behaviour("zt.rt.waiter")
def waiter(ctx: Process) -> None:
    """Waits for ``"stop"``, or ``("exit", reason)`` to end with ``reason``, or ``"crash"``."""
    msg = ctx.receive(timeout=WAIT * 4)
    if msg == "crash":
        raise RuntimeError("boom")
    if isinstance(msg, tuple) and msg[0] == "exit":
        ctx.exit(msg[1])


@behaviour("zt.rt.linker")
def linker(ctx: Process, pid: Pid) -> None:
    """Links to ``pid``, then waits (it ends with whatever signal the link brings)."""
    ctx.link(pid)
    ctx.receive(timeout=WAIT * 4)


@behaviour("zt.rt.dies_at_once")
def dies_at_once(ctx: Process) -> None:
    raise RuntimeError("at once")


@pytest.fixture
def router() -> Iterator[MemoryRouter]:
    r = MemoryRouter()
    yield r
    r.close()


def nodes(router: MemoryRouter, *names: str) -> list[ActorRuntime]:
    return [router.runtime(name) for name in names]


def receive(proc: Process, timeout: float = WAIT) -> Any:
    return proc.receive(timeout=timeout)


def nothing_more(proc: Process) -> None:
    with pytest.raises(ZimgTimeout):
        proc.receive(timeout=0)


def is_error(reason: Any, text: str) -> bool:
    return isinstance(reason, tuple) and reason[0] == "error" and reason[2] == text


# ---------------------------------------------------------------------- messages


def test_send_and_receive_across_two_runtimes(router: MemoryRouter) -> None:
    a, b = nodes(router, "a", "b")
    a.main.send(b.main.pid, ("hello", a.main.pid))
    assert receive(b.main) == ("hello", a.main.pid)
    b.main.register("inbox")
    a.main.send(("inbox", "b"), [1, 2])
    assert receive(b.main) == [1, 2]  # a copy made by the wire
    a.main.send(Pid("b", b.incarnation, 999), "lost")  # a dead pid: dropped
    a.main.send(Pid("zz", 1, 1), "lost")  # a node not connected: dropped
    nothing_more(b.main)


def test_a_manual_router_delivers_only_when_pumped() -> None:
    router = MemoryRouter(auto=False)
    a, b = nodes(router, "a", "b")
    a.main.send(b.main.pid, "one")
    nothing_more(b.main)
    assert router.pump() == 1
    assert receive(b.main, 0) == "one"
    assert router.pump() == 0
    router.close()


# ---------------------------------------------------------------------- spawn


def test_remote_spawn_runs_a_registered_behaviour(router: MemoryRouter) -> None:
    a, b = nodes(router, "a", "b")
    pid = a.main.spawn("b", "zt.rt.echo")
    assert (pid.node, pid.incarnation) == ("b", b.incarnation)
    a.main.send(pid, (a.main.pid, "ping"))
    assert receive(a.main) == (pid, "ping")
    a.main.send(pid, "stop")


def test_remote_spawn_of_an_unknown_behaviour_raises(router: MemoryRouter) -> None:
    a, _ = nodes(router, "a", "b")
    with pytest.raises(SpawnError, match=r"unknown behaviour 'zt\.rt\.nope' on node b"):
        a.main.spawn("b", "zt.rt.nope")
    with pytest.raises(SpawnError, match="node 'zz' is not connected"):
        a.main.spawn("zz", "zt.rt.echo")
    assert router.stats["unroutable"] == 1


def test_spawn_to_any_picks_a_worker(router: MemoryRouter) -> None:
    a = router.runtime("a")
    with pytest.raises(SpawnError, match="no worker node is connected"):
        a.main.spawn(ANY, "zt.rt.echo")
    router.runtime("w", role=protocol.ROLE_WORKER)
    pid = a.main.spawn(ANY, "zt.rt.echo")
    assert pid.node == "w"
    a.main.send(pid, "stop")


def test_spawn_link_and_monitor_are_atomic(router: MemoryRouter) -> None:
    """A child that dies at once still gives its reason, never ``noproc``: the link and the
    monitor exist before it runs, and SPAWNED reaches the spawner before its EXIT or DOWN."""
    a, _ = nodes(router, "a", "b")
    a.main.trap_exit = True
    pid = a.main.spawn("b", "zt.rt.dies_at_once", link=True)
    msg = receive(a.main)
    assert msg[:2] == ("EXIT", pid)
    assert is_error(msg[2], "at once")
    pid, ref = a.main.spawn_monitor("b", "zt.rt.dies_at_once")
    msg = receive(a.main)
    assert msg[:3] == ("DOWN", ref, pid)
    assert is_error(msg[3], "at once")
    assert a.main.links == set()
    assert a.main.monitors == {}


# ---------------------------------------------------------------------- links and exits


def test_a_crash_reaches_a_trapping_process_linked_across_nodes(router: MemoryRouter) -> None:
    a, _ = nodes(router, "a", "b")
    a.main.trap_exit = True
    pid = a.main.spawn("b", "zt.rt.waiter")
    a.main.link(pid)
    a.main.send(pid, "crash")
    msg = receive(a.main)
    assert msg[:2] == ("EXIT", pid)
    assert is_error(msg[2], "boom")
    nothing_more(a.main)


def test_a_crash_ends_a_process_linked_across_nodes(router: MemoryRouter) -> None:
    a, _ = nodes(router, "a", "b")
    target = a.main.spawn("b", "zt.rt.waiter")
    pid, ref = a.main.spawn_monitor("a", "zt.rt.linker", target)
    router.wait_until(lambda: router.sent("a", Command.LINK) != [])
    a.main.send(target, "crash")
    msg = receive(a.main)
    assert msg[:3] == ("DOWN", ref, pid)
    assert is_error(msg[3], "boom")


def test_a_normal_exit_does_not_end_a_linked_process(router: MemoryRouter) -> None:
    a, _ = nodes(router, "a", "b")
    pid = a.main.spawn("b", "zt.rt.waiter", link=True)
    ref = a.main.monitor(pid)
    a.main.send(pid, "stop")
    assert receive(a.main) == ("DOWN", ref, pid, "normal")
    assert a.main.alive
    assert a.main.links == set()


def test_exit_kill_across_nodes_cannot_be_trapped(router: MemoryRouter) -> None:
    a, b = nodes(router, "a", "b")
    pid, ref = a.main.spawn_monitor("b", "zt.rt.waiter")
    a.main.exit(pid, "kill")
    assert receive(a.main) == ("DOWN", ref, pid, protocol.KILLED)
    b.main.trap_exit = True
    a.main.exit(b.main.pid, "please")  # an exit signal not from a link, trapped
    assert receive(b.main) == ("EXIT", a.main.pid, "please")


def test_a_link_to_a_dead_pid_gives_noproc(router: MemoryRouter) -> None:
    a, b = nodes(router, "a", "b")
    a.main.trap_exit = True
    dead = Pid("b", b.incarnation, 999)
    a.main.link(dead)
    assert receive(a.main) == ("EXIT", dead, protocol.NOPROC)  # answered by node b
    gone = Pid("zz", 1, 1)
    a.main.link(gone)
    assert receive(a.main) == ("EXIT", gone, protocol.NOCONNECTION)  # by the broker


# ---------------------------------------------------------------------- monitors


def test_a_monitor_across_nodes_gives_one_down(router: MemoryRouter) -> None:
    a, _ = nodes(router, "a", "b")
    pid = a.main.spawn("b", "zt.rt.waiter")
    ref = a.main.monitor(pid)
    a.main.send(pid, ("exit", "bye"))
    assert receive(a.main) == ("DOWN", ref, pid, "bye")
    nothing_more(a.main)
    assert a.main.monitors == {}


def test_a_monitor_of_a_dead_pid_gives_noproc(router: MemoryRouter) -> None:
    a, b = nodes(router, "a", "b")
    pid, ref = a.main.spawn_monitor("b", "zt.rt.waiter")
    a.main.send(pid, "stop")
    assert receive(a.main) == ("DOWN", ref, pid, "normal")
    ref = a.main.monitor(pid)
    assert receive(a.main) == ("DOWN", ref, pid, protocol.NOPROC)  # answered by node b
    router.kill("b")
    router.runtime("b")  # a new incarnation: the old pid is dead, answered by the broker
    old = Pid("b", b.incarnation, b.main.pid.serial)
    ref = a.main.monitor(old)
    assert receive(a.main) == ("DOWN", ref, old, protocol.NOPROC)


def test_a_demonitor_lets_go_of_the_node(router: MemoryRouter) -> None:
    """The WATCH goes before the MONITOR; once nothing refers to the node, a tick UNWATCHes."""
    a, _ = nodes(router, "a", "b")
    pid = a.main.spawn("b", "zt.rt.waiter")
    ref = a.main.monitor(pid)
    commands = [c for n, c, _ in router.log if n == "a" and c is not Command.SPAWN]
    assert commands[-2:] == [Command.WATCH, Command.MONITOR]
    unwatches = router.sent("a", Command.UNWATCH)  # one after the spawn's answer
    a.main.demonitor(ref)
    assert router.sent("a", Command.DEMONITOR) == [{"to": pid, "ref": ref}]
    assert router.sent("a", Command.UNWATCH) == unwatches  # nothing has swept yet
    router.tick()
    assert router.sent("a", Command.UNWATCH) == [*unwatches, {"node": "b"}]
    a.main.send(pid, "stop")


def test_no_down_comes_after_a_demonitor_with_flush_returns(
    router: MemoryRouter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Erlang's promise: once ``demonitor(ref, flush=True)`` returns, no DOWN of ``ref`` is in
    the mailbox or comes later, even when the DOWN was being delivered as it was called."""
    a, _ = nodes(router, "a", "b")
    pid = a.main.spawn("b", "zt.rt.waiter")
    ref = a.main.monitor(pid)
    signals = a._signals
    putting, go, returned = threading.Event(), threading.Event(), threading.Event()
    put = signals._put_signal

    def slow_put(*args: Any) -> None:  # the DOWN is half-delivered: its monitor popped
        putting.set()
        go.wait(WAIT)
        put(*args)

    monkeypatch.setattr(signals, "_put_signal", slow_put)
    deliverer = threading.Thread(target=signals.deliver_down, args=(a.main, ref, pid, "bye"))
    deliverer.start()
    assert putting.wait(WAIT)

    def demonitor() -> None:
        a.main.demonitor(ref, flush=True)
        returned.set()

    caller = threading.Thread(target=demonitor)
    caller.start()
    returned_first = returned.wait(0.5)  # it may not return while the DOWN is on its way
    go.set()
    deliverer.join(WAIT)
    caller.join(WAIT)
    assert returned.is_set()
    assert not returned_first
    nothing_more(a.main)
    a.main.send(pid, "stop")


# ---------------------------------------------------------------------- node death


def test_a_node_going_down_ends_links_monitors_and_node_watches(router: MemoryRouter) -> None:
    a, _ = nodes(router, "a", "b")
    a.main.trap_exit = True
    linked = a.main.spawn("b", "zt.rt.waiter", link=True)
    watched, ref = a.main.spawn_monitor("b", "zt.rt.waiter")
    a.main.monitor_node("b")
    other = a.main.spawn("b", "zt.rt.waiter")
    pid, linker_ref = a.main.spawn_monitor("a", "zt.rt.linker", other)
    router.wait_until(lambda: router.sent("a", Command.LINK) != [])
    router.kill("b")
    got = [receive(a.main) for _ in range(4)]
    assert ("EXIT", linked, protocol.NOCONNECTION) in got
    assert ("DOWN", ref, watched, protocol.NOCONNECTION) in got
    assert ("nodedown", "b") in got
    assert ("DOWN", linker_ref, pid, protocol.NOCONNECTION) in got  # it did not trap exits
    nothing_more(a.main)


def test_monitor_node_of_a_node_that_is_not_up(router: MemoryRouter) -> None:
    (a,) = nodes(router, "a")
    a.main.monitor_node("zz")
    assert receive(a.main) == ("nodedown", "zz")  # the broker answers the WATCH at once


# ---------------------------------------------------------------------- new sessions


def test_resync_after_a_broker_restart(router: MemoryRouter) -> None:
    """Nodes that died while the broker was down are found in its node table; the watches of
    the others are sent again, so a later death is still heard of."""
    a, _, c = nodes(router, "a", "b", "c")
    a.main.trap_exit = True
    on_b = a.main.spawn("b", "zt.rt.waiter", link=True)
    on_c, ref = a.main.spawn_monitor("c", "zt.rt.waiter")
    watches = len(router.sent("a", Command.WATCH))
    router.restart(lost=["b"])
    assert receive(a.main) == ("EXIT", on_b, protocol.NOCONNECTION)
    router.wait_until(lambda: len(router.sent("a", Command.WATCH)) > watches)
    rewatched = router.sent("a", Command.WATCH)[watches:]
    assert rewatched == [{"node": "c", "incarnation": c.incarnation}]
    nothing_more(a.main)
    router.kill("c")
    assert receive(a.main) == ("DOWN", ref, on_c, protocol.NOCONNECTION)


def test_the_resync_waits_liveness_heartbeats_on_the_runtime_clock() -> None:
    """The nodes lost in a broker restart are looked for ``liveness`` heartbeat intervals after
    the rejoin (time the others need to rejoin), at the first tick from then on: by the clock
    the runtime is given, so no test waits for it."""
    clock = FakeClock()
    router = MemoryRouter(clock=clock, heartbeat_interval_s=60.0)  # a real sleep would fail
    asked: list[float] = []
    table = router.report
    router.report = lambda: asked.append(clock.now) or table()  # type: ignore[method-assign]
    try:
        a, _ = nodes(router, "a", "b")
        a.main.trap_exit = True
        on_b = a.main.spawn("b", "zt.rt.waiter", link=True)
        router.restart(lost=["b"])
        rejoined = clock.now
        for _ in range(3):
            clock.advance(50.0)
            router.tick()
        assert asked == []  # 150 s: not yet (3 x 60 s)
        clock.advance(50.0)
        router.tick()
        assert receive(a.main) == ("EXIT", on_b, protocol.NOCONNECTION)
        assert asked == [rejoined + 200.0]
        router.tick()
        assert asked == [rejoined + 200.0]  # once
    finally:
        router.close()


def test_a_node_the_broker_gave_up_ends_its_links_on_both_sides(router: MemoryRouter) -> None:
    a, b = nodes(router, "a", "b")
    a.main.trap_exit = True
    pid = a.main.spawn("b", "zt.rt.waiter", link=True)
    ref = b.main.monitor(pid)
    router.rejoin("a")
    assert receive(a.main) == ("EXIT", pid, protocol.NOCONNECTION)  # its own session hook
    assert receive(b.main) == ("DOWN", ref, pid, protocol.NOCONNECTION)  # NODEDOWN for a


def test_shutdown_skips_a_process_thread_that_is_not_started_yet(router: MemoryRouter) -> None:
    # A spawn records its thread before starting it; a shutdown in between must not fail on
    # joining it (it did: "cannot join thread before it is started").
    import threading

    [rt] = nodes(router, "n1")
    rt._spawns.threads.append(threading.Thread(target=lambda: None))
    rt.shutdown(timeout_s=0.1)
