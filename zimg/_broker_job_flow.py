"""What happens to the broker's jobs: taken in, assigned to a worker with free credit, settled by
their RESULT, taken back when their worker dies or misses the deadline, and retried elsewhere or
failed after ``max_attempts``.

``BrokerState`` hands the JOB and RESULT messages of admitted nodes here, and tells it when a node
goes; :class:`~zimg._broker_jobs.JobTable` holds the jobs and
:class:`~zimg._dispatch.WorkerIndex` the workers' credit. A RESULT is settled on its first
entries (:func:`result_head`) and forwarded verbatim: the broker never decodes its arrays.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from zimg import protocol, wire
from zimg._broker_jobs import JobTable
from zimg._broker_records import BrokerConfig, Instruction, JobRecord, Log, NodeRecord, Send
from zimg._dispatch import WorkerIndex
from zimg._errors import WireError
from zimg._wire_terms import _PREFIX
from zimg.wire import Command

MAX_JOB_ID_CHARS = 128  # a str job id; ints are 64-bit by the wire's rules


class JobFlow:
    """The broker's job logic over its job table and worker index (shared with the state)."""

    def __init__(
        self,
        config: BrokerConfig,
        nodes: dict[bytes, NodeRecord],
        table: JobTable,
        index: WorkerIndex,
        stats: dict[str, int],
        log_once: Callable[[bytes, str], list[Instruction]],
    ) -> None:
        self.config = config
        self.nodes = nodes
        self.table = table
        self.index = index
        self.stats = stats
        self.log_once = log_once

    def job(
        self, client: NodeRecord, header: dict[str, Any], frames: Sequence[Any], now: float
    ) -> list[Instruction]:
        job_id = protocol.field(header, "id", (int, str))
        if isinstance(job_id, str) and len(job_id) > MAX_JOB_ID_CHARS:
            # Every RESULT repeats the id: a long one would make a failure too large to send.
            raise WireError(f"a job id may have at most {MAX_JOB_ID_CHARS} characters")
        if self.table.holds(client, job_id):
            return []  # a resend of a job we already hold: idempotent
        nbytes = sum(map(len, frames))
        refusal = self.table.refusal(client, nbytes)
        if refusal is not None:
            why, busy = refusal
            self.stats["jobs_refused"] += 1
            reply = {"id": job_id, "ok": False, "attempt": 0, "node": None, "error": why}
            if busy:
                reply["busy"] = True
            return [Send(client.identity, wire.encode(Command.RESULT, reply))]
        self.stats["jobs_received"] += 1
        self.table.add(client, job_id, header, frames, nbytes)
        return self.assign(now)

    def result(
        self, worker: NodeRecord, header: dict[str, Any], frames: Sequence[Any], now: float
    ) -> list[Instruction]:
        ticket = protocol.field(header, "ticket", int)
        job = self.table.jobs.get(ticket)
        if job is not None and _id_differs(job.job_id, header.get("id")):
            self.stats["forged"] += 1  # answering another job of the client under this ticket
            return self.log_once(
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
            return self.log_once(worker.identity, text)
        out: list[Instruction] = []
        if self.client_waits(job):
            out.append(Send(job.client.identity, frames))
        else:
            self.stats["unroutable"] += 1
        out.extend(self.assign(now))
        return out

    def client_waits(self, job: JobRecord) -> bool:
        return not job.orphaned and self.nodes.get(job.client.identity) is job.client

    def assign(self, now: float) -> list[Instruction]:
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
                out.extend(self.fail(job, f"cannot forward the job: {exc}", died=False))
                continue
            self.index.dispatched(worker, job.ticket, queued)
            self.stats["jobs_dispatched"] += 1
            out.append(Send(worker.identity, frames))
        return out

    def fail(self, job: JobRecord, text: str, *, died: bool = True) -> list[Instruction]:
        self.stats["jobs_failed"] += 1
        self.table.remove(job)
        if not self.client_waits(job):
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

    def take_back(self, job: JobRecord, *, spend: bool, why: str) -> list[Instruction]:
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
            return self.fail(job, text)
        self.stats["jobs_requeued"] += 1
        self.table.put_back(job)
        return []

    def expire(self, job: JobRecord, now: float) -> list[Instruction]:
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
        out.extend(self.take_back(job, spend=True, why=why))
        out.extend(self.assign(now))
        return out

    def worker_gone(self, node: NodeRecord, *, spend: bool, now: float) -> list[Instruction]:
        """``node`` is down: its running jobs are taken back (spending an attempt if ``spend``),
        the jobs it sent as a client are dropped or orphaned, and the freed work reassigned."""
        out: list[Instruction] = []
        for ticket in sorted(node.active):
            job = self.table.jobs.get(ticket)
            if job is not None and job.worker is node:
                out.extend(self.take_back(job, spend=spend, why="the worker running it died"))
        node.active.clear()
        node.waiting = 0
        self.table.forget_client(node)
        out.extend(self.assign(now))
        return out


def _id_differs(job_id: Any, reported: Any) -> bool:
    return type(job_id) is not type(reported) or job_id != reported


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
    head = _quick_head(frames, limits)
    if head is None:
        peeked = wire.peek_head(frames, 3, limits, command)
        if peeked is None:
            return None
        head = peeked[1]
    if type(head.get("id")) not in (int, str) or type(head.get("ticket")) is not int:
        return None
    return head


_QUICK_BYTES = 96  # the first entries of a worker's RESULT header lie within these
_INT_SIZES = {0xCC: 1, 0xCD: 2, 0xCE: 4, 0xCF: 8, 0xD0: 1, 0xD1: 2, 0xD2: 4, 0xD3: 8}


def _quick_head(frames: Sequence[Any], limits: wire.Limits) -> dict[str, Any] | None:
    """The first three entries of a RESULT header, read by hand when they take the shape a
    worker writes (a fixmap of 3 to 15 entries; short str keys; int or short str values): what
    :func:`wire.peek_head` returns for them, in a third of its time (it builds a
    ``msgpack.Unpacker`` per message). None for any other shape, and the caller asks
    ``peek_head``, which decides. Never raises; validates nothing after those entries."""
    try:
        if len(frames) > limits.max_frames + 1:
            return None
        lead = frames[0]
        size = len(lead)
        if size - _PREFIX > limits.max_header_bytes:
            return None
        head = bytes(lead) if size <= _QUICK_BYTES else bytes(memoryview(lead)[:_QUICK_BYTES])
        if not 0x83 <= head[_PREFIX] <= 0x8F:  # fixmap of at least 3 entries
            return None
        pos = _PREFIX + 1
        out: dict[str, Any] = {}
        # Past the bytes read, a slice comes back short and an index raises: the length check
        # at the end catches the first, the except the second.
        for _ in range(3):
            marker = head[pos]
            if marker & 0xE0 != 0xA0:  # a fixstr key
                return None
            end = pos + 1 + (marker & 0x1F)
            key = head[pos + 1 : end].decode()
            marker = head[end]
            pos = end + 1
            if marker <= 0x7F:  # positive fixint
                value: Any = marker
            elif marker >= 0xE0:  # negative fixint
                value = marker - 0x100
            elif marker & 0xE0 == 0xA0:  # fixstr
                end = pos + (marker & 0x1F)
                value = head[pos:end].decode()
                pos = end
            else:
                width = _INT_SIZES.get(marker)
                if width is None:
                    return None
                value = int.from_bytes(head[pos : pos + width], "big", signed=marker >= 0xD0)
                pos += width
            if key in out:
                return None  # a repeated key: peek_head says what
            out[key] = value
        if pos > len(head):
            return None
        return out
    except Exception:  # not buffers, bad UTF-8: peek_head decides
        return None
