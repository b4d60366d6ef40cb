"""The client side of the job path: a bounded window of jobs in flight, dedup, and resend.

:class:`JobClient` sends :class:`~zimg.jobs.JobRequest` s through a node's connection and yields
each answer once, in completion order; the connection's :class:`JobRouter`, made once by its
owner, hands each RESULT to the client that sent the job. It keeps at most ``window`` jobs
unanswered, so memory stays flat however long the input is. When the node starts a new session
with the broker (the broker restarted, or dropped us), every unanswered job is sent again; answers
to jobs already answered, or never asked, are counted and ignored. That makes delivery
at-least-once on the wire and exactly-once for the caller.
"""

from __future__ import annotations

import heapq
import logging
import os
import queue
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator, Sequence, Sized
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from zimg import ops, wire
from zimg._errors import WireError, ZimgTimeout
from zimg._progress import with_progress
from zimg.connection import Connection
from zimg.jobs import JobItem, JobRequest, JobResult
from zimg.wire import Command

log = logging.getLogger("zimg.distribute")

DEFAULT_WINDOW = 16
_RECENT = 1024  # answered jobs whose late duplicates are still recognised
_RESEND = object()
_BUSY_PAUSE_S = 0.05  # first pause before sending again a job the broker was too full to take
_BUSY_PAUSE_MAX_S = 2.0


@dataclass(slots=True)
class Completed:
    """One finished job: the request, its result and the round trip seen by the client."""

    request: JobRequest
    result: JobResult
    latency_s: float


class JobRouter:
    """Routes the RESULTs arriving on one connection to the :class:`JobClient` that sent each job.

    A connection has one: RESULT has one handler (:meth:`Connection.on` refuses a second). Whoever
    owns the connection for job traffic makes it once and hands it to every :class:`JobClient`,
    :func:`distribute` and :func:`~zimg.batch.run_batch` call, so that several (on several threads)
    share the connection and each gets its own RESULTs. A :class:`~zimg.node.Node` makes its own,
    ``node.jobs``; for a bare :class:`Connection`, make ``JobRouter(connection)`` once.

    Args:
        connection: the connection whose RESULTs and new sessions it takes.

    Raises:
        ValueError: the connection has a RESULT handler already (a JobRouter, or its owner's).
    """

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self._lock = threading.Lock()
        self._routes: dict[int, queue.SimpleQueue[object]] = {}
        self._inboxes: set[queue.SimpleQueue[object]] = set()
        self.unrouted = 0  # RESULTs nobody waited for (late answers to jobs already answered)
        try:
            connection.on(Command.RESULT, self._on_result)
        except ValueError as exc:
            raise ValueError(
                f"{exc}. A connection has one JobRouter: pass it (or the Node that owns it) to "
                "every JobClient, distribute and run_batch, rather than the bare connection"
            ) from None
        connection.on_session(self._on_session)

    def __repr__(self) -> str:
        return f"<JobRouter of node {self.connection.name!r}>"

    def expect(self, job_id: int, inbox: queue.SimpleQueue[object]) -> None:
        with self._lock:
            self._routes[job_id] = inbox

    def forget(self, job_id: int) -> None:
        with self._lock:
            self._routes.pop(job_id, None)

    def subscribe(self, inbox: queue.SimpleQueue[object]) -> None:
        with self._lock:
            self._inboxes.add(inbox)

    def unsubscribe(self, inbox: queue.SimpleQueue[object]) -> None:
        with self._lock:
            self._inboxes.discard(inbox)

    def _on_result(self, msg: wire.Message) -> None:
        with self._lock:
            inbox = self._routes.get(msg.header.get("id"))  # type: ignore[arg-type]
            if inbox is None:
                self.unrouted += 1  # a late answer to a job that was already answered
                return
        inbox.put(msg)

    def _on_session(self, broker_restarted: bool) -> None:
        with self._lock:
            inboxes = list(self._inboxes)
        for inbox in inboxes:
            inbox.put(_RESEND)


class _HasJobs(Protocol):
    jobs: JobRouter


JobTarget = Connection | JobRouter | _HasJobs
"""Where jobs go: a :class:`JobRouter`, a node that owns one (``node.jobs``), or a bare
:class:`Connection`, for which a new :class:`JobRouter` is made (once per connection)."""


def job_router(target: JobTarget) -> JobRouter:
    """The :class:`JobRouter` of ``target``; for a bare :class:`Connection`, a new one.

    Raises:
        ValueError: ``target`` is a connection that has a RESULT handler already.
    """
    if isinstance(target, JobRouter):
        return target
    if isinstance(target, Connection):
        return JobRouter(target)
    return target.jobs


class JobClient:
    """Sends jobs through a connection and collects their results.

    Job ids on the wire come from the connection's counter, so they are unique for the life of
    the node, however many JobClients use it.

    Args:
        connection: the started (welcomed) connection's :class:`JobRouter`, or a node that owns
            one; a bare :class:`Connection` gets a new router, so only one JobClient may be
            given it (see :func:`job_router`).
        window: the most jobs in flight at once.

    Raises:
        ValueError: ``connection`` is a bare connection that routes its RESULTs already.
    """

    def __init__(
        self,
        connection: JobTarget,
        *,
        window: int = DEFAULT_WINDOW,
        on_duplicate: Callable[[JobRequest, JobResult], None] | None = None,
    ) -> None:
        if window < 1:
            raise ValueError(f"window must be at least 1, got {window}")
        self._router = job_router(connection)
        self.connection = self._router.connection
        self.window = window
        self._duplicates = 0
        self.resends = 0
        self.on_duplicate = on_duplicate
        self._unrouted_at_start = self._router.unrouted
        self._inbox: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._outstanding: dict[int, tuple[JobRequest, float]] = {}
        self._recent: OrderedDict[int, JobRequest] = OrderedDict()  # answered, route kept
        self._again: deque[JobRequest] = deque()
        # Jobs the broker was too full to take (a ``busy`` RESULT): (when, id) to send again,
        # after a pause that doubles while it stays full.
        self._later: list[tuple[float, int]] = []
        self._pause_s = _BUSY_PAUSE_S

    def resubmit(self, request: JobRequest) -> None:
        """Send ``request`` again, before any new request: from the loop consuming :meth:`run`."""
        self._again.append(request)

    @property
    def duplicates(self) -> int:
        """Answers that came for jobs already answered (ignored). Counts those on this
        connection while this client ran (a later answer no longer has a route to it)."""
        return self._duplicates + self._router.unrouted - self._unrouted_at_start

    def run(
        self, requests: Iterable[JobRequest], *, idle_timeout_s: float | None = None
    ) -> Iterator[Completed]:
        """Send every request and yield each result once, as results arrive.

        Args:
            requests: consumed lazily, never more than ``window`` ahead of the results.
            idle_timeout_s: give up if no result arrives for this long (None: wait forever).

        Raises:
            ZimgTimeout: ``idle_timeout_s`` passed with jobs unanswered.
        """
        self._router.subscribe(self._inbox)
        try:
            yield from self._run(iter(requests), idle_timeout_s)
        finally:
            self._router.unsubscribe(self._inbox)
            for job_id in [*self._outstanding, *self._recent]:
                self._router.forget(job_id)
            self._outstanding.clear()
            self._recent.clear()

    def _run(
        self, pending: Iterator[JobRequest], idle_timeout_s: float | None
    ) -> Iterator[Completed]:
        exhausted = False
        while True:
            while len(self._outstanding) < self.window:
                if self._again:
                    self._send(self._again.popleft())
                    continue
                request = None if exhausted else next(pending, None)
                if request is None:
                    exhausted = True
                    break
                self._send(request)
            if not self._outstanding:
                return
            timeout = idle_timeout_s
            if self._later:
                wait = max(0.0, self._later[0][0] - time.monotonic())
                timeout = wait if timeout is None else min(timeout, wait)
            try:
                item = self._inbox.get(timeout=timeout)
            except queue.Empty:
                if self._later:
                    self._resend_due()
                    continue
                raise ZimgTimeout(
                    f"no result for {idle_timeout_s} s with {len(self._outstanding)} jobs "
                    "unanswered; are any workers connected?"
                ) from None
            done = self._take(item)
            if done is not None:
                yield done

    def _send(self, request: JobRequest) -> None:
        job_id = next(self.connection.job_ids)
        self._outstanding[job_id] = (request, time.perf_counter())
        self._router.expect(job_id, self._inbox)
        self.connection.send(Command.JOB, request.header(job_id))

    def _resend_due(self) -> None:
        now = time.monotonic()
        while self._later and self._later[0][0] <= now:
            _, job_id = heapq.heappop(self._later)
            entry = self._outstanding.get(job_id)
            if entry is not None:
                self.connection.send(Command.JOB, entry[0].header(job_id))

    def _take(self, item: object) -> Completed | None:
        if item is _RESEND:
            self.resends += 1
            log.info("new broker session: resending %d unanswered jobs", len(self._outstanding))
            for job_id, (request, _) in list(self._outstanding.items()):
                self.connection.send(Command.JOB, request.header(job_id))
            return None
        if not isinstance(item, wire.Message):
            return None
        try:
            result = JobResult.from_header(item.header)
        except WireError as exc:
            log.warning("dropped a malformed RESULT: %s", exc)
            return None
        if item.header.get("busy") is True and result.id in self._outstanding:
            # The broker holds as many jobs as it may: send this one again a little later.
            heapq.heappush(self._later, (time.monotonic() + self._pause_s, result.id))
            self._pause_s = min(_BUSY_PAUSE_MAX_S, self._pause_s * 2)
            return None
        self._pause_s = _BUSY_PAUSE_S
        entry = self._outstanding.pop(result.id, None)
        if entry is None:
            self._duplicates += 1  # a repeated answer: the job was already answered
            answered = self._recent.get(result.id)
            if answered is not None and self.on_duplicate is not None:
                self.on_duplicate(answered, result)
            return None
        # Keep the route a while: a second answer (a retry that was already running, a thawed
        # worker) then still reaches us, and on_duplicate can clean up after it.
        self._recent[result.id] = entry[0]
        if len(self._recent) > _RECENT:
            old, _ = self._recent.popitem(last=False)
            self._router.forget(old)
        request, sent_at = entry
        return Completed(request, result, time.perf_counter() - sent_at)


@dataclass(slots=True)
class Processed:
    """One image that came back from :func:`distribute`."""

    index: int
    image: np.ndarray[Any, Any] | None
    node: str | None
    ms: float
    error: str | None


def distribute(
    images: Iterable[np.ndarray[Any, Any]],
    node: JobTarget,
    *,
    pipeline: Sequence[ops.OpSpec] = ops.DEFAULT_PIPELINE,
    window: int = DEFAULT_WINDOW,
    idle_timeout_s: float | None = None,
    progress: bool = False,
) -> Iterator[Processed]:
    """Process arrays on the cluster; yield each result once, in completion order.

    The notebook's ``DistributedImageProcessing.distribute``, with a bounded window and
    redelivery: arrays travel raw (zero-copy), workers apply ``pipeline`` with their own name.

    Args:
        images: arrays to process, consumed lazily.
        node: a started node (:class:`~zimg.node.Node`, a local cluster) or its
            :class:`JobRouter`; a bare :class:`~zimg.connection.Connection` is claimed for good
            (see :func:`job_router`).
        pipeline: the ops to apply (default: threshold, then label).
        window: the most images in flight at once.
        idle_timeout_s: give up if nothing comes back for this long.
        progress: show a rich progress bar as results come back: in place in a terminal, and
            as a widget in Jupyter (``ipywidgets``, from the ``notebook`` extra). Its total is
            ``len(images)`` when ``images`` has one.

    Yields:
        :class:`Processed` records; ``index`` is the position in ``images``. Every input gets
        exactly one, so check ``error`` before using ``image``: it is set (and ``image`` is
        None) when a worker failed on the image, or when the input is not an image array
        (``None`` from a ``cv2.imread`` that failed, a file path, any other object). Such an
        input is never sent, and the rest of ``images`` is still processed.

    Raises:
        ZimgTimeout: ``idle_timeout_s`` passed with images unanswered.
    """
    records = _distribute(images, node, pipeline, window, idle_timeout_s)
    if not progress:
        return records
    total = len(images) if isinstance(images, Sized) else None
    return with_progress(records, total, "distribute")


def _distribute(
    images: Iterable[np.ndarray[Any, Any]],
    node: JobTarget,
    pipeline: Sequence[ops.OpSpec],
    window: int,
    idle_timeout_s: float | None,
) -> Iterator[Processed]:
    """:func:`distribute`'s records, without the progress bar."""
    wire_ops = [spec.to_wire() for spec in pipeline]
    refused: deque[Processed] = deque()  # inputs that are not arrays, reported between results

    def requests() -> Iterator[JobRequest]:
        for i, image in enumerate(images):
            problem = _not_an_image(i, image)
            if problem is not None:
                refused.append(Processed(i, None, None, 0.0, problem))
                continue
            yield JobRequest(i, "raw", wire_ops, [JobItem(i, f"array {i}", ".png", payload=image)])

    client = JobClient(node, window=window)
    for done in client.run(requests(), idle_timeout_s=idle_timeout_s):
        while refused:
            yield refused.popleft()
        r, item = done.result, done.result.item(0)
        yield Processed(done.request.id, item.payload, r.node, item.ms, item.error)
    while refused:
        yield refused.popleft()


def _not_an_image(index: int, image: object) -> str | None:
    """Why input ``index`` of :func:`distribute` cannot be sent, in the caller's terms; None
    if it is an array."""
    if isinstance(image, np.ndarray):
        return None
    if image is None:
        return f"image {index} is None (did cv2.imread fail to read a file?)"
    if isinstance(image, str | bytes | os.PathLike):
        return (
            f"image {index} is a path ({os.fsdecode(image)!r}): give an image array (numpy), "
            "not a path: read it with cv2.imread or use zimg send/run_batch for files"
        )
    return f"image {index} is a {type(image).__name__}, not an image array (numpy.ndarray)"
