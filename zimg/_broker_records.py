"""What the broker keeps: its settings, the instructions it gives its socket loop, and its records
of nodes and jobs. Plain data: the logic is in ``_broker_state`` (events), ``_dispatch`` (which
worker gets the next job) and ``_broker_jobs`` (the job table)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from zimg import protocol, wire
from zimg._placement import Placement


@dataclass(frozen=True, slots=True)
class BrokerConfig:
    """Broker settings. Times are in seconds, sizes in bytes.

    Attributes:
        heartbeat_interval_s: how often the broker and the nodes send HEARTBEAT, in a small
            cluster: the interval doubles as nodes join, so that heartbeats stay within
            ``heartbeats_per_s`` (see :meth:`interval_for`).
        liveness: heartbeats a node may miss before it is declared dead.
        heartbeats_per_s: the most heartbeats per second the broker sends to its nodes, and
            asks of them, all together.
        stall_timeout_s: a connection that sends nothing at all for this long (a peer stalled in
            the middle of a frame, a vanished host) is closed by ZeroMQ (ZMTP heartbeats).
        idle_batch_s: with at least ``idle_batch_nodes`` nodes and nothing but heartbeats for a
            second, the broker reads its messages at most this often, in one wake-up each
            (0: never): an idle cluster of 10,000 nodes then costs half the CPU, and the first
            message after an idle spell waits up to this long.
        idle_batch_nodes: see ``idle_batch_s``.
        max_attempts: dispatches of a job whose workers died (or timed out) before it fails.
        limits: wire limits for what the broker reads and sends.
        cpu_slots: a host runs at most one job per CPU (see ``zimg._placement``).
        job_deadline_s: the longest a worker may work on a job (a client may ask for less). A
            job not answered by then, plus a grace period, is taken back and retried elsewhere,
            and its worker gets no new job until it answers (it is *hung*).
        max_job_bytes: bytes of all jobs the broker holds (queued or running) at once.
        max_client_job_bytes: bytes of the jobs one client has in the broker at once.
        max_jobs: jobs held at once, all clients together.
        max_client_jobs: jobs one client has in the broker at once.
        max_nodes: nodes registered at once (the socket loop lowers it to fit the
            file-descriptor limit).
        max_watches: node names one node may WATCH at once.
        max_watch_total: WATCHes held at once, all nodes together.
        max_lanes: lanes one node may have with other nodes, and asks for a lane it may have
            waiting for their answer (``zimg._broker_lanes``).
        nodes_page_bytes: about how large one page of the NODES reply may grow.
        nodes_bytes_per_s: bytes of NODES replies each node may ask for per second (also the
            budget shared by every peer that has not joined): a cap on what a flood of
            NODES requests costs the broker.
    """

    heartbeat_interval_s: float = protocol.DEFAULT_HEARTBEAT_INTERVAL_S
    liveness: int = protocol.DEFAULT_LIVENESS
    heartbeats_per_s: float = 500.0
    stall_timeout_s: float = 30.0
    idle_batch_s: float = 0.02
    idle_batch_nodes: int = 1000
    max_attempts: int = protocol.DEFAULT_MAX_ATTEMPTS
    limits: wire.Limits = wire.DEFAULT_LIMITS
    cpu_slots: bool = True
    job_deadline_s: float = 300.0
    max_job_bytes: int = 1 << 30
    max_client_job_bytes: int = 256 << 20
    max_jobs: int = 1_000_000
    max_client_jobs: int = 10_000
    max_nodes: int = 100_000
    max_watches: int = 4096
    max_watch_total: int = 1_000_000
    max_lanes: int = 256
    nodes_page_bytes: int = 64 << 10
    nodes_bytes_per_s: float = 4 << 20

    @property
    def expiry_s(self) -> float:
        """How long a node may stay silent before it is declared dead (in a small cluster)."""
        return self.heartbeat_interval_s * self.liveness

    def interval_for(self, nodes: int) -> float:
        """The heartbeat interval for a cluster of ``nodes``: ``heartbeat_interval_s``, doubled
        until ``nodes`` heartbeats per interval stay within ``heartbeats_per_s``."""
        interval = self.heartbeat_interval_s
        while nodes > interval * self.heartbeats_per_s:
            interval *= 2
        return interval

    def job_grace_s(self, deadline_s: float) -> float:
        """How long after a job's deadline the broker still waits for its RESULT (the worker
        stops at the deadline, between two ops, and its answer is on the way)."""
        return self.expiry_s + 0.05 * deadline_s


# ---------------------------------------------------------------------------- instructions


@dataclass(frozen=True, slots=True)
class Send:
    """Send ``frames`` to the peer with routing id ``identity``."""

    identity: bytes
    frames: Sequence[Any]


@dataclass(frozen=True, slots=True)
class SendMany:
    """Send the same ``frames`` to each of ``identities`` (heartbeats)."""

    identities: Sequence[bytes]
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


Instruction = Send | SendMany | Probe | Log


# ---------------------------------------------------------------------------- records


@dataclass(slots=True)
class TokenBucket:
    """A rate limit: ``tokens`` left, last refilled at ``refilled`` (seconds)."""

    tokens: float
    refilled: float

    def ready(self, now: float, rate: float) -> bool:
        """Refill (at ``rate`` per second, up to ``rate``): is anything left to spend?"""
        self.tokens = min(rate, self.tokens + (now - self.refilled) * rate)
        self.refilled = now
        return self.tokens > 0.0

    def spend(self, amount: float) -> None:
        """Spend ``amount`` (the bucket may go into debt, which the refill pays off first)."""
        self.tokens -= amount


@dataclass(slots=True, eq=False)
class NodeRecord:
    """What the broker knows of one connected node (hashed by identity of the record)."""

    name: str
    identity: bytes
    role: str
    capacity: int
    incarnation: int
    joined_at: float
    last_seen: float
    session: int = 0
    placement: Placement | None = None  # a worker's host, CPUs and threads, if it said
    # The job path (workers): the tickets of the jobs it holds, and of those the ones sent
    # ``queued`` that it has not started yet.
    active: set[int] = field(default_factory=set)
    waiting: int = 0
    done: int = 0
    hung: bool = False  # it held a job past its deadline: no new jobs until it answers
    # The job path (clients): the tickets of the jobs it submitted, and their bytes.
    submitted: set[int] = field(default_factory=set)
    submitted_bytes: int = 0
    # Names it WATCHes (NODEDOWN goes to it when one of them goes down).
    watching: set[str] = field(default_factory=set)
    # What the node reports in its heartbeats: messages it dropped as malformed, and messages
    # its mailboxes dropped when full.
    malformed: int = 0
    dropped: int = 0
    # The key it joined with (CURVE: the ZAP user id), which every later message must carry.
    user_id: str | None = None
    # Its lane (``zimg._lanes``): where peers reach it, its CURVE key, whom it has lanes with.
    lane: str | None = None
    lane_key: bytes | None = None
    lane_peers: set[NodeRecord] = field(default_factory=set)
    # Lanes by direction: the nodes it has a lane to (it asked, they accepted), the nodes it
    # asked for one that have not answered yet (at most ``max_lanes``), and the nodes that
    # asked it and have not had its answer (``zimg._broker_lanes``).
    lanes_to: set[NodeRecord] = field(default_factory=set)
    lane_asks: set[NodeRecord] = field(default_factory=set)
    lane_asked_by: set[NodeRecord] = field(default_factory=set)
    # What its lanes carried, as its heartbeats report: sent, received, refused, lost, and how
    # many of its lanes broke (lost their connection while both nodes stayed joined).
    lane_sent: int = 0
    lane_received: int = 0
    lane_refused: int = 0
    lane_lost: int = 0
    lane_broken: int = 0
    # When a send to it failed (its connection is gone): it is declared down once the loop has
    # read what it sent before (``BrokerState.on_unreachable``). None while reachable.
    unreachable_at: float | None = None
    # NODES pages it may still ask for.
    pages: TokenBucket = field(default_factory=lambda: TokenBucket(0.0, 0.0))
    # Bookkeeping of the worker index (``_dispatch``).
    assigned_seq: int = 0
    order: int = 0
    version: int = 0
    indexed: bool = False
    parked: bool = False

    @property
    def is_worker(self) -> bool:
        return self.role == protocol.ROLE_WORKER

    def free(self) -> int:
        """Jobs it may still be given (its credit left)."""
        return self.capacity - len(self.active)

    def running(self) -> int:
        """Its jobs that run now (the others wait for one of these to end)."""
        return len(self.active) - self.waiting

    def owns(self, pid: Any) -> bool:
        """Is ``pid`` (a Pid or Ref) one of this node's, of this incarnation?"""
        return (
            isinstance(pid, wire.Pid | wire.Ref)
            and pid.node == self.name
            and pid.incarnation == self.incarnation
        )


@dataclass(slots=True, eq=False)
class JobRecord:
    """A job the broker is responsible for until its result goes back to its client.

    ``ticket`` is the broker's own number for it: the only name a worker ever learns (a worker
    never sees the client's routing id, nor the client the worker's).
    """

    ticket: int
    client: NodeRecord
    job_id: Any  # the client's id
    header: dict[str, Any]
    frames: Sequence[Any]
    nbytes: int
    deadline_s: float
    attempt: int = 1
    worker: NodeRecord | None = None
    workers_tried: list[str] = field(default_factory=list)
    dispatches: int = 0
    orphaned: bool = False  # its client went away; kept only while a worker runs it
    settled: bool = False  # answered (late) while a retry ran: kept until the retry answers
