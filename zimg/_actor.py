"""Actors on one node: the :class:`ActorRuntime`, which owns a node's processes.

The runtime keeps the process table, the registered names and local delivery, and turns actor
commands arriving from the broker (on the I/O thread) into mailbox messages and signals. Its
collaborators share its one lock, each with one job:

- ``zimg._actor_process``: :class:`Process` and its calls (a behaviour's ``ctx``), with
  :class:`ExitSignal` and :class:`ActorLimits` (their names are importable from here too);
- ``zimg._actor_watch``: the WATCH book, the references into remote nodes;
- ``zimg._actor_signals``: links, monitors and exit signals;
- ``zimg._actor_spawn``: the spawn RPC;
- ``zimg._actor_nodes``: ``monitor_node``, NODEDOWN, a new session and the resync.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from zimg._actor_nodes import RemoteNodes
from zimg._actor_process import (
    ANY,
    DEFAULT_ACTOR_LIMITS,
    DEFAULT_SPAWN_TIMEOUT_S,
    KILL,
    SHUTDOWN,
    SYSTEM_LIMIT,
    ActorLimits,
    Address,
    ExitSignal,
    Process,
    ProcessCalls,
    error_reason,
)
from zimg._actor_signals import Signals
from zimg._actor_spawn import PendingSpawn, SpawnCalls
from zimg._actor_watch import NodeKey, WatchBook
from zimg._errors import NameTakenError, SpawnError
from zimg._mailbox import ByteBudget, Leader, term_size
from zimg._transport import Transport
from zimg.wire import Command, Message, Pid, Ref

__all__ = [
    "ANY",
    "DEFAULT_ACTOR_LIMITS",
    "DEFAULT_SPAWN_TIMEOUT_S",
    "KILL",
    "SHUTDOWN",
    "SYSTEM_LIMIT",
    "ActorLimits",
    "ActorRuntime",
    "Address",
    "ExitSignal",
    "Process",
    "ProcessCalls",
    "error_reason",
]

log = logging.getLogger("zimg.actor")


class ActorRuntime:
    """All the processes of one node, and the actor commands that reach it.

    Args:
        connection: the node's link to the broker (a ``Connection``, or any
            :class:`~zimg._transport.Transport`, such as ``zimg.testing.MemoryTransport``).
        report: asks the broker for its node table.
        limits: the bounds on processes, links, monitors and mailboxes.
        clock: seconds, for the runtime's own timers (the resync after a broker restart, the
            rate of watch sweeps); ``zimg.testing.FakeClock`` in tests. The timers are checked
            on the transport's ticks, so they run at most a heartbeat interval late.

    Attributes:
        dropped_messages: messages dropped because a mailbox bound was reached (and system
            messages whose reason was replaced by ``system_limit`` for want of room).
        refused_spawns: spawns refused because the node ran ``max_processes`` processes.
        refused_links: links refused with ``system_limit`` (``max_links``).
        refused_monitors: monitors refused with ``system_limit`` (``max_monitors``).
    """

    def __init__(
        self,
        connection: Transport,
        report: Callable[[], dict[str, Any]],
        limits: ActorLimits = DEFAULT_ACTOR_LIMITS,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.connection = connection
        self.name = connection.name
        self.incarnation = connection.incarnation
        self.report = report
        self.limits = limits
        self.budget = ByteBudget(limits.node_mailbox_bytes)
        # A waiting receive may read the node's lanes itself (``zimg._lane_reader``).
        self.lead: Leader | None = getattr(connection, "lane_reader", None)
        self.dropped_messages = 0
        self.refused_spawns = 0
        self.refused_links = 0
        self.refused_monitors = 0
        self._lock = threading.RLock()
        self._procs: dict[int, Process] = {}
        self._names: dict[str, Process] = {}
        self._serials = itertools.count()
        self._refs = itertools.count(1)
        self._spawned = 0  # live processes that count against max_processes
        self._watches = WatchBook(connection, self._lock, clock)  # the WATCH book-keeping
        self._signals = Signals(self, self._lock, self._watches)  # links, monitors, exits
        self._spawns = SpawnCalls(self, self._lock, self._watches, self._signals)  # spawn RPC
        self._nodes = RemoteNodes(
            self, self._lock, self._procs, clock, self._watches, self._spawns, self._signals
        )  # what is heard of other nodes
        handlers: dict[Command, Callable[[Message], None]] = {
            Command.SPAWN: self._spawns.on_spawn,
            Command.SPAWNED: self._spawns.on_spawned,
            Command.SEND: self._on_send,
            Command.LINK: self._signals.on_link,
            Command.UNLINK: self._signals.on_unlink,
            Command.MONITOR: self._signals.on_monitor,
            Command.DEMONITOR: self._signals.on_demonitor,
            Command.EXIT: self._signals.on_exit,
            Command.DOWN: self._signals.on_down,
            Command.NODEDOWN: self._on_nodedown,
        }
        for command, handler in handlers.items():
            connection.on(command, handler)
        connection.on_run(Command.SEND, self._on_sends)
        connection.on_session(self._nodes.on_session)
        connection.on_tick(self._nodes.on_tick)
        connection.counters["dropped"] = lambda: self.dropped_messages  # in every heartbeat
        self.main = self._new_process()

    # ------------------------------------------------------------------ lookup

    def _new_process(self, *, spawned: bool = False) -> Process:
        with self._lock:
            if spawned:
                if self._spawned >= self.limits.max_processes:
                    self.refused_spawns += 1
                    text = (
                        f"node {self.name} runs {self._spawned} processes, its limit "
                        f"(max_processes {self.limits.max_processes}): spawn refused"
                    )
                    self._log_refusal(self.refused_spawns, text)
                    raise SpawnError(text)
                self._spawned += 1
            proc = Process(self, Pid(self.name, self.incarnation, next(self._serials)))
            proc.spawned = spawned
            self._procs[proc.pid.serial] = proc
        return proc

    def _local(self, pid: Pid) -> Process | None:
        """The live local process ``pid`` names, or None (dead, or another incarnation's)."""
        if pid.node != self.name or pid.incarnation != self.incarnation:
            return None
        with self._lock:
            return self._procs.get(pid.serial)

    def _is_local(self, pid: Pid) -> bool:
        return pid.node == self.name

    def list_nodes(self) -> list[str]:
        """The other connected nodes' names, sorted."""
        return sorted(n["name"] for n in self.report()["nodes"] if n["name"] != self.name)

    def make_ref(self) -> Ref:
        return Ref(self.name, self.incarnation, next(self._refs))

    def replace_main(self, reason: Any) -> None:
        """The main process ended with ``reason``: tell its links and monitors, start a new one."""
        old = self.main
        self.main = self._new_process()
        self.exited(old, reason)

    def processes(self) -> list[Process]:
        """The live processes, the main one included."""
        with self._lock:
            return list(self._procs.values())

    def counters(self) -> dict[str, int]:
        """What the bounds refused so far, and what the mailboxes hold (for reports)."""
        with self._lock:
            return {
                "processes": len(self._procs),
                "dropped_messages": self.dropped_messages,
                "refused_spawns": self.refused_spawns,
                "refused_links": self.refused_links,
                "refused_monitors": self.refused_monitors,
                "remote_refs": self._watches.ref_total,
                "mailbox_bytes": self.budget.held,
                # names the broker has (or is about to have: handed to the connection) a WATCH of
                "watched_nodes": self._watches.watched_count(),
            }

    # ------------------------------------------------------------------ bounds

    def _log_refusal(self, count: int, text: str) -> None:
        # The first is a warning; the rest would let a peer flood the log.
        log.log(logging.WARNING if count == 1 else logging.DEBUG, "node %s: %s", self.name, text)

    def _dropped(self, proc: Process) -> None:
        """A message to ``proc`` was dropped (its mailbox, or the node's, is full): count it;
        log the first drop per process as a warning, the others at debug level."""
        box = proc.mailbox
        with self._lock:
            self.dropped_messages += 1
        log.log(
            logging.WARNING if box.dropped == 1 else logging.DEBUG,
            "node %s: dropped a message to %r: its mailbox holds %d messages, %d bytes "
            "(bounds: %d messages, %d bytes per mailbox; %d bytes for the node), %d dropped",
            self.name,
            proc.pid,
            len(box),
            box.nbytes,
            box.max_messages,
            box.max_bytes,
            self.budget.max_bytes,
            box.dropped,
        )

    # ------------------------------------------------------------------ WATCH

    def sweep_watches(self) -> None:
        """UNWATCH the node names nothing on this node refers to any more (on the I/O thread
        only: :meth:`~zimg._actor_watch.WatchBook.sweep`)."""
        self._watches.sweep()

    # ------------------------------------------------------------------ messages

    def send(self, to: Address, message: Any) -> None:
        if isinstance(to, Pid):
            if self._is_local(to):
                target = self._local(to)
                # passed by reference (do not mutate after): counts as a message of no bytes
                if target is not None and not target.mailbox.put(message):
                    self._dropped(target)
                return
            self.connection.send(Command.SEND, {"to": to, "msg": message})
            return
        if isinstance(to, tuple) and len(to) == 2 and all(isinstance(x, str) for x in to):
            name, node = to
            if node == self.name:
                with self._lock:
                    target = self._names.get(name)
                if target is not None and not target.mailbox.put(message):
                    self._dropped(target)
                return
            self.connection.send(Command.SEND, {"to": to, "msg": message})
            return
        raise TypeError(f"send to a Pid or a (name, node) pair, not {to!r}")

    def _on_send(self, msg: Message) -> None:
        header = msg.header
        message, to = header.get("msg"), header.get("to")
        target = self._local(to) if type(to) is Pid else self._addressee(to)
        if target is not None and not target.mailbox.put(message, term_size(message)):
            self._dropped(target)
        if self._watches.unwatch_due:
            self.sweep_watches()

    def _on_sends(self, msgs: list[Message]) -> None:
        """SENDs that came together (a lane's batch), in order: as ``_on_send`` of each, with
        each run to one addressee put in its mailbox at once."""
        run: list[Any] = []
        sizes: list[int] = []
        to: Any = None
        target: Process | None = None
        for msg in msgs:
            header = msg.header
            message, address = header.get("msg"), header.get("to")
            if address is not to:  # decoded pids are shared: a run names one object
                if run:
                    self._put_run(target, run, sizes)
                    run, sizes = [], []
                to, target = address, self._addressee(address)
            if target is not None:
                run.append(message)
                sizes.append(term_size(message))
        if run:
            self._put_run(target, run, sizes)
        if self._watches.unwatch_due:
            self.sweep_watches()

    def _put_run(self, target: Process | None, run: list[Any], sizes: list[int]) -> None:
        if target is not None:
            for _ in range(target.mailbox.put_many(run, sizes)):
                self._dropped(target)

    def _addressee(self, to: Any) -> Process | None:
        """The live local process a SEND's ``to`` names (a pid, or a registered name and this
        node), or None."""
        if type(to) is Pid:
            return self._local(to)
        if (
            isinstance(to, tuple | list)
            and len(to) == 2
            # Compared and hashed only as strs: an array would raise (the broker drops such a
            # pair as malformed; this holds without it).
            and type(to[0]) is str
            and type(to[1]) is str
            and to[1] == self.name
        ):
            with self._lock:
                return self._names.get(to[0])
        return None

    # ------------------------------------------------------------------ spawning

    def spawn(
        self,
        caller: Process,
        node: str,
        behaviour: str,
        args: list[Any],
        kwargs: dict[str, Any],
        link: bool,
        monitor: bool,
        timeout: float,
    ) -> tuple[Pid, Ref]:
        """Spawn ``behaviour`` on ``node`` for ``caller`` (:meth:`ProcessCalls.spawn_monitor`)."""
        return self._spawns.spawn(caller, node, behaviour, args, kwargs, link, monitor, timeout)

    # ------------------------------------------------------------------ links, monitors, exits

    def link(self, proc: Process, pid: Pid) -> None:
        """Link ``proc`` and ``pid`` (:meth:`ProcessCalls.link`)."""
        self._signals.link(proc, pid)

    def unlink(self, proc: Process, pid: Pid) -> None:
        """Remove the link of ``proc`` and ``pid``, both ways."""
        self._signals.unlink(proc, pid)

    def monitor(self, proc: Process, pid: Pid) -> Ref:
        """``proc`` monitors ``pid`` (:meth:`ProcessCalls.monitor`); returns the ref."""
        return self._signals.monitor(proc, pid)

    def demonitor(self, proc: Process, ref: Ref) -> None:
        """Drop the monitor ``ref`` of ``proc``."""
        self._signals.demonitor(proc, ref)

    def exit_signal(self, sender: Pid, to: Pid, reason: Any, *, link: bool) -> None:
        """Send an exit signal from ``sender`` to ``to`` (``link``: caused by a link)."""
        self._signals.exit_signal(sender, to, reason, link=link)

    def down(self, watcher: Pid, ref: Ref, pid: Pid, reason: Any) -> None:
        """Tell ``watcher`` that the process ``pid`` it monitors with ``ref`` ended."""
        self._signals.down(watcher, ref, pid, reason)

    def exited(self, proc: Process, reason: Any) -> None:
        """``proc`` has ended with ``reason``: signal its links, tell its monitors."""
        with self._lock:
            if not proc.alive:
                return
            proc.alive = False
            proc.exit_reason = reason
            self._procs.pop(proc.pid.serial, None)
            if proc.spawned:
                self._spawned -= 1
            for name in proc.names:
                if self._names.get(name) is proc:
                    del self._names[name]
            links, proc.links = list(proc.links), set()
            watchers, proc.monitored_by = list(proc.monitored_by.items()), {}
            held, proc.monitors = list(proc.monitors.items()), {}
            for pid in links:
                if pid.node != self.name:
                    self._watches.unref(pid.node, pid.incarnation)
            for pid in [*(w for _, w in watchers), *(p for _, p in held)]:
                if pid.node != self.name:
                    self._watches.unref(pid.node, pid.incarnation)
            self._nodes.forget(proc)
        proc.mailbox.close()  # what it held is freed now, and counts no more
        for pid in links:
            self.exit_signal(proc.pid, pid, reason, link=True)
        for ref, watcher in watchers:
            self.down(watcher, ref, proc.pid, reason)
        for ref, target in held:
            self._signals.drop_monitor(ref, target)

    # ------------------------------------------------------------------ nodes

    def monitor_node(self, proc: Process, name: str) -> None:
        """``proc`` gets ``("nodedown", name)`` once when that node goes down."""
        self._nodes.monitor_node(proc, name)

    def _on_nodedown(self, msg: Message) -> None:
        self._nodes.on_nodedown(msg)

    # ------------------------------------------------------------------ names

    def register(self, proc: Process, name: str) -> None:
        with self._lock:
            holder = self._names.get(name)
            if holder is not None and holder is not proc:
                raise NameTakenError(f"name {name!r} is already registered to {holder.pid!r}")
            self._names[name] = proc
            proc.names.add(name)

    def unregister(self, proc: Process, name: str) -> None:
        with self._lock:
            if self._names.get(name) is proc:
                del self._names[name]
            proc.names.discard(name)

    def whereis(self, name: str) -> Pid | None:
        with self._lock:
            proc = self._names.get(name)
            return proc.pid if proc is not None else None

    # ------------------------------------------------------------------ lifecycle

    def shutdown(self, timeout_s: float = 2.0) -> None:
        """End every process with reason ``shutdown`` and wait briefly for their threads."""
        for proc in self.processes():
            proc.kill(SHUTDOWN)
        with self._lock:
            threads = list(self._spawns.threads)
        deadline = time.monotonic() + timeout_s
        for thread in threads:
            if thread.ident is None:
                continue  # being started: its process was killed above, and ends at once
            thread.join(max(0.0, deadline - time.monotonic()))

    # ------------------------------------------------------------------ for tests

    @property
    def _node_refs(self) -> dict[NodeKey, int]:
        """The references into remote nodes, per (node, incarnation) (the book's, for tests)."""
        return self._watches.node_refs

    @property
    def _pending(self) -> dict[Ref, PendingSpawn]:
        """The spawns waiting for an answer from another node (the spawn RPC's, for tests)."""
        return self._spawns.pending

    @property
    def _ref_total(self) -> int:
        return self._watches.ref_total

    @property
    def _watched(self) -> set[str]:
        return self._watches.watched

    def _ref(
        self, node: str, incarnation: int | None, *, ahead: bool = False, force: bool = False
    ) -> NodeKey | None:
        """Count a reference into ``node`` (lock held); the WATCH to send, as the book's."""
        return self._watches.ref(node, incarnation, ahead=ahead, force=force)
