"""Pure broker logic: events in, instructions out. No sockets, no clock of its own.

The broker loop (``zimg.broker``) feeds this state machine with what happened and carries out the
instructions it returns:

- ``on_message(identity, frames, now)``: a multipart message arrived from ``identity``;
- ``on_tick(now)``: time passed (heartbeats, purging silent nodes);
- ``on_unreachable(identity, now)``: a send to ``identity`` failed because its connection is gone;
- ``on_probe(identity, reachable, now)``: the answer to a :class:`Probe` instruction.

Instructions are :class:`Send` (frames to one identity), :class:`Probe` (is this identity still
connected?) and :class:`Log`. Every method takes ``now`` in seconds, so tests drive it with a fake
clock.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from zimg import protocol, wire
from zimg._errors import WireError
from zimg._placement import Placement, host_loads
from zimg.wire import Command, Pid

JobKey = tuple[bytes, Any]


@dataclass(frozen=True, slots=True)
class BrokerConfig:
    """Broker settings. Times are in seconds."""

    heartbeat_interval_s: float = protocol.DEFAULT_HEARTBEAT_INTERVAL_S
    liveness: int = protocol.DEFAULT_LIVENESS
    max_attempts: int = protocol.DEFAULT_MAX_ATTEMPTS
    limits: wire.Limits = wire.DEFAULT_LIMITS
    cpu_slots: bool = True  # a host runs at most one job per CPU (see zimg._placement)

    @property
    def expiry_s(self) -> float:
        """How long a node may stay silent before it is declared dead."""
        return self.heartbeat_interval_s * self.liveness


@dataclass(frozen=True, slots=True)
class Send:
    """Send ``frames`` to the peer with routing id ``identity``."""

    identity: bytes
    frames: Sequence[Any]


@dataclass(frozen=True, slots=True)
class Probe:
    """Find out whether ``identity`` still has a live connection; report with ``on_probe``."""

    identity: bytes


@dataclass(frozen=True, slots=True)
class Log:
    """Log ``text`` at ``level``."""

    level: int
    text: str


Instruction = Send | Probe | Log


@dataclass(slots=True)
class NodeRecord:
    """What the broker knows of one connected node."""

    name: str
    identity: bytes
    role: str
    capacity: int
    incarnation: int
    joined_at: float
    last_seen: float
    active: set[JobKey] = field(default_factory=set)
    done: int = 0
    assigned_seq: int = 0
    session: int = 0
    malformed: int = 0  # as the node last reported (HEARTBEAT): messages it dropped
    placement: Placement | None = None  # a worker's host, CPUs and threads, if it said
    waiting: int = 0  # of its active jobs, those sent ``queued``, not started yet

    def free(self) -> int:
        return self.capacity - len(self.active)

    def running(self) -> int:
        """Its jobs that run now (the others wait for one of these to end)."""
        return len(self.active) - self.waiting


@dataclass(slots=True)
class JobRecord:
    """A job the broker is responsible for until a result goes back to its client."""

    key: JobKey
    header: dict[str, Any]
    attempt: int = 1
    worker: bytes | None = None
    workers_tried: list[str] = field(default_factory=list)


_MAX_LOGGED_PEERS = 1024


class BrokerState:
    """The broker's node table, job queue and routing, as a pure state machine."""

    def __init__(self, config: BrokerConfig | None = None, *, now: float, epoch: int) -> None:
        self.config = config or BrokerConfig()
        self.epoch = epoch
        self.started_at = now
        self.nodes: dict[bytes, NodeRecord] = {}
        self.by_name: dict[str, NodeRecord] = {}
        self.jobs: dict[JobKey, JobRecord] = {}
        self.queue: deque[JobKey] = deque()
        self.next_heartbeat = now + self.config.heartbeat_interval_s
        self.stats: dict[str, int] = dict.fromkeys(
            (
                "messages",
                "malformed",
                "unknown_peer",
                "rejected",
                "jobs_received",
                "jobs_dispatched",
                "jobs_done",
                "jobs_requeued",
                "jobs_failed",
                "late_results",
                "unroutable",
                "nodes_down",
            ),
            0,
        )
        self._pending_hello: dict[bytes, tuple[bytes, dict[str, Any]]] = {}
        self._logged_peers: set[bytes] = set()
        self._seq = 0

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
        an actor message from a registered node to a pid of a live node, count it and return
        the routing id to forward it to, unread (the receiving node decodes and counts the
        rest). None otherwise, with nothing counted: pass the message to
        :meth:`on_unforwarded`."""
        node = self.nodes.get(identity)
        if node is None:
            return None
        peeked = wire.peek_to(frames, self.config.limits)
        if peeked is None:
            return None
        to = peeked[1]
        target = self.by_name.get(to.node)
        if (
            target is None
            or target.incarnation != to.incarnation
            or (user_id is not None and not protocol.name_allowed(node.name, user_id))
        ):
            return None
        self.stats["messages"] += 1
        node.last_seen = now
        return target.identity

    def on_unforwarded(
        self, identity: bytes, frames: Sequence[Any], now: float, user_id: str | None = None
    ) -> list[Instruction]:
        """:meth:`on_message` for a message that :meth:`forward_target` did not forward."""
        self.stats["messages"] += 1
        node = self.nodes.get(identity)
        if (
            node is not None
            and (head := result_head(frames, self.config.limits)) is not None
            and (user_id is None or protocol.name_allowed(node.name, user_id))
        ):
            # A RESULT settled on its first entries, and forwarded verbatim.
            node.last_seen = now
            return self._result(node, head, frames, now)
        try:
            msg = wire.decode(frames, self.config.limits)
            if msg.command is Command.HELLO:
                return self._hello(identity, msg.header, now, user_id)
            if (
                node is not None
                and user_id is not None
                and not protocol.name_allowed(node.name, user_id)
            ):
                # Another key took over this node's routing id (ROUTER_HANDOVER): refuse it.
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

    def on_tick(self, now: float) -> list[Instruction]:
        """Send due heartbeats and declare silent nodes dead."""
        out: list[Instruction] = []
        if now >= self.next_heartbeat:
            beat = wire.encode(Command.HEARTBEAT, {})
            out.extend(Send(ident, beat) for ident in self.nodes)
            self.next_heartbeat = now + self.config.heartbeat_interval_s
        expired = [
            n.identity for n in self.nodes.values() if now - n.last_seen > self.config.expiry_s
        ]
        for ident in expired:
            out.extend(self._node_down(ident, protocol.NOCONNECTION, now, "missed heartbeats"))
        return out

    def on_unreachable(self, identity: bytes, now: float) -> list[Instruction]:
        """A send to ``identity`` failed: its connection is gone, so the node is dead."""
        self.stats["unroutable"] += 1
        if identity in self.nodes:
            return self._node_down(identity, protocol.NOCONNECTION, now, "connection closed")
        return []

    def on_probe(self, identity: bytes, reachable: bool, now: float) -> list[Instruction]:
        """The answer to a :class:`Probe` of a node whose name a newcomer asked for."""
        pending = self._pending_hello.pop(identity, None)
        if pending is None:
            return []
        new_identity, header = pending
        if reachable and identity in self.nodes:
            return self._reject(new_identity, header["name"], now)
        out: list[Instruction] = []
        if identity in self.nodes:
            out.extend(self._node_down(identity, protocol.NOCONNECTION, now, "connection closed"))
        out.extend(self._admit(new_identity, header, now))
        return out

    def next_deadline(self) -> float:
        """The latest time by which ``on_tick`` should be called again."""
        deadline = self.next_heartbeat
        for node in self.nodes.values():
            deadline = min(deadline, node.last_seen + self.config.expiry_s)
        return deadline

    # ------------------------------------------------------------------ commands

    def _dispatch_command(
        self, identity: bytes, msg: wire.Message, frames: Sequence[Any], now: float
    ) -> list[Instruction]:
        cmd = msg.command
        if cmd is Command.NODES:
            return [Send(identity, wire.encode(Command.NODES, self.nodes_report(now)))]
        node = self.nodes.get(identity)
        if node is None:
            self.stats["unknown_peer"] += 1
            if cmd in (Command.DISCONNECT, Command.REJECT):
                return []
            reason = "unknown node: send HELLO first"
            return [Send(identity, wire.encode(Command.DISCONNECT, {"reason": reason}))]
        node.last_seen = now
        if cmd is Command.HEARTBEAT:
            reported = msg.header.get("malformed")
            if type(reported) is int and reported >= 0:
                node.malformed = reported
            return []
        if cmd is Command.JOB:
            return self._job(node, msg.header, now)
        if cmd is Command.RESULT:
            return self._result(node, msg.header, frames, now)
        if cmd is Command.DISCONNECT:
            return self._node_down(identity, protocol.NORMAL, now, "left")
        if cmd in wire.ACTOR_COMMANDS:
            return self._route(node, cmd, msg.header, frames)
        return self._malformed(identity, f"command {cmd.name} is not accepted by the broker")

    def _hello(
        self, identity: bytes, header: dict[str, Any], now: float, user_id: str | None
    ) -> list[Instruction]:
        try:
            name = _check_hello(header)
            if user_id is not None and not protocol.name_allowed(name, user_id):
                raise WireError(
                    f"this node's key is registered as {user_id!r}; it cannot join as {name!r}"
                )
        except WireError as exc:
            # Answer, so that the node stops asking and can tell its user why.
            self.stats["rejected"] += 1
            out = self._log_once(identity, f"refused a HELLO: {exc}")
            return [Send(identity, wire.encode(Command.REJECT, {"reason": str(exc)})), *out]
        known = self.nodes.get(identity)
        if known is not None:
            if known.name != name:
                self.stats["rejected"] += 1
                text = f"this connection joined as {known.name!r}; it cannot become {name!r}"
                return [Send(identity, wire.encode(Command.REJECT, {"reason": text}))]
            if header.get("session", 0) != known.session:
                # The node lost its session (it stopped hearing from us) and may have dropped
                # messages: end the old session as a disconnection, then start a new one.
                out = self._node_down(
                    identity, protocol.NOCONNECTION, now, "rejoined", spend_attempts=False
                )
                return [*out, *self._admit(identity, header, now)]
        holder = self.by_name.get(name)
        if holder is not None and holder.identity != identity:
            self._pending_hello[holder.identity] = (identity, header)
            return [Probe(holder.identity)]
        return self._admit(identity, header, now)

    def _admit(self, identity: bytes, header: dict[str, Any], now: float) -> list[Instruction]:
        name = header["name"]
        node = self.nodes.get(identity)
        out: list[Instruction] = []
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
                placement=_placement_of(header),
            )
            self.nodes[identity] = node
            self.by_name[name] = node
            out.append(Log(logging.INFO, f"node {name} joined as {node.role}"))
        else:
            node.capacity = header["capacity"]
            node.placement = _placement_of(header)
            node.last_seen = now
        welcome = {
            "name": name,
            "epoch": self.epoch,
            "heartbeat_interval_s": self.config.heartbeat_interval_s,
            "liveness": self.config.liveness,
            "version": protocol.PROTOCOL_VERSION,
        }
        out.append(Send(identity, wire.encode(Command.WELCOME, welcome)))
        out.extend(self._assign(now))
        return out

    def _reject(self, identity: bytes, name: str, now: float) -> list[Instruction]:
        self.stats["rejected"] += 1
        text = f"node name {name!r} is held by a live node; pick another --name"
        return [
            Send(identity, wire.encode(Command.REJECT, {"reason": text})),
            Log(logging.WARNING, f"refused a second node named {name}"),
        ]

    def _job(self, client: NodeRecord, header: dict[str, Any], now: float) -> list[Instruction]:
        job_id = protocol.field(header, "id", (int, str))
        key: JobKey = (client.identity, job_id)
        if key in self.jobs:
            return []  # a resend of a job we already hold: idempotent
        self.stats["jobs_received"] += 1
        header = {k: v for k, v in header.items() if k not in ("client", "attempt")}
        self.jobs[key] = JobRecord(key, header)
        self.queue.append(key)
        return self._assign(now)

    def _result(
        self, worker: NodeRecord, header: dict[str, Any], frames: Sequence[Any], now: float
    ) -> list[Instruction]:
        job_id = protocol.field(header, "id", (int, str))
        client = protocol.field(header, "client", bytes)
        key: JobKey = (client, job_id)
        job = self.jobs.get(key)
        if key in worker.active:
            worker.active.discard(key)
            worker.done += 1
            if worker.waiting:
                worker.waiting -= 1  # one of its jobs ended: the next in line starts
        elif job is not None and worker.name in job.workers_tried:
            self.stats["late_results"] += 1  # e.g. from a node we had given up on
        else:
            # Not a job this node was given (or one this broker never saw, before a restart):
            # the client resends what it has not received, so dropping loses nothing.
            self.stats["late_results"] += 1
            return self._log_once(
                worker.identity, f"dropped a RESULT for job {job_id!r}: not its job"
            )
        if self.jobs.pop(key, None) is not None:
            self.stats["jobs_done"] += 1
        out: list[Instruction] = []
        if client in self.nodes:
            out.append(Send(client, frames))
        else:
            self.stats["unroutable"] += 1
        out.extend(self._assign(now))
        return out

    def _route(
        self, sender: NodeRecord, cmd: Command, header: dict[str, Any], frames: Sequence[Any]
    ) -> list[Instruction]:
        """Forward an actor command to the node its ``to`` names, or answer for a missing one.

        ``to`` is a Pid, a ``(registered name, node)`` pair, or (SPAWN) a node name or ``"*"``
        for the least-loaded worker. A pid of an earlier incarnation of a live node is dead.
        """
        to = header.get("to")
        incarnation: int | None = None
        target: NodeRecord | None
        if isinstance(to, Pid):
            name: Any = to.node
            incarnation = to.incarnation
        elif isinstance(to, tuple | list) and len(to) == 2:
            name = to[1]
        else:
            name = to
        if cmd is Command.SPAWN and name == _ANY_NODE:
            target = self._pick_any()
        else:
            target = self.by_name.get(name) if isinstance(name, str) else None
        if target is not None and incarnation in (None, target.incarnation):
            return [Send(target.identity, frames)]
        self.stats["unroutable"] += 1
        reason = protocol.NOPROC if target is not None else protocol.NOCONNECTION
        return self._answer_for(sender, cmd, header, reason, name)

    def _pick_any(self) -> NodeRecord | None:
        workers = [n for n in self.nodes.values() if n.role == protocol.ROLE_WORKER]
        if not workers:
            return None
        best = min(workers, key=lambda n: (len(n.active) / max(1, n.capacity), n.assigned_seq))
        self._seq += 1
        best.assigned_seq = self._seq
        return best

    def _answer_for(
        self, sender: NodeRecord, cmd: Command, header: dict[str, Any], reason: str, name: Any
    ) -> list[Instruction]:
        """What the missing target would have said: a dead pid answers noproc, a gone node
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
                "no worker node is connected"
                if name == _ANY_NODE
                else f"node {name!r} is not connected"
            )
            reply = {"to": origin, "ref": ref, "pid": None, "error": text}
            return [Send(sender.identity, wire.encode(Command.SPAWNED, reply))]
        return []

    # ------------------------------------------------------------------ jobs

    def _pick_worker(self) -> tuple[NodeRecord, int] | None:
        """The worker for the next job, and the job's ``queued``: 0 if it starts at once, else
        how many of the worker's jobs run now, one of which it is to wait for. The least loaded
        worker with credit left is picked, then the one that waited longest.

        With CPU slots, a job starts at once only on a host with a CPU free, preferably on a
        worker whose CPUs are all idle. On a host whose CPUs all run jobs it goes to a worker
        that is running one, and waits there; the workers with nothing to run stand by.
        """
        slots = self.config.cpu_slots
        loads = (
            host_loads(
                (n.placement, n.running())
                for n in self.nodes.values()
                if n.placement is not None and n.role == protocol.ROLE_WORKER
            )
            if slots
            else {}
        )
        best: tuple[NodeRecord, int] | None = None
        best_rank: tuple[float, bool, int] | None = None
        for node in self.nodes.values():
            if node.role != protocol.ROLE_WORKER or node.free() <= 0:
                continue
            placed = node.placement
            waits = placed is not None and node.running() >= placed.threads
            shares_cpus = False
            if slots and placed is not None and not waits:
                load = loads[placed.host]
                if not load.has_free_cpu():
                    if not node.active:
                        continue  # idle, on a host whose CPUs all run jobs: it stands by
                    waits = True  # next in line behind the job it runs
                shares_cpus = not placed.cpu_mask & ~load.busy_cpus
            rank = (len(node.active) / node.capacity, shares_cpus, node.assigned_seq)
            if best_rank is None or rank < best_rank:
                best, best_rank = (node, node.running() if waits else 0), rank
        return best

    def _assign(self, now: float) -> list[Instruction]:
        out: list[Instruction] = []
        while self.queue:
            picked = self._pick_worker()
            if picked is None:
                break
            worker, queued = picked
            key = self.queue.popleft()
            job = self.jobs.get(key)
            if job is None or job.worker is not None:
                continue  # finished or cancelled while queued
            header = {**job.header, "client": key[0], "attempt": job.attempt}
            if queued:
                # "Wait while you still run this many": one may have ended since (its RESULT
                # on the way), and then this job starts at once, as this count assumes.
                header["queued"] = queued
            try:
                frames = wire.encode(Command.JOB, header, self.config.limits)
            except WireError as exc:
                out.extend(self._fail_job(job, f"cannot forward the job: {exc}", died=False))
                continue
            job.worker = worker.identity
            job.workers_tried.append(worker.name)
            worker.active.add(key)
            worker.waiting += queued > 0
            self._seq += 1
            worker.assigned_seq = self._seq
            self.stats["jobs_dispatched"] += 1
            out.append(Send(worker.identity, frames))
        return out

    def _fail_job(self, job: JobRecord, text: str, *, died: bool = True) -> list[Instruction]:
        self.stats["jobs_failed"] += 1
        client, job_id = job.key
        del self.jobs[job.key]
        if client not in self.nodes:
            return []
        result = {
            "id": job_id,
            "client": client,
            "ok": False,
            "error": text,
            "node": job.workers_tried[-1] if job.workers_tried else None,
            "attempt": len(job.workers_tried),
            "died": died,
        }
        return [Send(client, wire.encode(Command.RESULT, result))]

    # ------------------------------------------------------------------ node death

    def _node_down(
        self,
        identity: bytes,
        reason: str,
        now: float,
        why: str,
        *,
        spend_attempts: bool | None = None,
    ) -> list[Instruction]:
        """Forget a node: tell the others (NODEDOWN), requeue its jobs, drop its clients' jobs.

        A job it held spends an attempt unless the node left gracefully (or ``spend_attempts``
        says otherwise).
        """
        node = self.nodes.pop(identity, None)
        if node is None:
            return []
        if self.by_name.get(node.name) is node:
            del self.by_name[node.name]
        self.stats["nodes_down"] += 1
        out: list[Instruction] = [Log(logging.INFO, f"node {node.name} is down ({why})")]
        notice = wire.encode(
            Command.NODEDOWN,
            {"node": node.name, "incarnation": node.incarnation, "reason": reason},
        )
        out.extend(Send(other, notice) for other in self.nodes)
        spend = reason != protocol.NORMAL if spend_attempts is None else spend_attempts
        for key in sorted(node.active, key=repr):
            job = self.jobs.get(key)
            if job is None or job.worker != identity:
                continue
            job.worker = None
            if spend:
                job.attempt += 1
            if job.attempt > self.config.max_attempts:
                tried = ", ".join(job.workers_tried)
                out.extend(
                    self._fail_job(
                        job,
                        f"gave up: the worker running it died {self.config.max_attempts} "
                        f"times (tried {tried})",
                    )
                )
            else:
                self.stats["jobs_requeued"] += 1
                self.queue.appendleft(key)
        for key in [k for k in self.jobs if k[0] == identity]:
            del self.jobs[key]  # the client is gone: nobody is waiting for these
        out.extend(self._assign(now))
        return out

    # ------------------------------------------------------------------ reporting

    def nodes_report(self, now: float) -> dict[str, Any]:
        """The answer to ``NODES``: every node, the queue length and the counters."""
        nodes = [
            {
                "name": n.name,
                "role": n.role,
                "capacity": n.capacity,
                "active": len(n.active),
                "done": n.done,
                "last_seen_s": round(now - n.last_seen, 3),
                "uptime_s": round(now - n.joined_at, 3),
                "incarnation": n.incarnation,
                "malformed": n.malformed,
                **(n.placement.to_hello() if n.placement else {}),
            }
            for n in sorted(self.nodes.values(), key=lambda n: n.name)
        ]
        return {
            "nodes": nodes,
            "queued": sum(1 for j in self.jobs.values() if j.worker is None),
            "stats": dict(self.stats),
            "epoch": self.epoch,
            "uptime_s": round(now - self.started_at, 3),
        }

    def _malformed(self, identity: bytes, text: str) -> list[Instruction]:
        self.stats["malformed"] += 1
        return self._log_once(identity, f"dropped a malformed message: {text}")

    def _log_once(self, identity: bytes, text: str) -> list[Instruction]:
        """A warning about ``identity``, only the first time it misbehaves (bounded memory)."""
        if identity in self._logged_peers or len(self._logged_peers) >= _MAX_LOGGED_PEERS:
            return []
        self._logged_peers.add(identity)
        return [Log(logging.WARNING, f"from {identity!r}: {text}")]


def result_head(frames: Sequence[Any], limits: wire.Limits) -> dict[str, Any] | None:
    """The first entries of a RESULT when the broker can settle it on them alone: plain values,
    with an int or str ``id`` and a bin ``client`` (a worker writes id, client and attempt
    first). The RESULT is then forwarded verbatim and its client decodes the rest. None for any
    other message, which the broker decodes in full."""
    if wire.command_of(frames) is not Command.RESULT:
        return None
    peeked = wire.peek_head(frames, 3, limits)
    if peeked is None:
        return None
    head = peeked[1]
    if type(head.get("id")) not in (int, str) or type(head.get("client")) is not bytes:
        return None
    return head


def _check_hello(header: dict[str, Any]) -> str:
    """Validate a HELLO header and return the node name; raise WireError saying what is wrong."""
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
    if version != protocol.PROTOCOL_VERSION:
        raise WireError(
            f"protocol version {version} is not supported (this broker speaks "
            f"{protocol.PROTOCOL_VERSION})"
        )
    _placement_of(header)
    return name


def _placement_of(header: dict[str, Any]) -> Placement | None:
    """A worker's placement from its HELLO (clients run no jobs: they have none)."""
    if header["role"] != protocol.ROLE_WORKER:
        return None
    return Placement.from_hello(header)


_ANY_NODE = "*"
