"""A worker node: hosts actors, and takes JOBs from the broker, runs the ops on a thread pool."""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import cv2

from zimg import images, ops, protocol, wire
from zimg._errors import ZimgError
from zimg.jobs import JobRequest
from zimg.node import Node
from zimg.security import ClientKeys
from zimg.wire import Command

log = logging.getLogger("zimg.worker")

DEFAULT_CAPACITY = 2


def process(request: JobRequest, *, node: str, max_pixels: int = images.DEFAULT_MAX_PIXELS) -> Any:
    """Run one image job: decode if encoded, apply the pipeline, encode again if encoded.

    This is exactly what a worker does, so calling it in-process gives the reference output.

    Returns:
        A 1-D uint8 array of the encoded output (``encoded`` mode) or the processed image (``raw``).
    """
    specs = [ops.OpSpec.from_wire(x) for x in request.ops]
    ops.validate(specs)
    if request.mode == "encoded":
        image = images.decode(request.payload, name=request.name, max_pixels=max_pixels)
    else:
        image = request.payload
    out = ops.run_pipeline(image, specs, node=node)
    if request.mode == "encoded":
        return images.encode(out, request.ext, name=request.name)
    return out


class Worker:
    """A node that runs image jobs.

    Args:
        url: the broker's endpoint.
        name: this node's name (the label the default pipeline writes).
        capacity: jobs run at once, on as many threads; also the credit the broker grants.
        max_pixels: the largest image this worker decodes.
    """

    def __init__(
        self,
        url: str,
        name: str,
        *,
        capacity: int = DEFAULT_CAPACITY,
        max_pixels: int = images.DEFAULT_MAX_PIXELS,
        limits: wire.Limits = wire.DEFAULT_LIMITS,
        keys: ClientKeys | None = None,
    ) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self.name = name
        self.capacity = capacity
        self.max_pixels = max_pixels
        self.jobs_done = 0
        self._pool = ThreadPoolExecutor(capacity, thread_name_prefix=f"zimg-job-{name}")
        self._stopped = threading.Event()
        self.node = Node(
            url, name, role=protocol.ROLE_WORKER, capacity=capacity, limits=limits, keys=keys
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
        if not self._stopped.is_set():
            self._pool.submit(self._run_job, msg.header)

    def _run_job(self, header: dict[str, Any]) -> None:
        started = time.perf_counter()
        reply: dict[str, Any] = {
            "id": header.get("id"),
            "client": header.get("client"),
            "attempt": header.get("attempt", 1),
            "node": self.name,
        }
        try:
            request = JobRequest.from_header(header)
            reply["payload"] = process(request, node=self.name, max_pixels=self.max_pixels)
            reply["ok"] = True
            reply["error"] = None
        except ZimgError as exc:
            reply.update(ok=False, error=str(exc))
        except Exception as exc:  # a bug in an op must fail the job, not the worker
            log.error("job %s failed:\n%s", header.get("id"), traceback.format_exc())
            reply.update(ok=False, error=f"{type(exc).__name__}: {exc}")
        reply["ms"] = round((time.perf_counter() - started) * 1000, 3)
        self.jobs_done += 1
        try:
            self.connection.send(Command.RESULT, reply)
        except ZimgError as exc:
            log.error("could not send the result of job %s: %s", header.get("id"), exc)


def serve(
    url: str,
    name: str,
    *,
    capacity: int = DEFAULT_CAPACITY,
    cv_threads: int = 1,
    max_pixels: int = images.DEFAULT_MAX_PIXELS,
    keys: ClientKeys | None = None,
) -> None:
    """Run a worker until SIGTERM or Ctrl-C: what ``zimg worker`` and embedded workers do.

    Raises:
        ZimgError: the broker refused the worker (its name is taken, for example).
    """
    configure_opencv(cv_threads)
    node = Worker(url, name, capacity=capacity, max_pixels=max_pixels, keys=keys)
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
