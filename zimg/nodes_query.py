"""Ask a broker (or a failover pair) for its NODES report without joining it as a node: the
report ``zimg nodes``, ``wait_for_workers`` and the dashboard read, a page of about 64 KiB at a
time (``docs/protocol.md`` §9)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import zmq

from zimg import _node_session as ns
from zimg import protocol, wire
from zimg._errors import ZimgTimeout
from zimg.security import ClientKeys
from zimg.wire import Command

__all__ = ["NodesQuery", "collect_pages", "is_active", "query_nodes"]


def query_nodes(
    url: str,
    timeout_s: float = 5.0,
    *,
    keys: ClientKeys | None = None,
    until: Callable[[list[dict[str, Any]]], bool] | None = None,
) -> dict[str, Any]:
    """Ask the broker at ``url`` for its node table, without joining as a node.

    ``until(nodes)``, if given, is asked after each page with the nodes read so far: once it is
    true no more pages are asked for (the broker answers a page of about 64 KiB at a time).

    ``url`` may name a failover pair's two brokers (``tcp://A:5555,tcp://B:5555``): each is
    asked in turn (within ``timeout_s`` in all), and the active one's report is returned (else
    the first that answered; its ``failover`` entry says why it has no nodes).

    Returns:
        The broker's report: ``nodes`` (a list of dicts), ``queued``, ``stats`` and more.

    Raises:
        ZimgTimeout: no broker answered within ``timeout_s``.
    """
    endpoints = protocol.split_endpoints(url)
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    try:
        answered: list[dict[str, Any]] = []
        for one in endpoints:
            query = NodesQuery(one, ctx, keys=keys)
            try:
                answered.append(query.report(timeout_s / len(endpoints), until=until))
            except ZimgTimeout:
                continue
            finally:
                query.close()
            if is_active(answered[-1]):
                return answered[-1]
        if answered:
            return answered[0]
        hint = ns.silence_hint(keys is not None)
        raise ZimgTimeout(f"no answer from a broker at {url} within {timeout_s:g} s ({hint})")
    finally:
        ctx.destroy(linger=0)


def is_active(report: dict[str, Any]) -> bool:
    """Does this NODES report come from a broker that serves nodes? (A lone broker always
    does; a broker of a failover pair says its state in ``failover``.)"""
    failover = report.get("failover")
    return not isinstance(failover, dict) or failover.get("state") == "active"


class NodesQuery:
    """A DEALER that asks one broker for its NODES report, page by page; it can stay open
    between reports (a dashboard polls every second) or be closed after one.

    Args:
        url: one broker's endpoint.
        context: the ZeroMQ context for the socket.
        keys: CURVE keys, for a broker that has them.
    """

    def __init__(
        self,
        url: str,
        context: zmq.Context[zmq.Socket[bytes]],
        *,
        keys: ClientKeys | None = None,
    ) -> None:
        self.url = url
        self.keys = keys
        self._ctx = context
        self._sock: zmq.Socket[bytes] | None = None

    def report(
        self,
        timeout_s: float,
        *,
        until: Callable[[list[dict[str, Any]]], bool] | None = None,
        max_pages: int | None = None,
    ) -> dict[str, Any]:
        """The report, from as many pages as ``until`` and ``max_pages`` allow (see
        :func:`collect_pages`).

        Raises:
            ZimgTimeout: no answer within ``timeout_s``; the socket is closed, so a later
                report starts afresh (a broker that restarted answers a new connection).
        """
        sock = self._sock or self._connect()
        deadline = time.monotonic() + timeout_s

        def ask(request: dict[str, Any]) -> dict[str, Any]:
            sock.send_multipart(wire.encode(Command.NODES, request))
            while (left := deadline - time.monotonic()) > 0:
                if not sock.poll(int(left * 1000) + 1):
                    break
                msg = wire.decode(sock.recv_multipart(copy=False))
                if msg.command is Command.NODES:
                    return msg.header
            self.close()
            hint = ns.silence_hint(self.keys is not None)
            raise ZimgTimeout(
                f"no answer from a broker at {self.url} within {timeout_s:g} s ({hint})"
            )

        return collect_pages(ask, until, max_pages=max_pages)

    def close(self) -> None:
        """Close the socket (the next report opens another)."""
        if self._sock is not None:
            self._sock.close(linger=0)
            self._sock = None

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


def collect_pages(
    ask: Callable[[dict[str, Any]], dict[str, Any]],
    until: Callable[[list[dict[str, Any]]], bool] | None = None,
    *,
    max_pages: int | None = None,
) -> dict[str, Any]:
    """The whole NODES report, from the pages ``ask(request)`` returns (the broker answers
    NODES a page at a time, each request naming the last node of the page before); with
    ``until``, only the pages up to the first after which ``until(nodes so far)`` is true, and
    with ``max_pages`` at most that many.

    The counters and the queue length are those of the last page read; ``downs`` (the nodes
    gone lately) those of the first, the only page that carries them; ``more`` says whether
    pages were left unread.
    """
    first = report = ask({})
    nodes: list[dict[str, Any]] = list(report.get("nodes", []))
    pages = 1
    while report.get("more") is True and nodes and not (until is not None and until(nodes)):
        if max_pages is not None and pages >= max_pages:
            break
        report = ask({"after": nodes[-1]["name"]})
        pages += 1
        page = report.get("nodes", [])
        if not page:
            break
        nodes.extend(page)
    more = report.get("more") is True and bool(report.get("nodes"))
    return {**report, "nodes": nodes, "more": more, "downs": first.get("downs", [])}
