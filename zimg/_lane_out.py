"""The sending half of a node's lanes (``zimg._lanes``): asking for a lane, connecting to the
peer, the switch, and sending on the lane, alone or in batches (``zimg._lane_batch``), within
the switch window and the queue's bound; and the end of a lane, BYE included.
"""

from __future__ import annotations

import contextlib
import enum
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import zmq
from zmq.utils.monitor import recv_monitor_message

from zimg import _lane_batch as _batch
from zimg import _lane_terms as _t
from zimg import protocol, wire
from zimg._lane_terms import ASK, BYE, HI, KEY_CHARS, SWITCH, TOKEN_BYTES
from zimg._zsock import NOBLOCK, send_frames
from zimg.security import ClientKeys
from zimg.wire import Command

_MONITORED = zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED
# Messages a lane queues beyond its socket's high-water mark before senders wait.
MAX_BACKLOG = 10_000
LANE_HWM = 10_000
# How long a leaving node's lane sockets go on trying to send what they hold, BYE included.
BYE_LINGER_S = 0.5


class State(enum.Enum):
    ASKED = "asked"  # the broker has our ask
    CONNECTING = "connecting"  # the peer accepted: our HI is on the lane, its READY not back yet
    READY = "ready"  # the peer heard our HI: the lane works, the switch is not sent yet
    ACTIVE = "active"  # the switch is sent: everything for the peer goes on the lane
    REFUSED = "refused"  # not for this peer (until it goes down)


@dataclass(eq=False)
class Outbound:
    """A lane to a peer: our DEALER to its ROUTER."""

    peer: str
    state: State
    incarnation: int | None = None
    token: bytes = b""
    sock: zmq.Socket[bytes] | None = None
    # What the socket would not take yet, in order: (frames, how many messages they hold).
    backlog: deque[tuple[list[Any], int]] = field(default_factory=deque)
    queued: int = 0  # messages in ``backlog`` (a batch is one entry of many)
    # ``cond`` waits on ``lock``: holding either is holding both (the hot path takes the lock,
    # which costs no Python call).
    lock: threading.Lock = field(default_factory=threading.Lock)
    cond: threading.Condition = field(init=False)
    batch: list[bytes] = field(default_factory=list)  # the open batch (``zimg._lane_batch``)
    batch_bytes: int = 0
    batch_since: float = 0.0  # when the open batch opened
    last_send: float = 0.0
    switched: bool = False  # the peer has our switch (SWITCHED came back)
    unswitched: int = 0  # messages sent on the lane before that
    # The socket's monitor (the I/O thread's): its connection to the peer came, then went.
    monitor: zmq.Socket[bytes] | None = None
    connected: bool = False
    dropped_at: float | None = None  # when the connection went (broken, unless NODEDOWN comes)

    def __post_init__(self) -> None:
        self.cond = threading.Condition(self.lock)


class Sending:
    """The sending half of :class:`zimg._lanes.Lanes`: our DEALERs to peers, and what each
    lane holds. ``outbound``'s states change under ``lock``; a lane's socket, batch and queue
    are touched only under its ``cond``."""

    ctx: zmq.Context[zmq.Socket[bytes]]
    limits: wire.Limits
    keys: ClientKeys | None
    lock: threading.Lock
    outbound: dict[str, Outbound]
    batching: set[Outbound]  # lanes with an open batch
    dropping: set[Outbound]  # lanes whose connection went (the I/O thread's)
    monitors: dict[zmq.Socket[bytes], Outbound]  # each lane's monitor (the I/O thread's)
    wake_io: Callable[[], None]
    # When the I/O thread will next look at the open batches at the latest (``time.monotonic``;
    # set by it before each wait, infinite while it works out how long to wait): a batch due
    # before then wakes it, one due later need not.
    io_looks_by: float
    sent: int
    lost: int  # sent to a lane that closed under it

    def state(self, peer: str) -> Outbound | None:
        return self.outbound.get(peer)

    def ask(self, peer: str) -> list[Any] | None:
        """The ask to send through the broker for ``peer``, the first time only (under the
        caller's send lock: the ask goes before the message that made it)."""
        with self.lock:
            if peer in self.outbound or len(self.outbound) >= _t.MAX_LANES:
                return None
            self.outbound[peer] = Outbound(peer, State.ASKED)
        return wire.encode(Command.LANE, {"op": ASK, "to": peer}, self.limits)

    def switch(self, lane: Outbound) -> list[Any]:
        """Make ``lane`` active; the switch to send through the broker before anything goes on
        it (under the caller's send lock, which orders it after what went before)."""
        lane.state = State.ACTIVE
        header = {"op": SWITCH, "to": lane.peer, "token": lane.token}
        return wire.encode(Command.LANE, header, self.limits)

    def send(self, lane: Outbound, frames: list[Any], closed: Callable[[], bool] | None) -> None:
        """Send on an active lane: at once, or in the lane's open batch during a burst
        (``zimg._lane_batch``). Queue behind what the lane holds if its socket is full (or the
        peer has not confirmed the switch), and wait, until the I/O thread makes room or
        ``closed()``, once that queue is full too. ``closed`` None never waits (the I/O thread);
        a handler's ``closed`` says True (it holds the lock the I/O thread may need to make
        room)."""
        with lane.lock:
            if lane.sock is None:
                self.lost += 1
                return
            now = time.monotonic()
            self.sent += 1
            burst = now - lane.last_send < _batch.BURST_GAP_S
            lane.last_send = now
            if len(frames) == 1 and type(frames[0]) is bytes and (burst or lane.batch):
                lead = frames[0]
                if not lane.batch:
                    lane.batch_since = now
                    self.batching.add(lane)
                    if self.io_looks_by > now + _batch.BATCH_DELAY_S:
                        self.wake_io()  # it would look too late
                lane.batch.append(lead)
                lane.batch_bytes += len(lead)
                if len(lane.batch) >= _batch.BATCH_MAX or lane.batch_bytes >= _batch.BATCH_BYTES:
                    self._send_batch(lane, closed)
                return
            if lane.batch:
                self._send_batch(lane, closed)
            self._put(lane, frames, 1, closed)

    def _send_batch(self, lane: Outbound, closed: Callable[[], bool] | None) -> None:
        """Send ``lane``'s open batch (``lane.cond`` held)."""
        leads = lane.batch
        lane.batch, lane.batch_bytes = [], 0
        self.batching.discard(lane)
        frames = [leads[0]] if len(leads) == 1 else _batch.pack(leads)
        self._put(lane, frames, len(leads), closed)

    def _put(
        self, lane: Outbound, frames: list[Any], count: int, closed: Callable[[], bool] | None
    ) -> None:
        """Send ``frames`` (``count`` messages) on ``lane``, or queue them behind what it holds
        (``lane.cond`` held). Then a sender (``closed`` given; not the I/O thread, which
        empties the queue) waits while the queue is over ``MAX_BACKLOG``: queued first, so
        nothing sent later by another thread overtakes it."""
        sock = lane.sock
        if sock is None:
            self.lost += count
            return
        if not lane.backlog and self._may_send(lane, count):
            try:
                send_frames(sock, frames, NOBLOCK)
                if not lane.switched:
                    lane.unswitched += count
                return
            except zmq.Again:
                pass
        lane.backlog.append((frames, count))
        lane.queued += count
        while (
            closed is not None
            and lane.queued > MAX_BACKLOG
            and lane.sock is not None
            and not closed()
        ):
            lane.cond.wait(0.2)

    @staticmethod
    def _may_send(lane: Outbound, count: int) -> bool:
        """May ``lane`` take ``count`` more messages now? Not beyond ``SWITCH_WINDOW`` before
        SWITCHED."""
        return lane.switched or lane.unswitched + count <= _t.SWITCH_WINDOW

    def flush(self, force: bool = False) -> bool:
        """Send the batches due (all with ``force``) and what lanes queued (the I/O thread);
        True while some lane still holds something."""
        if self.batching:
            self._send_batches(None if force else time.monotonic() - _batch.BATCH_DELAY_S)
        pending = False
        for lane in list(self.outbound.values()):
            if not lane.backlog:
                continue
            with lane.cond:
                sock = lane.sock
                while lane.backlog and sock is not None:
                    frames, count = lane.backlog[0]
                    if not self._may_send(lane, count):
                        break
                    try:
                        send_frames(sock, frames, NOBLOCK)
                    except zmq.Again:
                        break
                    lane.backlog.popleft()
                    lane.queued -= count
                    if not lane.switched:
                        lane.unswitched += count
                lane.cond.notify_all()
                pending = pending or (
                    bool(lane.backlog) and self._may_send(lane, lane.backlog[0][1])
                )
        return pending

    def flush_batches(self) -> None:
        """Send every open batch now (a process of this node is about to wait)."""
        self._send_batches(None)

    def _send_batches(self, opened_by: float | None) -> None:
        """Send the open batches opened at or before ``opened_by`` (None: all of them)."""
        for lane in list(self.batching):
            with lane.cond:
                if lane.batch and (opened_by is None or lane.batch_since <= opened_by):
                    self._send_batch(lane, None)

    def batch_due(self) -> float | None:
        """When the oldest open batch is due (``time.monotonic``), or None."""
        starts = [lane.batch_since for lane in list(self.batching)]
        return min(starts) + _batch.BATCH_DELAY_S if starts else None

    def on_accept(self, header: Mapping[str, Any]) -> None:
        """The peer accepted our ask (through the broker): open the socket (I/O thread)."""
        peer, token = header.get("from"), header.get("token")
        endpoint, key = header.get("endpoint"), header.get("lane_key")
        incarnation = header.get("incarnation")
        lane = self.outbound.get(peer) if type(peer) is str else None
        if (
            lane is None
            or lane.state is not State.ASKED
            or type(token) is not bytes
            or len(token) != TOKEN_BYTES
            or type(endpoint) is not str
            or type(incarnation) is not int
            or (key is not None and (type(key) is not bytes or len(key) != KEY_CHARS))
            or (self.keys is not None and key is None)
        ):
            return
        sock = self.ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, LANE_HWM)
        sock.setsockopt(zmq.ROUTING_ID, token)
        # A silent peer (a partition: no FIN, no RST) is dropped after LANE_PING_TIMEOUT_MS.
        sock.setsockopt(zmq.HEARTBEAT_IVL, _t.LANE_PING_MS)
        sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, _t.LANE_PING_TIMEOUT_MS)
        # Watched from before it connects: an event with no monitor listening is lost.
        monitor = sock.get_monitor_socket(_MONITORED)
        try:
            if self.keys is not None:
                assert type(key) is bytes
                ClientKeys(self.keys.public, self.keys.secret, key).apply(sock)
            if protocol.is_ipv6_endpoint(endpoint):
                sock.setsockopt(zmq.IPV6, 1)
            sock.connect(endpoint)
        except zmq.ZMQError:  # a key or an endpoint libzmq will not take: no lane
            sock.disable_monitor()  # first (see _shut)
            monitor.close(linger=0)
            sock.close(linger=0)
            with self.lock:
                lane.state = State.REFUSED
            return
        with lane.cond:
            lane.sock, lane.token, lane.incarnation = sock, token, incarnation
            lane.monitor = monitor
            # Queued until the connection is made: nothing goes on the lane before the peer
            # says, through the broker, that this arrived (a peer we cannot reach stays
            # reachable through the broker).
            with contextlib.suppress(zmq.Again):
                sock.send(HI, zmq.NOBLOCK)
        self.monitors[monitor] = lane
        with self.lock:
            lane.state = State.CONNECTING

    def on_ready(self, header: Mapping[str, Any]) -> None:
        """The peer heard our HI on the lane (through the broker): the lane may be used."""
        peer, token = header.get("from"), header.get("token")
        lane = self.outbound.get(peer) if type(peer) is str else None
        if lane is not None and lane.state is State.CONNECTING and token == lane.token:
            with self.lock:
                lane.state = State.READY

    def on_switched(self, header: Mapping[str, Any]) -> None:
        """The peer has our switch (through the broker): what waits beyond the window may go
        (the I/O thread's next flush sends it)."""
        peer, token = header.get("from"), header.get("token")
        lane = self.outbound.get(peer) if type(peer) is str else None
        if lane is not None and lane.state is State.ACTIVE and token == lane.token:
            with lane.cond:
                lane.switched = True

    def on_refuse(self, header: Mapping[str, Any]) -> None:
        peer = header.get("from")
        lane = self.outbound.get(peer) if type(peer) is str else None
        if lane is not None and lane.state is State.ASKED:
            with self.lock:
                lane.state = State.REFUSED

    def close_outbound(self, peer: str, incarnation: int | None = None) -> Outbound | None:
        """Forget the lane to ``peer`` (that incarnation, if given); its socket closes."""
        with self.lock:
            lane = self.outbound.get(peer)
            if lane is None or (
                incarnation is not None
                and lane.incarnation is not None
                and lane.incarnation != incarnation
            ):
                return None
            del self.outbound[peer]
        with lane.cond:
            self._shut(lane, 0)
        return lane

    def say_bye(self, timeout_s: float) -> None:
        """A closing node: flush every lane (up to ``timeout_s``), end each with a BYE, and
        close its socket, which goes on sending what it holds for up to ``BYE_LINGER_S`` more
        (a lane opened just before may not even be connected yet). That bounds how long a node
        whose peers have all gone waits for them as it exits, as the broker's socket does."""
        deadline = time.monotonic() + timeout_s
        while self.flush(force=True) and time.monotonic() < deadline:
            time.sleep(0.001)  # the peer is slow to take what we hold: wait a little
        linger_ms = int(max(0.0, min(BYE_LINGER_S, deadline - time.monotonic())) * 1000)
        for lane in list(self.outbound.values()):
            with lane.cond:
                sock = lane.sock
                if sock is None:
                    continue
                if lane.state is State.ACTIVE:
                    with contextlib.suppress(zmq.Again):
                        sock.send(BYE, zmq.NOBLOCK)
                self._shut(lane, linger_ms)

    def on_monitor(self, lane: Outbound, now: float) -> None:
        """Read what ``lane``'s monitor says (I/O thread): the connection came, or went. A
        connection that went after it came may have lost what was in flight; the lane is
        broken unless the peer's NODEDOWN comes within BREAK_GRACE_S (``dropped``)."""
        monitor = lane.monitor
        while monitor is not None:
            try:
                event = recv_monitor_message(monitor, zmq.NOBLOCK)["event"]
            except zmq.Again:
                return
            if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                lane.connected = True
            elif event == zmq.EVENT_DISCONNECTED and lane.connected and lane.dropped_at is None:
                lane.dropped_at = now
                self.dropping.add(lane)

    def dropped(self, now: float) -> list[Outbound]:
        """The lanes whose connection went more than BREAK_GRACE_S ago, with no NODEDOWN of
        their peer since (it would have closed them): broken."""
        due = now - _t.BREAK_GRACE_S
        return [
            lane
            for lane in list(self.dropping)
            if lane.dropped_at is not None and lane.dropped_at <= due
        ]

    def next_drop_due(self) -> float | None:
        """When the next lane whose connection went is due to be declared broken, or None."""
        starts = [lane.dropped_at for lane in self.dropping if lane.dropped_at is not None]
        return min(starts) + _t.BREAK_GRACE_S if starts else None

    def _shut(self, lane: Outbound, linger_ms: int) -> None:
        """Close ``lane``'s socket (which sends what it holds for ``linger_ms`` more), count
        what it still queued as lost, and wake its waiting senders (``lane.cond`` held)."""
        if lane.monitor is not None:
            # Stop the events first: libzmq sends them blocking, and an event for a monitor
            # that is gone would stop the context's I/O thread for good.
            if lane.sock is not None:
                lane.sock.disable_monitor()
            lane.monitor.close(linger=0)
            self.monitors.pop(lane.monitor, None)
            lane.monitor = None
        self.dropping.discard(lane)
        if lane.sock is not None:
            lane.sock.close(linger=linger_ms)
            lane.sock = None
        self.lost += lane.queued + len(lane.batch)
        lane.backlog.clear()
        lane.queued = 0
        lane.batch, lane.batch_bytes = [], 0
        self.batching.discard(lane)
        lane.cond.notify_all()
