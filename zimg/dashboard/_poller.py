"""Asks the broker for NODES at an interval, on a thread of its own, and feeds the model.

One socket per broker is kept open between polls (``connection.NodesQuery``: a context per
poll would start an I/O thread each time); after a poll that timed out it is replaced, so a late
page cannot be taken for the next answer. Given a failover pair (``A,B``), both brokers are
asked each poll; the active one's report is shown, with each broker's state in ``pair``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import zmq

from zimg import protocol
from zimg._errors import WireError, ZimgTimeout
from zimg.nodes_query import NodesQuery, is_active
from zimg.security import ClientKeys

__all__ = ["Poller"]

log = logging.getLogger("zimg.dashboard")


class Poller:
    """Polls ``url`` every ``interval_s`` and calls ``on_report(report, now)`` or
    ``on_error(text, now)``, until :meth:`stop`.

    Args:
        url: the broker's endpoint, or a failover pair's two (``A,B``).
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
        self._queries = [
            NodesQuery(one, self._ctx, keys=keys) for one in protocol.split_endpoints(url)
        ]
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
        """One NODES report: up to ``max_pages`` pages, merged; from a failover pair, the active
        broker's, with ``pair``: each broker's ``url`` and its ``failover`` entry (or ``error``).

        Raises:
            ZimgTimeout: no broker answered within the interval (at least 1 s).
        """
        timeout_s = max(1.0, self.interval_s) / len(self._queries)
        if len(self._queries) == 1:
            return self._queries[0].report(timeout_s, max_pages=self.max_pages)
        reports: list[dict[str, Any]] = []
        pair: list[dict[str, Any]] = []
        for query in self._queries:
            try:
                report = query.report(timeout_s, max_pages=self.max_pages)
            except ZimgTimeout as exc:
                pair.append({"url": query.url, "error": str(exc)})
                continue
            pair.append({"url": query.url, **report.get("failover", {})})
            reports.append(report)
        if not reports:
            raise ZimgTimeout(f"no NODES answer from {self.url}")
        chosen = next((r for r in reports if is_active(r)), reports[0])
        return {**chosen, "pair": pair}

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                report = self.poll_once()
            except (ZimgTimeout, WireError) as exc:
                self._close_queries()
                self._on_error(str(exc), time.monotonic())
            except zmq.ZMQError as exc:  # the context was destroyed under us: stopping
                if self._stop.is_set():
                    return
                log.warning("NODES poll failed: %s", exc)
                self._close_queries()
            else:
                self._on_report(report, time.monotonic())
            self._stop.wait(max(0.0, self.interval_s - (time.monotonic() - started)))
        self._close_queries()

    def _close_queries(self) -> None:
        for query in self._queries:
            query.close()
