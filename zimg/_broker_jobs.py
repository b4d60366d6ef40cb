"""The broker's jobs: taken in within byte and count caps, queued, dispatched under a ticket with a
deadline, settled by their RESULT, and taken back when their worker dies or misses the deadline.

A job is known to its client by the client's own ``id``, and to its worker only by the broker's
``ticket``: neither learns the other's routing id (``docs/protocol.md`` §7). The table is pure
bookkeeping; ``_broker_state`` decides what happens.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections import deque
from collections.abc import Sequence
from typing import Any

import msgpack

from zimg import wire
from zimg._broker_records import BrokerConfig, JobRecord, NodeRecord
from zimg._errors import WireError
from zimg.wire import Command

# Fields the broker writes into a JOB it dispatches; whatever a client put there is dropped.
RESERVED_FIELDS = frozenset({"client", "ticket", "attempt", "deadline_s", "queued"})


class JobTable:
    """Every job the broker holds, by ticket, with its queue and deadlines."""

    def __init__(self, config: BrokerConfig) -> None:
        self.config = config
        self.jobs: dict[int, JobRecord] = {}
        self.nbytes = 0  # bytes of every job held
        self.running = 0  # jobs given to a worker and not yet settled or taken back
        self._keys: dict[tuple[bytes, Any], JobRecord] = {}
        self._queue: deque[JobRecord] = deque()  # may hold settled jobs: skipped when popped
        self._tickets = itertools.count(1)
        self._deadlines: list[tuple[float, int, int]] = []  # (when, ticket, dispatch number)

    @property
    def queued(self) -> int:
        """Jobs waiting for a worker."""
        return len(self.jobs) - self.running

    # ------------------------------------------------------------------ intake

    def holds(self, client: NodeRecord, job_id: Any) -> bool:
        """Does the broker hold this client's job ``job_id`` already (a resend)?"""
        return (client.identity, job_id) in self._keys

    def refusal(self, client: NodeRecord, nbytes: int) -> tuple[str, bool] | None:
        """Why a new job of ``nbytes`` from ``client`` cannot be taken, and whether that is only
        for now (the client should resend it later); None if it can."""
        cfg = self.config
        if nbytes > cfg.max_client_job_bytes:
            why = (
                f"the job is {nbytes} bytes and this broker holds at most "
                f"{cfg.max_client_job_bytes} bytes of jobs per client (split it)"
            )
            return why, False
        if (
            client.submitted_bytes + nbytes > cfg.max_client_job_bytes
            or len(client.submitted) >= cfg.max_client_jobs
        ):
            why = (
                f"this client's jobs in the broker are at its limit ({len(client.submitted)} "
                f"jobs, {client.submitted_bytes} bytes); resend when some are answered"
            )
            return why, True
        if self.nbytes + nbytes > cfg.max_job_bytes or len(self.jobs) >= cfg.max_jobs:
            why = (
                f"the broker holds as many jobs as it may ({len(self.jobs)} jobs, "
                f"{self.nbytes} bytes); resend later"
            )
            return why, True
        return None

    def add(
        self,
        client: NodeRecord,
        job_id: Any,
        header: dict[str, Any],
        frames: Sequence[Any],
        nbytes: int,
    ) -> JobRecord:
        """Take a new job of ``nbytes`` (its frames' total) in (the caller checked
        :meth:`holds` and :meth:`refusal`) and queue it last."""
        deadline_s = self.config.job_deadline_s
        asked = header.get("deadline_s")
        if isinstance(asked, int | float) and not isinstance(asked, bool) and asked > 0:
            deadline_s = min(deadline_s, float(asked))
        job = JobRecord(next(self._tickets), client, job_id, header, frames, nbytes, deadline_s)
        self.jobs[job.ticket] = job
        self._keys[(client.identity, job_id)] = job
        client.submitted.add(job.ticket)
        client.submitted_bytes += nbytes
        self.nbytes += nbytes
        self._queue.append(job)
        return job

    # ------------------------------------------------------------------ the queue

    def next_queued(self) -> JobRecord | None:
        """Take the first job waiting for a worker off the queue (None if none waits)."""
        while self._queue:
            job = self._queue.popleft()
            if job.worker is None and self.jobs.get(job.ticket) is job:
                return job
        return None

    def put_back(self, job: JobRecord, *, front: bool = True) -> None:
        """Queue a job that is not running (again): at the front, as a requeued job goes."""
        if front:
            self._queue.appendleft(job)
        else:
            self._queue.append(job)

    def dispatch(self, job: JobRecord, worker: NodeRecord, queued: int, now: float) -> list[Any]:
        """The frames of ``job`` for ``worker``, and the job marked as running there.

        ``queued``: how many of the worker's jobs it waits behind (0: it starts at once).

        Raises:
            WireError: the job no longer fits the limits once the broker's fields are added.
        """
        extra: dict[str, Any] = {
            "ticket": job.ticket,
            "attempt": job.attempt,
            "deadline_s": job.deadline_s,
        }
        if queued:
            extra["queued"] = queued
        frames = _job_frames(job, extra, self.config.limits)
        job.worker = worker
        job.workers_tried.append(worker.name)
        job.dispatches += 1
        self.running += 1
        # A job sent queued may first wait for one that runs to its own deadline.
        allowed = job.deadline_s * (2 if queued else 1)
        due = now + allowed + self.config.job_grace_s(job.deadline_s)
        heapq.heappush(self._deadlines, (due, job.ticket, job.dispatches))
        return frames

    def take_back(self, job: JobRecord) -> None:
        """``job`` no longer runs anywhere (its worker died, left, or missed the deadline)."""
        if job.worker is not None:
            job.worker = None
            self.running -= 1

    def remove(self, job: JobRecord) -> None:
        """Forget ``job`` (answered, failed, or its client left while it waited)."""
        if self.jobs.pop(job.ticket, None) is None:
            return
        self.take_back(job)
        if self._keys.get((job.client.identity, job.job_id)) is job:
            del self._keys[(job.client.identity, job.job_id)]
        job.client.submitted.discard(job.ticket)
        job.client.submitted_bytes -= job.nbytes
        self.nbytes -= job.nbytes

    def forget_client(self, client: NodeRecord) -> None:
        """``client`` went away: nobody waits for its jobs. Those waiting are dropped; those
        running stay (orphaned) until their worker answers or misses the deadline, so that the
        worker's credit comes back either way."""
        for ticket in list(client.submitted):
            job = self.jobs.get(ticket)
            if job is None:
                continue
            if job.worker is None:
                self.remove(job)
            else:
                job.orphaned = True
                if self._keys.get((client.identity, job.job_id)) is job:
                    del self._keys[(client.identity, job.job_id)]

    # ------------------------------------------------------------------ deadlines

    def expired(self, now: float) -> list[JobRecord]:
        """The running jobs whose deadline (with grace) has passed, each reported once."""
        out: list[JobRecord] = []
        heap = self._deadlines
        while heap and heap[0][0] <= now:
            _, ticket, dispatch_no = heapq.heappop(heap)
            job = self.jobs.get(ticket)
            if job is not None and job.worker is not None and job.dispatches == dispatch_no:
                out.append(job)
        return out

    def next_deadline(self) -> float:
        """When the earliest running job's deadline passes (infinity if none)."""
        while self._deadlines:
            _, ticket, dispatch_no = self._deadlines[0]
            job = self.jobs.get(ticket)
            if job is not None and job.worker is not None and job.dispatches == dispatch_no:
                return self._deadlines[0][0]
            heapq.heappop(self._deadlines)
        return math.inf


def _job_frames(job: JobRecord, extra: dict[str, Any], limits: wire.Limits) -> list[Any]:
    """The JOB's frames with the broker's fields added to its header.

    The client's header bytes are reused as they are, with the new entries appended (the
    array frames keep their numbers), unless the client wrote fields the broker owns; then the
    header is encoded again without them.
    """
    if RESERVED_FIELDS.isdisjoint(job.header):
        lead = _append_entries(job.frames[0], len(job.header), extra)
        if lead is not None and len(lead) - _LEAD_PREFIX <= limits.max_header_bytes:
            return [lead, *job.frames[1:]]
    try:
        # Decoded again with its arrays (the broker's copy of the header has None for them).
        full = wire.decode(job.frames, limits).header
        header = {k: v for k, v in full.items() if k not in RESERVED_FIELDS}
        header.update(extra)
        return wire.encode(Command.JOB, header, limits)
    except WireError:
        raise
    except Exception as exc:  # anything else the encoder may meet is still "cannot forward"
        raise WireError(str(exc)) from exc


_LEAD_PREFIX = len(wire.MAGIC) + 1
_PACKER = msgpack.Packer(use_bin_type=True)  # one for all: msgpack.packb makes one per call


def _append_entries(lead: Any, count: int, extra: dict[str, Any]) -> bytes | None:
    """A lead frame whose header map of ``count`` entries has ``extra``'s entries appended;
    None if the header does not start with a map prefix this understands."""
    view = memoryview(lead)
    marker = view[_LEAD_PREFIX]
    if 0x80 <= marker <= 0x8F:
        skip = 1
    elif marker == 0xDE:
        skip = 3
    elif marker == 0xDF:
        skip = 5
    else:
        return None
    total = count + len(extra)
    if total <= 15:
        prefix = bytes((0x80 | total,))
    elif total <= 0xFFFF:
        prefix = b"\xde" + total.to_bytes(2, "big")
    else:
        prefix = b"\xdf" + total.to_bytes(4, "big")
    packed: bytes = _PACKER.pack(extra)
    entries = packed[1:]  # ``extra`` has at most 15 entries: a one-byte fixmap prefix
    return b"".join((view[:_LEAD_PREFIX], prefix, view[_LEAD_PREFIX + skip :], entries))
