"""The spawn RPC: starting a behaviour's process here, or asking another node to, and its answer.

A spawn on this node makes the process, links or monitors it as asked and starts its thread. A
spawn elsewhere sends SPAWN (after a WATCH of a named node, so that its death fails the spawn at
once) and waits for SPAWNED; a SPAWN from another node is answered before the new process runs,
so that SPAWNED precedes any EXIT or DOWN from it.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any

from zimg import protocol
from zimg._actor_process import ANY, KILL, ExitSignal, Process, RuntimeHost, error_reason
from zimg._actor_signals import Signals
from zimg._actor_watch import NodeKey, WatchBook, watchable
from zimg._errors import SpawnError, ZimgTimeout
from zimg._registry import Behaviour, get_behaviour, registered_behaviours
from zimg._transport import Transport
from zimg.wire import Command, Message, Pid, Ref

log = logging.getLogger("zimg.actor")


def _is_kwargs(value: Any) -> bool:
    return isinstance(value, dict) and all(isinstance(k, str) for k in value)


@dataclass
class PendingSpawn:
    """A spawn sent to another node, waiting for its answer."""

    caller: Process
    node: str
    link: bool
    monitor: bool
    watched: bool = False  # holds a reference to its node name (a WATCH)
    done: threading.Event = field(default_factory=threading.Event)
    pid: Pid | None = None
    error: str | None = None


class SpawnCalls:
    """The spawns of one node's runtime: those its processes make, and those it is asked for.

    Args:
        runtime: the runtime whose processes spawn and are spawned.
        lock: the runtime's lock; the pending spawns and the threads are kept under it.
        watches: the runtime's WATCH book (a spawn to a named node refers to it).
        signals: the runtime's links and monitors (a spawn may link or monitor).

    Attributes:
        pending: the spawns sent to other nodes that wait for an answer, by ref.
        threads: the threads started for spawned processes (the ended ones dropped now and then).
    """

    def __init__(
        self, runtime: RuntimeHost, lock: threading.RLock, watches: WatchBook, signals: Signals
    ) -> None:
        self._rt = runtime
        self._lock = lock
        self._watches = watches
        self._signals = signals
        self._connection: Transport = runtime.connection
        self.pending: dict[Ref, PendingSpawn] = {}
        self.threads: list[threading.Thread] = []

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
        ref = self._rt.make_ref()
        if node == self._rt.name:
            fn = get_behaviour(behaviour)
            if fn is None:
                raise SpawnError(self._unknown(behaviour))
            with self._lock:
                self._check_bounds(caller, link, monitor)
            proc, _ = self._prepare(caller.pid, ref, link, monitor)
            with self._lock:
                if link:
                    self._signals.add_link(caller, proc.pid)
                if monitor:
                    self._signals.add_monitor(caller, ref, proc.pid)
            self._start(proc, fn, args, kwargs)
            return proc.pid, ref
        pending = PendingSpawn(caller, node, link, monitor)
        with self._lock:
            self._check_bounds(caller, link, monitor)
            self.pending[ref] = pending
            # WATCH a named node first, so that its death fails the spawn at once
            pending.watched = node != ANY and watchable(node)
            watch = self._watches.ref(node, None) if pending.watched else None
        header = {
            "to": node,
            "from": caller.pid,
            "ref": ref,
            "behaviour": behaviour,
            "args": args,
            "kwargs": kwargs,
            "link": link,
            "monitor": monitor,
        }
        try:
            if watch is not None:
                self._watches.send_watch(watch)
            self._connection.send(Command.SPAWN, header)
        except BaseException:
            with self._lock:
                self.end_pending(ref)
            raise
        if not pending.done.wait(timeout):
            with self._lock:
                self.end_pending(ref)
            raise ZimgTimeout(f"no answer to spawn of {behaviour!r} on {node!r} within {timeout} s")
        if pending.error is not None or pending.pid is None:
            raise SpawnError(pending.error or "spawn failed")
        return pending.pid, ref

    def _unknown(self, behaviour: str) -> str:
        known = ", ".join(registered_behaviours()) or "none"
        text = f"unknown behaviour {behaviour!r} on node {self._rt.name} (registered: {known})"
        if behaviour.startswith("__main__:"):
            text += "; a script run as __main__ must register behaviours with explicit names"
        return text

    def _check_bounds(self, caller: Process, link: bool, monitor: bool) -> None:
        """Refuse a spawn whose link or monitor the caller has no room for (lock held)."""
        if link and len(caller.links) >= self._rt.limits.max_links:
            self._rt.refused_links += 1
            raise SpawnError(
                f"system_limit: {caller.pid!r} holds {len(caller.links)} links "
                f"(max_links {self._rt.limits.max_links})"
            )
        if monitor and len(caller.monitors) >= self._rt.limits.max_monitors:
            self._rt.refused_monitors += 1
            raise SpawnError(
                f"system_limit: {caller.pid!r} holds {len(caller.monitors)} monitors "
                f"(max_monitors {self._rt.limits.max_monitors})"
            )

    def _prepare(
        self, spawner: Pid, ref: Ref, link: bool, monitor: bool
    ) -> tuple[Process, list[NodeKey]]:
        """A new process, linked to or monitored by its spawner already; the WATCHes to send.

        Raises:
            SpawnError: the node runs ``max_processes`` processes.
        """
        proc = self._rt._new_process(spawned=True)
        watches: list[NodeKey] = []
        with self._lock:
            if link and (watch := self._signals.add_link(proc, spawner)) is not None:
                watches.append(watch)
            if monitor and (watch := self._signals.add_watcher(proc, ref, spawner)) is not None:
                watches.append(watch)
        return proc, watches

    def _start(self, proc: Process, fn: Behaviour, args: list[Any], kwargs: dict[str, Any]) -> None:
        thread = threading.Thread(
            target=self._run,
            args=(proc, fn, args, kwargs),
            name=f"zimg-actor-{proc.pid!r}",
            daemon=True,
        )
        with self._lock:
            self.threads = [t for t in self.threads if t.is_alive()]
            self.threads.append(thread)
        try:
            thread.start()
        except RuntimeError as exc:  # the system has no thread left for it
            with self._lock:
                self.threads.remove(thread)
            self._rt.exited(proc, error_reason(exc))
            raise SpawnError(f"node {self._rt.name} could not start a thread: {exc}") from exc

    def _run(self, proc: Process, fn: Behaviour, args: list[Any], kwargs: dict[str, Any]) -> None:
        reason: Any = protocol.NORMAL
        try:
            fn(proc, *args, **kwargs)
            if proc._signalled:  # killed while busy, and returned before it noticed
                reason = proc._signal
        except ExitSignal as exc:
            reason = exc.reason
        except BaseException as exc:  # the process's failure is its exit reason
            reason = error_reason(exc)
            log.info("process %r exited: %s: %s", proc.pid, type(exc).__name__, exc)
        finally:
            self._rt.exited(proc, reason)

    def on_spawn(self, msg: Message) -> None:
        h = msg.header
        spawner, ref, name, args = h.get("from"), h.get("ref"), h.get("behaviour"), h.get("args")
        kwargs = h.get("kwargs", {})
        if not isinstance(spawner, Pid) or not isinstance(ref, Ref):
            log.warning("dropped a SPAWN without a valid 'from' pid and 'ref'")
            return
        reply: dict[str, Any] = {"to": spawner, "ref": ref, "pid": None, "error": None}
        fn = get_behaviour(name) if isinstance(name, str) else None
        if fn is None or not isinstance(args, list) or not _is_kwargs(kwargs):
            reply["error"] = (
                self._unknown(str(name)) if fn is None else "args must be a list, kwargs a map"
            )
            self._connection.send(Command.SPAWNED, reply)
            return
        try:
            proc, watches = self._prepare(
                spawner, ref, h.get("link") is True, h.get("monitor") is True
            )
        except SpawnError as exc:
            reply["error"] = str(exc)
            self._connection.send(Command.SPAWNED, reply)
            return
        for watch in watches:  # so that the new process hears if its spawner's node dies
            self._watches.send_watch(watch, quiet=True)
        reply["pid"] = proc.pid
        self._connection.send(Command.SPAWNED, reply)  # before it runs: SPAWNED precedes any EXIT
        try:
            self._start(proc, fn, args, kwargs)
        except SpawnError as exc:  # it has ended already: its spawner hears of it as usual
            log.warning("node %s: %s", self._rt.name, exc)
        self._rt.sweep_watches()

    def on_spawned(self, msg: Message) -> None:
        h = msg.header
        rt = self._rt
        ref, pid, error = h.get("ref"), h.get("pid"), h.get("error")
        watches: list[NodeKey] = []
        orphan = False
        with self._lock:
            pending = self.end_pending(ref) if isinstance(ref, Ref) else None
            if pending is None or not isinstance(ref, Ref):
                orphan = isinstance(pid, Pid)  # we gave up waiting: leave no orphan behind
            elif isinstance(pid, Pid) and error is None:
                caller = pending.caller
                if not caller.alive:
                    orphan = True  # its spawner is gone (the node is closing)
                else:
                    if pending.link and (watch := self._signals.add_link(caller, pid)) is not None:
                        watches.append(watch)
                    if (
                        pending.monitor
                        and (w := self._signals.add_monitor(caller, ref, pid)) is not None
                    ):
                        watches.append(w)
                pending.pid = pid
            else:
                pending.error = str(error) if error else "spawn failed"
        if orphan and isinstance(pid, Pid):
            rt.exit_signal(rt.main.pid, pid, KILL, link=False)
        for watch in watches:  # a spawn to ANY: only now do we know which node to WATCH
            self._watches.send_watch(watch, quiet=True)
        if pending is not None:
            pending.done.set()
        rt.sweep_watches()

    def end_pending(self, ref: Ref) -> PendingSpawn | None:
        """Forget a pending spawn (lock held); whoever gets it back completes it."""
        pending = self.pending.pop(ref, None)
        if pending is not None and pending.watched:
            self._watches.unref(pending.node, None)
        return pending

    def end_pending_to(self, node: str) -> list[PendingSpawn]:
        """Forget every spawn waiting for an answer from ``node`` (lock held); whoever gets
        them back completes them."""
        return [
            pending
            for ref in [r for r, p in self.pending.items() if p.node == node]
            if (pending := self.end_pending(ref)) is not None
        ]
