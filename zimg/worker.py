"""A worker node: hosts actors, and takes JOBs from the broker, runs the ops on a thread pool."""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import signal
import threading
import time
import traceback
from collections import deque
from collections.abc import Collection
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple

import cv2

from zimg import images, ops, protocol, wire
from zimg._actor import DEFAULT_ACTOR_LIMITS, ActorLimits
from zimg._affinity import format_cpus, pin_process
from zimg._errors import AffinityError, ClosedError, ImageError, OpError, WireError, ZimgError
from zimg._heap import keep_freed_memory
from zimg._placement import Placement
from zimg.jobs import ItemResult, JobItem, JobRequest, cap_text, pack_result_items
from zimg.node import Node
from zimg.ops import short_repr
from zimg.processing import process
from zimg.security import ClientKeys
from zimg.wire import Command

log = logging.getLogger("zimg.worker")

DEFAULT_CAPACITY = 2


class Worker:
    """A node that runs image jobs.

    Args:
        url: the broker's endpoint.
        name: this node's name (the label the default pipeline writes).
        capacity: the credit the broker grants: jobs held at once (running or next in line).
        threads: jobs run at once (default: ``capacity``). Fewer threads than credit means the
            next job is already here when one finishes.
        max_pixels: the largest image this worker decodes, in pixels.
        max_image_bytes: the largest image this worker decodes (width * height * channels *
            bytes per sample, read from the header), takes raw, or lets an op make; see
            ``images.DEFAULT_MAX_IMAGE_BYTES``.
        limits: wire limits for what this worker sends and receives.
        actor_limits: what the worker's actors may hold (processes, links, mailboxes).
        allow_paths: accept ``path`` jobs, which read and write files named by the client.
            Only for workers that trust every client of their broker with their filesystem
            (an embedded cluster's workers, whose broker is private).
    """

    def __init__(
        self,
        url: str,
        name: str,
        *,
        capacity: int = DEFAULT_CAPACITY,
        threads: int | None = None,
        max_pixels: int = images.DEFAULT_MAX_PIXELS,
        max_image_bytes: int = images.DEFAULT_MAX_IMAGE_BYTES,
        limits: wire.Limits = wire.DEFAULT_LIMITS,
        keys: ClientKeys | None = None,
        allow_paths: bool = False,
        actor_limits: ActorLimits = DEFAULT_ACTOR_LIMITS,
        lanes: bool = False,
        lane_host: str | None = None,
    ) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self.name = name
        self.capacity = capacity
        self.threads = threads or capacity
        if self.threads < 1:
            raise ValueError(f"threads must be at least 1, got {self.threads}")
        if max_image_bytes < 1:
            raise ValueError(f"max_image_bytes must be at least 1, got {max_image_bytes}")
        self.max_pixels = max_pixels
        self.max_image_bytes = max_image_bytes
        self.allow_paths = allow_paths
        self.jobs_done = 0
        self._writes = itertools.count()  # each write its own name, even for a repeated job
        self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix=f"zimg-job-{name}")
        self._stopped = threading.Event()
        # Jobs the broker sent ``queued``: each starts when a job this worker runs ends, on
        # that job's thread (the broker counts one job per CPU of this host; see
        # zimg._placement). ``queued`` is how many jobs the broker saw running here: if one of
        # them has ended by the time the job arrives, it starts at once. ``_running`` counts
        # the jobs handed to the pool. Each job goes with the time it was received, from
        # which its ``deadline_s`` counts (waiting here counts too).
        self._gate = threading.Lock()
        self._running = 0
        self._queued: deque[_Received] = deque()
        self.node = Node(
            url,
            name,
            role=protocol.ROLE_WORKER,
            capacity=capacity,
            placement=Placement.here(self.threads),
            limits=limits,
            keys=keys,
            actor_limits=actor_limits,
            lanes=lanes,
            lane_host=lane_host,
        )
        self.connection = self.node.connection
        self.connection.on(Command.JOB, self._on_job)

    def start(self, timeout_s: float | None = 10.0) -> Worker:
        """Join the broker.

        Args:
            timeout_s: how long to wait for the broker; None waits as long as it takes (or
                until :meth:`request_stop`).

        Raises:
            RejectedError: the broker refused the worker (its name is taken, for example).
            ZimgTimeout: no broker answered within ``timeout_s``.
            ClosedError: :meth:`request_stop` was called before the broker answered.
        """
        self.node.start(timeout_s, cancel=self._stopped)
        log.info("worker %s ready, capacity %d", self.name, self.capacity)
        return self

    def run_forever(self) -> None:
        """Block until :meth:`stop` is called (or KeyboardInterrupt).

        Raises:
            BrokenError: the node lost its place at the broker for good (refused when it
                rejoined: its name was taken while it was frozen, for example).
        """
        try:
            while not self._stopped.wait(1.0):
                self.connection._check_usable()  # a dead I/O thread would leave a zombie worker
        finally:
            self.stop()

    def request_stop(self) -> None:
        """Ask :meth:`run_forever` to return (safe from a signal handler)."""
        self._stopped.set()

    @property
    def stopping(self) -> bool:
        """True once :meth:`request_stop` or :meth:`stop` was called."""
        return self._stopped.is_set()

    def stop(self) -> None:
        """Leave the broker and stop the pool (running jobs finish first)."""
        self._stopped.set()
        self._pool.shutdown(wait=True, cancel_futures=True)  # running jobs answer first
        self.node.close()  # DISCONNECT: the broker requeues what we did not run

    def __enter__(self) -> Worker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _on_job(self, msg: wire.Message) -> None:
        """On the I/O thread, as the JOB arrives: its ``deadline_s`` counts from now."""
        job = _Received(msg.header, time.monotonic())
        if self._stopped.is_set():
            return
        queued = msg.header.get("queued")
        with self._gate:
            if type(queued) is int and self._running >= queued > 0:
                self._queued.append(job)  # behind the jobs the broker saw running
                return
            self._running += 1
        self._pool.submit(self._run_jobs, job)

    def _run_jobs(self, job: _Received) -> None:
        """Run a job, then each queued job this thread takes over, until none is left."""
        next_job: _Received | None = job
        while next_job is not None:
            try:
                self._run_job(next_job.header, next_job.received)
            except Exception:  # a bug here must not strand the jobs queued behind this one
                job_id = short_repr(next_job.header.get("id"))
                log.error("job %s failed:\n%s", job_id, traceback.format_exc())
            with self._gate:
                if self._queued and not self._stopped.is_set():
                    next_job = self._queued.popleft()
                else:
                    next_job = None
                    self._running -= 1

    def _run_job(self, header: dict[str, Any], received: float) -> None:
        """Run a job and send its RESULT, whatever happens.

        ``received``: the ``time.monotonic()`` at which the JOB arrived; its ``deadline_s``
        counts from then.
        """
        reply = result_head(header)
        reply.update(node=self.name, ok=True, error=None)
        try:
            request = JobRequest.from_header(header)
            if request.mode == "path" and not self.allow_paths:
                raise OpError(
                    f"worker {self.name} does not take path jobs (they read and write its "
                    "files); start it with --allow-paths, or send encoded payloads"
                )
            ops.check_op_count(request.ops)
            specs = [ops.OpSpec.from_wire(x) for x in request.ops]
            ops.validate(specs)
            limit = min(self.max_pixels, request.max_pixels or self.max_pixels)
            deadline = None if request.deadline_s is None else received + request.deadline_s
            items = [
                self._run_item(item, request, specs, limit, deadline) for item in request.items
            ]
            reply["items"] = items
            if "pack" in header:  # answered in the form asked: the outputs packed too
                reply.update(pack_result_items(items, self.connection.limits.max_frame_bytes))
        except ZimgError as exc:
            reply.update(ok=False, error=cap_text(str(exc)))
        self.jobs_done += 1
        try:
            frames = wire.encode(Command.RESULT, reply, self.connection.limits)
        except WireError as exc:
            # Never drop a result: the broker would hold the job, and this worker's credit
            # with it. Say why instead, in a reply that always fits.
            log.error("the result of job %s cannot be sent: %s", short_repr(header.get("id")), exc)
            frames = self._failure(header, f"worker {self.name} could not send the result: {exc}")
        try:
            self.connection.send_frames(frames)
        except ZimgError as exc:  # closed, or gone for good: the broker takes the job back
            log.error("could not send the result of job %s: %s", short_repr(header.get("id")), exc)

    def _failure(self, header: dict[str, Any], why: str) -> list[Any]:
        """The frames of a compact whole-job failure: the JOB's first entries, and ``why``.

        A client's id (a str) may take nearly a whole header: if the failure does not fit
        with it, the id goes back empty (a broker settles a RESULT on its ticket).
        """
        failure = result_head(header)
        failure.update(node=self.name, ok=False, error=cap_text(why))
        try:
            return wire.encode(Command.RESULT, failure, self.connection.limits)
        except WireError:
            failure["id"] = ""
            return wire.encode(Command.RESULT, failure, self.connection.limits)

    def _run_item(
        self,
        item: JobItem,
        request: JobRequest,
        specs: list[ops.OpSpec],
        max_pixels: int,
        deadline: float | None,
    ) -> dict[str, Any]:
        started = time.perf_counter()
        result = ItemResult(ok=True)
        mode = request.mode
        try:
            if deadline is not None and time.monotonic() > deadline:
                raise ops.DeadlinePassed("the deadline passed before the item started")
            out = process(
                item,
                mode,
                specs,
                node=self.name,
                max_pixels=max_pixels,
                max_bytes=self.max_image_bytes,
                deadline=deadline,
            )
            if mode == "path":
                result.output = self._write_temporary(item, out)
            else:
                result.payload = out
        except ops.DeadlinePassed:
            passed = f"{item.name}: the job's deadline of {request.deadline_s:g} s passed"
            result = ItemResult(ok=False, error=passed)
        except ZimgError as exc:
            result = ItemResult(ok=False, error=str(exc))
        except Exception as exc:  # a bug in an op must fail the item, not the worker
            log.error("an item of a job failed:\n%s", traceback.format_exc())
            result = ItemResult(ok=False, error=f"{item.name}: {type(exc).__name__}: {exc}")
        result.ms = (time.perf_counter() - started) * 1000
        return result.to_wire()

    def _write_temporary(self, item: JobItem, data: Any) -> str:
        """Write a path item's output next to its final place, under a name only this worker
        uses; the client renames the one it keeps, so a job redelivered elsewhere can never
        leave a half-written or mismatched output."""
        path = f"{item.output}.{self.name}-{os.getpid()}-{next(self._writes)}.tmp"
        try:
            with open(path, "wb") as f:
                f.write(memoryview(data))
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(path)
            raise ImageError(f"{item.name}: cannot write {path}: {exc}") from exc
        return path


class _Received(NamedTuple):
    header: dict[str, Any]
    received: float  # time.monotonic() on the I/O thread as the JOB arrived


def result_head(header: dict[str, Any]) -> dict[str, Any]:
    """The first entries of a worker's RESULT, copied from the JOB: ``id``, then ``ticket``
    (protocol 3) or, from a broker that sends none, ``client``, then ``attempt`` (1 if absent).
    A broker settles a RESULT on these first entries, even one it cannot fully decode."""
    route = "ticket" if "ticket" in header else "client"
    return {"id": header.get("id"), route: header.get(route), "attempt": header.get("attempt", 1)}


def serve(
    url: str,
    name: str,
    *,
    capacity: int = DEFAULT_CAPACITY,
    threads: int | None = None,
    cv_threads: int = 1,
    max_pixels: int = images.DEFAULT_MAX_PIXELS,
    max_image_bytes: int = images.DEFAULT_MAX_IMAGE_BYTES,
    keys: ClientKeys | None = None,
    allow_paths: bool = False,
    keep_heap: bool = True,
    cpus: Collection[int] | None = None,
    actor_limits: ActorLimits = DEFAULT_ACTOR_LIMITS,
    death_timeout_s: float | None = None,
    lanes: bool = False,
    lane_host: str | None = None,
) -> None:
    """Run a worker until SIGTERM or Ctrl-C: what ``zimg worker`` and embedded workers do.

    The worker waits for its broker as long as it takes (saying once that it waits), so
    workers and broker may start in any order; ``death_timeout_s`` gives up instead if no
    broker welcomed the worker within that many seconds of its start.

    ``keep_heap`` keeps up to 128 MiB of freed memory in the process for the next images
    instead of returning it to the kernel after each (glibc only; see ``zimg._heap``).
    ``cpus`` pins the process to those CPUs, before it starts any thread (see
    ``zimg._affinity``).

    Raises:
        RejectedError: the broker refused the worker (its name is taken, for example).
        AffinityError: the system refused ``cpus`` (also an ``OSError``).
        ZimgTimeout: no broker answered within ``death_timeout_s``.
    """
    if cpus:
        try:
            if not pin_process(cpus):
                log.warning("this system cannot pin processes to CPUs; --cpus is ignored")
        except OSError as exc:
            text = f"cannot run worker {name} on CPUs {format_cpus(cpus)}: {exc}"
            raise AffinityError(text) from exc
    configure_opencv(cv_threads)
    if keep_heap and not keep_freed_memory():
        log.debug("no glibc mallopt here: the C library's own heap behaviour stays")
    node = Worker(
        url,
        name,
        capacity=capacity,
        threads=threads,
        max_pixels=max_pixels,
        max_image_bytes=max_image_bytes,
        keys=keys,
        allow_paths=allow_paths,
        actor_limits=actor_limits,
        lanes=lanes,
        lane_host=lane_host,
    )
    signal.signal(signal.SIGTERM, lambda *_: node.request_stop())
    try:
        node.start(death_timeout_s)
    except KeyboardInterrupt:
        node.stop()
        return
    except ClosedError:
        node.stop()
        if node.stopping:
            return  # SIGTERM while waiting for the broker: a clean exit
        raise
    except ZimgError:
        node.stop()
        raise
    with contextlib.suppress(KeyboardInterrupt):
        node.run_forever()


def configure_opencv(threads: int) -> None:
    """Set OpenCV's own thread count (0 = OpenCV's default)."""
    if threads > 0:
        cv2.setNumThreads(threads)


__all__ = ["DEFAULT_CAPACITY", "Worker", "configure_opencv", "process", "result_head", "serve"]
