"""The receiving half of a node's lanes (``zimg._lanes``): the tokens handed out, what each
lane holds before its switch, and the checks on everything a lane brings (each message of a
batch as if it came alone), which are those the broker makes of what it routes.
"""

from __future__ import annotations

import logging
import secrets
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import zmq

from zimg import _lane_batch as _batch
from zimg import _lane_terms as _t
from zimg import wire
from zimg._errors import WireError
from zimg._lane_terms import ACCEPT, BYE, HI, READY, REFUSE, SWITCHED, TOKEN_BYTES
from zimg._zsock import NOBLOCK, readable, recv_frames
from zimg.wire import Command, Message, Pid, Ref

log = logging.getLogger("zimg.lanes")

# How long a node holds the NODEDOWN of a peer that left for that peer's BYE on its lane.
BYE_WAIT_S = 2.0


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


class Receiving:
    """The receiving half of :class:`zimg._lanes.Lanes`: its lane ROUTER and what comes on it
    (the I/O thread's, or a leading receive's, under the connection's dispatch lock)."""

    name: str
    limits: wire.Limits
    router: zmq.Socket[bytes]
    inbound: dict[bytes, Inbound]
    inbound_of: dict[str, Inbound]
    received: int
    refused: int  # unknown token, forged sender, not for us, malformed, over a bound
    parked: int  # NODEDOWNs held for a BYE
    # Sends a message to the broker (set by the connection): a HI's READY goes that way.
    to_broker: Callable[[list[Any]], None] | None

    def on_ask(self, header: Mapping[str, Any]) -> list[Any]:
        """A peer asks for a lane (through the broker): the accept (or refusal) to send back."""
        peer, incarnation = header.get("from"), header.get("incarnation")
        if type(peer) is not str or type(incarnation) is not int:
            return []
        old = self.inbound_of.pop(peer, None)
        if old is not None:
            del self.inbound[old.token]
        if len(self.inbound) >= _t.MAX_LANES:
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

    def read(
        self,
        deliver: Callable[[Message], None],
        deliver_run: Callable[[list[Message]], None] | None = None,
        limit: int = 256,
    ) -> bool:
        """Receive what lanes brought: check each message, hold or deliver it (the messages of
        a batch together, to ``deliver_run``, if given). The caller holds the connection's
        dispatch lock (``zimg._lane_reader``). True if it stopped at ``limit`` (more may be
        waiting); False once the socket had nothing more."""
        router = self.router
        for _ in range(limit):
            if not readable(router):
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
            if len(body) == 1 and body[0].bytes == HI:
                if lane.greeted:  # a lane says HI once: more is a peer wasting our time
                    self._refuse(f"a HI more than once on the lane from {lane.peer}")
                elif self.to_broker is not None:
                    lane.greeted = True
                    answer = {"op": READY, "to": lane.peer, "token": lane.token}
                    self.to_broker(wire.encode(Command.LANE, answer, self.limits))
                continue
            if len(body) == 1 and body[0].bytes == BYE:
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
                if deliver_run is None or not lane.switched:
                    for lead in leads:
                        self._take(lane, [lead], deliver)
                    continue
                checked = (self._checked_one(lane, [lead]) for lead in leads)
                run = [msg for msg in checked if msg is not None]
                if run:
                    self.received += len(run)
                    deliver_run(run)
                continue
            self._take(lane, body, deliver)
        return True

    def _take(self, lane: Inbound, body: list[Any], deliver: Callable[[Message], None]) -> None:
        """Decode and check one message of ``lane``; deliver it, or hold it until the switch."""
        msg = self._checked_one(lane, body)
        if msg is None:
            return
        if not lane.switched and len(lane.held) >= _t.MAX_HELD:  # refused, so not received
            self._refuse(f"more than {_t.MAX_HELD} messages from {lane.peer} before its switch")
            return
        self.received += 1
        if lane.switched:
            deliver(msg)
        else:
            lane.held.append(msg)

    def _checked_one(self, lane: Inbound, body: list[Any]) -> Message | None:
        """One message of ``lane``, decoded and checked; None (refused and counted) if it is
        malformed or not one ``lane``'s peer may send us."""
        try:
            msg = wire.decode_common(body, self.limits)
        except WireError:
            self._refuse(f"a malformed message on the lane from {lane.peer}")
            return None
        return msg if self._checked(lane, msg) else None

    def back_before_bye(self, peer: Any) -> Message | None:
        """``peer``, whose NODEDOWN is held for its BYE, asks for a lane again (back, in a new
        incarnation): that BYE will not come. The held NODEDOWN, to hand on now, or None."""
        lane = self.inbound_of.get(peer) if type(peer) is str else None
        if lane is None or lane.parked is None:
            return None
        return self._end(lane)

    def due(self, now: float) -> list[Message]:
        """The parked NODEDOWNs whose BYE did not come in time."""
        late = [lane for lane in self.inbound.values() if lane.parked and now >= lane.parked_until]
        return [self._end(lane) for lane in late]

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
