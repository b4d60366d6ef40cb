"""What a node's processes hear of other nodes: ``monitor_node``, NODEDOWN, and a new session.

A node that goes down ends every link and monitor into it with ``noconnection`` and fails the
spawns waiting for its answer. After this node rejoins a broker that had given it up, every
other node is as good as down to it; after a broker restart, the nodes that died meanwhile are
found by asking the new broker (the resync), ``liveness`` heartbeat intervals later.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from zimg import protocol
from zimg._actor_process import SYSTEM_LIMIT, Process, RuntimeHost, _is
from zimg._actor_signals import Signals
from zimg._actor_spawn import SpawnCalls
from zimg._actor_watch import WatchBook, send_quietly, watchable
from zimg._errors import ZimgError
from zimg._transport import Transport
from zimg.wire import Command, Message, Pid

log = logging.getLogger("zimg.actor")


class RemoteNodes:
    """The other nodes as one node's runtime sees them: who asked to hear of their death, and
    what ends when one goes down.

    Args:
        runtime: the runtime whose processes hear of other nodes.
        lock: the runtime's lock; what is here is read and changed under it.
        procs: the runtime's live processes, by serial.
        clock: seconds, for the resync after a broker restart.
        watches, spawns, signals: the runtime's WATCH book, spawn RPC, links and monitors.
    """

    def __init__(
        self,
        runtime: RuntimeHost,
        lock: threading.RLock,
        procs: dict[int, Process],
        clock: Callable[[], float],
        watches: WatchBook,
        spawns: SpawnCalls,
        signals: Signals,
    ) -> None:
        self._rt = runtime
        self._lock = lock
        self._procs = procs
        self._clock = clock
        self._watches = watches
        self._spawns = spawns
        self._signals = signals
        self._connection: Transport = runtime.connection
        # monitor_node: name -> process -> how many times it asked
        self._asking: dict[str, dict[Process, int]] = {}
        self._resync_at: float | None = None  # when to look for nodes lost in a broker restart

    def forget(self, proc: Process) -> None:
        """``proc`` has ended: it asks to hear of no node any more (lock held)."""
        for node, count in proc.node_watches.items():
            asking = self._asking.get(node)
            if asking is not None:
                asking.pop(proc, None)
                if not asking:
                    del self._asking[node]
            if node != self._rt.name:
                self._watches.unref(node, None, count)
        proc.node_watches = {}

    def monitor_node(self, proc: Process, name: str) -> None:
        with self._lock:
            asking = self._asking.setdefault(name, {})
            asking[proc] = asking.get(proc, 0) + 1
            proc.node_watches[name] = proc.node_watches.get(name, 0) + 1
            if name == self._rt.name:
                return  # this node is up as long as anyone can ask
            # (no node has an invalid name: it is not up)
            watch = self._watches.ref(name, None, force=True) if watchable(name) else None
        if watch is None:
            self.node_down(name, None)
            return
        # The broker answers NODEDOWN at once if no node of that name is up.
        self._watches.send_watch(watch)

    def on_nodedown(self, msg: Message) -> None:
        h = msg.header
        name, incarnation, reason = h.get("node"), h.get("incarnation"), h.get("reason")
        if isinstance(name, str) and name != self._rt.name:
            if _is(reason, SYSTEM_LIMIT):
                # The broker refused to WATCH it (this node watches too many): we cannot
                # hear of its death, so the links and monitors into it end now.
                self.node_down(name, None, SYSTEM_LIMIT)
            elif type(incarnation) is int:
                self.node_down(name, incarnation)
            else:
                # The broker's answer to a WATCH without incarnation: no node of that name is
                # up. A spawn sent there is answered by the broker itself ("not connected").
                self.node_down(name, None, spawns=False)
        self._watches.sweep()

    def node_down(
        self,
        name: str,
        incarnation: int | None,
        reason: str = protocol.NOCONNECTION,
        *,
        spawns: bool = True,
    ) -> None:
        """Every link and monitor into node ``name`` (that incarnation) ends with ``reason``,
        and (``spawns``) every spawn waiting for an answer from it fails.

        ``noconnection``: the node is gone. ``system_limit``: the broker would not watch it;
        the node may be up, so its side of each link and monitor is told too.
        """
        limit = reason == SYSTEM_LIMIT

        def on_that_node(pid: Pid) -> bool:
            return pid.node == name and (incarnation is None or pid.incarnation == incarnation)

        with self._lock:
            procs = list(self._procs.values())
            asking = self._asking.pop(name, {})
            for proc, count in asking.items():
                proc.node_watches.pop(name, None)
                self._watches.unref(name, None, count)
            failed = self._spawns.end_pending_to(name) if spawns else []
            if limit:
                self._watches.watched.discard(name)
        for pending in failed:
            pending.error = (
                f"the broker would not watch node {name!r} (system_limit: this node watches "
                "too many nodes)"
                if limit
                else f"node {name!r} went down"
            )
            pending.done.set()
        for proc in procs:
            with self._lock:
                links = [pid for pid in proc.links if on_that_node(pid)]
                monitors = [(r, pid) for r, pid in proc.monitors.items() if on_that_node(pid)]
                watchers = [(r, w) for r, w in proc.monitored_by.items() if on_that_node(w)]
                for ref, _ in watchers:  # nobody left to tell (or, for system_limit, told below)
                    self._signals.pop_watcher(proc, ref)
            for pid in links:
                self._signals.deliver_exit(proc, pid, reason, link=True)
            for ref, pid in monitors:
                self._signals.deliver_down(proc, ref, pid, reason)
            if limit:
                for pid in links:
                    header = {"to": pid, "from": proc.pid, "reason": SYSTEM_LIMIT, "link": True}
                    send_quietly(self._connection, Command.EXIT, header)
                for ref, pid in monitors:
                    send_quietly(self._connection, Command.DEMONITOR, {"to": pid, "ref": ref})
                for ref, watcher in watchers:
                    self._signals.down(watcher, ref, proc.pid, SYSTEM_LIMIT)
        for proc, count in asking.items():
            for _ in range(count):
                proc.mailbox.put(("nodedown", name), system=True)

    def on_session(self, broker_restarted: bool) -> None:
        """This node joined the broker again (on the I/O thread). The broker has forgotten
        our WATCHes: they are sent again once the links and monitors are sorted out."""
        self._watches.forget()
        if not broker_restarted:
            # The broker had given this node up and told every other node so (NODEDOWN): their
            # links and monitors into us are gone. Ours into them end the same way.
            for name in {name for name, _ in self._watches.remote_nodes()}:
                self.node_down(name, None)
            self._watches.rewatch()
            return
        # The other nodes rejoin the new broker within a heartbeat or two: look after that.
        wait = self._connection.heartbeat_interval_s * self._connection.liveness
        with self._lock:
            self._resync_at = self._clock() + wait
        if wait <= 0:
            self.on_tick()

    def on_tick(self) -> None:
        """Once per heartbeat interval, on the I/O thread: start the resync when it is due, and
        drop the watches nothing refers to (for a node that gets no actor messages)."""
        with self._lock:
            due = self._resync_at is not None and self._clock() >= self._resync_at
            if due:
                self._resync_at = None
        if due:  # on its own thread: it asks the broker, whose answer comes on the I/O thread
            threading.Thread(target=self._resync, name="zimg-resync", daemon=True).start()
        self._watches.sweep()

    def _resync(self) -> None:
        """After a broker restart, nodes that died while it was down get no NODEDOWN: find them.

        Runs on its own thread, ``liveness`` heartbeat intervals after the rejoin (by then the
        other nodes have rejoined the new broker): ends links and monitors into any node that
        did not, and WATCHes again the nodes still referred to (the broker answers at once for
        any that went down since).
        """
        try:
            nodes = self._rt.report()["nodes"]
        except ZimgError as exc:
            log.warning("could not check the nodes after a broker restart: %s", exc)
        else:
            live = {(n["name"], n["incarnation"]) for n in nodes}
            live_names = {name for name, _ in live}
            for name, incarnation in self._watches.remote_nodes():
                gone = (
                    name not in live_names
                    if incarnation is None
                    else (name, incarnation) not in live
                )
                if gone:
                    self.node_down(name, incarnation)
        self._watches.rewatch()
