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

A burst goes on a lane in batches (``zimg._lane_batch``), and A sends at most ``SWITCH_WINDOW``
messages on a lane until B says, through the broker, that it has the switch (``switched``).

This module holds the lane sockets and the bookkeeping: the sending half in ``zimg._lane_out``,
the receiving half in ``zimg._lane_in``, the ops and bounds in ``zimg._lane_terms``;
``zimg._lane_path`` decides, per message, which path it takes.
"""

from __future__ import annotations

import logging
import math
import socket
import threading
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

import zmq

from zimg import protocol, wire
from zimg._lane_in import BYE_WAIT_S, Inbound, Receiving
from zimg._lane_out import LANE_HWM, Outbound, Sending, State
from zimg._lane_terms import ACCEPT, ASK, BROKEN, CLOSE, READY, REFUSE, SWITCH, SWITCHED
from zimg.security import ClientKeys
from zimg.wire import Command, Message, Pid

# The ops, for the connection's side (``zimg._lane_path``); the bounds are in
# ``zimg._lane_terms``, read from there (tests change them there).
log = logging.getLogger("zimg.lanes")

__all__ = [
    "ACCEPT",
    "ASK",
    "BROKEN",
    "BYE_WAIT_S",
    "CLOSE",
    "READY",
    "REFUSE",
    "SWITCH",
    "SWITCHED",
    "Inbound",
    "Lanes",
    "Outbound",
    "State",
    "destination",
    "lane_host",
]


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


class Lanes(Sending, Receiving):
    """One node's lanes: its lane ROUTER, its DEALERs to peers, and what each lane holds (the
    sending half in ``zimg._lane_out``, the receiving half in ``zimg._lane_in``).

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
        self.io_looks_by = math.inf
        self.batching: set[Outbound] = set()  # lanes with an open batch
        self.dropping: set[Outbound] = set()  # lanes whose connection went
        self.monitors: dict[zmq.Socket[bytes], Outbound] = {}  # each lane's monitor
        self.parked = 0  # NODEDOWNs held for a BYE
        self.broken = 0  # lanes that lost their connection while both nodes stayed joined

    # ------------------------------------------------------------------ HELLO

    def hello_fields(self) -> dict[str, Any]:
        """What HELLO says of this node's lane."""
        fields: dict[str, Any] = {"lane": self.endpoint}
        if self.keys is not None:
            fields["lane_key"] = self.keys.public
        return fields

    # ------------------------------------------------------------------ both ways

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

    def break_lane(self, lane: Outbound) -> Message:
        """Our lane to a peer lost its connection while both of us stayed joined (I/O thread,
        dispatch lock held): end both ways with it, as its NODEDOWN would. Returns the
        NODEDOWN (``noconnection``) that ends the links and monitors between the two nodes."""
        log.warning(
            "node %s: the lane to %s lost its connection: links and monitors with "
            "its processes end with noconnection",
            self.name,
            lane.peer,
        )
        return self._end_both_ways(lane.peer, lane.incarnation)

    def on_broken(self, header: Mapping[str, Any]) -> Message | None:
        """The peer's lane to us broke (it says so through the broker; dispatch lock held): end
        both ways with it. Returns the NODEDOWN (``noconnection``) for the runtime, or None if
        the token is not that of the peer's lane to us (stale)."""
        peer, token = header.get("from"), header.get("token")
        lane = self.inbound_of.get(peer) if type(peer) is str else None
        if lane is None or token != lane.token:
            return None
        return self._end_both_ways(lane.peer, lane.incarnation)

    def _end_both_ways(self, peer: str, incarnation: int | None) -> Message:
        """Close both directions with ``peer`` after a break, count it, and return the
        NODEDOWN (``noconnection``) that ends what the two nodes' processes share."""
        self.close_outbound(peer, incarnation)
        self.close_inbound(peer)
        self.broken += 1
        return _nodedown(peer, incarnation)

    def close(self) -> None:
        for peer in list(self.outbound):
            self.close_outbound(peer)
        self.router.close(linger=0)


def _nodedown(peer: str, incarnation: int | None) -> Message:
    header = {"node": peer, "incarnation": incarnation, "reason": protocol.NOCONNECTION}
    return Message(Command.NODEDOWN, header)


def _nothing() -> None:
    pass
