"""A connection's side of lanes (``zimg._lanes``): which path each actor command takes, the LANE
and NODEDOWN messages the broker brings, and the I/O thread's part in reading and flushing lanes.

``zimg.connection.Connection`` holds one :class:`LanePath` when it runs with lanes, and hands it
what it needs of itself as plain callables, so this module knows nothing of the connection's
class: the send lock and the queue to the I/O thread, the broker socket, the handlers.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import zmq

from zimg import _lanes, wire
from zimg._lane_reader import LaneReader, WakeFd
from zimg._lanes import Lanes, Outbound, State
from zimg.wire import Command, Message

_POLLIN = int(zmq.POLLIN)
_DUE_EVERY_S = 0.1  # how often held NODEDOWNs are looked at while any is held
FLUSH_RETRY_S = 0.001  # how soon a lane whose socket was full is tried again

Frames = list[Any]


class LanePath:
    """What a connection with lanes does differently.

    Args:
        lanes: the node's lanes (its sockets and bookkeeping).
        limits: wire limits for what it encodes.
        push_lock: the lock under which threads other than the I/O thread hand it messages.
        push: hands the I/O thread a message for the broker (``push_lock`` held).
        forward: the I/O thread sends what other threads handed it, in order.
        send_direct: the I/O thread sends to the broker.
        handle: handles a message (a lane's, already checked) as the broker's would be.
        handle_run: handles the messages of a lane's batch (checked), in order, as ``handle``
            would each (None: ``handle`` each).
        dispatching: the dispatch lock, as a context (handlers run one at a time).
        on_io_thread: is the caller the I/O thread?
        to_broker: sends already-encoded frames to the broker from any thread, behind what
            other threads queued (the connection's ``send_frames``).
        closed: has the connection been closed?
        in_handler: is the caller running a handler (it holds the dispatch lock, so it never
            waits for room on a lane: the I/O thread may need that lock to make room)?
    """

    # The node an actor command goes to (and the incarnation, for a pid), or None.
    destination = staticmethod(_lanes.destination)

    def __init__(
        self,
        lanes: Lanes,
        *,
        limits: wire.Limits,
        dispatch: AbstractContextManager[Any],
        push_lock: threading.Lock,
        push: Callable[[Frames], None],
        forward: Callable[[], None],
        send_direct: Callable[[Frames], None],
        handle: Callable[[Message], None],
        dispatching: Callable[[], AbstractContextManager[Any]],
        on_io_thread: Callable[[], bool],
        to_broker: Callable[[Frames], None],
        closed: Callable[[], bool],
        in_handler: Callable[[], bool] = lambda: False,
        handle_run: Callable[[list[Message]], None] | None = None,
    ) -> None:
        self.lanes = lanes
        lanes.to_broker = to_broker  # a HI's READY and a switch's SWITCHED go that way
        self.limits = limits
        self._push_lock = push_lock
        self._push = push
        self._forward = forward
        self._send_direct = send_direct
        self._handle = handle
        self._handle_run = handle_run
        self._dispatching = dispatching
        self._on_io_thread = on_io_thread
        self._closed = closed
        self._in_handler = in_handler
        self.kick = WakeFd()
        lanes.wake_io = self.kick.set  # a batch opened: send it when due
        # The leader role a waiting receive may take, reading lanes itself.
        self.reader = LaneReader(lanes, dispatch, handle, self.kick.set, handle_run)
        self._watching = True  # the I/O thread watched the lane socket on its last pass
        self._more = False  # its last read stopped at its limit
        self._flushing = False  # a lane's socket was full
        self._due_at = 0.0
        self._monitors: dict[zmq.Socket[bytes], Outbound] = {}  # registered with the poller
        # The node is closing: no new lanes. (An ask sent as it leaves would bring an accept
        # back to a node that is gone, and a broker that finds it gone before it has read the
        # node's last messages drops them: its DISCONNECT, and the exit signals before it.)
        self.leaving = False

    def counters(self) -> dict[str, Callable[[], int]]:
        """The lane counts a heartbeat reports."""
        lanes = self.lanes
        return {
            f"lane_{key}": _counter(lanes, key)
            for key in ("sent", "received", "refused", "lost", "broken")
        }

    # ------------------------------------------------------------------ sending

    def send(self, peer: str, incarnation: int | None, frames: Frames) -> None:
        """Send an actor command for node ``peer``: on its lane once that is active, else
        through the broker (asking for a lane the first time).

        The path is chosen, and the message handed over, under the push lock: so a message that
        goes through the broker is queued before the lane's switch, and one that goes on the lane
        after it, whichever thread sends them (``zimg._lanes``)."""
        lanes = self.lanes
        lane = lanes.outbound.get(peer)
        if lane is not None and lane.state is State.ACTIVE and _on_lane(lane, incarnation):
            # Switched for good (a lane closes, it never goes back): no lock needed to choose.
            lanes.send(lane, frames, self._stop_waiting)
            return
        if self._on_io_thread():
            # The I/O thread never switches a lane (only senders holding the push lock do):
            # what other threads queued goes first, then this, on the lane only if active.
            self._forward()
            lane = lanes.state(peer)
            if lane is None and not self.leaving and (ask := lanes.ask(peer)) is not None:
                self._send_direct(ask)
            elif lane is not None and _on_lane(lane, incarnation):
                lanes.send(lane, frames, None)  # the I/O thread never waits for itself
                return
            self._send_direct(frames)
            return
        with self._push_lock:
            lane = lanes.state(peer)
            if lane is None:
                ask = None if self.leaving else lanes.ask(peer)
                if ask is not None:
                    self._push(ask)
            elif lane.state is State.READY and _on_lane(lane, incarnation, ready=True):
                self._push(lanes.switch(lane))
            if lane is not None and _on_lane(lane, incarnation):
                lanes.send(lane, frames, self._stop_waiting)
                return
            self._push(frames)

    def _stop_waiting(self) -> bool:
        """Should a sender stop waiting for room on a lane? Once the connection closed, and at
        once in a handler (it holds the dispatch lock, which the I/O thread may need to make
        room). Asked only when a lane is full, not per message."""
        return self._in_handler() or self._closed()

    # ------------------------------------------------------------------ from the broker

    def on_lane(self, msg: Message) -> None:
        """A LANE through the broker (a handler: dispatch lock held)."""
        lanes, op = self.lanes, msg.header.get("op")
        if op == _lanes.ASK:
            nodedown = lanes.back_before_bye(msg.header.get("from"))
            if nodedown is not None:  # its old incarnation's NODEDOWN goes first
                self._handle(nodedown)
            answer = lanes.on_ask(msg.header)
            if answer:
                self._send_direct(answer)
        elif op == _lanes.ACCEPT:
            lanes.on_accept(msg.header)
        elif op == _lanes.REFUSE:
            lanes.on_refuse(msg.header)
        elif op == _lanes.READY:
            lanes.on_ready(msg.header)
        elif op == _lanes.SWITCH:
            lanes.on_switch(msg.header, self._handle)
        elif op == _lanes.SWITCHED:
            lanes.on_switched(msg.header)
            self._flushing = lanes.flush()  # what waited beyond the window goes now
        elif op == _lanes.BROKEN:
            nodedown = lanes.on_broken(msg.header)
            if nodedown is not None:
                self._handle(nodedown)
        elif op == _lanes.CLOSE:
            peer = msg.header.get("from")
            if type(peer) is str:
                lanes.close_inbound(peer, msg.header.get("token"))

    def on_nodedown(self, handler: Callable[[Message], None], msg: Message) -> None:
        """A NODEDOWN ends our lanes with that node; it goes on to ``handler`` now, or once the
        node's BYE has come on its lane."""
        if self.lanes.on_nodedown(msg, time.monotonic()) is not None:
            handler(msg)

    def session_lost(self) -> None:
        """A new session (I/O thread): the broker that introduced our lanes may not know them.
        Close each lane we send on, and tell its peer through the new session, which drops what
        still comes on it: nothing sent later through the broker is overtaken."""
        self._forward()
        lanes = self.lanes
        for peer in list(lanes.outbound):
            lane = lanes.close_outbound(peer)
            if lane is not None and lane.token:
                header = {"op": _lanes.CLOSE, "to": peer, "token": lane.token}
                self._send_direct(wire.encode(Command.LANE, header, self.limits))

    # ------------------------------------------------------------------ the I/O thread's loop

    def before_poll(self, poller: zmq.Poller, wait_s: float) -> float:
        """Register what the I/O thread waits on for lanes; the (shorter) wait, which the
        caller waits at most."""
        # A sender that opens a batch from now on, until the wait is known, wakes us: we may
        # not see its batch below.
        self.lanes.io_looks_by = math.inf
        poller.register(self.kick.fd, _POLLIN)
        monitors = self.lanes.monitors
        if monitors.keys() != self._monitors.keys():  # a lane opened or closed
            for gone in self._monitors.keys() - monitors.keys():
                poller.unregister(gone)
            for monitor in monitors.keys() - self._monitors.keys():
                poller.register(monitor, _POLLIN)
            self._monitors = dict(monitors)
        # Wake for the next open batch due to go, and the next dropped lane due to break.
        for due in (self.lanes.batch_due(), self.lanes.next_drop_due()):
            if due is not None:
                wait_s = min(wait_s, max(0.0, due - time.monotonic()))
        watched = self._watching
        self._watching, glance_s = self.reader.io_should_watch()
        self._resumed = self._watching and not watched
        poller.register(self.reader.fd, _POLLIN if self._watching else 0)
        if glance_s is not None:
            wait_s = min(wait_s, glance_s)
        if self._flushing:
            wait_s = min(wait_s, FLUSH_RETRY_S)
        if self._more or self._resumed:  # read now: the descriptor may not say so again
            wait_s = 0.0
        elif self.lanes.parked:
            wait_s = min(wait_s, _DUE_EVERY_S)
        self.lanes.io_looks_by = time.monotonic() + wait_s
        return wait_s

    def after_poll(self, events: dict[Any, int], now: float) -> None:
        """Read lanes (unless a waiting receive leads: it reads), flush them, and hand on the
        NODEDOWNs held for a BYE that did not come.

        The I/O thread reads when the descriptor says so, and also on its first pass that
        watches after a leader, or after a kick (the leader may have left messages unread, and
        taken the signal), and while its last read stopped at its limit (the descriptor may not
        say so again)."""
        lanes, reader, kick = self.lanes, self.reader, self.kick
        if kick.fd in events:
            kick.drain()
        was_more, self._more = self._more, False
        signalled = was_more or self._resumed or reader.fd in events or kick.fd in events
        if self._watching and signalled and not reader.leader.locked():
            with self._dispatching():
                self._more = lanes.read(self._handle, self._handle_run)
        self._flushing = lanes.flush()
        for monitor, lane in self._monitors.items():
            if monitor in events:
                lanes.on_monitor(lane, now)
        for lane in lanes.dropped(now):
            self._break(lane)
        if lanes.parked and now >= self._due_at:
            self._due_at = now + _DUE_EVERY_S
            with self._dispatching():  # inbound lanes change only under the lock
                for parked in lanes.due(now):
                    self._handle(parked)

    def _break(self, lane: Outbound) -> None:
        """Our lane to a peer lost its connection and no NODEDOWN of the peer came: tell the
        peer through the broker (it ends its side), then end ours (I/O thread)."""
        header = {"op": _lanes.BROKEN, "to": lane.peer, "token": lane.token}
        self._send_direct(wire.encode(Command.LANE, header, self.limits))
        with self._dispatching():
            nodedown = self.lanes.break_lane(lane)
            self._handle(nodedown)

    # ------------------------------------------------------------------ the end

    def close(self) -> None:
        """The connection closed (its I/O thread has stopped)."""
        self.lanes.close()
        self.reader.close()
        self.kick.close()


def _on_lane(lane: Outbound, incarnation: int | None, ready: bool = False) -> bool:
    """Does a message for that incarnation of the peer go on ``lane`` (if it is switched, or
    about to be)?"""
    if incarnation not in (None, lane.incarnation):
        return False
    return lane.state is State.ACTIVE or (ready and lane.state is State.READY)


def _counter(lanes: Lanes, key: str) -> Callable[[], int]:
    return lambda: int(getattr(lanes, key))
