"""The actor runtime's bounds and its WATCH bookkeeping, driven through a fake connection.

The fake records every message the runtime sends, in order, and delivers commands to its
handlers as the I/O thread would. No sockets, no broker.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any, cast

import numpy as np
import pytest

from zimg import protocol
from zimg._actor import SYSTEM_LIMIT, ActorLimits, ActorRuntime, Process
from zimg._errors import SpawnError, ZimgTimeout
from zimg._registry import behaviour
from zimg._transport import Transport
from zimg.wire import Command, Message, Pid, Ref

pytestmark = pytest.mark.timeout(20)

N2 = 222  # incarnation of the remote node n2


class FakeConnection:
    """A ``Transport`` (what ActorRuntime uses of a Connection); records what is sent."""

    def __init__(self, name: str = "n1") -> None:
        self.name = name
        self.incarnation = 111
        self.heartbeat_interval_s = 0.0  # sweeps are not rate-limited here
        self.liveness = 3
        self.handlers: dict[Command, Any] = {}
        self.run_handlers: dict[Command, Any] = {}
        self.hooks: list[Any] = []
        self.ticks: list[Any] = []
        self.counters: dict[str, Any] = {}
        self.sent: list[tuple[Command, dict[str, Any]]] = []
        self.changed = threading.Condition()

    def on(self, command: Command, handler: Any) -> None:
        self.handlers[command] = handler

    def on_run(self, command: Command, handler: Any) -> None:
        self.run_handlers[command] = handler

    def on_session(self, hook: Any) -> None:
        self.hooks.append(hook)

    def on_tick(self, hook: Any) -> None:
        self.ticks.append(hook)

    def send(self, command: Command, header: dict[str, Any]) -> None:
        with self.changed:
            self.sent.append((command, dict(header)))
            self.changed.notify_all()

    def deliver(self, command: Command, **header: Any) -> None:
        """A message from the broker, handled as on the I/O thread."""
        self.handlers[command](Message(command, header))

    def commands(self, *only: Command) -> list[Command]:
        return [c for c, _ in self.sent if not only or c in only]

    def of(self, command: Command) -> list[dict[str, Any]]:
        return [h for c, h in self.sent if c is command]

    def wait_for(self, command: Command, count: int = 1, timeout: float = 5.0) -> None:
        with self.changed:
            if not self.changed.wait_for(lambda: len(self.of(command)) >= count, timeout):
                raise AssertionError(f"no {command.name} sent; sent {self.commands()}")

    def clear(self) -> None:
        self.sent.clear()


@pytest.fixture
def make() -> Iterator[Callable[..., tuple[ActorRuntime, FakeConnection]]]:
    """Makes runtimes on fake connections; ends their processes at teardown."""
    made: list[ActorRuntime] = []

    def factory(**limits: int) -> tuple[ActorRuntime, FakeConnection]:
        fake = FakeConnection()
        nodes = [{"name": "n2", "incarnation": N2}]
        runtime = ActorRuntime(
            cast(Transport, fake), lambda: {"nodes": nodes}, ActorLimits(**limits)
        )
        made.append(runtime)
        return runtime, fake

    yield factory
    for runtime in made:
        runtime.shutdown(2.0)


@behaviour("zt.unit.sleeper")
def sleeper(ctx: Process) -> None:
    """Holds its mailbox until told to stop."""
    ctx.receive(lambda m: m == "stop")


def remote(serial: int, node: str = "n2", incarnation: int = N2) -> Pid:
    return Pid(node, incarnation, serial)


def drain(proc: Process) -> list[Any]:
    out = []
    while True:
        try:
            out.append(proc.mailbox.receive(timeout=0))
        except ZimgTimeout:
            return out


def refs_recounted(runtime: ActorRuntime) -> dict[tuple[str, int | None], int]:
    """The references into remote nodes, counted afresh from the processes."""
    found: dict[tuple[str, int | None], int] = {}

    def add(key: tuple[str, int | None], n: int = 1) -> None:
        found[key] = found.get(key, 0) + n

    for proc in runtime.processes():
        for pid in [*proc.links, *proc.monitors.values(), *proc.monitored_by.values()]:
            if pid.node != runtime.name:
                add((pid.node, pid.incarnation))
        for name, n in proc.node_watches.items():
            if name != runtime.name:
                add((name, None), n)
    for pending in runtime._pending.values():
        if pending.watched:
            add((pending.node, None))
    return found


# ---------------------------------------------------------------------------- limits


def test_actor_limits_defaults_and_validation():
    limits = ActorLimits()
    assert (limits.max_processes, limits.max_links, limits.max_monitors) == (1000, 10_000, 10_000)
    assert limits.max_remote_refs == 100_000
    assert (limits.mailbox_messages, limits.mailbox_bytes, limits.node_mailbox_bytes) == (
        100_000,
        64 << 20,
        512 << 20,
    )
    with pytest.raises(ValueError, match="max_processes"):
        ActorLimits(max_processes=0)


# ---------------------------------------------------------------------------- mailboxes


def test_a_send_flood_to_an_unread_mailbox_is_bounded_and_counted(make, caplog):
    runtime, fake = make(mailbox_bytes=8 << 20)
    main = runtime.main
    blob = b"x" * (1 << 20)
    with caplog.at_level(logging.DEBUG, logger="zimg.actor"):
        for _ in range(100):
            fake.deliver(Command.SEND, to=main.pid, msg=blob)
    held = len(main.mailbox)
    assert 7 <= held <= 8
    assert runtime.dropped_messages == 100 - held
    assert main.mailbox.nbytes <= 8 << 20
    drops = [r for r in caplog.records if "dropped a message" in r.getMessage()]
    assert [r.levelno for r in drops] == [logging.WARNING] + [logging.DEBUG] * (len(drops) - 1)
    assert len(drops) == runtime.dropped_messages
    assert runtime.counters()["dropped_messages"] == runtime.dropped_messages
    assert fake.counters["dropped"]() == runtime.dropped_messages  # reported in heartbeats


def test_local_sends_count_messages_only(make):
    runtime, _ = make(mailbox_messages=5, mailbox_bytes=10)
    big = b"x" * 1000  # passed by reference: its bytes are not counted
    for _ in range(8):
        runtime.send(runtime.main.pid, big)
    assert len(runtime.main.mailbox) == 5
    assert runtime.dropped_messages == 3


def test_the_node_budget_bounds_all_mailboxes_together(make):
    runtime, fake = make(mailbox_bytes=4 << 20, node_mailbox_bytes=6 << 20)
    main = runtime.main
    a, ref_a = runtime.spawn(main, "n1", "zt.unit.sleeper", [], {}, False, True, 1)
    b, ref_b = runtime.spawn(main, "n1", "zt.unit.sleeper", [], {}, False, True, 1)
    blob = b"x" * (1 << 20)
    for pid in (a, b):
        for _ in range(4):
            fake.deliver(Command.SEND, to=pid, msg=blob)
    procs = {p.pid: p for p in runtime.processes()}
    held = [len(procs[a].mailbox), len(procs[b].mailbox)]
    assert held == [3, 2]  # a: its own bound (4 MiB); b: what is left of the node's 6 MiB
    assert runtime.dropped_messages == 3
    assert runtime.budget.held <= 6 << 20
    for pid in (a, b):
        runtime.send(pid, "stop")
    main.receive(lambda m: m[:2] == ("DOWN", ref_a), timeout=5)
    main.receive(lambda m: m[:2] == ("DOWN", ref_b), timeout=5)
    assert runtime.budget.held == 0


def test_exit_and_down_are_delivered_even_to_a_full_mailbox(make):
    runtime, fake = make(mailbox_messages=2)
    main = runtime.main
    main.trap_exit = True
    partner, watched = remote(5), remote(6)
    runtime.link(main, partner)
    ref = runtime.monitor(main, watched)
    runtime.monitor_node(main, "n3")
    for i in range(5):
        runtime.send(main.pid, i)
    fake.deliver(Command.EXIT, to=main.pid, **{"from": partner}, reason="boom", link=True)
    fake.deliver(Command.DOWN, to=main.pid, ref=ref, pid=watched, reason="gone")
    fake.deliver(Command.NODEDOWN, node="n3", incarnation=None, reason="noconnection")
    assert drain(main) == [
        0,
        1,
        ("EXIT", partner, "boom"),
        ("DOWN", ref, watched, "gone"),
        ("nodedown", "n3"),
    ]
    assert runtime.dropped_messages == 3


def test_an_exit_reason_too_large_for_the_mailbox_becomes_system_limit(make):
    runtime, fake = make(mailbox_bytes=1 << 20, node_mailbox_bytes=2 << 20)
    main = runtime.main
    main.trap_exit = True
    partner = remote(5)
    runtime.link(main, partner)
    fake.deliver(Command.SEND, to=main.pid, msg=b"x" * 900_000)
    fake.deliver(Command.EXIT, to=main.pid, **{"from": partner}, reason=b"r" * 500_000, link=True)
    messages = drain(main)
    assert messages[1] == ("EXIT", partner, SYSTEM_LIMIT)  # still an abnormal exit
    assert runtime.dropped_messages == 1


def test_exit_without_a_link_to_a_trapping_full_mailbox_is_an_ordinary_message(make):
    runtime, fake = make(mailbox_messages=1)
    main = runtime.main
    main.trap_exit = True
    runtime.send(main.pid, "first")
    fake.deliver(Command.EXIT, to=main.pid, **{"from": remote(9)}, reason="x", link=False)
    assert drain(main) == ["first"]
    assert runtime.dropped_messages == 1


def test_an_array_as_exit_reason_is_just_a_term(make):
    np = pytest.importorskip("numpy")
    runtime, fake = make()
    partner = remote(5)
    runtime.link(runtime.main, partner)
    fake.deliver(
        Command.EXIT, to=runtime.main.pid, **{"from": partner}, reason=np.zeros(3), link=True
    )
    assert runtime.main._signalled  # killed by it, not a crash of the handler


def test_a_process_that_ends_gives_its_mailbox_bytes_back(make):
    runtime, fake = make()
    pid, _ = runtime.spawn(runtime.main, "n1", "zt.unit.sleeper", [], {}, False, True, 1)
    fake.deliver(Command.SEND, to=pid, msg=b"x" * 100_000)
    assert runtime.budget.held >= 100_000
    runtime.send(pid, "stop")
    runtime.main.receive(lambda m: m[0] == "DOWN", timeout=5)
    assert runtime.budget.held == 0


# ---------------------------------------------------------------------------- processes


def test_spawns_beyond_max_processes_are_refused_locally_and_remotely(make):
    runtime, fake = make(max_processes=3)
    main = runtime.main
    pids = [
        runtime.spawn(main, "n1", "zimg.behaviours:echo", [], {}, False, False, 1)[0]
        for _ in range(3)
    ]
    with pytest.raises(SpawnError, match=r"max_processes 3"):
        runtime.spawn(main, "n1", "zimg.behaviours:echo", [], {}, False, False, 1)
    spawner, ref = remote(1), Ref("n2", N2, 77)
    fake.deliver(
        Command.SPAWN,
        to="n1",
        **{"from": spawner},
        ref=ref,
        behaviour="zimg.behaviours:echo",
        args=[],
        link=True,
    )
    (reply,) = fake.of(Command.SPAWNED)
    assert reply["pid"] is None
    assert "max_processes 3" in reply["error"]
    assert runtime.refused_spawns == 2
    assert len(runtime.processes()) == 4  # the main process is not counted
    assert refs_recounted(runtime) == runtime._node_refs == {}
    # one ends: there is room for one more
    ref_watch = runtime.monitor(main, pids[0])
    runtime.send(pids[0], "stop")
    main.receive(lambda m: m == ("DOWN", ref_watch, pids[0], "normal"), timeout=5)
    runtime.spawn(main, "n1", "zimg.behaviours:echo", [], {}, False, False, 1)
    for pid in pids[1:]:
        runtime.send(pid, "stop")


def test_a_thread_that_cannot_start_ends_its_process(make, monkeypatch):
    runtime, _ = make()

    def refuse(self: threading.Thread) -> None:
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(threading.Thread, "start", refuse)
    with pytest.raises(SpawnError, match="could not start a thread"):
        runtime.spawn(runtime.main, "n1", "zimg.behaviours:echo", [], {}, False, False, 1)
    assert runtime.processes() == [runtime.main]
    assert runtime._spawned == 0


# ---------------------------------------------------------------------------- links, monitors


def test_a_link_flood_is_bounded_and_answered_with_system_limit(make):
    runtime, fake = make(max_links=10)
    target = runtime.main.pid
    for i in range(15):
        fake.deliver(Command.LINK, to=target, **{"from": remote(100 + i)})
    assert len(runtime.main.links) == 10
    assert runtime.refused_links == 5
    refusals = fake.of(Command.EXIT)
    assert len(refusals) == 5
    assert all(h["reason"] == SYSTEM_LIMIT and h["link"] is True for h in refusals)
    assert [h["to"] for h in refusals] == [remote(110 + i) for i in range(5)]
    # a link already held is not a new one
    fake.deliver(Command.LINK, to=target, **{"from": remote(100)})
    assert runtime.refused_links == 5


def test_a_monitor_flood_is_bounded_and_answered_with_system_limit(make):
    runtime, fake = make(max_monitors=10)
    target, watcher = runtime.main.pid, remote(1)
    for i in range(15):
        fake.deliver(Command.MONITOR, to=target, **{"from": watcher}, ref=Ref("n2", N2, i))
    assert len(runtime.main.monitored_by) == 10
    assert runtime.refused_monitors == 5
    downs = fake.of(Command.DOWN)
    assert [(d["ref"].serial, d["reason"]) for d in downs] == [
        (i, SYSTEM_LIMIT) for i in range(10, 15)
    ]


def test_links_and_monitors_from_other_nodes_are_bounded_for_the_whole_node(make):
    runtime, fake = make(max_remote_refs=5)
    a, b = runtime.main, runtime._new_process()
    for i in range(3):
        fake.deliver(Command.LINK, to=a.pid, **{"from": remote(i)})
    for i in range(3):
        fake.deliver(Command.MONITOR, to=b.pid, **{"from": remote(9)}, ref=Ref("n2", N2, i))
    assert (len(a.links), len(b.monitored_by)) == (3, 2)
    assert (runtime.refused_links, runtime.refused_monitors) == (0, 1)
    fake.deliver(Command.LINK, to=b.pid, **{"from": remote(7)})
    assert runtime.refused_links == 1
    assert [h["reason"] for h in fake.of(Command.DOWN) + fake.of(Command.EXIT)] == [
        SYSTEM_LIMIT
    ] * 2
    assert runtime.counters()["remote_refs"] == 5
    # this node's own links are not refused for it (only counted)
    runtime.link(a, remote(20))
    assert remote(20) in a.links
    assert runtime.counters()["remote_refs"] == 6


def test_own_link_and_monitor_bounds_give_system_limit_to_the_caller(make):
    runtime, _ = make(max_links=2, max_monitors=2)
    main = runtime.main
    main.trap_exit = True
    for i in range(3):
        runtime.link(main, remote(i))
    refs = [runtime.monitor(main, remote(10 + i)) for i in range(3)]
    assert drain(main) == [
        ("EXIT", remote(2), SYSTEM_LIMIT),
        ("DOWN", refs[2], remote(12), SYSTEM_LIMIT),
    ]
    assert (runtime.refused_links, runtime.refused_monitors) == (1, 1)
    with pytest.raises(SpawnError, match="system_limit"):
        runtime.spawn(main, "n2", "zimg.behaviours:echo", [], {}, True, False, 1)
    with pytest.raises(SpawnError, match="system_limit"):
        runtime.spawn(main, "n1", "zimg.behaviours:echo", [], {}, False, True, 1)


def test_a_local_target_over_its_bound_refuses_too(make):
    runtime, _ = make(max_links=1, max_monitors=1)
    main = runtime.main
    main.trap_exit = True
    pid, _ = runtime.spawn(main, "n1", "zimg.behaviours:echo", [], {}, True, True, 1)
    other = runtime._new_process()  # a second local process (no thread needed)
    other.trap_exit = True
    runtime.link(other, pid)
    ref = runtime.monitor(other, pid)
    assert drain(other) == [("EXIT", pid, SYSTEM_LIMIT), ("DOWN", ref, pid, SYSTEM_LIMIT)]
    runtime.send(pid, "stop")


# ---------------------------------------------------------------------------- WATCH


def test_watch_goes_before_link_monitor_and_spawn_and_only_once_per_name(make):
    runtime, fake = make()
    main = runtime.main
    runtime.link(main, remote(1))
    runtime.monitor(main, remote(2))
    runtime.link(main, remote(3, "n3", 333))
    assert fake.commands() == [
        Command.WATCH,
        Command.LINK,
        Command.MONITOR,
        Command.WATCH,
        Command.LINK,
    ]
    # no incarnation: the broker answers the LINK or MONITOR of a dead incarnation (noproc)
    assert fake.of(Command.WATCH) == [
        {"node": "n2", "incarnation": None},
        {"node": "n3", "incarnation": None},
    ]
    fake.clear()
    threading.Timer(0.05, lambda: fake.deliver(Command.SPAWNED, **spawned(fake, 4))).start()
    runtime.spawn(main, "n4", "zimg.behaviours:echo", [], {}, True, False, 5)
    assert fake.commands() == [Command.WATCH, Command.SPAWN]
    assert fake.of(Command.WATCH) == [{"node": "n4", "incarnation": None}]
    assert refs_recounted(runtime) == runtime._node_refs


def spawned(fake: FakeConnection, serial: int, node: str = "n4", inc: int = 444) -> dict:
    fake.wait_for(Command.SPAWN)
    (request,) = fake.of(Command.SPAWN)
    return {"to": request["from"], "ref": request["ref"], "pid": Pid(node, inc, serial)}


def test_a_spawn_on_any_node_watches_the_node_that_answered(make):
    runtime, fake = make()
    threading.Timer(0.05, lambda: fake.deliver(Command.SPAWNED, **spawned(fake, 4))).start()
    pid = runtime.spawn(runtime.main, "*", "zimg.behaviours:echo", [], {}, False, True, 5)[0]
    assert fake.commands() == [Command.SPAWN, Command.WATCH]
    assert fake.of(Command.WATCH) == [{"node": "n4", "incarnation": 444}]
    assert runtime.main.monitors.popitem()[1] == pid


def test_accepting_a_remote_link_monitor_or_linked_spawn_watches_its_node(make):
    runtime, fake = make()
    fake.deliver(Command.LINK, to=runtime.main.pid, **{"from": remote(1)})
    fake.deliver(
        Command.MONITOR, to=runtime.main.pid, **{"from": remote(2, "n3", 3)}, ref=Ref("n3", 3, 1)
    )
    fake.deliver(
        Command.SPAWN,
        to="n1",
        **{"from": remote(3, "n5", 5)},
        ref=Ref("n5", 5, 1),
        behaviour="zimg.behaviours:echo",
        args=[],
        monitor=True,
    )
    assert fake.of(Command.WATCH) == [
        {"node": "n2", "incarnation": N2},
        {"node": "n3", "incarnation": 3},
        {"node": "n5", "incarnation": 5},
    ]
    assert fake.commands()[-2:] == [Command.WATCH, Command.SPAWNED]
    child = fake.of(Command.SPAWNED)[0]["pid"]
    runtime.send(child, "stop")


def test_a_name_nothing_refers_to_is_unwatched_lazily_then_watched_again(make):
    runtime, fake = make()
    main = runtime.main
    runtime.link(main, remote(1))
    ref = runtime.monitor(main, remote(2))
    runtime.unlink(main, remote(1))
    fake.deliver(Command.SEND, to=main.pid, msg="any actor message sweeps")
    assert Command.UNWATCH not in fake.commands()  # the monitor still refers to n2
    runtime.demonitor(main, ref)
    assert Command.UNWATCH not in fake.commands()  # lazily: at the next sweep
    fake.heartbeat_interval_s = 3600.0
    fake.deliver(Command.SEND, to=main.pid, msg="sweep")
    assert fake.of(Command.UNWATCH) == [{"node": "n2"}]
    runtime.link(main, remote(3))
    runtime.unlink(main, remote(3))
    fake.deliver(Command.SEND, to=main.pid, msg="no sweep within the interval")
    assert fake.commands()[-5:] == [
        Command.DEMONITOR,
        Command.UNWATCH,
        Command.WATCH,
        Command.LINK,
        Command.UNLINK,
    ]
    assert len(fake.of(Command.UNWATCH)) == 1


def test_a_watch_being_sent_by_another_thread_is_sent_again_without_incarnation(make):
    runtime, fake = make()
    with runtime._lock:  # as if another thread had decided on n2's WATCH, not sent it yet
        other = runtime._ref("n2", N2)
    assert other == ("n2", N2)
    runtime.link(runtime.main, remote(1, incarnation=999))
    assert fake.sent == [
        (Command.WATCH, {"node": "n2", "incarnation": None}),
        (Command.LINK, {"to": remote(1, incarnation=999), "from": runtime.main.pid}),
    ]


def test_monitor_node_watches_every_time_and_hears_nodedown(make):
    runtime, fake = make()
    main = runtime.main
    runtime.monitor_node(main, "n7")
    runtime.monitor_node(main, "n7")
    assert fake.of(Command.WATCH) == [{"node": "n7", "incarnation": None}] * 2
    # the broker's answer when n7 is not up
    fake.deliver(Command.NODEDOWN, node="n7", incarnation=None, reason="noconnection")
    assert drain(main) == [("nodedown", "n7")] * 2
    assert runtime._node_refs == {}
    runtime.monitor_node(main, "not a name!")  # no node has it: at once, nothing sent
    assert drain(main) == [("nodedown", "not a name!")]
    assert len(fake.of(Command.WATCH)) == 2


def test_nodedown_ends_links_monitors_and_monitors_held_by_that_node(make):
    runtime, fake = make()
    main = runtime.main
    main.trap_exit = True
    runtime.link(main, remote(1))
    ref = runtime.monitor(main, remote(2))
    fake.deliver(Command.MONITOR, to=main.pid, **{"from": remote(3)}, ref=Ref("n2", N2, 9))
    runtime.link(main, remote(4, incarnation=N2 + 1))  # another incarnation: untouched
    fake.deliver(Command.NODEDOWN, node="n2", incarnation=N2, reason="noconnection")
    assert drain(main) == [
        ("EXIT", remote(1), protocol.NOCONNECTION),
        ("DOWN", ref, remote(2), protocol.NOCONNECTION),
    ]
    assert main.monitored_by == {}
    assert main.links == {remote(4, incarnation=N2 + 1)}
    assert runtime._node_refs == {("n2", N2 + 1): 1}
    assert refs_recounted(runtime) == runtime._node_refs


def test_nodedown_system_limit_ends_everything_into_that_node_and_tells_it(make):
    runtime, fake = make()
    main = runtime.main
    main.trap_exit = True
    runtime.link(main, remote(1))
    ref = runtime.monitor(main, remote(2, incarnation=N2 + 1))
    their_ref = Ref("n2", N2, 9)
    fake.deliver(Command.MONITOR, to=main.pid, **{"from": remote(3)}, ref=their_ref)
    monitor_node_proc = runtime._new_process()
    runtime.monitor_node(monitor_node_proc, "n2")
    fake.clear()
    fake.deliver(Command.NODEDOWN, node="n2", incarnation=N2, reason=SYSTEM_LIMIT)
    assert drain(main) == [
        ("EXIT", remote(1), SYSTEM_LIMIT),
        ("DOWN", ref, remote(2, incarnation=N2 + 1), SYSTEM_LIMIT),  # every incarnation
    ]
    assert drain(monitor_node_proc) == [("nodedown", "n2")]
    assert fake.sent == [
        (Command.EXIT, {"to": remote(1), "from": main.pid, "reason": SYSTEM_LIMIT, "link": True}),
        (Command.DEMONITOR, {"to": remote(2, incarnation=N2 + 1), "ref": ref}),
        (
            Command.DOWN,
            {"to": remote(3), "ref": their_ref, "pid": main.pid, "reason": SYSTEM_LIMIT},
        ),
    ]
    assert runtime._node_refs == {}
    runtime.link(main, remote(5))  # the broker holds no watch: ask again
    assert fake.commands()[-2:] == [Command.WATCH, Command.LINK]


def test_a_pending_spawn_fails_when_its_node_goes_down(make):
    runtime, fake = make()
    threading.Timer(
        0.05,
        lambda: (
            fake.wait_for(Command.SPAWN),
            fake.deliver(Command.NODEDOWN, node="n4", incarnation=4, reason="noconnection"),
        ),
    ).start()
    with pytest.raises(SpawnError, match="node 'n4' went down"):
        runtime.spawn(runtime.main, "n4", "zimg.behaviours:echo", [], {}, False, False, 5)
    assert runtime._pending == {}
    assert runtime._node_refs == {}


def test_a_spawn_to_a_node_that_is_not_up_gets_the_brokers_answer(make):
    runtime, fake = make()

    def broker() -> None:
        fake.wait_for(Command.SPAWN)
        request = fake.of(Command.SPAWN)[0]
        # the broker answers the WATCH, then the SPAWN, in that order
        fake.deliver(Command.NODEDOWN, node="n9", incarnation=None, reason="noconnection")
        error = "node 'n9' is not connected"
        fake.deliver(Command.SPAWNED, to=request["from"], ref=request["ref"], pid=None, error=error)

    threading.Timer(0.05, broker).start()
    with pytest.raises(SpawnError, match="node 'n9' is not connected"):
        runtime.spawn(runtime.main, "n9", "zimg.behaviours:echo", [], {}, False, False, 5)
    assert fake.commands()[:2] == [Command.WATCH, Command.SPAWN]
    assert runtime._node_refs == {}


def test_a_new_session_forgets_the_watches_and_sends_them_again(make):
    runtime, fake = make()
    main = runtime.main
    main.trap_exit = True
    runtime.link(main, remote(1))
    runtime.link(main, remote(2, "n3", 3))
    fake.clear()
    # the broker restarted: after the resync, WATCH again whatever is still referred to
    (hook,) = fake.hooks
    hook(True)
    fake.wait_for(Command.WATCH)
    # n2 is in the table the fake broker reports; n3 is not: its link ended first
    assert drain(main) == [("EXIT", remote(2, "n3", 3), protocol.NOCONNECTION)]
    assert fake.of(Command.WATCH) == [{"node": "n2", "incarnation": N2}]
    assert runtime._watched == {"n2"}
    fake.clear()
    # the broker dropped this node for silence: every link into other nodes ends now
    hook(False)
    assert drain(main) == [("EXIT", remote(1), protocol.NOCONNECTION)]
    assert Command.WATCH not in fake.commands()
    assert runtime._node_refs == {}


def test_the_reference_counts_match_the_processes_after_a_mixed_run(make):
    runtime, fake = make(max_links=50, max_monitors=50)
    main = runtime.main
    main.trap_exit = True
    procs = [main, runtime._new_process(), runtime._new_process()]
    for p in procs:
        p.trap_exit = True
    refs = []
    for i in range(40):
        proc = procs[i % 3]
        target = remote(i % 7, f"n{2 + i % 3}", 10 + i % 3)
        if i % 4 == 0:
            runtime.link(proc, target)
        elif i % 4 == 1:
            refs.append((proc, runtime.monitor(proc, target)))
        elif i % 4 == 2:
            fake.deliver(Command.LINK, to=proc.pid, **{"from": target})
        else:
            fake.deliver(
                Command.MONITOR, to=proc.pid, **{"from": target}, ref=Ref(target.node, 1, i)
            )
        assert refs_recounted(runtime) == runtime._node_refs
        assert runtime._ref_total == sum(runtime._node_refs.values())
    for proc, ref in refs[::2]:
        runtime.demonitor(proc, ref)
    fake.deliver(Command.UNLINK, to=main.pid, **{"from": remote(2, "n4", 12)})
    fake.deliver(Command.NODEDOWN, node="n3", incarnation=11, reason="noconnection")
    assert refs_recounted(runtime) == runtime._node_refs
    runtime.exited(procs[1], "normal")
    assert refs_recounted(runtime) == runtime._node_refs
    assert runtime._ref_total == sum(runtime._node_refs.values())
    names = {name for name, _ in runtime._node_refs}
    fake.deliver(Command.SEND, to=main.pid, msg="sweep")
    unwatched = {h["node"] for h in fake.of(Command.UNWATCH)}
    assert unwatched.isdisjoint(names)
    assert runtime._watched == names


def test_a_send_to_a_name_pair_holding_arrays_is_dropped_without_an_error(make: Any) -> None:
    """A ``(name, node)`` pair is compared and hashed only as strs: an array there (which a
    broker drops as malformed before it gets here) neither raises on the I/O thread nor
    reaches the process registered under the name."""
    runtime, fake = make()
    runtime.register(runtime.main, "inbox")
    odd = np.arange(3, dtype=np.uint8)
    for to in ((odd, "n1"), ("inbox", odd), [odd, odd]):
        fake.deliver(Command.SEND, to=to, msg="odd")
    fake.deliver(Command.SEND, to=("inbox", "n1"), msg="plain")
    assert drain(runtime.main) == ["plain"]


def test_a_run_of_sends_lands_as_the_sends_one_by_one_would(make):
    """A lane's batch of SENDs goes to the runtime's run handler: each message reaches the
    mailbox its ``to`` names, in order, within the same bounds, drops counted one by one."""
    runs, one_by_one = make(mailbox_messages=3), make(mailbox_messages=3)
    ends = []
    for runtime, fake in (runs, one_by_one):
        main = runtime.main
        other, _ = runtime.spawn(main, "n1", "zt.unit.sleeper", [], {}, False, True, 1)
        runtime.register(main, "named")
        to = [main.pid, other, ("named", "n1"), main.pid, remote(5), other, main.pid]
        msgs = [Message(Command.SEND, {"to": pid, "msg": i}) for i, pid in enumerate(to)]
        if fake is runs[1]:
            fake.run_handlers[Command.SEND](msgs)
        else:
            for msg in msgs:
                fake.handlers[Command.SEND](msg)
        procs = {p.pid: p for p in runtime.processes()}
        ends.append((drain(main), drain(procs[other]), runtime.dropped_messages))
        runtime.send(other, "stop")
    assert ends[0] == ends[1] == ([0, 2, 3], [1, 5], 1)  # main's bound dropped 6
