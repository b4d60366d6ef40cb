"""Lanes: direct node-to-node sockets for actor messages, introduced by the broker.

Without lanes, an actor message crosses the broker: actor thread, the node's I/O thread, the
broker, the other node's I/O thread, the other actor. A lane takes the broker out of that path
once two nodes talk: node A sends everything it has for node B (SEND, LINK, EXIT and the other
actor commands whose ``to`` is on B) on a DEALER connected to B's lane ROUTER, from the actor
thread itself, and B's I/O thread reads it there.

How a lane opens (every step but the last goes through the broker, which vouches for names):

1. A sends ``LANE {op: ask, to: B}``. The broker passes it on only if both nodes said in HELLO
   where their lane is, and neither holds ``max_lanes`` lanes.
2. B makes a random *token*, remembers it as A's, and answers ``LANE {op: accept, to: A,
   incarnation: A's, token}``. The broker adds B's endpoint and key (from B's HELLO) and passes
   it to A. A token travels only between the broker and the two nodes, over their CURVE
   sessions when the cluster uses CURVE; a lane message is A's only if it carries A's token as
   its routing id, and names only pids of A (checked as the broker checks them).
3. A connects a DEALER whose routing id is the token (a CURVE client of B's key, when keys are
   in use) and sends ``HI`` on it. B answers the first HI with ``LANE {op: ready}`` through the
   broker: until then A keeps sending through the broker (a peer it cannot reach stays
   reachable that way). The next message A has for B after the ready goes through the broker
   as ``LANE {op: switch}``, behind everything A sent B through the broker before; from then on
   A sends to B on the lane.
4. B holds what comes on the lane until the switch arrives through the broker: so every
   message keeps its order, per pair, across the change of path.

A lane ends when either node goes (NODEDOWN, which the broker also sends to lane peers), when
A rejoins the broker (A sends ``LANE {op: close}`` through the new session), or when the node
closes. A closing node ends each lane with a BYE on the lane itself, and B holds the NODEDOWN
of a node that left until that BYE (at most ``BYE_WAIT_S``): a closing node's last signals
(``shutdown``) are not overtaken by the broker's news that it left.

This module holds the lane sockets and the bookkeeping; ``zimg.connection`` decides, per
message, which path it takes.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import secrets
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import zmq

from zimg import _lane_batch as _batch
from zimg import protocol, wire
from zimg._errors import WireError
from zimg._zsock import NOBLOCK, recv_frames, send_frames
from zimg.security import ClientKeys
from zimg.wire import Command, Message, Pid, Ref

log = logging.getLogger("zimg.lanes")

ASK, ACCEPT, REFUSE, READY, SWITCH, CLOSE = "ask", "accept", "refuse", "ready", "switch", "close"
SWITCHED = "switched"  # B has A's switch: A may send on the lane beyond SWITCH_WINDOW
TOKEN_BYTES = 16
# Lanes a node holds each way; beyond that, actor messages go through the broker.
MAX_LANES = 256
# What B holds of a lane before its switch arrives through the broker.
MAX_HELD = 10_000
# What A sends on a lane before B says (through the broker) that it has the switch; the rest
# waits in A's queue. Below MAX_HELD: a sender faster than the broker path never makes B drop.
SWITCH_WINDOW = MAX_HELD // 2
# Messages a lane queues beyond its socket's high-water mark before senders wait.
MAX_BACKLOG = 10_000
LANE_HWM = 10_000
# How long a node holds the NODEDOWN of a peer that left for that peer's BYE on its lane.
BYE_WAIT_S = 2.0
# How long a leaving node's lane sockets go on trying to send what they hold, BYE included.
BYE_LINGER_S = 0.5
_BYE = b"BYE"
_HI = b"HI"  # the first frame on a lane: its peer answers READY through the broker
_KEY_CHARS = 40  # a CURVE public key in z85
_EVENTS, _POLLIN = int(zmq.EVENTS), int(zmq.POLLIN)


def destination(header: Mapping[str, Any], own: str) -> tuple[str, int | None] | None:
    """The node an actor command goes to (and the incarnation, for a pid), read from ``to``;
    None for this node, ``"*"`` (any worker: the broker picks) or anything else."""
    to = header.get("to")
    if type(to) is Pid:
        name, incarnation = to.node, to.incarnation
    elif type(to) is tuple and len(to) == 2 and type(to[1]) is str:
        name, incarnation = to[1], None
    elif type(to) is str:
        name, incarnation = to, None
    else:
        return None
    if name == own or name == "*":
        return None
    return name, incarnation


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
    cond: threading.Condition = field(default_factory=lambda: threading.Condition(threading.Lock()))
    batch: list[bytes] = field(default_factory=list)  # the open batch (``zimg._lane_batch``)
    batch_bytes: int = 0
    batch_since: float = 0.0  # when the open batch opened
    last_send: float = 0.0
    switched: bool = False  # the peer has our switch (SWITCHED came back)
    unswitched: int = 0  # messages sent on the lane before that


@dataclass(eq=False)
class Inbound:
    """A lane from a peer: what its token is, and what came before its switch."""

    peer: str
    incarnation: int
    token: bytes
    switched: bool = False
    greeted: bool = False  # its HI came, and was answered
    held: deque[Message] = field(default_factory=deque)
    bye: bool = False
    parked: Message | None = None  # its NODEDOWN, held until its BYE
    parked_until: float = 0.0


def lane_host(broker_url: str) -> str:
    """The address to bind a lane on: the one this host reaches the broker from."""
    first = broker_url.split(",")[0]
    if not first.startswith("tcp://"):
        return "127.0.0.1"
    host = urlsplit(first).hostname or "127.0.0.1"
    if host in ("localhost", "127.0.0.1", "::1", "*"):
        return "127.0.0.1" if host != "::1" else "::1"
    try:  # no packet is sent: connect() on UDP only picks the route's source address
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.connect((host, urlsplit(first).port or 5555))
            return str(probe.getsockname()[0])
    except OSError:
        return "127.0.0.1"


class Lanes:
    """One node's lanes: its lane ROUTER, its DEALERs to peers, and what each lane holds.

    Thread rules: ``outbound``'s states change under ``lock``; a lane's socket and backlog are
    touched only under its ``cond``; everything about inbound lanes is the I/O thread's.
    """

    def __init__(
        self,
        ctx: zmq.Context[zmq.Socket[bytes]],
        name: str,
        host: str,
        limits: wire.Limits,
        keys: ClientKeys | None,
    ) -> None:
        self.name = name
        self.limits = limits
        self.keys = keys
        self.ctx = ctx
        self.router = ctx.socket(zmq.ROUTER)
        self.router.setsockopt(zmq.LINGER, 0)
        self.router.setsockopt(zmq.MAXMSGSIZE, limits.largest_frame)
        self.router.setsockopt(zmq.RCVHWM, LANE_HWM)
        if keys is not None:
            self.router.curve_server = True
            self.router.curve_publickey = keys.public
            self.router.curve_secretkey = keys.secret
        if ":" in host:
            self.router.setsockopt(zmq.IPV6, 1)
            port = self.router.bind_to_random_port(f"tcp://[{host}]")
            self.endpoint = f"tcp://[{host}]:{port}"
        else:
            port = self.router.bind_to_random_port(f"tcp://{host}")
            self.endpoint = f"tcp://{host}:{port}"
        self.lock = threading.Lock()
        self.outbound: dict[str, Outbound] = {}
        self.inbound: dict[bytes, Inbound] = {}
        self.inbound_of: dict[str, Inbound] = {}
        self.sent = 0
        self.received = 0
        self.refused = 0  # unknown token, forged sender, not for us, malformed, over a bound
        self.lost = 0  # sent to a lane that closed under it
        # Sends a message to the broker (set by the connection): a HI's READY goes that way.
        self.to_broker: Callable[[list[Any]], None] | None = None
        # Wakes the I/O thread, which sends a batch ``BATCH_DELAY_S`` after it opened.
        self.wake_io: Callable[[], None] = _nothing
        self.batching: set[Outbound] = set()  # lanes with an open batch
        self.parked = 0  # NODEDOWNs held for a BYE

    # ------------------------------------------------------------------ HELLO

    def hello_fields(self) -> dict[str, Any]:
        """What HELLO says of this node's lane."""
        fields: dict[str, Any] = {"lane": self.endpoint}
        if self.keys is not None:
            fields["lane_key"] = self.keys.public
        return fields

    # ------------------------------------------------------------------ sending side

    def state(self, peer: str) -> Outbound | None:
        return self.outbound.get(peer)

    def ask(self, peer: str) -> list[Any] | None:
        """The ask to send through the broker for ``peer``, the first time only (under the
        caller's send lock: the ask goes before the message that made it)."""
        with self.lock:
            if peer in self.outbound or len(self.outbound) >= MAX_LANES:
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
        ``closed()``, once that queue is full too. ``closed`` None never waits (the I/O thread,
        and handlers, which hold the lock the I/O thread may need to make room)."""
        with lane.cond:
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
                    self.wake_io()
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
        while (
            closed is not None
            and len(lane.backlog) > MAX_BACKLOG
            and lane.sock is not None
            and not closed()
        ):
            lane.cond.wait(0.2)

    @staticmethod
    def _may_send(lane: Outbound, count: int) -> bool:
        """May ``lane`` take ``count`` more messages now? Not beyond ``SWITCH_WINDOW`` before
        SWITCHED."""
        return lane.switched or lane.unswitched + count <= SWITCH_WINDOW

    def flush(self, force: bool = False) -> bool:
        """Send the batches due (all with ``force``) and what lanes queued (the I/O thread);
        True while some lane still holds something."""
        if self.batching:
            due = time.monotonic() - _batch.BATCH_DELAY_S
            for lane in list(self.batching):
                with lane.cond:
                    if lane.batch and (force or lane.batch_since <= due):
                        self._send_batch(lane, None)
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
                    if not lane.switched:
                        lane.unswitched += count
                lane.cond.notify_all()
                pending = pending or (
                    bool(lane.backlog) and self._may_send(lane, lane.backlog[0][1])
                )
        return pending

    def flush_batches(self) -> None:
        """Send every open batch now (a process of this node is about to wait)."""
        for lane in list(self.batching):
            with lane.cond:
                if lane.batch:
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
            or (key is not None and (type(key) is not bytes or len(key) != _KEY_CHARS))
            or (self.keys is not None and key is None)
        ):
            return
        sock = self.ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, LANE_HWM)
        sock.setsockopt(zmq.ROUTING_ID, token)
        try:
            if self.keys is not None:
                assert type(key) is bytes
                ClientKeys(self.keys.public, self.keys.secret, key).apply(sock)
            if protocol.is_ipv6_endpoint(endpoint):
                sock.setsockopt(zmq.IPV6, 1)
            sock.connect(endpoint)
        except zmq.ZMQError:  # a key or an endpoint libzmq will not take: no lane
            sock.close(linger=0)
            with self.lock:
                lane.state = State.REFUSED
            return
        with lane.cond:
            lane.sock, lane.token, lane.incarnation = sock, token, incarnation
            # Queued until the connection is made: nothing goes on the lane before the peer
            # says, through the broker, that this arrived (a peer we cannot reach stays
            # reachable through the broker).
            with contextlib.suppress(zmq.Again):
                sock.send(_HI, zmq.NOBLOCK)
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
                        sock.send(_BYE, zmq.NOBLOCK)
                self._shut(lane, linger_ms)

    def _shut(self, lane: Outbound, linger_ms: int) -> None:
        """Close ``lane``'s socket (which sends what it holds for ``linger_ms`` more), count
        what it still queued as lost, and wake its waiting senders (``lane.cond`` held)."""
        if lane.sock is not None:
            lane.sock.close(linger=linger_ms)
            lane.sock = None
        self.lost += sum(count for _, count in lane.backlog) + len(lane.batch)
        lane.backlog.clear()
        lane.batch, lane.batch_bytes = [], 0
        self.batching.discard(lane)
        lane.cond.notify_all()

    # ------------------------------------------------------------------ receiving side

    def on_ask(self, header: Mapping[str, Any]) -> list[Any]:
        """A peer asks for a lane (through the broker): the accept (or refusal) to send back."""
        peer, incarnation = header.get("from"), header.get("incarnation")
        if type(peer) is not str or type(incarnation) is not int:
            return []
        old = self.inbound_of.pop(peer, None)
        if old is not None:
            del self.inbound[old.token]
        if len(self.inbound) >= MAX_LANES:
            answer: dict[str, Any] = {"op": REFUSE, "to": peer, "reason": "too many lanes"}
            return wire.encode(Command.LANE, answer, self.limits)
        token = _new_token()
        lane = Inbound(peer, incarnation, token)
        self.inbound[token] = lane
        self.inbound_of[peer] = lane
        answer = {"op": ACCEPT, "to": peer, "incarnation": incarnation, "token": token}
        return wire.encode(Command.LANE, answer, self.limits)

    def on_switch(self, header: Mapping[str, Any], deliver: Callable[[Message], None]) -> None:
        """The peer's switch came through the broker: what its lane held goes on, in order."""
        token = header.get("token")
        lane = self.inbound.get(token) if type(token) is bytes else None
        if lane is None or lane.peer != header.get("from") or lane.switched:
            return
        lane.switched = True
        if self.to_broker is not None:  # the peer may now send beyond SWITCH_WINDOW
            answer = {"op": SWITCHED, "to": lane.peer, "token": lane.token}
            self.to_broker(wire.encode(Command.LANE, answer, self.limits))
        while lane.held:
            deliver(lane.held.popleft())

    def close_inbound(self, peer: str, token: Any = None) -> None:
        lane = self.inbound_of.get(peer)
        if lane is not None and token in (None, lane.token):
            del self.inbound_of[peer]
            del self.inbound[lane.token]

    def read(self, deliver: Callable[[Message], None], limit: int = 256) -> bool:
        """Receive what lanes brought: check each message, hold or deliver it. The caller holds
        the connection's dispatch lock (``zimg._lane_reader``). True if it stopped at ``limit``
        (more may be waiting); False once the socket had nothing more."""
        router = self.router
        for _ in range(limit):
            # Asking costs about 2 us; a receive that fails raises zmq.Again, about 10.
            if not int(router.get(_EVENTS)) & _POLLIN:
                return False
            try:
                frames = recv_frames(router, NOBLOCK)
            except zmq.Again:
                return False
            lane = self.inbound.get(frames[0].bytes)
            if lane is None:
                self._refuse("a lane message with an unknown token")
                continue
            body = frames[1:]
            if len(body) == 1 and body[0].bytes == _HI:
                if lane.greeted:  # a lane says HI once: more is a peer wasting our time
                    self._refuse(f"a HI more than once on the lane from {lane.peer}")
                elif self.to_broker is not None:
                    lane.greeted = True
                    answer = {"op": READY, "to": lane.peer, "token": lane.token}
                    self.to_broker(wire.encode(Command.LANE, answer, self.limits))
                continue
            if len(body) == 1 and body[0].bytes == _BYE:
                if lane.bye:
                    self._refuse(f"a BYE more than once on the lane from {lane.peer}")
                lane.bye = True
                if lane.parked is not None:
                    deliver(self._end(lane))
                continue
            if len(body) == 2 and body[0].bytes == _batch.BATCH:
                try:
                    leads = _batch.unpack(body[1].buffer, self.limits)
                except WireError:
                    self._refuse(f"a malformed batch on the lane from {lane.peer}")
                    continue
                if not leads:
                    self._refuse(f"an empty batch on the lane from {lane.peer}")
                for lead in leads:
                    self._take(lane, [lead], deliver)
                continue
            self._take(lane, body, deliver)
        return True

    def _take(self, lane: Inbound, body: list[Any], deliver: Callable[[Message], None]) -> None:
        """Decode and check one message of ``lane``; deliver it, or hold it until the switch."""
        try:
            msg = wire.decode(body, self.limits)
        except WireError:
            self._refuse(f"a malformed message on the lane from {lane.peer}")
            return
        if not self._checked(lane, msg):
            return
        self.received += 1
        if lane.switched:
            deliver(msg)
        elif len(lane.held) < MAX_HELD:
            lane.held.append(msg)
        else:
            self._refuse(f"more than {MAX_HELD} messages from {lane.peer} before its switch")

    def on_nodedown(self, msg: Message, now: float) -> Message | None:
        """A peer went down: close both ways. The NODEDOWN goes on to the runtime now (it is
        returned), or, for a peer that left and has not said BYE on its lane yet, later."""
        name, incarnation = msg.header.get("node"), msg.header.get("incarnation")
        if type(name) is not str or msg.header.get("reason") == protocol.SYSTEM_LIMIT:
            return msg  # a refused WATCH: that node is up, and its lanes work
        self.close_outbound(name, incarnation if type(incarnation) is int else None)
        lane = self.inbound_of.get(name)
        if lane is None or (type(incarnation) is int and lane.incarnation != incarnation):
            return msg
        if (
            msg.header.get("reason") == protocol.NORMAL
            and lane.switched
            and not lane.bye
            and lane.parked is None
        ):
            # It left, after switching to its lane: what it sent there before its BYE (its
            # processes' last signals) comes before the news that it left.
            lane.parked, lane.parked_until = msg, now + BYE_WAIT_S
            self.parked += 1
            return None
        self.close_inbound(name)
        return msg

    def due(self, now: float) -> list[Message]:
        """The parked NODEDOWNs whose BYE did not come in time."""
        late = [lane for lane in self.inbound.values() if lane.parked and now >= lane.parked_until]
        return [self._end(lane) for lane in late]

    def close(self) -> None:
        for peer in list(self.outbound):
            self.close_outbound(peer)
        self.router.close(linger=0)

    # ------------------------------------------------------------------ helpers

    def _end(self, lane: Inbound) -> Message:
        parked = lane.parked
        assert parked is not None
        lane.parked = None
        self.parked -= 1
        self.close_inbound(lane.peer)
        return parked

    def _checked(self, lane: Inbound, msg: Message) -> bool:
        """Is ``msg`` an actor command from the lane's peer to this node?"""
        cmd, header = msg.command, msg.header
        if cmd not in wire.ACTOR_COMMANDS:
            self._refuse(f"a {cmd.name} on the lane from {lane.peer}")
            return False
        field_name = wire.SENDER_FIELD.get(cmd)  # a pid (or ref) of the peer, as the broker
        # requires of what it routes (``zimg._broker_actors``)
        names = [header.get(field_name)] if field_name else []
        if cmd is Command.SPAWNED and header.get("pid") is not None:
            names.append(header.get("pid"))
        for value in names:
            if not (
                isinstance(value, Pid | Ref)
                and value.node == lane.peer
                and value.incarnation == lane.incarnation
            ):
                self._refuse(f"a {cmd.name} on the lane from {lane.peer} naming another's pid")
                return False
        to = header.get("to")
        if type(to) is Pid:
            ours = to.node == self.name
        elif type(to) is tuple and len(to) == 2:
            ours = to[1] == self.name and type(to[0]) is str
        else:
            ours = to == self.name
        if not ours:
            self._refuse(f"a {cmd.name} on the lane from {lane.peer} for another node")
        return ours

    def _refuse(self, what: str) -> None:
        self.refused += 1
        if self.refused <= 10:
            log.warning("node %s: dropped %s (lanes refused %d)", self.name, what, self.refused)


def _new_token() -> bytes:
    while True:
        token = secrets.token_bytes(TOKEN_BYTES)
        if token[0]:  # a routing id may not start with a zero byte
            return token


def _nothing() -> None:
    pass
