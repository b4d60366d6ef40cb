"""Pure broker logic: events in, instructions out. No sockets, no clock of its own.

The broker loop (``zimg.broker``) feeds this state machine with what happened and carries out the
instructions it returns:

- ``on_message(identity, frames, now)``: a multipart message arrived from ``identity``
  (``forward_target`` and ``heard`` are its two fast paths: a SEND to a live pid, a HEARTBEAT);
- ``on_tick(now, drained_at)``: time passed (heartbeats, silent nodes, job deadlines);
- ``on_unreachable(identity, now)``: a send to ``identity`` failed because its connection is gone;
- ``on_probe(identity, reachable, now)``: the answer to a :class:`Probe` instruction;
- ``on_backlog(dropped=...)``, ``on_backlog_unroutable(n)``: what the loop did with messages it
  could not send at once (counted only: the loop owns its backlog).

Instructions are :class:`Send`, :class:`SendMany`, :class:`Probe` and :class:`Log`. Every method
takes ``now`` in seconds, so tests drive it with a fake clock.

Every per-event cost is independent of the number of nodes N (O(1) or O(log N)): the worker pick
is an index (``_dispatch``), timers sit in heaps, NODEDOWN goes only to watchers
(``_broker_actors``), and a client's jobs are found through the client. Failures found while
sending are reported back one at a time by the loop (``on_unreachable``), never recursively.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import logging
from collections import deque
from collections.abc import Callable, Collection, Sequence
from typing import Any

from zimg import protocol, wire
from zimg._broker_actors import ActorRouter
from zimg._broker_jobs import JobTable
from zimg._broker_records import (
    BrokerConfig,
    Instruction,
    JobRecord,
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
)
_MAX_LOGGED_PEERS = 1024
MAX_JOB_ID_CHARS = 128  # a str job id; ints are 64-bit by the wire's rules
_WARN_AT = (0.8, 0.95)  # shares of the node limit at which the broker warns
_BEAT_SLICE_S = 0.05
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
        self.node_limit = cfg.max_nodes
        self.node_limit_fix = "start the broker with a larger --max-nodes"
        # Heartbeats: the interval grows with the cluster (BrokerConfig.interval_for), and the
        # beats go round the nodes in a ring, a few at each tick, not all at once.
        self.interval_s = cfg.heartbeat_interval_s
        self._beat = wire.encode(Command.HEARTBEAT, {})
        self._ring: deque[NodeRecord] = deque()
        self._beats_owed = 0.0
        self._beaten_at = now
        self._expiry: list[tuple[float, int, NodeRecord]] = []
        self._n = itertools.count()
        self._anonymous_pages = TokenBucket(cfg.nodes_bytes_per_s, now)
        self._names: list[str] | None = []  # sorted names, rebuilt lazily after a change
        self._warned = 0  # how many of _WARN_AT the node count has passed
        self._pending_hello: dict[bytes, tuple[bytes, dict[str, Any], str | None]] = {}
        self._logged_peers: set[bytes] = set()
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
            return self._result(node, head, frames, now)
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
        beats = self._heartbeats(now)
        if beats:
            out.append(SendMany(beats, self._beat))
        limit = now if drained_at is None else min(now, drained_at)
        expiry_s = self.expiry_s
        heap = self._expiry
        while heap and heap[0][0] < limit:
            _, _, node = heapq.heappop(heap)
            if self.nodes.get(node.identity) is not node:
                continue  # gone already
            due = node.last_seen + expiry_s
            if due < limit:
                out.extend(self._node_down(node, protocol.NOCONNECTION, now, "missed heartbeats"))
            else:
                heapq.heappush(heap, (due, next(self._n), node))
        for job in self.table.expired(now):
            out.extend(self._expire(job, now))
        return out

    def on_unreachable(self, identity: bytes, now: float) -> list[Instruction]:
        """A send to ``identity`` failed: its connection is gone, so the node is dead."""
        self.stats["unroutable"] += 1
        node = self.nodes.get(identity)
        if node is None:
            return []
        return self._node_down(node, protocol.NOCONNECTION, now, "connection closed")

    def on_backlog(self, *, dropped: bool) -> None:
        """The loop could not send a message at once: it queued it behind the peer's full
        queue (a backlog started, ``dropped=False``), or dropped it because the backlogs are
        at their bounds (``dropped=True``). Counted as ``backlogged`` and ``dropped``."""
        self.stats["dropped" if dropped else "backlogged"] += 1

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
        out: list[Instruction] = []
        if holder is not None:
            out.extend(self._node_down(holder, protocol.NOCONNECTION, now, "connection closed"))
        if self.by_name.get(header["name"]) is None:
            out.extend(self._admit(new_identity, header, now, user_id))
        return out

    @property
    def expiry_s(self) -> float:
        """How long a node may stay silent before it is declared dead, now."""
        return self.interval_s * self.config.liveness

    def _heartbeats(self, now: float) -> list[bytes]:
        """The nodes due a heartbeat now: ``len(nodes)`` per interval, round the ring, so each
        node gets one per interval, spread evenly."""
        owed = self._beats_owed + len(self.nodes) * (now - self._beaten_at) / self.interval_s
        self._beaten_at = now
        count = min(int(owed), len(self.nodes))
        self._beats_owed = owed - int(owed) if count == int(owed) else 0.0
        due: list[bytes] = []
        ring = self._ring
        while len(due) < count and ring:
            node = ring.popleft()
            if self.nodes.get(node.identity) is node:  # else it is gone: drop it from the ring
                due.append(node.identity)
                ring.append(node)
        return due

    def next_deadline(self) -> float:
        """The latest time by which ``on_tick`` should be called again."""
        # Heartbeats go out in slices at least _BEAT_SLICE_S apart: a wake-up per beat would
        # cost more than the beats.
        next_beat = self._beaten_at + max(_BEAT_SLICE_S, self.interval_s / max(1, len(self.nodes)))
        deadline = min(next_beat, self.table.next_deadline())
        if self._expiry:
            deadline = min(deadline, self._expiry[0][0])
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
            for key in ("malformed", "dropped"):
                reported = msg.header.get(key)
                if type(reported) is int and reported >= 0:
                    setattr(node, key, reported)
            return []
        if cmd is Command.JOB:
            return self._job(node, msg.header, frames, now)
        if cmd is Command.RESULT:
            return self._result(node, msg.header, frames, now)
        if cmd is Command.DISCONNECT:
            return self._node_down(node, protocol.NORMAL, now, "left")
        if cmd is Command.WATCH:
            return self.actors.watch(node, msg.header)
        if cmd is Command.UNWATCH:
            return self.actors.unwatch(node, msg.header)
        if cmd in wire.ACTOR_COMMANDS:
            return self.actors.route(node, cmd, msg.header, frames)
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
                # messages: end the old session as a disconnection, then start a new one.
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
            )
            self.nodes[identity] = node
            self.by_name[name] = node
            self._names = None
            heapq.heappush(self._expiry, (now + self.expiry_s, next(self._n), node))
            self._ring.append(node)
            if node.is_worker:
                self.index.add(node)
            out.append(Log(logging.INFO, f"node {name} joined as {node.role}"))
            out.extend(self._warn_if_near_the_limit())
            out.extend(self._widen_heartbeats(node))
        else:
            # A repeated HELLO of this session: take its credit and placement as they are now.
            node.last_seen = now
            if node.is_worker:
                self.index.remove(node)
            node.capacity, node.placement = header["capacity"], placement
            if node.is_worker:
                self.index.add(node)
        out.append(Send(identity, self._welcome(node)))
        out.extend(self._assign(now))
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
        WELCOME to a node that is ready only updates its interval and liveness). It never
        shrinks back while the broker runs, so no node is ever held to a shorter interval than
        it was told."""
        interval = self.config.interval_for(len(self.nodes))
        if interval <= self.interval_s:
            return []
        self.interval_s = interval
        text = f"{len(self.nodes)} nodes: the heartbeat interval is now {interval:g} s"
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

    # ------------------------------------------------------------------ jobs

    def _job(
        self, client: NodeRecord, header: dict[str, Any], frames: Sequence[Any], now: float
    ) -> list[Instruction]:
        job_id = protocol.field(header, "id", (int, str))
        if isinstance(job_id, str) and len(job_id) > MAX_JOB_ID_CHARS:
            # Every RESULT repeats the id: a long one would make a failure too large to send.
            raise WireError(f"a job id may have at most {MAX_JOB_ID_CHARS} characters")
        if self.table.holds(client, job_id):
            return []  # a resend of a job we already hold: idempotent
        refusal = self.table.refusal(client, sum(len(f) for f in frames))
        if refusal is not None:
            why, busy = refusal
            self.stats["jobs_refused"] += 1
            reply = {"id": job_id, "ok": False, "attempt": 0, "node": None, "error": why}
            if busy:
                reply["busy"] = True
            return [Send(client.identity, wire.encode(Command.RESULT, reply))]
        self.stats["jobs_received"] += 1
        self.table.add(client, job_id, header, frames)
        return self._assign(now)

    def _result(
        self, worker: NodeRecord, header: dict[str, Any], frames: Sequence[Any], now: float
    ) -> list[Instruction]:
        ticket = protocol.field(header, "ticket", int)
        job = self.table.jobs.get(ticket)
        if job is not None and _id_differs(job.job_id, header.get("id")):
            self.stats["forged"] += 1  # answering another job of the client under this ticket
            return self._log_once(
                worker.identity, f"dropped a RESULT whose id is not job {ticket}'s"
            )
        if worker.hung:
            worker.hung = False  # it answers: it is working again
            self.index.changed(worker)
        if job is not None and job.worker is worker:
            self.index.finished(worker, ticket)
            worker.done += 1
            self.table.remove(job)
            if not job.settled:
                self.stats["jobs_done"] += 1
        elif job is not None and worker.name in job.workers_tried:
            # From a worker we had given up on (it died, timed out or rejoined): it completes
            # the job. A retry already running elsewhere keeps the job (settled) until it
            # answers too, so that its worker's credit is counted until then.
            self.stats["late_results"] += 1
            if not job.settled:
                self.stats["jobs_done"] += 1
                job.settled = True
            if job.worker is None:
                self.table.remove(job)
        else:
            # Not a job this node was given (or one this broker never saw, before a restart):
            # the client resends what it has not received, so dropping loses nothing.
            self.stats["late_results"] += 1
            text = f"dropped a RESULT for job {ticket}: not its job"
            return self._log_once(worker.identity, text)
        out: list[Instruction] = []
        if self._client_waits(job):
            out.append(Send(job.client.identity, frames))
        else:
            self.stats["unroutable"] += 1
        out.extend(self._assign(now))
        return out

    def _client_waits(self, job: JobRecord) -> bool:
        return not job.orphaned and self.nodes.get(job.client.identity) is job.client

    def _assign(self, now: float) -> list[Instruction]:
        out: list[Instruction] = []
        while self.table.queued > 0:
            picked = self.index.pick()
            if picked is None:
                break
            worker, queued = picked
            job = self.table.next_queued()
            if job is None:
                break
            try:
                frames = self.table.dispatch(job, worker, queued, now)
            except WireError as exc:
                out.extend(self._fail_job(job, f"cannot forward the job: {exc}", died=False))
                continue
            self.index.dispatched(worker, job.ticket, queued)
            self.stats["jobs_dispatched"] += 1
            out.append(Send(worker.identity, frames))
        return out

    def _fail_job(self, job: JobRecord, text: str, *, died: bool = True) -> list[Instruction]:
        self.stats["jobs_failed"] += 1
        self.table.remove(job)
        if not self._client_waits(job):
            return []
        result = {
            "id": job.job_id,
            "ok": False,
            "error": text,
            "node": job.workers_tried[-1] if job.workers_tried else None,
            "attempt": len(job.workers_tried),
            "died": died,
        }
        return [Send(job.client.identity, wire.encode(Command.RESULT, result))]

    def _take_back(self, job: JobRecord, *, spend: bool, why: str) -> list[Instruction]:
        """``job`` no longer runs on its worker: queue it again at the front, or fail it after
        ``max_attempts`` (``why`` says what kept happening)."""
        self.table.take_back(job)
        if job.orphaned or job.settled:
            self.table.remove(job)  # nobody waits for it, or it was answered already
            return []
        if spend:
            job.attempt += 1
        if job.attempt > self.config.max_attempts:
            tried = ", ".join(job.workers_tried)
            text = f"gave up: {why} {self.config.max_attempts} times (tried {tried})"
            return self._fail_job(job, text)
        self.stats["jobs_requeued"] += 1
        self.table.put_back(job)
        return []

    def _expire(self, job: JobRecord, now: float) -> list[Instruction]:
        """``job`` got no RESULT within its deadline: retry it elsewhere, and give its worker
        nothing more until it answers."""
        worker = job.worker
        assert worker is not None  # expired() only reports running jobs
        self.stats["jobs_expired"] += 1
        self.index.finished(worker, job.ticket)
        worker.hung = True
        self.index.changed(worker)
        text = (
            f"{worker.name} sent no result for a job of {job.client.name} within its deadline of "
            f"{job.deadline_s:g} s: the job is retried elsewhere, and {worker.name} gets no "
            "new jobs until it answers"
        )
        why = f"no result within the deadline of {job.deadline_s:g} s"
        out: list[Instruction] = [Log(logging.WARNING, text)]
        out.extend(self._take_back(job, spend=True, why=why))
        out.extend(self._assign(now))
        return out

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
        if self.by_name.get(node.name) is node:
            del self.by_name[node.name]
        self._names = None
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
        out.extend(self.actors.node_gone(node, reason))
        spend = reason != protocol.NORMAL if spend_attempts is None else spend_attempts
        for ticket in sorted(node.active):
            job = self.table.jobs.get(ticket)
            if job is not None and job.worker is node:
                out.extend(self._take_back(job, spend=spend, why="the worker running it died"))
        node.active.clear()
        node.waiting = 0
        self.table.forget_client(node)
        out.extend(self._assign(now))
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
        if self._names is None:
            self._names = sorted(self.by_name)
        names = self._names
        start = bisect.bisect_right(names, after) if after is not None else 0
        page: list[dict[str, Any]] = []
        size = 0
        for name in itertools.islice(names, start, None):
            node = self.by_name[name]
            cost = _entry_cost(node)
            if page and size + cost > self.config.nodes_page_bytes:
                break
            page.append(_node_entry(node, now))
            size += cost
        downs = []
        if after is None:  # the first page: the nodes that went down lately, newest last
            downs = [_down_entry(d, now) for d in self.downs]
            size += 160 * len(downs)
        return {
            "_cost": size + 512,  # what the page costs the asker's budget, in bytes
            "nodes": page,
            "more": start + len(page) < len(names),
            "count": len(names),
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


def _id_differs(job_id: Any, reported: Any) -> bool:
    return type(job_id) is not type(reported) or job_id != reported


def _node_entry(n: NodeRecord, now: float) -> dict[str, Any]:
    entry = {
        "name": n.name,
        "role": n.role,
        "capacity": n.capacity,
        "active": len(n.active),
        "done": n.done,
        "last_seen_s": round(now - n.last_seen, 3),
        "uptime_s": round(now - n.joined_at, 3),
        "incarnation": n.incarnation,
        "malformed": n.malformed,
        "dropped": n.dropped,
        **(n.placement.to_hello() if n.placement else {}),
    }
    if n.hung:
        entry["hung"] = True
    return entry


def _down_entry(down: dict[str, Any], now: float) -> dict[str, Any]:
    entry = {k: v for k, v in down.items() if k != "at"}
    entry["ago_s"] = round(now - down["at"], 3)
    return entry


def _entry_cost(n: NodeRecord) -> int:
    """An upper bound of the encoded size of a node's NODES entry, in bytes."""
    placed = n.placement
    return 256 + len(n.name) + (len(placed.host) + 3 * len(placed.cpus) if placed else 0)


def result_head(
    frames: Sequence[Any], limits: wire.Limits, command: Command | None = None
) -> dict[str, Any] | None:
    """The first entries of a RESULT when the broker can settle it on them alone: plain values,
    with an int or str ``id`` and an int ``ticket`` (a worker writes id, ticket and attempt
    first). The RESULT is then forwarded verbatim and its client decodes the rest. None for any
    other message, which the broker decodes in full. ``command``: the message's command, if
    the caller has read it already."""
    if command is None:
        command = wire.command_of(frames)
    if command is not Command.RESULT:
        return None
    peeked = wire.peek_head(frames, 3, limits, command)
    if peeked is None:
        return None
    head = peeked[1]
    if type(head.get("id")) not in (int, str) or type(head.get("ticket")) is not int:
        return None
    return head


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
