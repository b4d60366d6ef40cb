"""Pure broker logic: events in, instructions out. No sockets, no clock of its own.

The broker loop (``zimg.broker``) feeds this state machine with what happened and carries out the
instructions it returns:

- ``on_message(identity, frames, now)``: a multipart message arrived from ``identity``
  (``forward_target`` and ``heard`` are its two fast paths: a SEND to a live pid, a HEARTBEAT);
- ``on_tick(now, drained_at)``: time passed (heartbeats, silent nodes, job deadlines);
- ``on_unreachable(identity, now)``: a send to ``identity`` failed because its connection is gone
  (the node is declared down by ``on_tick`` once the loop has read what it sent before);
- ``on_probe(identity, reachable, now)``: the answer to a :class:`Probe` instruction;
- ``on_backlog(dropped=...)``, ``on_backlog_unroutable(n)``: what the loop did with messages it
  could not send at once (counted only: the loop owns its backlog);
- ``on_internal_error()``: the loop dropped a message that this state machine raised on.

Instructions are :class:`Send`, :class:`SendMany`, :class:`Probe` and :class:`Log`. Every method
takes ``now`` in seconds, so tests drive it with a fake clock.

Every per-event cost is independent of the number of nodes N (O(1) or O(log N)): the worker pick
is an index (``_dispatch``), timers sit in heaps, NODEDOWN goes only to watchers
(``_broker_actors``), and a client's jobs are found through the client. Failures found while
sending are reported back one at a time by the loop (``on_unreachable``), never recursively.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Collection, Sequence
from typing import Any

from zimg import protocol, wire
from zimg._broker_actors import ActorRouter
from zimg._broker_job_flow import JobFlow, result_head
from zimg._broker_jobs import JobTable
from zimg._broker_lanes import LaneIntroductions, hello_lane
from zimg._broker_liveness import Liveness
from zimg._broker_pages import NodePages, down_entries
from zimg._broker_records import (
    BrokerConfig,
    Instruction,
    Log,
    NodeRecord,
    Probe,
    Send,
    SendMany,
    TokenBucket,
)
from zimg._dispatch import WorkerIndex
from zimg._errors import WireError
from zimg._placement import Placement
from zimg.wire import Command

__all__ = [
    "BrokerConfig",
    "BrokerState",
    "Instruction",
    "Log",
    "NodeRecord",
    "Probe",
    "Send",
    "SendMany",
    "result_head",
]

STATS = (
    "messages",
    "malformed",
    "unknown_peer",
    "rejected",
    "forged",
    "throttled",
    "jobs_received",
    "jobs_refused",
    "jobs_dispatched",
    "jobs_done",
    "jobs_requeued",
    "jobs_expired",
    "jobs_failed",
    "late_results",
    "unroutable",
    "nodes_down",
    "watch_refused",
    "backlogged",
    "dropped",
    "internal_errors",
    "lanes_opened",
    "lanes_refused",
    "lane_asks_refused",
)
# The counts a node's heartbeat may carry (``NodeRecord`` has a field for each).
_REPORTED = (
    "malformed",
    "dropped",
    "lane_sent",
    "lane_received",
    "lane_refused",
    "lane_lost",
    "lane_broken",
)
_MAX_LOGGED_PEERS = 1024
MAX_JOB_ID_CHARS = 128  # a str job id; ints are 64-bit by the wire's rules
_WARN_AT = (0.8, 0.95)  # shares of the node limit at which the broker warns
RECENT_DOWNS = 32  # nodes gone, with why, that NODES reports (for dashboards)


class _Refused(Exception):
    def __init__(self, reason: str, code: str) -> None:
        super().__init__(reason)
        self.code = code


class BrokerState:
    """The broker's node table, jobs and routing, as a pure state machine.

    Args:
        config: the settings.
        now: the current time (seconds, any origin).
        epoch: this broker's random epoch (nodes tell a restart by it).
        key_names: with CURVE, the names of every authorised key (a node name belongs to the
            longest key name it starts with, see ``protocol.name_allowed``).
    """

    def __init__(
        self,
        config: BrokerConfig | None = None,
        *,
        now: float,
        epoch: int,
        key_names: Collection[str] = (),
    ) -> None:
        self.config = cfg = config or BrokerConfig()
        self.epoch = epoch
        self.started_at = now
        self.key_names = frozenset(key_names)
        self.nodes: dict[bytes, NodeRecord] = {}
        self.by_name: dict[str, NodeRecord] = {}
        self.stats: dict[str, int] = dict.fromkeys(STATS, 0)
        self.index = WorkerIndex(cfg.cpu_slots)
        self.table = JobTable(cfg)
        self.actors = ActorRouter(cfg, self.by_name, self.index, self.stats, self._log_once)
        self.lanes = LaneIntroductions(cfg, self.by_name, self.stats, self._log_once)
        self.jobs = JobFlow(cfg, self.nodes, self.table, self.index, self.stats, self._log_once)
        self.node_limit = cfg.max_nodes
        self.node_limit_fix = "start the broker with a larger --max-nodes"
        self.liveness = Liveness(cfg, now)
        self._beat = wire.encode(Command.HEARTBEAT, {})
        self._anonymous_pages = TokenBucket(cfg.nodes_bytes_per_s, now)
        self.pages = NodePages(self.by_name, cfg.nodes_page_bytes)
        self._warned = 0  # how many of _WARN_AT the node count has passed
        self._pending_hello: dict[bytes, tuple[bytes, dict[str, Any], str | None]] = {}
        self._logged_peers: set[bytes] = set()
        # Nodes a send found unreachable, not yet declared down (``on_unreachable``).
        self._unreachable: dict[bytes, NodeRecord] = {}
        self.downs: deque[dict[str, Any]] = deque(maxlen=RECENT_DOWNS)
        # A broker of a failover pair: its role and state, in every NODES page (``failover``).
        self.failover_report: Callable[[float], dict[str, Any]] | None = None

    @property
    def queue_length(self) -> int:
        """Jobs waiting for a worker."""
        return self.table.queued

    # ------------------------------------------------------------------ events

    def on_message(
        self, identity: bytes, frames: Sequence[Any], now: float, user_id: str | None = None
    ) -> list[Instruction]:
        """Handle one message from ``identity`` (frames without the routing frame).

        ``user_id`` is the name the ZAP handler bound to the sender's key (CURVE), or None.
        """
        target = self.forward_target(identity, frames, now, user_id)
        if target is not None:
            return [Send(target, frames)]
        return self.on_unforwarded(identity, frames, now, user_id)

    def forward_target(
        self, identity: bytes, frames: Sequence[Any], now: float, user_id: str | None = None
    ) -> bytes | None:
        """The common case of :meth:`on_message`, on its own for the broker's loop: if this is
        a SEND from a registered node to a pid of a live node, count it and return the routing
        id to forward it to, unread (the receiving node decodes and counts the rest). None
        otherwise, with nothing counted: pass the message to :meth:`on_unforwarded`."""
        node = self.nodes.get(identity)
        if node is None or node.user_id != user_id:
            return None
        target = self.actors.forward_target(frames)
        if target is None:
            return None
        self.stats["messages"] += 1
        node.last_seen = now
        return target.identity

    def heard(self, identity: bytes, now: float, user_id: str | None = None) -> bool:
        """An empty HEARTBEAT came from ``identity``: note it if that is a registered node (True);
        False means "not handled, pass it to :meth:`on_unforwarded`"."""
        node = self.nodes.get(identity)
        if node is None or node.user_id != user_id:
            return False
        self.stats["messages"] += 1
        node.last_seen = now
        return True

    def on_unforwarded(
        self, identity: bytes, frames: Sequence[Any], now: float, user_id: str | None = None
    ) -> list[Instruction]:
        """:meth:`on_message` for a message that :meth:`forward_target` did not forward."""
        self.stats["messages"] += 1
        node = self.nodes.get(identity)
        command = wire.command_of(frames)
        if (
            command is Command.RESULT
            and node is not None
            and node.user_id == user_id
            and (head := result_head(frames, self.config.limits, command)) is not None
        ):
            # A RESULT settled on its first entries, and forwarded verbatim.
            node.last_seen = now
            return self.jobs.result(node, head, frames, now)
        try:
            # A JOB's arrays are checked but not built: the broker forwards them unread.
            msg = wire.decode(frames, self.config.limits, arrays=command is not Command.JOB)
            if msg.command is Command.HELLO:
                return self._hello(identity, msg.header, now, user_id)
            if node is not None and node.user_id != user_id:
                # Another key speaks under this node's routing id: refuse it.
                self.stats["rejected"] += 1
                return self._log_once(identity, f"key {user_id!r} may not speak for {node.name}")
            return self._dispatch_command(identity, msg, frames, now)
        except WireError as exc:
            if wire.is_v1_hello(frames):
                # A node of an older zimg: tell it why, in words it can read.
                reason = (
                    f"protocol version 1 is not supported (this broker speaks "
                    f"{protocol.PROTOCOL_VERSION}): run the same zimg version on every node"
                )
                self.stats["rejected"] += 1
                return [Send(identity, wire.v1_reject(reason))]
            return self._malformed(identity, str(exc))

    def on_tick(self, now: float, drained_at: float | None = None) -> list[Instruction]:
        """Send due heartbeats, declare silent nodes dead, take back jobs past their deadline.

        ``drained_at``: the last time the loop found no message waiting. A node is dead only if
        it sent nothing for longer than the liveness bound before that moment, so a node whose
        heartbeats are still queued in the socket (the broker is behind) is never declared dead.
        None means now (nothing is waiting).
        """
        out: list[Instruction] = []
        beats = self.liveness.beats_due(self.nodes, now)
        if beats:
            out.append(SendMany(beats, self._beat))
        limit = now if drained_at is None else min(now, drained_at)
        for node in self.liveness.silent(self.nodes, limit):
            out.extend(self._node_down(node, protocol.NOCONNECTION, now, "missed heartbeats"))
        if self._unreachable:
            out.extend(self._declare_unreachable(limit, now))
        for job in self.table.expired(now):
            out.extend(self.jobs.expire(job, now))
        return out

    def on_unreachable(self, identity: bytes, now: float) -> list[Instruction]:
        """A send to ``identity`` failed at ``now``: its connection is gone. The message is
        dropped (counted ``unroutable``, as is every later one to it).

        The node is not declared down yet: what it sent before its connection closed (its last
        exit signals, its DISCONNECT) may still wait, unread, in the broker's socket. It is
        *marked*: no new job goes to it, and :meth:`on_tick` declares it down (``noconnection``,
        "connection closed") once the loop has found no message waiting after ``now`` (its
        ``drained_at``), unless one of those messages ended it first (a DISCONNECT: it left,
        with its own reason). A HELLO from it in the same session clears the mark (a node that
        reconnected with the same routing id); the WELCOME that answers it tests the connection
        again.
        """
        self.stats["unroutable"] += 1
        node = self.nodes.get(identity)
        if node is not None:
            self._mark_unreachable(node, now)
        return []

    def on_backlog(self, *, dropped: bool) -> None:
        """The loop could not send a message at once: it queued it behind the peer's full
        queue (a backlog started, ``dropped=False``), or dropped it because the backlogs are
        at their bounds (``dropped=True``). Counted as ``backlogged`` and ``dropped``."""
        self.stats["dropped" if dropped else "backlogged"] += 1

    def on_internal_error(self) -> int:
        """The loop dropped a message this state machine raised on (a bug, not the peer's
        fault by the protocol's rules); returns how many so far."""
        self.stats["internal_errors"] += 1
        return self.stats["internal_errors"]

    def on_backlog_unroutable(self, messages: int) -> None:
        """The loop dropped ``messages`` queued for a peer that is no longer a node."""
        self.stats["unroutable"] += messages

    def on_probe(self, identity: bytes, reachable: bool, now: float) -> list[Instruction]:
        """The answer to a :class:`Probe` of a node whose name a newcomer asked for."""
        pending = self._pending_hello.pop(identity, None)
        if pending is None:
            return []
        new_identity, header, user_id = pending
        holder = self.nodes.get(identity)
        if reachable and holder is not None:
            return self._reject_name(new_identity, header["name"])
        if holder is not None:
            # Its connection is gone, but what it sent before may still wait unread: the
            # newcomer is admitted once the holder is down (``_node_down``).
            self._mark_unreachable(holder, now)
            self._pending_hello[identity] = pending
            return []
        if self.by_name.get(header["name"]) is None:
            return self._admit(new_identity, header, now, user_id)
        return []

    @property
    def interval_s(self) -> float:
        """The heartbeat interval the nodes are told now (it grows with the cluster)."""
        return self.liveness.interval_s

    @property
    def expiry_s(self) -> float:
        """How long a node may stay silent before it is declared dead, now."""
        return self.liveness.expiry_s

    def next_deadline(self) -> float:
        """The latest time by which ``on_tick`` should be called again."""
        deadline = min(self.liveness.next_deadline(len(self.nodes)), self.table.next_deadline())
        for node in self._unreachable.values():  # due as soon as the loop has drained
            if node.unreachable_at is not None:
                deadline = min(deadline, node.unreachable_at)
        return deadline

    # ------------------------------------------------------------------ commands

    def _dispatch_command(
        self, identity: bytes, msg: wire.Message, frames: Sequence[Any], now: float
    ) -> list[Instruction]:
        cmd = msg.command
        node = self.nodes.get(identity)
        if cmd is Command.NODES:
            return self._nodes(identity, node, msg.header, now)
        if node is None:
            self.stats["unknown_peer"] += 1
            if cmd in (Command.DISCONNECT, Command.REJECT):
                return []
            reason = "unknown node: send HELLO first"
            return [Send(identity, wire.encode(Command.DISCONNECT, {"reason": reason}))]
        node.last_seen = now
        if cmd is Command.HEARTBEAT:
            for key in _REPORTED:
                reported = msg.header.get(key)
                if type(reported) is int and reported >= 0:
                    setattr(node, key, reported)
            return []
        if cmd is Command.JOB:
            return self.jobs.job(node, msg.header, frames, now)
        if cmd is Command.RESULT:
            return self.jobs.result(node, msg.header, frames, now)
        if cmd is Command.DISCONNECT:
            return self._node_down(node, protocol.NORMAL, now, "left")
        if cmd is Command.WATCH:
            return self.actors.watch(node, msg.header)
        if cmd is Command.UNWATCH:
            return self.actors.unwatch(node, msg.header)
        if cmd in wire.ACTOR_COMMANDS:
            return self.actors.route(node, cmd, msg.header, frames)
        if cmd is Command.LANE:
            return self.lanes.on_lane(node, msg.header)
        return self._malformed(identity, f"command {cmd.name} is not accepted by the broker")

    def _hello(
        self, identity: bytes, header: dict[str, Any], now: float, user_id: str | None
    ) -> list[Instruction]:
        known = self.nodes.get(identity)
        try:
            name = _check_hello(header)
            if user_id is not None and not protocol.name_allowed(name, user_id, self.key_names):
                raise _Refused(
                    f"this node's key is registered as {user_id!r}; it cannot join as {name!r}",
                    protocol.REJECT_KEY,
                )
            if known is not None and known.name != name:
                raise _Refused(
                    f"this connection joined as {known.name!r}; it cannot become {name!r}",
                    protocol.REJECT_INVALID,
                )
            if known is None and len(self.nodes) >= self.node_limit:
                raise _Refused(
                    f"the broker is at its limit of {self.node_limit} nodes; {self.node_limit_fix}",
                    protocol.REJECT_LIMIT,
                )
        except _Refused as exc:
            return self._refuse(identity, str(exc), exc.code)
        if known is not None:
            if header.get("session", 0) != known.session:
                # The node lost its session (it stopped hearing from us) and may have dropped
                # messages: end the old session as a disconnection, then start a new one. It
                # keeps its name: a newcomer waiting for it (``on_probe``) asks again later.
                self._pending_hello.pop(identity, None)
                out = self._node_down(
                    known, protocol.NOCONNECTION, now, "rejoined", spend_attempts=False
                )
                return [*out, *self._admit(identity, header, now, user_id)]
            return self._admit(identity, header, now, user_id)
        holder = self.by_name.get(name)
        if holder is not None:
            self._pending_hello[holder.identity] = (identity, header, user_id)
            return [Probe(holder.identity)]
        return self._admit(identity, header, now, user_id)

    def _refuse(self, identity: bytes, reason: str, code: str) -> list[Instruction]:
        """Answer a HELLO with REJECT, so that the node stops asking and can say why."""
        self.stats["rejected"] += 1
        out = self._log_once(identity, f"refused a HELLO: {reason}")
        reply = wire.encode(Command.REJECT, {"reason": reason, "code": code})
        return [Send(identity, reply), *out]

    def _admit(
        self, identity: bytes, header: dict[str, Any], now: float, user_id: str | None
    ) -> list[Instruction]:
        name = header["name"]
        node = self.nodes.get(identity)
        out: list[Instruction] = []
        placement = _placement_of(header)
        lane, lane_key = hello_lane(header)
        if node is None:
            node = NodeRecord(
                name=name,
                identity=identity,
                role=header["role"],
                capacity=header["capacity"],
                incarnation=header["incarnation"],
                joined_at=now,
                last_seen=now,
                session=header.get("session", 0),
                placement=placement,
                user_id=user_id,
                pages=TokenBucket(self.config.nodes_bytes_per_s, now),
                lane=lane,
                lane_key=lane_key,
            )
            self.nodes[identity] = node
            self.by_name[name] = node
            self.pages.changed()
            self.liveness.add(node, now)
            if node.is_worker:
                self.index.add(node)
            out.append(Log(logging.INFO, f"node {name} joined as {node.role}"))
            out.extend(self._warn_if_near_the_limit())
            out.extend(self._widen_heartbeats(node))
        else:
            # A repeated HELLO of this session: take its credit and placement as they are now.
            node.last_seen = now
            if node.unreachable_at is not None:
                # It speaks, so it may have reconnected with the same routing id: the WELCOME
                # below finds out (a failed send marks it again).
                node.unreachable_at = None
                del self._unreachable[identity]
            if node.is_worker:
                self.index.remove(node)
            node.capacity, node.placement = header["capacity"], placement
            node.lane, node.lane_key = lane, lane_key
            if node.is_worker:
                self.index.add(node)
        out.append(Send(identity, self._welcome(node)))
        out.extend(self.jobs.assign(now))
        return out

    def _welcome(self, node: NodeRecord) -> list[Any]:
        welcome = {
            "name": node.name,
            "epoch": self.epoch,
            "heartbeat_interval_s": self.interval_s,
            "liveness": self.config.liveness,
            "version": protocol.PROTOCOL_VERSION,
        }
        return wire.encode(Command.WELCOME, welcome)

    def _widen_heartbeats(self, newcomer: NodeRecord) -> list[Instruction]:
        """If the cluster outgrew its heartbeat interval, double it and tell every node (a
        WELCOME to a node that is ready only updates its interval and liveness)."""
        if not self.liveness.widen(len(self.nodes)):
            return []
        text = f"{len(self.nodes)} nodes: the heartbeat interval is now {self.interval_s:g} s"
        out: list[Instruction] = [Log(logging.INFO, text)]
        out.extend(
            Send(n.identity, self._welcome(n)) for n in self.nodes.values() if n is not newcomer
        )
        return out

    def _warn_if_near_the_limit(self) -> list[Instruction]:
        share = len(self.nodes) / max(1, self.node_limit)
        if share < 0.7:
            self._warned = 0
        if self._warned < len(_WARN_AT) and share >= _WARN_AT[self._warned]:
            self._warned += 1
            text = (
                f"{len(self.nodes)} nodes: near this broker's limit of {self.node_limit} "
                f"(new nodes are refused beyond it; {self.node_limit_fix})"
            )
            return [Log(logging.WARNING, text)]
        return []

    def _reject_name(self, identity: bytes, name: str) -> list[Instruction]:
        text = f"node name {name!r} is held by a live node; pick another --name"
        return self._refuse(identity, text, protocol.REJECT_NAME_TAKEN)

    # ------------------------------------------------------------------ node death

    def _node_down(
        self,
        node: NodeRecord,
        reason: str,
        now: float,
        why: str,
        *,
        spend_attempts: bool | None = None,
    ) -> list[Instruction]:
        """Forget a node: tell its watchers (NODEDOWN), requeue its jobs, drop its clients'
        jobs. Costs O(its jobs + its watchers + its watches), whatever the number of nodes.

        A job it held spends an attempt unless the node left gracefully (or ``spend_attempts``
        says otherwise).
        """
        if self.nodes.get(node.identity) is not node:
            return []
        del self.nodes[node.identity]
        if node.unreachable_at is not None:
            del self._unreachable[node.identity]
        if self.by_name.get(node.name) is node:
            del self.by_name[node.name]
        self.pages.changed()
        self.stats["nodes_down"] += 1
        self.downs.append(
            {
                "name": node.name,
                "role": node.role,
                "incarnation": node.incarnation,
                "reason": reason,
                "why": why,
                "at": now,
            }
        )
        self.index.remove(node)
        out: list[Instruction] = [Log(logging.INFO, f"node {node.name} is down ({why})")]
        out.extend(self.actors.node_gone(node, reason, self.lanes.node_gone(node)))
        spend = reason != protocol.NORMAL if spend_attempts is None else spend_attempts
        out.extend(self.jobs.worker_gone(node, spend=spend, now=now))
        newcomer = self._pending_hello.pop(node.identity, None)
        if newcomer is not None and self.by_name.get(newcomer[1]["name"]) is None:
            # A node that asked for this one's name while it was unreachable (``on_probe``).
            new_identity, header, user_id = newcomer
            out.extend(self._admit(new_identity, header, now, user_id))
        return out

    def _mark_unreachable(self, node: NodeRecord, now: float) -> None:
        if node.unreachable_at is None:
            node.unreachable_at = now
            self._unreachable[node.identity] = node
            self.index.remove(node)  # no new jobs or spawns for it

    def _declare_unreachable(self, drained_at: float, now: float) -> list[Instruction]:
        """Declare down the nodes marked unreachable before ``drained_at``: the loop has read
        everything they sent before their connection closed."""
        gone = [
            n
            for n in self._unreachable.values()
            if n.unreachable_at is not None and n.unreachable_at < drained_at
        ]
        out: list[Instruction] = []
        for node in gone:
            out.extend(self._node_down(node, protocol.NOCONNECTION, now, "connection closed"))
        return out

    # ------------------------------------------------------------------ reporting

    def _nodes(
        self, identity: bytes, node: NodeRecord | None, header: dict[str, Any], now: float
    ) -> list[Instruction]:
        after = header.get("after")
        if after is not None and type(after) is not str:
            raise WireError("header field 'after' must be str")
        bucket = node.pages if node is not None else self._anonymous_pages
        if not bucket.ready(now, self.config.nodes_bytes_per_s):
            self.stats["throttled"] += 1
            return self._log_once(identity, "dropped NODES requests beyond the rate limit")
        page = self.nodes_page(now, after)
        bucket.spend(page.pop("_cost"))
        return [Send(identity, wire.encode(Command.NODES, page))]

    def nodes_page(self, now: float, after: str | None = None) -> dict[str, Any]:
        """One page of the answer to ``NODES``: the nodes whose names sort after ``after``, as
        many as fit in about ``nodes_page_bytes``, then the queue length and the counters."""
        page, more, count, size = self.pages.page(now, after)
        downs: list[dict[str, Any]] = []
        if after is None:  # the first page: the nodes that went down lately, newest last
            downs, downs_size = down_entries(self.downs, now)
            size += downs_size
        return {
            "_cost": size + 512,  # what the page costs the asker's budget, in bytes
            "nodes": page,
            "more": more,
            "count": count,
            "queued": self.table.queued,
            "stats": dict(self.stats),
            "epoch": self.epoch,
            "uptime_s": round(now - self.started_at, 3),
            "downs": downs,
            **({} if self.failover_report is None else {"failover": self.failover_report(now)}),
        }

    def nodes_report(self, now: float) -> dict[str, Any]:
        """Every page of the NODES answer at once (for callers in this process)."""
        report = self.nodes_page(now)
        while report["more"]:
            page = self.nodes_page(now, report["nodes"][-1]["name"])
            report["nodes"] += page["nodes"]
            report["more"] = page["more"]
        del report["_cost"]
        return report

    def _malformed(self, identity: bytes, text: str) -> list[Instruction]:
        self.stats["malformed"] += 1
        return self._log_once(identity, f"dropped a malformed message: {text}")

    def _log_once(self, identity: bytes, text: str) -> list[Instruction]:
        """A warning about ``identity``, only the first time it misbehaves (bounded memory)."""
        if identity in self._logged_peers or len(self._logged_peers) >= _MAX_LOGGED_PEERS:
            return []
        self._logged_peers.add(identity)
        return [Log(logging.WARNING, f"from {identity!r}: {text}")]


def _check_hello(header: dict[str, Any]) -> str:
    """Validate a HELLO header and return the node name; raise _Refused saying what is wrong."""
    try:
        name: str = protocol.field(header, "name", str)
        try:
            protocol.check_name(name)
        except ValueError as exc:
            raise WireError(str(exc)) from None
        role = protocol.field(header, "role", str)
        if role not in protocol.ROLES:
            raise WireError(f"role {role!r} is not one of {protocol.ROLES}")
        capacity = protocol.field(header, "capacity", int)
        if not 0 <= capacity <= protocol.MAX_CAPACITY:
            raise WireError(f"capacity {capacity} is outside 0..{protocol.MAX_CAPACITY}")
        protocol.field(header, "incarnation", int)
        if "session" in header:
            protocol.field(header, "session", int)
        version = protocol.field(header, "version", int)
        _placement_of(header)
        hello_lane(header)
    except WireError as exc:
        raise _Refused(str(exc), protocol.REJECT_INVALID) from None
    if version != protocol.PROTOCOL_VERSION:
        raise _Refused(
            f"protocol version {version} is not supported (this broker speaks "
            f"{protocol.PROTOCOL_VERSION}): run the same zimg version on every node",
            protocol.REJECT_VERSION,
        )
    return name


def _placement_of(header: dict[str, Any]) -> Placement | None:
    """A worker's placement from its HELLO (clients run no jobs: they have none)."""
    if header["role"] != protocol.ROLE_WORKER:
        return None
    return Placement.from_hello(header)
