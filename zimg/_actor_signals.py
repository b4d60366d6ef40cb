"""Links, monitors and exit signals between processes, on this node and across nodes.

Each path is "local? deliver : send to the broker": a link is kept on both sides, a monitor by
the process that holds it (``monitors``) and the one it watches (``monitored_by``). An exit
signal from a link, or a DOWN, is one system message per link or monitor, never dropped. Each
reference into a remote node is counted in the runtime's WATCH book.
"""

from __future__ import annotations

import threading
from typing import Any

from zimg import protocol
from zimg._actor_process import KILL, SYSTEM_LIMIT, Process, RuntimeHost, _is
from zimg._actor_watch import NodeKey, WatchBook, send_quietly
from zimg._mailbox import term_size
from zimg._transport import Transport
from zimg.wire import Command, Message, Pid, Ref


class Signals:
    """The links, monitors and exit signals of one node's runtime.

    Args:
        runtime: the runtime whose processes link, monitor and signal.
        lock: the runtime's lock; links and monitors are read and changed under it.
        watches: the runtime's WATCH book (links and monitors into other nodes refer to it).
    """

    def __init__(self, runtime: RuntimeHost, lock: threading.RLock, watches: WatchBook) -> None:
        self._rt = runtime
        self._lock = lock
        self._watches = watches
        self._connection: Transport = runtime.connection

    def _remote_full(self, pid: Pid) -> bool:
        """Would a link or monitor with ``pid`` take the node over ``max_remote_refs``? (lock
        held)"""
        return (
            pid.node != self._rt.name and self._watches.ref_total >= self._rt.limits.max_remote_refs
        )

    # ------------------------------------------------------------------ book-keeping (lock held)

    def add_link(self, proc: Process, pid: Pid, *, ahead: bool = False) -> NodeKey | None:
        """Link ``proc`` to ``pid`` on this side (lock held); returns the WATCH to send."""
        if pid in proc.links:
            return None
        proc.links.add(pid)
        if pid.node != self._rt.name:
            return self._watches.ref(pid.node, pid.incarnation, ahead=ahead)
        return None

    def drop_link(self, proc: Process, pid: Pid) -> bool:
        """Remove the link on this side (lock held); False if there was none."""
        if pid not in proc.links:
            return False
        proc.links.discard(pid)
        if pid.node != self._rt.name:
            self._watches.unref(pid.node, pid.incarnation)
        return True

    def add_monitor(
        self, proc: Process, ref: Ref, pid: Pid, *, ahead: bool = False
    ) -> NodeKey | None:
        """Record that ``proc`` monitors ``pid`` under ``ref`` (lock held)."""
        self.pop_monitor(proc, ref)
        proc.monitors[ref] = pid
        if pid.node != self._rt.name:
            return self._watches.ref(pid.node, pid.incarnation, ahead=ahead)
        return None

    def pop_monitor(self, proc: Process, ref: Ref) -> Pid | None:
        pid = proc.monitors.pop(ref, None)
        if pid is not None and pid.node != self._rt.name:
            self._watches.unref(pid.node, pid.incarnation)
        return pid

    def add_watcher(self, proc: Process, ref: Ref, watcher: Pid) -> NodeKey | None:
        """Record that ``watcher`` monitors ``proc`` under ``ref`` (lock held)."""
        self.pop_watcher(proc, ref)
        proc.monitored_by[ref] = watcher
        if watcher.node != self._rt.name:
            return self._watches.ref(watcher.node, watcher.incarnation)
        return None

    def pop_watcher(self, proc: Process, ref: Ref) -> Pid | None:
        watcher = proc.monitored_by.pop(ref, None)
        if watcher is not None and watcher.node != self._rt.name:
            self._watches.unref(watcher.node, watcher.incarnation)
        return watcher

    # ------------------------------------------------------------------ exits

    def exit_signal(self, sender: Pid, to: Pid, reason: Any, *, link: bool) -> None:
        """Send an exit signal from ``sender`` to ``to`` (``link``: caused by a link)."""
        if self._rt._is_local(to):
            target = self._rt._local(to)
            if target is not None:
                self.deliver_exit(target, sender, reason, link)
            return
        header = {"to": to, "from": sender, "reason": reason, "link": link}
        send_quietly(self._connection, Command.EXIT, header)

    def deliver_exit(
        self, proc: Process, sender: Pid, reason: Any, link: bool, nbytes: int = 0
    ) -> None:
        with self._lock:
            if not proc.alive:
                return
            if link and not self.drop_link(proc, sender):
                return  # the link is gone already: a stale or repeated signal
            if _is(reason, KILL) and not link:
                proc.kill(protocol.KILLED)
            elif proc.trap_exit:
                if link:  # one per link: a system message
                    self._put_signal(proc, ("EXIT", sender), reason, nbytes)
                elif not proc.mailbox.put(("EXIT", sender, reason), nbytes):
                    self._rt._dropped(proc)  # exit(pid, reason) is sent like a message
            elif not _is(reason, protocol.NORMAL):
                proc.kill(reason)

    def on_exit(self, msg: Message) -> None:
        h = msg.header
        to, sender = h.get("to"), h.get("from")
        if isinstance(to, Pid) and isinstance(sender, Pid):
            target = self._rt._local(to)
            if target is not None:
                reason = h.get("reason")
                link = h.get("link") is True
                self.deliver_exit(target, sender, reason, link, term_size(reason))
        self._watches.sweep()

    def _put_signal(self, proc: Process, head: tuple[Any, ...], reason: Any, nbytes: int) -> None:
        """Queue the system message ``(*head, reason)``: one per link or monitor, never dropped.

        If the bytes of a reason that came off the network do not fit the mailbox (or the
        node's budget), the reason is replaced by ``system_limit``: the signal still arrives,
        and it is still not ``normal``.
        """
        if proc.mailbox.put((*head, reason), nbytes, system=True):
            return
        proc.mailbox.put((*head, SYSTEM_LIMIT), 0, system=True)
        self._rt._dropped(proc)

    def _limit_signal(self, proc: Process, pid: Pid) -> None:
        """``proc`` asked for a link its own bound refuses: an exit signal ``system_limit``
        from ``pid``, as a refused link from the other side would give."""
        with self._lock:
            if not proc.alive:
                return
            if proc.trap_exit:
                proc.mailbox.put(("EXIT", pid, SYSTEM_LIMIT), system=True)
            else:
                proc.kill(SYSTEM_LIMIT)

    # ------------------------------------------------------------------ links

    def link(self, proc: Process, pid: Pid) -> None:
        if pid == proc.pid:
            return
        watch = None
        with self._lock:
            refused = pid not in proc.links and len(proc.links) >= self._rt.limits.max_links
            if refused:
                self._rt.refused_links += 1
            else:
                watch = self.add_link(proc, pid, ahead=True)
        if refused:
            self._rt._log_refusal(
                self._rt.refused_links,
                f"{proc.pid!r} holds {len(proc.links)} links (max_links "
                f"{self._rt.limits.max_links}): link to {pid!r} refused with system_limit",
            )
            self._limit_signal(proc, pid)
            return
        if not self._rt._is_local(pid):
            if watch is not None:
                self._watches.send_watch(watch)  # before the LINK: its node's death must reach us
            self._connection.send(Command.LINK, {"to": pid, "from": proc.pid})
            return
        target = self._rt._local(pid)
        reason = protocol.NOPROC
        with self._lock:
            if target is not None and target.alive:
                if proc.pid in target.links or len(target.links) < self._rt.limits.max_links:
                    target.links.add(proc.pid)
                    return
                self._rt.refused_links += 1
                reason = SYSTEM_LIMIT
        self.deliver_exit(proc, pid, reason, link=True)

    def unlink(self, proc: Process, pid: Pid) -> None:
        with self._lock:
            self.drop_link(proc, pid)
        if not self._rt._is_local(pid):
            send_quietly(self._connection, Command.UNLINK, {"to": pid, "from": proc.pid})
            return
        target = self._rt._local(pid)
        if target is not None:
            with self._lock:
                target.links.discard(proc.pid)

    def on_link(self, msg: Message) -> None:
        to, sender = msg.header.get("to"), msg.header.get("from")
        if not isinstance(to, Pid) or not isinstance(sender, Pid):
            return
        target = self._rt._local(to)
        reason = None
        watch = None
        with self._lock:
            if target is None or not target.alive:
                reason = protocol.NOPROC
            elif sender not in target.links:
                if len(target.links) >= self._rt.limits.max_links or self._remote_full(sender):
                    self._rt.refused_links += 1
                    reason = SYSTEM_LIMIT
                else:
                    watch = self.add_link(target, sender)
        if reason is not None:
            if reason == SYSTEM_LIMIT:
                self._rt._log_refusal(
                    self._rt.refused_links,
                    f"a link from {sender!r} to {to!r} is refused with system_limit (max_links "
                    f"{self._rt.limits.max_links} per process, max_remote_refs "
                    f"{self._rt.limits.max_remote_refs} per node)",
                )
            self.exit_signal(to, sender, reason, link=True)
        elif watch is not None:  # so that our process hears if the linked node dies
            self._watches.send_watch(watch, quiet=True)
        self._watches.sweep()

    def on_unlink(self, msg: Message) -> None:
        to, sender = msg.header.get("to"), msg.header.get("from")
        if isinstance(to, Pid) and isinstance(sender, Pid):
            target = self._rt._local(to)
            if target is not None:
                with self._lock:
                    self.drop_link(target, sender)
        self._watches.sweep()

    # ------------------------------------------------------------------ monitors

    def monitor(self, proc: Process, pid: Pid) -> Ref:
        ref = self._rt.make_ref()
        watch = None
        with self._lock:
            refused = len(proc.monitors) >= self._rt.limits.max_monitors
            if refused:
                self._rt.refused_monitors += 1
            else:
                watch = self.add_monitor(proc, ref, pid, ahead=True)
        if refused:
            self._rt._log_refusal(
                self._rt.refused_monitors,
                f"{proc.pid!r} holds {len(proc.monitors)} monitors (max_monitors "
                f"{self._rt.limits.max_monitors}): a monitor of {pid!r} gives system_limit",
            )
            proc.mailbox.put(("DOWN", ref, pid, SYSTEM_LIMIT), system=True)
            return ref
        if not self._rt._is_local(pid):
            if watch is not None:
                self._watches.send_watch(watch)  # before the MONITOR
            self._connection.send(Command.MONITOR, {"to": pid, "from": proc.pid, "ref": ref})
            return ref
        target = self._rt._local(pid)
        reason = protocol.NOPROC
        with self._lock:
            if target is not None and target.alive:
                if len(target.monitored_by) < self._rt.limits.max_monitors:
                    self.add_watcher(target, ref, proc.pid)
                    return ref
                self._rt.refused_monitors += 1
                reason = SYSTEM_LIMIT
        self.deliver_down(proc, ref, pid, reason)
        return ref

    def demonitor(self, proc: Process, ref: Ref) -> None:
        with self._lock:
            target = self.pop_monitor(proc, ref)
        if target is not None:
            self.drop_monitor(ref, target)

    def drop_monitor(self, ref: Ref, target: Pid) -> None:
        if not self._rt._is_local(target):
            send_quietly(self._connection, Command.DEMONITOR, {"to": target, "ref": ref})
            return
        proc = self._rt._local(target)
        if proc is not None:
            with self._lock:
                self.pop_watcher(proc, ref)

    def down(self, watcher: Pid, ref: Ref, pid: Pid, reason: Any) -> None:
        """Tell ``watcher`` that the process ``pid`` it monitors with ``ref`` ended."""
        if self._rt._is_local(watcher):
            proc = self._rt._local(watcher)
            if proc is not None:
                self.deliver_down(proc, ref, pid, reason)
            return
        header = {"to": watcher, "ref": ref, "pid": pid, "reason": reason}
        send_quietly(self._connection, Command.DOWN, header)

    def deliver_down(self, proc: Process, ref: Ref, pid: Pid, reason: Any, nbytes: int = 0) -> None:
        # The DOWN goes in under the lock that popped its monitor: a demonitor(flush=True) that
        # finds the monitor gone then finds its DOWN in the mailbox, and none comes after it.
        with self._lock:
            if self.pop_monitor(proc, ref) is None:
                return  # demonitored, or already told: one DOWN per monitor
            self._put_signal(proc, ("DOWN", ref, pid), reason, nbytes)

    def on_monitor(self, msg: Message) -> None:
        to, watcher, ref = msg.header.get("to"), msg.header.get("from"), msg.header.get("ref")
        if not isinstance(to, Pid) or not isinstance(watcher, Pid) or not isinstance(ref, Ref):
            return
        target = self._rt._local(to)
        reason = None
        watch = None
        with self._lock:
            if target is None or not target.alive:
                reason = protocol.NOPROC
            elif ref not in target.monitored_by:
                if len(target.monitored_by) >= self._rt.limits.max_monitors or self._remote_full(
                    watcher
                ):
                    self._rt.refused_monitors += 1
                    reason = SYSTEM_LIMIT
                else:
                    watch = self.add_watcher(target, ref, watcher)
        if reason is not None:
            if reason == SYSTEM_LIMIT:
                self._rt._log_refusal(
                    self._rt.refused_monitors,
                    f"a monitor of {to!r} from {watcher!r} gives system_limit (max_monitors "
                    f"{self._rt.limits.max_monitors} per process, max_remote_refs "
                    f"{self._rt.limits.max_remote_refs} per node)",
                )
            self.down(watcher, ref, to, reason)
        elif watch is not None:  # so that a dead watcher's node lets go of the monitor
            self._watches.send_watch(watch, quiet=True)
        self._watches.sweep()

    def on_demonitor(self, msg: Message) -> None:
        to, ref = msg.header.get("to"), msg.header.get("ref")
        if isinstance(to, Pid) and isinstance(ref, Ref):
            target = self._rt._local(to)
            if target is not None:
                with self._lock:
                    self.pop_watcher(target, ref)
        self._watches.sweep()

    def on_down(self, msg: Message) -> None:
        h = msg.header
        to, ref, pid = h.get("to"), h.get("ref"), h.get("pid")
        if isinstance(to, Pid) and isinstance(ref, Ref) and isinstance(pid, Pid):
            proc = self._rt._local(to)
            if proc is not None:
                reason = h.get("reason")
                self.deliver_down(proc, ref, pid, reason, term_size(reason))
        self._watches.sweep()
