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
from typing import Any

import cv2

from zimg import images, ops, protocol, wire
from zimg._affinity import format_cpus, pin_process
from zimg._errors import ImageError, OpError, WireError, ZimgError
from zimg._heap import keep_freed_memory
from zimg._placement import Placement
from zimg.jobs import ItemResult, JobItem, JobRequest
from zimg.node import Node
from zimg.security import ClientKeys
from zimg.wire import Command

log = logging.getLogger("zimg.worker")

DEFAULT_CAPACITY = 2


def process(
    item: JobItem,
    mode: str,
    specs: list[ops.OpSpec],
    *,
    node: str,
    max_pixels: int = images.DEFAULT_MAX_PIXELS,
) -> Any:
    """Run the pipeline on one item: decode if needed, apply ``specs``, encode if needed.

    This is exactly what a worker does, so calling it in-process gives the reference output.
    ``path`` items are read and encoded here too; writing them is :meth:`Worker`'s part.

    Returns:
        A 1-D uint8 array of the encoded output (``encoded`` and ``path`` modes) or the
        processed image (``raw``).
    """
    if mode == "path":
        data: Any = images.read_file(item.name)
    elif item.payload is None:
        raise WireError(f"{item.name}: a {mode} item without a payload")
    else:
        data = item.payload
    image = data if mode == "raw" else images.decode(data, name=item.name, max_pixels=max_pixels)
    # A decoded image is ours to write on; a raw payload is a view of the received frame.
    out = ops.run_pipeline(image, specs, node=node, consume=mode != "raw")
    if mode == "raw":
        return out
    return images.encode(out, item.ext, name=item.name)


class Worker:
    """A node that runs image jobs.

    Args:
        url: the broker's endpoint.
        name: this node's name (the label the default pipeline writes).
        capacity: the credit the broker grants: jobs held at once (running or next in line).
        threads: jobs run at once (default: ``capacity``). Fewer threads than credit means the
            next job is already here when one finishes.
        max_pixels: the largest image this worker decodes.
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
        limits: wire.Limits = wire.DEFAULT_LIMITS,
        keys: ClientKeys | None = None,
        allow_paths: bool = False,
    ) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self.name = name
        self.capacity = capacity
        self.threads = threads or capacity
        if self.threads < 1:
            raise ValueError(f"threads must be at least 1, got {self.threads}")
        self.max_pixels = max_pixels
        self.allow_paths = allow_paths
        self.jobs_done = 0
        self._writes = itertools.count()  # each write its own name, even for a repeated job
        self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix=f"zimg-job-{name}")
        self._stopped = threading.Event()
        # Jobs the broker sent ``queued``: each starts when a job this worker runs ends, on
        # that job's thread (the broker counts one job per CPU of this host; see
        # zimg._placement). ``queued`` is how many jobs the broker saw running here: if one of
        # them has ended by the time the job arrives, it starts at once. ``_running`` counts
        # the jobs handed to the pool.
        self._gate = threading.Lock()
        self._running = 0
        self._queued: deque[dict[str, Any]] = deque()
        self.node = Node(
            url,
            name,
            role=protocol.ROLE_WORKER,
            capacity=capacity,
            placement=Placement.here(self.threads),
            limits=limits,
            keys=keys,
        )
        self.connection = self.node.connection
        self.connection.on(Command.JOB, self._on_job)

    def start(self, timeout_s: float = 10.0) -> Worker:
        """Join the broker; raises RejectedError if the name is taken."""
        self.node.start(timeout_s)
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
        if self._stopped.is_set():
            return
        queued = msg.header.get("queued")
        with self._gate:
            if type(queued) is int and self._running >= queued > 0:
                self._queued.append(msg.header)  # behind the jobs the broker saw running
                return
            self._running += 1
        self._pool.submit(self._run_jobs, msg.header)

    def _run_jobs(self, header: dict[str, Any]) -> None:
        """Run a job, then each queued job this thread takes over, until none is left."""
        next_job: dict[str, Any] | None = header
        while next_job is not None:
            try:
                self._run_job(next_job)
            except Exception:  # a bug here must not strand the jobs queued behind this one
                log.error("job %s failed:\n%s", next_job.get("id"), traceback.format_exc())
            with self._gate:
                if self._queued and not self._stopped.is_set():
                    next_job = self._queued.popleft()
                else:
                    next_job = None
                    self._running -= 1

    def _run_job(self, header: dict[str, Any]) -> None:
        # id, ticket and attempt first: the broker settles a RESULT on its first entries.
        reply: dict[str, Any] = {
            "id": header.get("id"),
            **(
                {"ticket": header["ticket"]}
                if "ticket" in header
                else {"client": header.get("client")}
            ),
            "attempt": header.get("attempt", 1),
            "node": self.name,
            "ok": True,
            "error": None,
        }
        try:
            request = JobRequest.from_header(header)
            if request.mode == "path" and not self.allow_paths:
                raise OpError(
                    f"worker {self.name} does not take path jobs (they read and write its "
                    "files); start it with --allow-paths, or send encoded payloads"
                )
            specs = [ops.OpSpec.from_wire(x) for x in request.ops]
            ops.validate(specs)
            limit = min(self.max_pixels, request.max_pixels or self.max_pixels)
            reply["items"] = [
                self._run_item(item, request.mode, specs, limit) for item in request.items
            ]
        except ZimgError as exc:
            reply.update(ok=False, error=str(exc))
        self.jobs_done += 1
        try:
            self.connection.send(Command.RESULT, reply)
        except ZimgError as exc:
            log.error("could not send the result of job %s: %s", header.get("id"), exc)

    def _run_item(
        self, item: JobItem, mode: str, specs: list[ops.OpSpec], max_pixels: int
    ) -> dict[str, Any]:
        started = time.perf_counter()
        result = ItemResult(ok=True)
        try:
            out = process(item, mode, specs, node=self.name, max_pixels=max_pixels)
            if mode == "path":
                result.output = self._write_temporary(item, out)
            else:
                result.payload = out
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


def serve(
    url: str,
    name: str,
    *,
    capacity: int = DEFAULT_CAPACITY,
    threads: int | None = None,
    cv_threads: int = 1,
    max_pixels: int = images.DEFAULT_MAX_PIXELS,
    keys: ClientKeys | None = None,
    allow_paths: bool = False,
    keep_heap: bool = True,
    cpus: Collection[int] | None = None,
) -> None:
    """Run a worker until SIGTERM or Ctrl-C: what ``zimg worker`` and embedded workers do.

    ``keep_heap`` keeps up to 128 MiB of freed memory in the process for the next images
    instead of returning it to the kernel after each (glibc only; see ``zimg._heap``).
    ``cpus`` pins the process to those CPUs, before it starts any thread (see
    ``zimg._affinity``).

    Raises:
        ZimgError: the broker refused the worker (its name is taken, for example), or the
            system refused ``cpus``.
    """
    if cpus:
        try:
            if not pin_process(cpus):
                log.warning("this system cannot pin processes to CPUs; --cpus is ignored")
        except OSError as exc:
            raise ZimgError(f"cannot run worker {name} on CPUs {format_cpus(cpus)}: {exc}") from exc
    configure_opencv(cv_threads)
    if keep_heap and not keep_freed_memory():
        log.debug("no glibc mallopt here: the C library's own heap behaviour stays")
    node = Worker(
        url,
        name,
        capacity=capacity,
        threads=threads,
        max_pixels=max_pixels,
        keys=keys,
        allow_paths=allow_paths,
    )
    signal.signal(signal.SIGTERM, lambda *_: node.request_stop())
    try:
        node.start()
    except ZimgError:
        node.stop()
        raise
    with contextlib.suppress(KeyboardInterrupt):
        node.run_forever()


def configure_opencv(threads: int) -> None:
    """Set OpenCV's own thread count (0 = OpenCV's default)."""
    if threads > 0:
        cv2.setNumThreads(threads)


__all__ = ["DEFAULT_CAPACITY", "Worker", "configure_opencv", "process", "serve"]
