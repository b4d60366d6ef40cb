"""The HTTP front door: one image in, one processed image out, as an ordinary job.

:meth:`FrontDoor.process` checks the body (size, a known image format, its pixel count), sends
it through the broker as an ``encoded`` JOB on the dashboard's client connection, and waits for
the RESULT. It is blocking, so the web app runs it on a worker thread; at most ``max_pending``
requests wait at once, and the rest are answered 503 at once (as is a job the broker's queue was
too full to take).
"""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from zimg import images, ops, wire
from zimg._errors import ImageError, OpError, WireError, ZimgError
from zimg.distribute import JobRouter
from zimg.jobs import JobItem, JobRequest, JobResult
from zimg.wire import Command

__all__ = ["FrontDoor", "Reply"]

_EXT = {"PNG": ".png", "JPEG": ".jpg", "BMP": ".bmp", "WebP": ".webp", "TIFF": ".tiff"}
_MEDIA = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".bmp": "image/bmp",
    ".webp": "image/webp",
    ".tiff": "image/tiff",
}


@dataclass(slots=True)
class Reply:
    """An HTTP answer: status, body, media type and extra headers."""

    status: int
    body: bytes
    media_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


def error(status: int, message: str, **headers: str) -> Reply:
    """A JSON error reply: ``{"error": message, "status": status}``."""
    body = json.dumps({"error": message, "status": status}).encode()
    return Reply(status, body, headers=headers)


class FrontDoor:
    """Runs HTTP requests as jobs through a client connection's :class:`JobRouter`.

    Args:
        router: the router of a started client connection.
        max_body_bytes: the largest image accepted (413 beyond).
        max_pixels: the largest image in pixels (413 beyond), also sent to the worker.
        deadline_s: how long a worker may take on it (the job's ``deadline_s``).
        timeout_s: how long a request waits for its result before a 504.
        max_pending: requests waiting at once; more get 503 with Retry-After.
        on_failure: called with each failed request's status and error text (the dashboard
            shows them as events).
    """

    def __init__(
        self,
        router: JobRouter,
        *,
        max_body_bytes: int = 32 << 20,
        max_pixels: int = images.DEFAULT_MAX_PIXELS,
        deadline_s: float = 60.0,
        timeout_s: float = 120.0,
        max_pending: int = 32,
        on_failure: Callable[[int, str], None] | None = None,
    ) -> None:
        self.router = router
        self.on_failure = on_failure
        self.max_body_bytes = max_body_bytes
        self.max_pixels = max_pixels
        self.deadline_s = deadline_s
        self.timeout_s = timeout_s
        self.max_pending = max_pending
        self._slots = threading.BoundedSemaphore(max_pending)
        self.stats = {"requests": 0, "ok": 0, "refused_busy": 0, "failed": 0}

    def process(self, body: bytes, op_texts: Sequence[str]) -> Reply:
        """Process one image; blocking. Returns the reply to send (never raises ZimgError)."""
        return self.counted(self._process(body, op_texts))

    def counted(self, reply: Reply) -> Reply:
        """``reply``, counted in :attr:`stats` and, if it is an error, told to ``on_failure``
        (for replies made before :meth:`process`, such as a body too large to read)."""
        self.stats["requests"] += 1
        key = "ok" if reply.status == 200 else "refused_busy" if reply.status == 503 else "failed"
        self.stats[key] += 1
        if reply.status != 200 and self.on_failure is not None:
            self.on_failure(reply.status, json.loads(reply.body).get("error", ""))
        return reply

    def _process(self, body: bytes, op_texts: Sequence[str]) -> Reply:
        if len(body) > self.max_body_bytes:
            return too_large(self.max_body_bytes)
        try:
            specs = [ops.parse_op(t) for t in op_texts] or list(ops.DEFAULT_PIPELINE)
            ops.check_op_count(specs)
            known = set(ops.registered_ops())
            ops.validate([s for s in specs if s.name in known])  # others: the workers' own
        except OpError as exc:
            return error(400, f"bad op: {exc}")
        try:
            header = images.sniff_header(body)
        except ImageError as exc:
            return error(400, f"not a readable image: {exc}")
        if header is None or header.format not in _EXT:
            what = "not an image" if header is None else f"a {header.format} image"
            return error(415, f"{what}: send PNG, JPEG, BMP, WebP or TIFF bytes")
        if header.pixels > self.max_pixels:
            return error(413, f"{header.describe()} has more than {self.max_pixels} pixels")
        if not self.router.connection.welcomed:
            return error(503, "the front door has not joined the broker (yet)", **_RETRY)
        if not self._slots.acquire(blocking=False):
            return error(503, f"{self.max_pending} requests are waiting already", **_RETRY)
        try:
            return self._run(body, _EXT[header.format], [s.to_wire() for s in specs])
        finally:
            self._slots.release()

    def _run(self, body: bytes, ext: str, wire_ops: list[Any]) -> Reply:
        payload = np.frombuffer(body, np.uint8)
        item = JobItem(0, "http request", ext, payload=payload)
        request = JobRequest(0, "encoded", wire_ops, [item], self.max_pixels, self.deadline_s)
        conn = self.router.connection
        inbox: queue.SimpleQueue[object] = queue.SimpleQueue()
        job_id = next(conn.job_ids)
        self.router.expect(job_id, inbox)
        self.router.subscribe(inbox)  # a new broker session: send it again
        try:
            conn.send(Command.JOB, request.header(job_id))
            while True:
                try:
                    got = inbox.get(timeout=self.timeout_s)
                except queue.Empty:
                    return error(504, f"no result within {self.timeout_s:g} s")
                if not isinstance(got, wire.Message):
                    conn.send(Command.JOB, request.header(job_id))
                    continue
                return _answer(JobResult.from_header(got.header), ext)
        except (WireError, ZimgError) as exc:
            return error(502, f"the job could not be run: {exc}")
        finally:
            self.router.unsubscribe(inbox)
            self.router.forget(job_id)


_RETRY = {"Retry-After": "1"}


def too_large(limit: int) -> Reply:
    """The 413 for a body over ``limit`` bytes."""
    return error(413, f"the image is larger than {limit} bytes")


def _answer(result: JobResult, ext: str) -> Reply:
    node = {"X-Zimg-Node": result.node} if result.node else {}
    if result.busy:
        return error(503, "the broker's job queue is full", **_RETRY)
    if not result.ok and result.attempt == 0:  # the broker refused it: too large for it ever
        return error(413, result.error or "the broker refused the job")
    if not result.ok:
        return error(502, result.error or "the job failed", **node)
    item = result.item(0)
    if not item.ok or item.payload is None:
        return error(422, item.error or "the worker returned no image", **node)
    headers = {**node, "X-Zimg-Ms": f"{item.ms:.1f}", "X-Zimg-Attempt": str(result.attempt)}
    return Reply(200, item.payload.tobytes(), _MEDIA[ext], headers)
