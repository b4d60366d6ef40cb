"""Actor commands through the broker: routing by ``to``, refusing forged senders, answering for
missing targets, and the WATCH table that says who hears of a node going down.

Every actor command comes from a registered node (the caller checks), and every one that names
its sender names a pid of that node: ``from`` of LINK, UNLINK, MONITOR, EXIT and SPAWN, ``pid``
of DOWN and SPAWNED, ``ref`` of DEMONITOR. A message that names another node's pid is *forged*:
counted, logged once per peer, and dropped. SEND names no sender, as in Erlang.

NODEDOWN goes only to the nodes that WATCH the name of the node that went down (the nodes with a
link or monitor into it, and those that called ``monitor_node``), so a node's death costs
O(its watchers), not O(nodes); a thousand deaths at once cost O(thousand), not O(thousand²).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from typing import Any

from zimg import protocol, wire
from zimg._broker_records import BrokerConfig, Instruction, NodeRecord, Send
from zimg._dispatch import WorkerIndex
from zimg._errors import WireError
from zimg.wire import Command, Pid

ANY_NODE = "*"
SYSTEM_LIMIT = protocol.SYSTEM_LIMIT


class ActorRouter:
    """Routes actor commands between the nodes of one broker, and keeps who watches whom."""

    def __init__(
        self,
        config: BrokerConfig,
        by_name: dict[str, NodeRecord],
        index: WorkerIndex,
        stats: dict[str, int],
        log_once: Callable[[bytes, str], list[Instruction]],
    ) -> None:
        self.config = config
        self.by_name = by_name
        self.index = index
        self.stats = stats
        self.log_once = log_once
        self.watchers: dict[str, set[NodeRecord]] = {}
        self.watch_total = 0

    # ------------------------------------------------------------------ routing

    def forward_target(self, frames: Sequence[Any]) -> NodeRecord | None:
        """The node a SEND to a live pid goes to, read from its first header entry alone
        (``wire.peek_to``); None when that is not enough to tell (decode it fully)."""
        peeked = wire.peek_to(frames, self.config.limits)
        if peeked is None or peeked[0] is not Command.SEND:
            return None
        to = peeked[1]
        target = self.by_name.get(to.node)
        if target is None or target.incarnation != to.incarnation:
            return None
        return target

    def route(
        self, sender: NodeRecord, cmd: Command, header: dict[str, Any], frames: Sequence[Any]
    ) -> list[Instruction]:
        """Forward an actor command to the node its ``to`` names, or answer for a missing one.

        ``to`` is a Pid, a ``(registered name, node)`` pair, or (SPAWN) a node name or ``"*"``
        for the least-loaded worker. A pid of an earlier incarnation of a live node is dead.

        Raises:
            WireError: ``to`` is none of those (the broker counts it as malformed).
        """
        own = wire.SENDER_FIELD.get(cmd)
        if own is not None and not sender.owns(header.get(own)):
            return self._forged(sender, cmd, own)
        if (
            cmd is Command.SPAWNED
            and header.get("pid") is not None
            and not sender.owns(header.get("pid"))
        ):
            return self._forged(sender, cmd, "pid")
        to = header.get("to")
        incarnation: int | None = None
        target: NodeRecord | None
        if isinstance(to, Pid):
            name: Any = to.node
            incarnation = to.incarnation
        elif isinstance(to, tuple | list) and len(to) == 2:
            name = to[1]
            if type(to[0]) is not str:
                raise WireError("a registered name in 'to' must be a str")
        else:
            name = to
        if type(name) is not str:
            # Never compared with anything: an array compared with a str is an array whose
            # truth raises (a SPAWN "to" an array stopped the broker).
            raise WireError("'to' must be a pid, a (name, node) pair of strs, or a node name")
        if cmd is Command.SPAWN and name == ANY_NODE:
            target = self.index.pick_any()
        else:
            target = self.by_name.get(name)
        if target is not None and incarnation in (None, target.incarnation):
            return [Send(target.identity, frames)]
        self.stats["unroutable"] += 1
        reason = protocol.NOPROC if target is not None else protocol.NOCONNECTION
        return _answer_for(sender, cmd, header, reason, name)

    def _forged(self, sender: NodeRecord, cmd: Command, field: str) -> list[Instruction]:
        self.stats["forged"] += 1
        return self.log_once(
            sender.identity,
            f"dropped a {cmd.name} whose {field!r} is not a pid of {sender.name}: forged",
        )

    # ------------------------------------------------------------------ watches

    def watch(self, node: NodeRecord, header: dict[str, Any]) -> list[Instruction]:
        """WATCH: send ``node`` NODEDOWN when a node of that name goes down; at once if none
        (of that incarnation) is up now.

        Raises:
            WireError: the header is malformed.
        """
        name = protocol.field(header, "node", str)
        try:
            protocol.check_name(name)
        except ValueError as exc:
            raise WireError(str(exc)) from None
        incarnation = header.get("incarnation")
        if incarnation is not None and type(incarnation) is not int:
            raise WireError("header field 'incarnation' must be int or nil")
        if name not in node.watching:
            if (
                len(node.watching) >= self.config.max_watches
                or self.watch_total >= self.config.max_watch_total
            ):
                self.stats["watch_refused"] += 1
                out = self.log_once(
                    node.identity,
                    f"refused a WATCH of {name}: {len(node.watching)} watches held "
                    f"(limit {self.config.max_watches} per node, {self.config.max_watch_total} "
                    "in all)",
                )
                return [*out, _nodedown(node, name, incarnation, SYSTEM_LIMIT)]
            node.watching.add(name)
            self.watchers.setdefault(name, set()).add(node)
            self.watch_total += 1
        target = self.by_name.get(name)
        if target is None or (incarnation is not None and target.incarnation != incarnation):
            return [_nodedown(node, name, incarnation, protocol.NOCONNECTION)]
        return []

    def unwatch(self, node: NodeRecord, header: dict[str, Any]) -> list[Instruction]:
        """UNWATCH: no more NODEDOWN for that name. No answer."""
        name = protocol.field(header, "node", str)
        if name in node.watching:
            self._drop_watch(node, name)
        return []

    def node_gone(
        self, node: NodeRecord, reason: str, lane_peers: Collection[NodeRecord] = ()
    ) -> list[Instruction]:
        """``node`` is down: tell its watchers and its lane peers (NODEDOWN), and forget its
        own watches."""
        for name in list(node.watching):
            self._drop_watch(node, name)
        watchers = self.watchers.get(node.name, set())
        if lane_peers:
            watchers = watchers | set(lane_peers)
        if not watchers:
            return []
        notice = wire.encode(
            Command.NODEDOWN,
            {"node": node.name, "incarnation": node.incarnation, "reason": reason},
        )
        return [Send(w.identity, notice) for w in watchers if w is not node]

    def _drop_watch(self, node: NodeRecord, name: str) -> None:
        node.watching.discard(name)
        self.watch_total -= 1
        watchers = self.watchers.get(name)
        if watchers is not None:
            watchers.discard(node)
            if not watchers:
                del self.watchers[name]


def _nodedown(to: NodeRecord, name: str, incarnation: Any, reason: str) -> Send:
    header = {"node": name, "incarnation": incarnation, "reason": reason}
    return Send(to.identity, wire.encode(Command.NODEDOWN, header))


def _answer_for(
    sender: NodeRecord, cmd: Command, header: dict[str, Any], reason: str, name: Any
) -> list[Instruction]:
    """What a missing target would have said: a dead pid answers noproc, a gone node
    noconnection. Messages that expect no answer (SEND, ...) are dropped: at most once."""
    to, origin, ref = header.get("to"), header.get("from"), header.get("ref")
    if not isinstance(origin, Pid):
        return []
    if cmd is Command.MONITOR and isinstance(to, Pid):
        reply = {"to": origin, "ref": ref, "pid": to, "reason": reason}
        return [Send(sender.identity, wire.encode(Command.DOWN, reply))]
    if cmd is Command.LINK and isinstance(to, Pid):
        reply = {"to": origin, "from": to, "reason": reason, "link": True}
        return [Send(sender.identity, wire.encode(Command.EXIT, reply))]
    if cmd is Command.SPAWN:
        text = (
            "no worker node is connected" if name == ANY_NODE else f"node {name!r} is not connected"
        )
        reply = {"to": origin, "ref": ref, "pid": None, "error": text}
        return [Send(sender.identity, wire.encode(Command.SPAWNED, reply))]
    return []
