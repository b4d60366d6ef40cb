"""The WATCH book: which remote nodes a node's processes refer to, and which the broker watches.

NODEDOWN comes only for the node names this node WATCHes at the broker. The book counts the
references the node's processes hold into each remote node (links, monitors both ways,
``monitor_node``, pending spawns), WATCHes a name before the first message that creates one, and
UNWATCHes a name lazily once nothing refers to it (:meth:`WatchBook.sweep`, on the I/O thread).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from zimg import protocol
from zimg._errors import ZimgError
from zimg._transport import Transport
from zimg.wire import Command

log = logging.getLogger("zimg.actor")

NodeKey = tuple[str, int | None]  # a remote node name, and an incarnation (None: any)


def watchable(name: Any) -> bool:
    """Whether ``name`` is a valid node name (no node has any other: it is never up)."""
    try:
        protocol.check_name(name)
    except ValueError:
        return False
    return True


def send_quietly(transport: Transport, command: Command, header: dict[str, Any]) -> None:
    """Send a signal whose loss the contract allows (the node is closing, or cut off)."""
    try:
        transport.send(command, header)
    except ZimgError as exc:
        log.debug("could not send %s: %s", command.name, exc)


class WatchBook:
    """The references a node holds into remote nodes, and the WATCHes they need at the broker.

    Args:
        transport: the node's link to the broker, for WATCH and UNWATCH.
        lock: the actor runtime's lock; everything here is read and changed under it.
        clock: seconds, for the rate of sweeps.

    Attributes:
        node_refs: references per (node, incarnation). A reference is a remote pid in a link
            or a monitor (either way), a monitor_node registration or a pending spawn to a
            named node (those two with incarnation None).
        name_refs: the same, summed per node name.
        ref_total: the same, summed.
        watched: names the broker watches for us (or soon will).
        watch_sending: names whose WATCH a thread is sending now.
        unwatch_due: names whose last reference went.
    """

    def __init__(
        self, transport: Transport, lock: threading.RLock, clock: Callable[[], float]
    ) -> None:
        self._transport = transport
        self._lock = lock
        self._clock = clock
        self.node_refs: dict[NodeKey, int] = {}
        self.name_refs: dict[str, int] = {}
        self.ref_total = 0
        self.watched: set[str] = set()
        self.watch_sending: dict[str, int] = {}
        self.unwatch_due: set[str] = set()
        self._next_sweep = 0.0

    def watched_count(self) -> int:
        """The names the broker has (or is about to have: handed to the connection) a WATCH of
        (lock held)."""
        return len(self.watched - self.watch_sending.keys())

    def forget(self) -> None:
        """The broker has forgotten our WATCHes (a new session): nothing is watched, or due."""
        with self._lock:
            self.watched.clear()
            self.unwatch_due.clear()

    def ref(
        self, node: str, incarnation: int | None, *, ahead: bool = False, force: bool = False
    ) -> NodeKey | None:
        """Count a reference into the remote ``node`` (lock held).

        ``ahead``: the WATCH goes before the message that creates the reference (LINK, MONITOR,
        SPAWN), and the broker answers that message itself for a dead pid. It then names no
        incarnation: the broker answers it only if no node of that name is up, so a pid of an
        earlier incarnation of a live node still gets ``noproc``, from the LINK or MONITOR.
        Otherwise (the reference exists already: an incoming link, a spawn's answer, a new
        session) it names the pid's incarnation, so that the broker answers at once if that
        incarnation went down before the WATCH arrived. ``force``: send one even if the name
        is watched already (``monitor_node`` wants the broker's answer).

        Returns:
            The WATCH the caller must send once the lock is released; None if the name is
            watched already. While another thread is still sending the name's WATCH, this one
            sends its own, with no incarnation: its message must not overtake the other's WATCH.
        """
        key = (node, incarnation)
        self.node_refs[key] = self.node_refs.get(key, 0) + 1
        self.name_refs[node] = self.name_refs.get(node, 0) + 1
        self.ref_total += 1
        sending = node in self.watch_sending
        if not force and node in self.watched and not sending:
            return None
        self.watched.add(node)
        self.watch_sending[node] = self.watch_sending.get(node, 0) + 1
        return (node, None if sending or ahead else incarnation)

    def unref(self, node: str, incarnation: int | None, count: int = 1) -> None:
        """Drop ``count`` references into ``node`` (lock held); a name no longer referred to
        is UNWATCHed at the next sweep."""
        key = (node, incarnation)
        held = self.node_refs.get(key, 0)
        count = min(count, held)
        if count == 0:
            return
        if held > count:
            self.node_refs[key] = held - count
        else:
            del self.node_refs[key]
        self.ref_total -= count
        left = self.name_refs[node] - count
        if left:
            self.name_refs[node] = left
        else:
            del self.name_refs[node]
            self.unwatch_due.add(node)

    def send_watch(self, key: NodeKey, *, quiet: bool = False) -> None:
        """Send the WATCH that :meth:`ref` asked for (lock not held)."""
        node, incarnation = key
        try:
            header = {"node": node, "incarnation": incarnation}
            if quiet:
                send_quietly(self._transport, Command.WATCH, header)
            else:
                self._transport.send(Command.WATCH, header)
        finally:
            with self._lock:
                left = self.watch_sending.get(node, 1) - 1
                if left > 0:
                    self.watch_sending[node] = left
                else:
                    self.watch_sending.pop(node, None)

    def sweep(self) -> None:
        """UNWATCH the node names nothing on this node refers to any more.

        Call it only on the connection's I/O thread, which sends without waiting: the UNWATCH
        leaves under the lock, so a WATCH that another thread decides on afterwards reaches
        the broker after it. It runs at most once per heartbeat interval, so a name that comes
        and goes costs at most a WATCH and an UNWATCH per interval. The actor handlers call it,
        and so does the connection once per heartbeat (``on_tick``), for a node that
        gets no actor messages.
        """
        if not self.unwatch_due:
            return
        now = self._clock()
        if now < self._next_sweep:
            return
        with self._lock:
            self._next_sweep = now + self._transport.heartbeat_interval_s
            later: set[str] = set()
            for name in self.unwatch_due:
                if name in self.name_refs or name not in self.watched:
                    continue
                if name in self.watch_sending:
                    later.add(name)
                    continue
                self.watched.discard(name)
                send_quietly(self._transport, Command.UNWATCH, {"node": name})
            self.unwatch_due = later

    def rewatch(self) -> None:
        """WATCH again every remote (node, incarnation) referred to (after a new session: the
        broker forgot our watches). Those that are not up are answered with NODEDOWN."""
        with self._lock:
            keys = sorted(self.node_refs, key=lambda k: (k[0], k[1] is not None, k[1] or 0))
            for node, _ in keys:
                self.watched.add(node)
                self.watch_sending[node] = self.watch_sending.get(node, 0) + 1
        for key in keys:
            self.send_watch(key, quiet=True)

    def remote_nodes(self) -> set[NodeKey]:
        """The (node, incarnation) of every remote pid a local link or monitor points at (either
        way), and the node names watched with monitor_node or spawned on (incarnation None)."""
        with self._lock:
            return set(self.node_refs)
