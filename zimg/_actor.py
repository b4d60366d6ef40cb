"""Actors on one node: processes (threads with mailboxes), links, monitors, names and exit signals.

A :class:`Process` is what a behaviour receives as ``ctx``, and what a script's own thread uses
through its :class:`~zimg.node.Node`. The :class:`ActorRuntime` owns a node's processes and turns
actor commands arriving from the broker (on the I/O thread) into mailbox messages and signals.

Exit signals follow Erlang: when a process ends with a reason other than ``normal``, every linked
process ends too, unless it traps exits, in which case it gets ``("EXIT", pid, reason)``. Python
cannot stop a thread from outside, so a process notices a signal at its next ``receive``, ``send``,
``spawn``, ``link`` or ``monitor`` (a waiting ``receive`` is woken at once); it then unwinds with
:class:`ExitSignal`, a ``BaseException`` that ``except Exception`` does not swallow.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from zimg import protocol
from zimg._errors import SpawnError, ZimgError, ZimgTimeout
from zimg._mailbox import Mailbox, Match
from zimg._registry import Behaviour, get_behaviour, registered_behaviours
from zimg.connection import Connection
from zimg.wire import Command, Message, Pid, Ref

log = logging.getLogger("zimg.actor")

ANY = "*"
KILL = "kill"
SHUTDOWN = "shutdown"
DEFAULT_SPAWN_TIMEOUT_S = 10.0

Address = Pid | tuple[str, str]


class ExitSignal(BaseException):  # named after what it is, like SystemExit
    """Ends the process it is raised in with ``reason`` (``ctx.exit(reason)``, or a signal)."""

    def __init__(self, reason: Any) -> None:
        super().__init__(reason)
        self.reason = reason


def _is_kwargs(value: Any) -> bool:
    return isinstance(value, dict) and all(isinstance(k, str) for k in value)


class _Signalled(Exception):  # internal: carries "check the signal" out of a lock
    pass


def error_reason(exc: BaseException) -> tuple[str, str, str, str]:
    """The exit reason of a process that raised: ``("error", type, message, traceback)``."""
    text = "".join(traceback.format_exception(exc))
    return ("error", type(exc).__name__, str(exc), text)


class Process:
    """An actor: a pid, a mailbox, links and monitors. Behaviours get one as ``ctx``."""

    def __init__(self, runtime: ActorRuntime, pid: Pid) -> None:
        self.runtime = runtime
        self.pid = pid
        self.mailbox = Mailbox()
        self.links: set[Pid] = set()
        self.monitors: dict[Ref, Pid] = {}  # monitors this process holds, by ref
        self.monitored_by: dict[Ref, Pid] = {}  # monitors held on this process, by ref
        self.names: set[str] = set()
        self.trap_exit = False
        self.alive = True
        self.exit_reason: Any = None
        self._signal: Any = None  # the reason of an exit signal not yet acted on
        self._signalled = False

    @property
    def node_name(self) -> str:
        """The name of the node this process runs on."""
        return self.runtime.name

    def self(self) -> Pid:
        """This process's pid."""
        return self.pid

    def send(self, to: Address, message: Any) -> None:
        """Send ``message`` to a pid or a ``(registered name, node)`` pair; never blocks on it."""
        self.check()
        self.runtime.send(to, message)

    def receive(self, match: Match | None = None, timeout: float | None = None) -> Any:
        """The first message in arrival order that ``match`` accepts; others stay in place.

        Args:
            match: a predicate (None accepts anything); one that raises counts as no match.
            timeout: seconds; 0 polls; None waits forever.

        Raises:
            ZimgTimeout: nothing matched in time (also a ``TimeoutError``).
            ExitSignal: an exit signal arrived (the process must end).
        """
        try:
            return self.mailbox.receive(match, timeout, check=self._check_flag)
        except _Signalled:
            self._die()
            raise  # unreachable: _die raises

    def spawn(
        self,
        node: str,
        behaviour: str,
        *args: Any,
        link: bool = False,
        monitor: bool = False,
        timeout: float = DEFAULT_SPAWN_TIMEOUT_S,
        kwargs: dict[str, Any] | None = None,
    ) -> Pid:
        """Run the registered ``behaviour`` on ``node`` (a name, or ``ANY``) with ``args``.

        ``kwargs`` are keyword arguments for the behaviour (they travel as a map).

        ``link=True`` links the new process to this one before it runs. ``monitor=True`` monitors
        it (the ``DOWN`` message carries its pid); use :meth:`spawn_monitor` to get the ref.

        Raises:
            SpawnError: the node refused (unknown behaviour, node not connected...).
            ZimgTimeout: no answer within ``timeout``.
        """
        pid, _ = self.spawn_monitor(
            node, behaviour, *args, link=link, monitor=monitor, timeout=timeout, kwargs=kwargs
        )
        return pid

    def spawn_monitor(
        self,
        node: str,
        behaviour: str,
        *args: Any,
        link: bool = False,
        monitor: bool = True,
        timeout: float = DEFAULT_SPAWN_TIMEOUT_S,
        kwargs: dict[str, Any] | None = None,
    ) -> tuple[Pid, Ref]:
        """Like :meth:`spawn`, monitoring by default; returns ``(pid, ref)``."""
        self.check()
        return self.runtime.spawn(
            self, node, behaviour, list(args), dict(kwargs or {}), link, monitor, timeout
        )

    def link(self, pid: Pid) -> None:
        """Link this process and ``pid`` (both ways). A dead pid sends back ``noproc``."""
        self.check()
        self.runtime.link(self, pid)

    def unlink(self, pid: Pid) -> None:
        """Remove the link with ``pid``, both ways."""
        self.runtime.unlink(self, pid)

    def monitor(self, pid: Pid) -> Ref:
        """Monitor ``pid``: one ``("DOWN", ref, pid, reason)`` message when it ends."""
        self.check()
        return self.runtime.monitor(self, pid)

    def demonitor(self, ref: Ref, *, flush: bool = False) -> None:
        """Drop a monitor; with ``flush``, also remove its ``DOWN`` if already delivered."""
        self.runtime.demonitor(self, ref)
        if flush:
            while True:
                try:
                    self.mailbox.receive(lambda m: m[0] == "DOWN" and m[1] == ref, 0)
                except ZimgTimeout:
                    break

    def exit(self, *args: Any) -> None:
        """``exit(reason)`` ends this process; ``exit(pid, reason)`` sends ``pid`` an exit signal.

        ``exit(pid, "kill")`` cannot be trapped; the target ends with reason ``killed``.
        """
        if len(args) == 1:
            raise ExitSignal(args[0])
        if len(args) != 2 or not isinstance(args[0], Pid):
            raise TypeError("use exit(reason) or exit(pid, reason)")
        self.runtime.exit_signal(self.pid, args[0], args[1], link=False)

    def register(self, name: str) -> None:
        """Register this process under ``name`` on its node until it ends."""
        self.runtime.register(self, name)

    def unregister(self, name: str) -> None:
        """Release a name this process registered."""
        self.runtime.unregister(self, name)

    def whereis(self, name: str) -> Pid | None:
        """The pid registered under ``name`` on this node, or None."""
        return self.runtime.whereis(name)

    def nodes(self) -> list[str]:
        """The other nodes connected to the broker (Erlang's ``Node.list``)."""
        return self.runtime.list_nodes()

    def make_ref(self) -> Ref:
        """A reference unique across the cluster."""
        return self.runtime.make_ref()

    def monitor_node(self, name: str) -> None:
        """Get ``("nodedown", name)`` once when that node goes down (at once if it is not up)."""
        self.runtime.monitor_node(self, name)

    def check(self) -> None:
        """Raise :class:`ExitSignal` if an exit signal has arrived for this process."""
        if self._signalled:
            self._die()

    def _check_flag(self) -> None:
        if self._signalled:
            raise _Signalled

    def _die(self) -> None:
        """End with the pending signal's reason. The main process of a node ends for real (its
        links and monitors are told) and the node gets a new main process, as Erlang's shell
        does."""
        if self is self.runtime.main:
            self.runtime.replace_main(self._signal)
        raise ExitSignal(self._signal)

    def kill(self, reason: Any) -> None:
        """Mark this process to end with ``reason`` and wake it if it is waiting."""
        self._signal = reason
        self._signalled = True
        self.mailbox.interrupt()

    def __repr__(self) -> str:
        return f"<Process {self.pid!r}>"


@dataclass
class _PendingSpawn:
    caller: Process
    node: str
    link: bool
    monitor: bool
    done: threading.Event = field(default_factory=threading.Event)
    pid: Pid | None = None
    error: str | None = None


class ActorRuntime:
    """All the processes of one node, and the actor commands that reach it."""

    def __init__(self, connection: Connection, report: Callable[[], dict[str, Any]]) -> None:
        self.connection = connection
        self.name = connection.name
        self.incarnation = connection.incarnation
        self.report = report
        self._lock = threading.RLock()
        self._procs: dict[int, Process] = {}
        self._names: dict[str, Process] = {}
        self._threads: list[threading.Thread] = []
        self._serials = itertools.count()
        self._refs = itertools.count(1)
        self._pending: dict[Ref, _PendingSpawn] = {}
        self._node_watchers: dict[str, list[Process]] = {}
        handlers: dict[Command, Callable[[Message], None]] = {
            Command.SPAWN: self._on_spawn,
            Command.SPAWNED: self._on_spawned,
            Command.SEND: self._on_send,
            Command.LINK: self._on_link,
            Command.UNLINK: self._on_unlink,
            Command.MONITOR: self._on_monitor,
            Command.DEMONITOR: self._on_demonitor,
            Command.EXIT: self._on_exit,
            Command.DOWN: self._on_down,
            Command.NODEDOWN: self._on_nodedown,
        }
        for command, handler in handlers.items():
            connection.on(command, handler)
        connection.on_session(self._on_session)
        self.main = self._new_process()

    # ------------------------------------------------------------------ lookup

    def _new_process(self) -> Process:
        proc = Process(self, Pid(self.name, self.incarnation, next(self._serials)))
        with self._lock:
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

    # ------------------------------------------------------------------ messages

    def send(self, to: Address, message: Any) -> None:
        if isinstance(to, Pid):
            if self._is_local(to):
                target = self._local(to)
                if target is not None:
                    target.mailbox.put(message)  # passed by reference: do not mutate after
                return
            self.connection.send(Command.SEND, {"to": to, "msg": message})
            return
        if isinstance(to, tuple) and len(to) == 2 and all(isinstance(x, str) for x in to):
            name, node = to
            if node == self.name:
                with self._lock:
                    target = self._names.get(name)
                if target is not None:
                    target.mailbox.put(message)
                return
            self.connection.send(Command.SEND, {"to": to, "msg": message})
            return
        raise TypeError(f"send to a Pid or a (name, node) pair, not {to!r}")

    def _on_send(self, msg: Message) -> None:
        to = msg.header.get("to")
        message = msg.header.get("msg")
        if isinstance(to, Pid):
            target = self._local(to)
        elif isinstance(to, tuple | list) and len(to) == 2 and to[1] == self.name:
            with self._lock:
                target = self._names.get(to[0])
        else:
            target = None
        if target is not None:
            target.mailbox.put(message)

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
        ref = self.make_ref()
        if node == self.name:
            fn = get_behaviour(behaviour)
            if fn is None:
                raise SpawnError(self._unknown(behaviour))
            proc = self._prepare(caller.pid, ref, link, monitor)
            with self._lock:
                if link:
                    caller.links.add(proc.pid)
                if monitor:
                    caller.monitors[ref] = proc.pid
            self._start(proc, fn, args, kwargs)
            return proc.pid, ref
        pending = _PendingSpawn(caller, node, link, monitor)
        with self._lock:
            self._pending[ref] = pending
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
            self.connection.send(Command.SPAWN, header)
        except BaseException:
            with self._lock:
                self._pending.pop(ref, None)
            raise
        if not pending.done.wait(timeout):
            with self._lock:
                self._pending.pop(ref, None)
            raise ZimgTimeout(f"no answer to spawn of {behaviour!r} on {node!r} within {timeout} s")
        if pending.error is not None or pending.pid is None:
            raise SpawnError(pending.error or "spawn failed")
        return pending.pid, ref

    def _unknown(self, behaviour: str) -> str:
        known = ", ".join(registered_behaviours()) or "none"
        text = f"unknown behaviour {behaviour!r} on node {self.name} (registered: {known})"
        if behaviour.startswith("__main__:"):
            text += "; a script run as __main__ must register behaviours with explicit names"
        return text

    def _prepare(self, spawner: Pid, ref: Ref, link: bool, monitor: bool) -> Process:
        proc = self._new_process()
        with self._lock:
            if link:
                proc.links.add(spawner)
            if monitor:
                proc.monitored_by[ref] = spawner
        return proc

    def _start(self, proc: Process, fn: Behaviour, args: list[Any], kwargs: dict[str, Any]) -> None:
        thread = threading.Thread(
            target=self._run,
            args=(proc, fn, args, kwargs),
            name=f"zimg-actor-{proc.pid!r}",
            daemon=True,
        )
        with self._lock:
            self._threads = [t for t in self._threads if t.is_alive()]
            self._threads.append(thread)
        thread.start()

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
            self.exited(proc, reason)

    def _on_spawn(self, msg: Message) -> None:
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
            self.connection.send(Command.SPAWNED, reply)
            return
        proc = self._prepare(spawner, ref, h.get("link") is True, h.get("monitor") is True)
        reply["pid"] = proc.pid
        self.connection.send(Command.SPAWNED, reply)  # before it runs: SPAWNED precedes any EXIT
        self._start(proc, fn, args, kwargs)

    def _on_spawned(self, msg: Message) -> None:
        h = msg.header
        ref, pid, error = h.get("ref"), h.get("pid"), h.get("error")
        with self._lock:
            pending = self._pending.pop(ref, None) if isinstance(ref, Ref) else None
            if pending is None:
                if isinstance(pid, Pid):  # we gave up waiting: do not leave an orphan behind
                    self.exit_signal(self.main.pid, pid, KILL, link=False)
                return
            if isinstance(pid, Pid) and error is None:
                if pending.link:
                    pending.caller.links.add(pid)
                if pending.monitor and isinstance(ref, Ref):
                    pending.caller.monitors[ref] = pid
                pending.pid = pid
            else:
                pending.error = str(error) if error else "spawn failed"
        pending.done.set()

    # ------------------------------------------------------------------ exits

    def exited(self, proc: Process, reason: Any) -> None:
        """``proc`` has ended with ``reason``: signal its links, tell its monitors."""
        with self._lock:
            if not proc.alive:
                return
            proc.alive = False
            proc.exit_reason = reason
            self._procs.pop(proc.pid.serial, None)
            for name in proc.names:
                if self._names.get(name) is proc:
                    del self._names[name]
            links, proc.links = list(proc.links), set()
            watchers, proc.monitored_by = list(proc.monitored_by.items()), {}
            held, proc.monitors = list(proc.monitors.items()), {}
        for pid in links:
            self.exit_signal(proc.pid, pid, reason, link=True)
        for ref, watcher in watchers:
            self.down(watcher, ref, proc.pid, reason)
        for ref, target in held:
            self._drop_monitor(ref, target)

    def exit_signal(self, sender: Pid, to: Pid, reason: Any, *, link: bool) -> None:
        """Send an exit signal from ``sender`` to ``to`` (``link``: caused by a link)."""
        if self._is_local(to):
            target = self._local(to)
            if target is not None:
                self._deliver_exit(target, sender, reason, link)
            return
        header = {"to": to, "from": sender, "reason": reason, "link": link}
        self._send_quietly(Command.EXIT, header)

    def _deliver_exit(self, proc: Process, sender: Pid, reason: Any, link: bool) -> None:
        with self._lock:
            if not proc.alive:
                return
            if link:
                if sender not in proc.links:
                    return  # the link is gone already: a stale or repeated signal
                proc.links.discard(sender)
            if reason == KILL and not link:
                proc.kill(protocol.KILLED)
            elif proc.trap_exit:
                proc.mailbox.put(("EXIT", sender, reason))
            elif reason != protocol.NORMAL:
                proc.kill(reason)

    def _on_exit(self, msg: Message) -> None:
        h = msg.header
        to, sender = h.get("to"), h.get("from")
        if isinstance(to, Pid) and isinstance(sender, Pid):
            target = self._local(to)
            if target is not None:
                self._deliver_exit(target, sender, h.get("reason"), h.get("link") is True)

    # ------------------------------------------------------------------ links

    def link(self, proc: Process, pid: Pid) -> None:
        if pid == proc.pid:
            return
        with self._lock:
            proc.links.add(pid)
        if not self._is_local(pid):
            self.connection.send(Command.LINK, {"to": pid, "from": proc.pid})
            return
        target = self._local(pid)
        if target is None:
            self._deliver_exit(proc, pid, protocol.NOPROC, link=True)
            return
        with self._lock:
            target.links.add(proc.pid)

    def unlink(self, proc: Process, pid: Pid) -> None:
        with self._lock:
            proc.links.discard(pid)
        if not self._is_local(pid):
            self._send_quietly(Command.UNLINK, {"to": pid, "from": proc.pid})
            return
        target = self._local(pid)
        if target is not None:
            with self._lock:
                target.links.discard(proc.pid)

    def _on_link(self, msg: Message) -> None:
        to, sender = msg.header.get("to"), msg.header.get("from")
        if not isinstance(to, Pid) or not isinstance(sender, Pid):
            return
        target = self._local(to)
        if target is None:
            self.exit_signal(to, sender, protocol.NOPROC, link=True)
            return
        with self._lock:
            if target.alive:
                target.links.add(sender)
                return
        self.exit_signal(to, sender, protocol.NOPROC, link=True)

    def _on_unlink(self, msg: Message) -> None:
        to, sender = msg.header.get("to"), msg.header.get("from")
        if isinstance(to, Pid) and isinstance(sender, Pid):
            target = self._local(to)
            if target is not None:
                with self._lock:
                    target.links.discard(sender)

    # ------------------------------------------------------------------ monitors

    def monitor(self, proc: Process, pid: Pid) -> Ref:
        ref = self.make_ref()
        with self._lock:
            proc.monitors[ref] = pid
        if not self._is_local(pid):
            self.connection.send(Command.MONITOR, {"to": pid, "from": proc.pid, "ref": ref})
            return ref
        target = self._local(pid)
        with self._lock:
            if target is not None and target.alive:
                target.monitored_by[ref] = proc.pid
                return ref
        self._deliver_down(proc, ref, pid, protocol.NOPROC)
        return ref

    def demonitor(self, proc: Process, ref: Ref) -> None:
        with self._lock:
            target = proc.monitors.pop(ref, None)
        if target is not None:
            self._drop_monitor(ref, target)

    def _drop_monitor(self, ref: Ref, target: Pid) -> None:
        if not self._is_local(target):
            self._send_quietly(Command.DEMONITOR, {"to": target, "ref": ref})
            return
        proc = self._local(target)
        if proc is not None:
            with self._lock:
                proc.monitored_by.pop(ref, None)

    def down(self, watcher: Pid, ref: Ref, pid: Pid, reason: Any) -> None:
        """Tell ``watcher`` that the process ``pid`` it monitors with ``ref`` ended."""
        if self._is_local(watcher):
            proc = self._local(watcher)
            if proc is not None:
                self._deliver_down(proc, ref, pid, reason)
            return
        header = {"to": watcher, "ref": ref, "pid": pid, "reason": reason}
        self._send_quietly(Command.DOWN, header)

    def _deliver_down(self, proc: Process, ref: Ref, pid: Pid, reason: Any) -> None:
        with self._lock:
            if proc.monitors.pop(ref, None) is None:
                return  # demonitored, or already told: one DOWN per monitor
        proc.mailbox.put(("DOWN", ref, pid, reason))

    def _on_monitor(self, msg: Message) -> None:
        to, watcher, ref = msg.header.get("to"), msg.header.get("from"), msg.header.get("ref")
        if not isinstance(to, Pid) or not isinstance(watcher, Pid) or not isinstance(ref, Ref):
            return
        target = self._local(to)
        with self._lock:
            if target is not None and target.alive:
                target.monitored_by[ref] = watcher
                return
        self.down(watcher, ref, to, protocol.NOPROC)

    def _on_demonitor(self, msg: Message) -> None:
        to, ref = msg.header.get("to"), msg.header.get("ref")
        if isinstance(to, Pid) and isinstance(ref, Ref):
            target = self._local(to)
            if target is not None:
                with self._lock:
                    target.monitored_by.pop(ref, None)

    def _on_down(self, msg: Message) -> None:
        h = msg.header
        to, ref, pid = h.get("to"), h.get("ref"), h.get("pid")
        if isinstance(to, Pid) and isinstance(ref, Ref) and isinstance(pid, Pid):
            proc = self._local(to)
            if proc is not None:
                self._deliver_down(proc, ref, pid, h.get("reason"))

    # ------------------------------------------------------------------ nodes

    def monitor_node(self, proc: Process, name: str) -> None:
        with self._lock:
            self._node_watchers.setdefault(name, []).append(proc)
        if name == self.name or name in self.list_nodes():
            return
        with self._lock:  # not up: only this watcher hears of it, and only once
            watchers = self._node_watchers.get(name, [])
            if proc not in watchers:
                return  # a NODEDOWN got there first
            watchers.remove(proc)
        proc.mailbox.put(("nodedown", name))

    def _on_nodedown(self, msg: Message) -> None:
        name, incarnation = msg.header.get("node"), msg.header.get("incarnation")
        if isinstance(name, str):
            self._node_down(name, incarnation if isinstance(incarnation, int) else None)

    def _node_down(self, name: str, incarnation: int | None) -> None:
        """Every link and monitor into node ``name`` (that incarnation) ends with noconnection."""

        def on_that_node(pid: Pid) -> bool:
            return pid.node == name and (incarnation is None or pid.incarnation == incarnation)

        with self._lock:
            procs = list(self._procs.values())
            watchers = self._node_watchers.pop(name, [])
            failed = [p for p in self._pending.values() if p.node == name]
        for pending in failed:
            pending.error = f"node {name!r} went down"
            pending.done.set()
        for proc in procs:
            with self._lock:
                links = [pid for pid in proc.links if on_that_node(pid)]
                monitors = [(r, pid) for r, pid in proc.monitors.items() if on_that_node(pid)]
            for pid in links:
                self._deliver_exit(proc, pid, protocol.NOCONNECTION, link=True)
            for ref, pid in monitors:
                self._deliver_down(proc, ref, pid, protocol.NOCONNECTION)
        for proc in watchers:
            if proc.alive:
                proc.mailbox.put(("nodedown", name))

    def _on_session(self, broker_restarted: bool) -> None:
        """This node joined the broker again (on the I/O thread)."""
        if not broker_restarted:
            # The broker had given this node up and told every other node so (NODEDOWN): their
            # links and monitors into us are gone. Ours into them end the same way.
            for name in {name for name, _ in self._remote_nodes()}:
                self._node_down(name, None)
            return
        threading.Thread(target=self._resync, name="zimg-resync", daemon=True).start()

    def _remote_nodes(self) -> set[tuple[str, int | None]]:
        """The (node, incarnation) of every remote pid a local link or monitor points at, and
        the node names watched with monitor_node (incarnation None)."""
        with self._lock:
            found: set[tuple[str, int | None]] = {(name, None) for name in self._node_watchers}
            for proc in self._procs.values():
                for pid in [*proc.links, *proc.monitors.values()]:
                    if pid.node != self.name:
                        found.add((pid.node, pid.incarnation))
        return found

    def _resync(self) -> None:
        """After a broker restart, nodes that died while it was down get no NODEDOWN: find them.

        Runs on its own thread: it waits for the other nodes to rejoin the new broker (they do
        within a heartbeat or two), then ends links and monitors into any that did not.
        """
        time.sleep(self.connection.heartbeat_interval_s * self.connection.liveness)
        try:
            nodes = self.report()["nodes"]
        except ZimgError as exc:
            log.warning("could not check the nodes after a broker restart: %s", exc)
            return
        live = {(n["name"], n["incarnation"]) for n in nodes}
        live_names = {name for name, _ in live}
        for name, incarnation in self._remote_nodes():
            gone = (
                name not in live_names if incarnation is None else (name, incarnation) not in live
            )
            if gone:
                self._node_down(name, incarnation)

    # ------------------------------------------------------------------ names

    def register(self, proc: Process, name: str) -> None:
        with self._lock:
            holder = self._names.get(name)
            if holder is not None and holder is not proc:
                raise ZimgError(f"name {name!r} is already registered to {holder.pid!r}")
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
            threads = list(self._threads)
        deadline = time.monotonic() + timeout_s
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def _send_quietly(self, command: Command, header: dict[str, Any]) -> None:
        """Send a signal whose loss the contract allows (the node is closing, or cut off)."""
        try:
            self.connection.send(command, header)
        except ZimgError as exc:
            log.debug("could not send %s: %s", command.name, exc)
