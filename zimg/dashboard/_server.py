"""Runs a dashboard: the NODES poller, the web server (uvicorn) and, on the sending side, the
thumbnails of results as they come."""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
import time
from collections.abc import Iterator
from types import FrameType
from typing import Any

import uvicorn

from zimg._errors import ZimgError
from zimg.dashboard._app import Hub, create_app
from zimg.dashboard._front_door import FrontDoor
from zimg.dashboard._poller import Poller
from zimg.dashboard._status import StatusModel
from zimg.protocol import is_loopback_host as is_loopback
from zimg.security import ClientKeys

__all__ = ["Dashboard", "is_loopback", "parse_http"]

log = logging.getLogger("zimg.dashboard")
THUMB_PX = 160  # a thumbnail's longest side
THUMB_MAX_FILE = 64 << 20  # outputs larger than this, or than THUMB_MAX_PIXELS, get none
THUMB_MAX_PIXELS = 50_000_000
THUMB_EVERY_S = 0.05  # at most 20 thumbnails a second; results beyond are listed without one
# Above this many pixels, decode at 1/8, 1/4 or 1/2 of the size.
_REDUCED = (
    (8_000_000, "IMREAD_REDUCED_COLOR_8"),
    (2_000_000, "IMREAD_REDUCED_COLOR_4"),
    (500_000, "IMREAD_REDUCED_COLOR_2"),
)
_THUMB_QUEUE = 64  # results waiting for a thumbnail; beyond, they are listed without one


def parse_http(addr: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6) as (host, port).

    Raises:
        ValueError: not of that form.
    """
    host, sep, port = addr.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{addr!r} is not HOST:PORT (e.g. 127.0.0.1:8080)")
    return host.strip("[]"), int(port)


class Dashboard:
    """A dashboard for the broker at ``broker_url``, served at ``http`` (``HOST:PORT``).

    Args:
        broker_url: the broker to poll (NODES) and, with ``front_door``, to send jobs to.
        http: where to serve the page.
        token: if set, every request must carry it.
        interval_s: seconds between NODES polls.
        keys: CURVE keys for the broker.
        front_door: serve ``POST /v1/process`` with this (made on a client connection).
        max_clients: live views served at once.
    """

    def __init__(
        self,
        broker_url: str,
        http: str = "127.0.0.1:8080",
        *,
        token: str | None = None,
        interval_s: float = 1.0,
        keys: ClientKeys | None = None,
        front_door: FrontDoor | None = None,
        max_clients: int = 16,
    ) -> None:
        self.host, self.port = parse_http(http)
        self.model = StatusModel(broker_url)
        self.hub = Hub(self.model, max_clients=max_clients)
        self.hub.front_door = front_door
        if front_door is not None:
            front_door.on_failure = self._on_request_failed
        self.poller = Poller(
            broker_url, self._on_report, self._on_error, interval_s=interval_s, keys=keys
        )
        config = uvicorn.Config(
            create_app(self.hub, token=token),
            host=self.host,
            port=self.port,
            log_level="warning",
            lifespan="off",
            timeout_graceful_shutdown=2,
            limit_concurrency=max_clients + 64,
        )
        self.server = _Server(config, self.hub)
        self._thumbs: queue.Queue[tuple[dict[str, Any], float] | None] = queue.Queue(_THUMB_QUEUE)
        self._threads: list[threading.Thread] = []

    @property
    def url(self) -> str:
        """The page's address."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def _on_report(self, report: dict[str, Any], now: float) -> None:
        with self.hub.lock:
            self.model.update(report, now)

    def _on_error(self, text: str, now: float) -> None:
        with self.hub.lock:
            self.model.poll_failed(text, now)

    def _on_request_failed(self, status: int, error: str) -> None:
        with self.hub.lock:
            self.model.request_failed(status, error, time.monotonic())

    def serve(self) -> None:
        """Poll and serve until interrupted (SIGINT, SIGTERM), in this thread."""
        self.poller.start()
        try:
            self.server.run()
        finally:
            self.hub.stopping = True
            self.poller.stop()

    @contextlib.contextmanager
    def running(self) -> Iterator[Dashboard]:
        """Poll and serve on threads of their own while the block runs (the sending side)."""
        self.poller.start()
        web = threading.Thread(target=self.server.run, name="zimg-dashboard-http", daemon=True)
        thumbs = threading.Thread(target=self._thumbnailer, name="zimg-thumbs", daemon=True)
        self._threads = [web, thumbs]
        for t in self._threads:
            t.start()
        try:
            deadline = time.monotonic() + 10.0
            while not self.server.started and web.is_alive() and time.monotonic() < deadline:
                time.sleep(0.01)
            if not self.server.started:
                log.warning("the dashboard could not serve at %s", self.url)
            yield self
        finally:
            self.hub.stopping = True
            self.server.should_exit = True
            with contextlib.suppress(queue.Full):
                self._thumbs.put_nowait(None)
            for t in self._threads:
                t.join(5.0)
            self.poller.stop()

    def add_entry(self, entry: dict[str, Any]) -> None:
        """Show one manifest entry of a batch (``run_batch``'s ``on_entry``); its thumbnail is
        made on another thread, or skipped when too many wait."""
        try:
            self._thumbs.put_nowait((entry, time.monotonic()))
        except queue.Full:
            self._add(entry, time.monotonic(), None)

    def _add(self, entry: dict[str, Any], now: float, thumb: tuple[bytes, str] | None) -> None:
        name = str(entry.get("input") or entry.get("output") or "?").rsplit("/", 1)[-1]
        with self.hub.lock:
            self.model.add_result(
                name=name,
                node=entry.get("node"),
                error=entry.get("error"),
                ms=entry.get("ms"),
                now=now,
                thumb=thumb,
            )

    def _thumbnailer(self) -> None:
        made_at = 0.0
        while (got := self._thumbs.get()) is not None:
            entry, at = got
            output = entry.get("output")
            thumb = None
            now = time.monotonic()
            if output and entry.get("error") is None and now - made_at >= THUMB_EVERY_S:
                thumb = _thumbnail(output)
                made_at = now
            self._add(entry, at, thumb)


class _Server(uvicorn.Server):
    """uvicorn's server, which also ends the live feeds as soon as it is told to stop (they
    would otherwise hold the graceful shutdown until its timeout)."""

    def __init__(self, config: uvicorn.Config, hub: Hub) -> None:
        super().__init__(config)
        self.hub = hub

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.hub.stopping = True
        super().handle_exit(sig, frame)


def _thumbnail(path: str) -> tuple[bytes, str] | None:
    """A small JPEG of the image at ``path``, or None if it cannot be read or is too large to
    be worth it. Large images are decoded at 1/2, 1/4 or 1/8 of their size (JPEG decodes
    that way at a fraction of the cost)."""
    import cv2
    import numpy as np

    from zimg import images

    try:
        if os.path.getsize(path) > THUMB_MAX_FILE:
            return None
        data = np.fromfile(path, np.uint8)
        header = images.sniff_header(data)
    except (OSError, ZimgError):
        return None
    if header is None or header.pixels > THUMB_MAX_PIXELS:
        return None
    flag = next((getattr(cv2, f) for px, f in _REDUCED if header.pixels > px), cv2.IMREAD_COLOR)
    image = cv2.imdecode(data, flag)
    if image is None:
        return None
    h, w = image.shape[:2]
    scale = THUMB_PX / max(h, w)
    if scale < 1:
        image = cv2.resize(image, (max(1, int(w * scale)), max(1, int(h * scale))))
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 80])
    return (data.tobytes(), "image/jpeg") if ok else None
