"""Asks the broker for NODES at an interval, on a thread of its own, and feeds the model.

One DEALER is kept open between polls (a context per poll would start an I/O thread each time);
after a poll that timed out it is replaced, so a late page cannot be taken for the next answer.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import zmq

from zimg import protocol, wire
from zimg._errors import WireError, ZimgTimeout
from zimg.security import ClientKeys
from zimg.wire import Command

__all__ = ["Poller"]

log = logging.getLogger("zimg.dashboard")


class Poller:
    """Polls ``url`` every ``interval_s`` and calls ``on_report(report, now)`` or
    ``on_error(text, now)``, until :meth:`stop`.

    Args:
        url: the broker's endpoint.
        interval_s: seconds between polls.
        keys: CURVE keys, for a broker that has them.
        max_pages: the most NODES pages asked per poll (about 250 nodes each); the report
            then says ``more``. Keeps a poll's cost bounded however large the cluster.
    """

    def __init__(
        self,
        url: str,
        on_report: Callable[[dict[str, Any], float], None],
        on_error: Callable[[str, float], None],
        *,
        interval_s: float = 1.0,
        keys: ClientKeys | None = None,
        max_pages: int = 4,
    ) -> None:
        self.url = url
        self.max_pages = max_pages
        self.interval_s = interval_s
        self.keys = keys
        self._on_report = on_report
        self._on_error = on_error
        self._stop = threading.Event()
        self._ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self._sock: zmq.Socket[bytes] | None = None
        self._thread = threading.Thread(target=self._run, name="zimg-dashboard-poll", daemon=True)

    def start(self) -> Poller:
        """Start polling (the first poll at once)."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop polling and close the socket."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5.0)
        self._ctx.destroy(linger=0)

    def poll_once(self) -> dict[str, Any]:
        """One NODES report: up to ``max_pages`` pages, merged.

        Raises:
            ZimgTimeout: the broker did not answer within the interval (at least 1 s).
        """
        sock = self._sock or self._connect()
        deadline = time.monotonic() + max(1.0, self.interval_s)

        def ask(request: dict[str, Any]) -> dict[str, Any]:
            sock.send_multipart(wire.encode(Command.NODES, request))
            while (left := deadline - time.monotonic()) > 0:
                if not sock.poll(int(left * 1000) + 1):
                    break
                msg = wire.decode(sock.recv_multipart(copy=False))
                if msg.command is Command.NODES:
                    return msg.header
            self._drop_socket()
            raise ZimgTimeout(f"no NODES answer from {self.url}")

        first = report = ask({})
        nodes: list[dict[str, Any]] = list(report.get("nodes", []))
        for _ in range(self.max_pages - 1):
            if report.get("more") is not True or not nodes:
                break
            report = ask({"after": nodes[-1]["name"]})
            nodes.extend(report.get("nodes", []))
        # The counters are the last page's; the nodes gone lately come on the first page only.
        more = report.get("more") is True
        return {**report, "nodes": nodes, "more": more, "downs": first.get("downs", [])}

    def _connect(self) -> zmq.Socket[bytes]:
        sock = self._ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        if self.keys is not None:
            self.keys.apply(sock)
        if protocol.is_ipv6_endpoint(self.url):
            sock.setsockopt(zmq.IPV6, 1)
        sock.connect(self.url)
        self._sock = sock
        return sock

    def _drop_socket(self) -> None:
        if self._sock is not None:
            self._sock.close(linger=0)
            self._sock = None

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                report = self.poll_once()
            except (ZimgTimeout, WireError) as exc:
                self._drop_socket()
                self._on_error(str(exc), time.monotonic())
            except zmq.ZMQError as exc:  # the context was destroyed under us: stopping
                if self._stop.is_set():
                    return
                log.warning("NODES poll failed: %s", exc)
                self._drop_socket()
            else:
                self._on_report(report, time.monotonic())
            self._stop.wait(max(0.0, self.interval_s - (time.monotonic() - started)))
        self._drop_socket()
