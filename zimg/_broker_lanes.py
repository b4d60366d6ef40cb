"""The broker's part in lanes (``zimg._lanes``): it introduces two nodes, and vouches for names.

A node that said in HELLO where its lane is (``lane``, and ``lane_key`` under CURVE) may ask the
broker for a lane to another such node. The broker passes the ask on, the accept back (adding
the accepting node's endpoint and key), and the switch and close notices between the two. It
stamps every LANE it passes on with the sender's own name (``from``) and incarnation, so a node
learns a peer's name only from the broker. It keeps who has a lane with whom, at most
``max_lanes`` per node, so that a node's NODEDOWN also reaches its lane peers; it holds no
token and routes no lane traffic.

Asks are bounded, so that no node can make the broker flood another with them: per ordered pair
(asker, target) at most one ask waits for the target's answer, none while the asker's lane to
that target is open, and at most ``max_lanes`` per asker. A repeat of an ask still waiting is
dropped (the waiting ask's answer answers it too); an ask beyond the other two bounds is
answered ``refuse``. Both are counted ``lane_asks_refused`` and logged once per node. An ask
stops waiting when the target accepts or refuses it, or either node goes down; a node asks
again only after its lane ended with the peer's NODEDOWN (which the broker sends after dropping
both of these) or in a new session (a new record, with nothing waiting).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from zimg import protocol, wire
from zimg._broker_records import BrokerConfig, Instruction, NodeRecord, Send
from zimg._errors import WireError
from zimg.wire import Command

MAX_ENDPOINT_CHARS = 256
KEY_CHARS = 40  # a CURVE public key in z85
_TOKEN_BYTES = 16
_REASON_CHARS = 200


def hello_lane(header: dict[str, Any]) -> tuple[str | None, bytes | None]:
    """The lane a HELLO names (endpoint, CURVE key), checked.

    Raises:
        WireError: ``lane`` is not a tcp:// endpoint of a sane length, or ``lane_key`` is not
            32 bytes.
    """
    lane, key = header.get("lane"), header.get("lane_key")
    if lane is not None and (
        type(lane) is not str or len(lane) > MAX_ENDPOINT_CHARS or not lane.startswith("tcp://")
    ):
        raise WireError("header field 'lane' must be a tcp:// endpoint")
    if key is not None and (type(key) is not bytes or len(key) != KEY_CHARS):
        raise WireError(f"header field 'lane_key' must be a CURVE key in z85 ({KEY_CHARS} bytes)")
    return lane, key


class LaneIntroductions:
    """LANE through the broker: asks, accepts, refusals, switches and closes."""

    def __init__(
        self,
        config: BrokerConfig,
        by_name: dict[str, NodeRecord],
        stats: dict[str, int],
        log_once: Callable[[bytes, str], list[Instruction]],
    ) -> None:
        self.config = config
        self.by_name = by_name
        self.stats = stats
        self.log_once = log_once

    def on_lane(self, sender: NodeRecord, header: dict[str, Any]) -> list[Instruction]:
        """Pass a LANE on to the node its ``to`` names, or refuse it.

        Raises:
            WireError: the header is malformed.
        """
        op = protocol.field(header, "op", str)
        to = protocol.field(header, "to", str)
        target = self.by_name.get(to)
        if op == "ask":
            return self._ask(sender, to, target)
        if target is None:
            return []  # gone: its NODEDOWN tells whoever needs to know
        if op == "accept":
            return self._accept(sender, target, header)
        if op == "refuse":
            reason = str(header.get("reason", ""))[:_REASON_CHARS]
            _answered(target, sender)
            return [_lane(target, {"op": "refuse", "from": sender.name, "reason": reason})]
        if op in ("ready", "switch", "switched", "close", "broken"):
            token = _token(header)
            if target not in sender.lane_peers:
                return []
            if op == "broken":  # both ways end: either may ask for a lane again
                sender.lanes_to.discard(target)
                target.lanes_to.discard(sender)
            elif op == "close":
                sender.lanes_to.discard(target)
            notice = {"op": op, "from": sender.name, "token": token}
            return [_lane(target, notice)]
        raise WireError(f"unknown LANE op {op!r}")

    def node_gone(self, node: NodeRecord) -> set[NodeRecord]:
        """``node`` is down: the nodes it had lanes with (each hears its NODEDOWN). Its asks,
        and the asks of it, stop waiting."""
        peers, node.lane_peers, node.lanes_to = node.lane_peers, set(), set()
        for peer in peers:
            peer.lane_peers.discard(node)
            peer.lanes_to.discard(node)
        for target in node.lane_asks:
            target.lane_asked_by.discard(node)
        for asker in node.lane_asked_by:
            asker.lane_asks.discard(node)
        node.lane_asks, node.lane_asked_by = set(), set()
        return peers

    def _ask(self, sender: NodeRecord, to: str, target: NodeRecord | None) -> list[Instruction]:
        if target is not None and target in sender.lane_asks:
            # Asked already, not answered yet: that answer is this one's too.
            return self._bounded(sender, to, "asked again before the answer")
        reason = None
        if sender.lane is None:
            reason = "this node said no lane in its HELLO"
        elif target is None:
            reason = "not connected"
        elif target is sender or target.lane is None:
            reason = "that node has no lane"
        elif max(len(sender.lane_peers), len(target.lane_peers)) >= self.config.max_lanes:
            reason = f"at most {self.config.max_lanes} lanes per node"
        if reason is not None:
            self.stats["lanes_refused"] += 1
            return [_lane(sender, {"op": "refuse", "from": to, "reason": reason})]
        assert target is not None
        if target in sender.lanes_to:
            reason = "a lane to that node is open already"
        elif len(sender.lane_asks) >= self.config.max_lanes:
            reason = f"at most {self.config.max_lanes} asks waiting for an answer per node"
        if reason is not None:
            refuse = _lane(sender, {"op": "refuse", "from": to, "reason": reason})
            return [refuse, *self._bounded(sender, to, reason)]
        sender.lane_asks.add(target)
        target.lane_asked_by.add(sender)
        ask = {"op": "ask", "from": sender.name, "incarnation": sender.incarnation}
        return [_lane(target, ask)]

    def _bounded(self, sender: NodeRecord, to: str, why: str) -> list[Instruction]:
        """An ask beyond the bounds: counted, and logged the first time this node goes there."""
        self.stats["lane_asks_refused"] += 1
        return self.log_once(sender.identity, f"refused a LANE ask for {to!r}: {why}")

    def _accept(
        self, sender: NodeRecord, target: NodeRecord, header: dict[str, Any]
    ) -> list[Instruction]:
        token = _token(header)
        incarnation = header.get("incarnation")
        if target.incarnation != incarnation:
            return []  # an answer to an earlier incarnation of the asker
        _answered(target, sender)
        if target.lane is None or sender.lane is None:
            return []
        full = max(len(sender.lane_peers), len(target.lane_peers)) >= self.config.max_lanes
        if full and target not in sender.lane_peers:
            self.stats["lanes_refused"] += 1
            reason = f"at most {self.config.max_lanes} lanes per node"
            return [_lane(target, {"op": "refuse", "from": sender.name, "reason": reason})]
        sender.lane_peers.add(target)
        target.lane_peers.add(sender)
        target.lanes_to.add(sender)
        self.stats["lanes_opened"] += 1
        accept = {
            "op": "accept",
            "from": sender.name,
            "incarnation": sender.incarnation,
            "endpoint": sender.lane,
            "lane_key": sender.lane_key,
            "token": token,
        }
        return [_lane(target, accept)]


def _answered(asker: NodeRecord, target: NodeRecord) -> None:
    """``target`` answered ``asker``'s ask (accepted or refused): it no longer waits."""
    asker.lane_asks.discard(target)
    target.lane_asked_by.discard(asker)


def _token(header: dict[str, Any]) -> bytes:
    token: bytes = protocol.field(header, "token", bytes)
    if len(token) != _TOKEN_BYTES:
        raise WireError(f"a lane token is {_TOKEN_BYTES} bytes")
    return token


def _lane(to: NodeRecord, header: dict[str, Any]) -> Send:
    return Send(to.identity, wire.encode(Command.LANE, header))
