"""An in-memory transport and router: the actor runtime across nodes in one process, no sockets.

``zimg.testing`` re-exports :class:`MemoryRouter` and :class:`MemoryTransport`; they are test
doubles, not a second broker (``docs/actors.md``, "Testing actors without sockets").
"""

from __future__ import annotations

import functools
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from zimg import behaviours as _behaviours  # noqa: F401  (registers the shipped behaviours, as Node does)
from zimg import protocol, wire
from zimg._actor import DEFAULT_ACTOR_LIMITS, SHUTDOWN, ActorLimits, ActorRuntime
from zimg._broker_actors import ActorRouter
from zimg._broker_records import BrokerConfig, Instruction, NodeRecord, Send
from zimg._dispatch import WorkerIndex
from zimg._errors import BrokenError, WireError, ZimgTimeout
from zimg._transport import Handler, RunHandler, SessionHook, TickHook
from zimg.wire import Command

log = logging.getLogger("zimg.testing")


class MemoryTransport:
    """A :class:`~zimg._transport.Transport` in memory: what it sends goes to its
    :class:`MemoryRouter`, which calls its handlers with what the router delivers.

    Made by :meth:`MemoryRouter.join`. Messages are encoded and decoded with ``zimg.wire`` on
    the way, as on a socket, so each side gets its own copy.

    Attributes:
        heartbeat_interval_s: 0 by default: sweeps are not rate-limited, and a resync after a
            broker restart waits no time before it asks for the node table.
    """

    def __init__(
        self,
        router: MemoryRouter,
        name: str,
        incarnation: int,
        *,
        heartbeat_interval_s: float = 0.0,
        liveness: int = 3,
    ) -> None:
        self.router = router
        self.name = name
        self.incarnation = incarnation
        self.identity = f"{name}/{incarnation}".encode()
        self.heartbeat_interval_s = heartbeat_interval_s
        self.liveness = liveness
        self.counters: dict[str, Callable[[], int]] = {}
        self.connected = True  # False once the router let it go (kill, restart)
        self._handlers: dict[Command, Handler] = {}
        self.run_handlers: dict[Command, RunHandler] = {}  # kept, for tests to call
        self._session_hooks: list[SessionHook] = []
        self._tick_hooks: list[TickHook] = []

    def send(self, command: Command, header: Mapping[str, Any]) -> None:
        """Encode and hand a message to the router (which delivers it now unless manual).

        Raises:
            WireError: the message cannot be encoded or exceeds the limits.
            BrokenError: the router let this node go.
        """
        frames = wire.encode(command, header, self.router.limits)
        if not self.connected:
            raise BrokenError(f"node {self.name} is not connected")
        self.router._submit(("message", self, frames))

    def on(self, command: Command, handler: Handler) -> None:
        self._handlers[command] = handler

    def on_run(self, command: Command, handler: RunHandler) -> None:
        self.run_handlers[command] = handler  # the router hands messages over one at a time

    def on_session(self, hook: SessionHook) -> None:
        self._session_hooks.append(hook)

    def on_tick(self, hook: TickHook) -> None:
        self._tick_hooks.append(hook)

    def _deliver(self, frames: list[Any]) -> None:
        msg = wire.decode(frames, self.router.limits)
        handler = self._handlers.get(msg.command)
        if handler is None:
            return
        try:
            handler(msg)
        except Exception:  # as on the I/O thread: a failing handler does not stop the others
            log.exception("node %s: handler for %s failed", self.name, msg.command.name)


class MemoryRouter:
    """A broker's actor routing in one process, for tests of the actor runtime without sockets.

    It hosts the broker's own ``ActorRouter``: actor commands go to the node their ``to``
    names (a dead pid answered ``noproc``, a gone node ``noconnection``, forged ones dropped),
    WATCH and UNWATCH keep who hears NODEDOWN. No sessions, heartbeats or jobs: nodes join at
    once, and a test says when one dies (:meth:`kill`), when the broker restarts
    (:meth:`restart`) or gives a node up (:meth:`rejoin`).

    Everything (messages, deaths, restarts, ticks) goes through one FIFO queue. With
    ``auto=True`` the thread that queues something delivers the queue at once, unless another
    thread is delivering already (it then delivers this too); with ``auto=False`` nothing moves
    until :meth:`pump`. Handlers and hooks run one at a time, as on an I/O thread, and what
    they send is delivered after them.

    Args:
        auto: deliver as soon as something is queued (else only in :meth:`pump`).
        limits: wire limits, for every message.
        max_watches: node names one node may WATCH (beyond: NODEDOWN ``system_limit``).
        clock: the runtimes' clock (``zimg.testing.FakeClock`` to say when time passes).
        heartbeat_interval_s: every node's heartbeat interval; 0 (the default) lets nothing
            wait for time to pass.
    """

    def __init__(
        self,
        *,
        auto: bool = True,
        limits: wire.Limits = wire.DEFAULT_LIMITS,
        max_watches: int = 4096,
        clock: Callable[[], float] = time.monotonic,
        heartbeat_interval_s: float = 0.0,
    ) -> None:
        self.auto = auto
        self.clock = clock
        self.heartbeat_interval_s = heartbeat_interval_s
        self.limits = limits
        self.config = BrokerConfig(limits=limits, max_watches=max_watches, cpu_slots=False)
        self.stats: dict[str, int] = {"unroutable": 0, "forged": 0, "watch_refused": 0}
        self.malformed = 0
        self.log: list[tuple[str, Command, dict[str, Any]]] = []  # (sender, command, header)
        self.runtimes: list[ActorRuntime] = []
        self._lock = threading.Lock()  # the tables and the queue
        self._handled = threading.Condition()  # notified after each item is handled
        self._delivering = threading.Lock()  # held by the one thread that delivers
        self._queue: deque[tuple[Any, ...]] = deque()
        self._by_name: dict[str, NodeRecord] = {}
        self._transports: dict[str, MemoryTransport] = {}
        self._incarnations = itertools.count(1)
        self._index = WorkerIndex(cpu_slots=False)
        self._actors = self._new_actors()

    def _new_actors(self) -> ActorRouter:
        return ActorRouter(self.config, self._by_name, self._index, self.stats, self._log_once)

    def _log_once(self, identity: bytes, text: str) -> list[Instruction]:
        log.debug("router: %s: %s", identity.decode(), text)
        return []

    # ------------------------------------------------------------------ nodes

    def join(self, name: str, *, role: str = protocol.ROLE_CLIENT) -> MemoryTransport:
        """A transport for a new node ``name`` (a new incarnation each time), joined at once.

        Raises:
            ValueError: a node of that name is connected.
        """
        protocol.check_name(name)
        with self._lock:
            if name in self._by_name:
                raise ValueError(f"node {name!r} is connected already")
            transport = MemoryTransport(
                self, name, next(self._incarnations), heartbeat_interval_s=self.heartbeat_interval_s
            )
            record = NodeRecord(name, transport.identity, role, 1, transport.incarnation, 0.0, 0.0)
            self._by_name[name] = record
            self._transports[name] = transport
            if record.is_worker:
                self._index.add(record)
        return transport

    def runtime(
        self,
        name: str,
        *,
        role: str = protocol.ROLE_CLIENT,
        limits: ActorLimits = DEFAULT_ACTOR_LIMITS,
    ) -> ActorRuntime:
        """An actor runtime on a new node ``name`` (see :meth:`join`); :meth:`close` ends it."""
        runtime = ActorRuntime(self.join(name, role=role), self.report, limits, clock=self.clock)
        self.runtimes.append(runtime)
        return runtime

    def report(self) -> dict[str, Any]:
        """The node table, as NODES gives it (only ``name``, ``incarnation`` and ``role``)."""
        with self._lock:
            nodes = [
                {"name": r.name, "incarnation": r.incarnation, "role": r.role}
                for r in self._by_name.values()
            ]
        return {"nodes": sorted(nodes, key=lambda n: n["name"])}

    def kill(self, name: str, reason: str = "timeout") -> None:
        """Node ``name`` dies, after what it sent so far: its watchers get NODEDOWN."""
        self._submit(("kill", name, reason))

    def rejoin(self, name: str) -> None:
        """The broker gives node ``name`` up (NODEDOWN to its watchers; its own watches are
        forgotten) and it joins again at once, with the same incarnation (its session hooks
        run with ``broker_restarted=False``)."""
        self._submit(("rejoin", name))

    def restart(self, lost: Iterable[str] = ()) -> None:
        """The broker restarts: every watch is forgotten, the nodes named in ``lost`` died
        meanwhile (nobody is told), and the others join the new broker (their session hooks run
        with ``broker_restarted=True``)."""
        self._submit(("restart", tuple(lost)))

    def tick(self) -> None:
        """Run every connected node's tick hooks (one heartbeat interval passed)."""
        self._submit(("tick",))

    def close(self) -> None:
        """End the processes of every runtime made by :meth:`runtime` (as ``Node.close``)."""
        for runtime in self.runtimes:
            runtime.exited(runtime.main, SHUTDOWN)
            runtime.shutdown()

    def wait_until(self, condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
        """Block until ``condition()`` holds, checked after each item the router handles (for
        what a runtime sends from a thread of its own, such as its resync).

        Raises:
            ZimgTimeout: it did not hold within ``timeout_s``.
        """
        with self._handled:
            if not self._handled.wait_for(condition, timeout_s):
                raise ZimgTimeout(f"the condition did not hold within {timeout_s} s")

    def sent(self, name: str, command: Command) -> list[dict[str, Any]]:
        """The headers of the ``command`` messages node ``name`` sent so far, in order."""
        with self._lock:
            return [h for n, c, h in self.log if n == name and c is command]

    # ------------------------------------------------------------------ delivery

    def _submit(self, item: tuple[Any, ...]) -> None:
        with self._lock:
            self._queue.append(item)
        if self.auto:
            self.pump()

    def pump(self) -> int:
        """Deliver everything queued, and what that sends in turn; returns how many items were
        handled (0 if another thread is delivering: it takes care of them)."""
        count = 0
        while self._delivering.acquire(blocking=False):
            try:
                while True:
                    with self._lock:
                        if not self._queue:
                            break
                        item = self._queue.popleft()
                    self._handle(item)
                    count += 1
                    with self._handled:
                        self._handled.notify_all()
            finally:
                self._delivering.release()
            with self._lock:  # queued by another thread just before the release?
                if not self._queue:
                    break
        return count

    def _handle(self, item: tuple[Any, ...]) -> None:
        kind = item[0]
        hooks: list[Callable[[], None]] = []
        with self._lock:
            if kind == "message":
                out = self._route(item[1], item[2])
            elif kind == "kill":
                out = self._drop(item[1], item[2])
            elif kind == "rejoin":
                transport = self._transports.get(item[1])
                out = []
                if transport is not None:
                    out = self._actors.node_gone(self._by_name[item[1]], "timeout")
                    hooks = [functools.partial(self._session, transport, False)]
            else:
                out = []
                if kind == "restart":
                    for name in item[1]:
                        self._drop(name, None)
                    for record in self._by_name.values():
                        record.watching.clear()
                    self._actors = self._new_actors()
                    for t in self._transports.values():
                        hooks.append(functools.partial(self._session, t, True))
                else:  # tick
                    for t in self._transports.values():
                        hooks.extend(t._tick_hooks)
            sends = [
                (self._by_identity(ins.identity), list(ins.frames))
                for ins in out
                if isinstance(ins, Send)
            ]
        for transport, frames in sends:
            if transport is not None:
                transport._deliver(frames)
        for hook in hooks:
            try:
                hook()
            except Exception:
                log.exception("router: a hook failed")

    def _session(self, transport: MemoryTransport, broker_restarted: bool) -> None:
        for hook in transport._session_hooks:
            hook(broker_restarted)

    def _by_identity(self, identity: bytes) -> MemoryTransport | None:
        name = identity.decode().rpartition("/")[0]
        transport = self._transports.get(name)
        return transport if transport is not None and transport.identity == identity else None

    def _route(self, sender: MemoryTransport, frames: list[Any]) -> list[Instruction]:
        """What the broker does with an actor message, WATCH or UNWATCH (lock held)."""
        record = self._by_name.get(sender.name)
        if record is None or record.identity != sender.identity:
            return []  # it died after sending this: lost
        try:
            msg = wire.decode(frames, self.limits)
            self.log.append((sender.name, msg.command, msg.header))
            if msg.command is Command.WATCH:
                return self._actors.watch(record, msg.header)
            if msg.command is Command.UNWATCH:
                return self._actors.unwatch(record, msg.header)
            if msg.command in wire.ACTOR_COMMANDS:
                return self._actors.route(record, msg.command, msg.header, frames)
        except WireError as exc:
            self.malformed += 1
            log.debug("router: dropped a malformed message from %s: %s", sender.name, exc)
        return []

    def _drop(self, name: str, reason: str | None) -> list[Instruction]:
        """Forget node ``name``; with a ``reason``, tell its watchers (lock held)."""
        record = self._by_name.pop(name, None)
        transport = self._transports.pop(name, None)
        if record is None or transport is None:
            return []
        transport.connected = False
        self._index.remove(record)
        gone = self._actors.node_gone(record, reason or "")
        return gone if reason is not None else []
