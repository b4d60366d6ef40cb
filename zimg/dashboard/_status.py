"""The dashboard's view model: NODES reports and results in, a JSON-able status out (pure).

Nothing here touches a socket or a clock: :class:`StatusModel` is fed the broker's NODES report
(``update``), the sending side's results (``add_result``) and poll failures (``poll_failed``),
each with ``now``, and diffs each report against the last to make events. Every collection is a
ring or capped, so a hostile or huge cluster costs bounded memory.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any

__all__ = ["COUNTERS", "Limits", "StatusModel"]

COUNTERS = (
    "malformed",
    "rejected",
    "dropped",
    "late_results",
    "jobs_failed",
    "jobs_expired",
    "throttled",
    "unroutable",
    "internal_errors",
)
"""Broker counters whose rise is an event on the page."""

_MAX_TEXT = 1000  # longest string kept from the network (error texts, file names)


@dataclass(frozen=True, slots=True)
class Limits:
    """How much the model keeps.

    Attributes:
        events: the newest events kept.
        history: throughput samples kept (one per poll).
        series: workers drawn in the throughput chart (the busiest over the history).
        results: recent results (thumbnails) kept.
        nodes: the most nodes listed (sorted by name; the rest are counted).
        gone: nodes kept on the page as down after they left.
        per_node: nodes whose failed results are counted.
    """

    events: int = 200
    history: int = 120
    series: int = 16
    results: int = 48
    nodes: int = 500
    gone: int = 64
    per_node: int = 1024


def _text(value: object, limit: int = _MAX_TEXT) -> str:
    text = value if isinstance(value, str) else str(value)
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


@dataclass(slots=True)
class _Seen:
    incarnation: Any
    done: int
    at: float


@dataclass
class StatusModel:
    """What the page shows, built from NODES reports and results.

    Args:
        broker: the broker's endpoint, shown on the page.
        limits: the rings' sizes.
    """

    broker: str = ""
    limits: Limits = field(default_factory=Limits)
    version: int = 0
    polls: int = 0

    def __post_init__(self) -> None:
        lim = self.limits
        self._ids = itertools.count(1)
        self.events: deque[dict[str, Any]] = deque(maxlen=lim.events)
        self.history: deque[tuple[float, dict[str, float]]] = deque(maxlen=lim.history)
        self.results: deque[dict[str, Any]] = deque(maxlen=lim.results)
        self.thumbs: OrderedDict[int, tuple[bytes, str]] = OrderedDict()
        self._nodes: list[dict[str, Any]] = []
        self._count = 0
        self._seen: dict[str, _Seen] = {}
        self._gone: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._downs_told: set[tuple[str, Any]] = set()
        self._stats: dict[str, int] | None = None
        self._broker: dict[str, Any] = {}
        self._epoch: Any = None
        self._reachable: bool | None = None
        self._failed: dict[str, int] = {}
        self.totals = {"results": 0, "failed": 0}
        self.extra: dict[str, Any] = {}  # the server's own counters (SSE clients, refusals)

    # ------------------------------------------------------------------ input

    def update(self, report: dict[str, Any], now: float) -> None:
        """Take one NODES report (every page, as ``nodes_query.query_nodes`` returns it)."""
        self.polls += 1
        self._back(now)
        epoch = report.get("epoch")
        if self._epoch is not None and epoch != self._epoch:
            self._event(now, "broker", "the broker restarted (new epoch)")
        self._epoch = epoch
        nodes = [n for n in report.get("nodes", []) if isinstance(n, dict) and "name" in n]
        current = {str(n["name"]): n for n in nodes}
        self._diff_downs(report.get("downs", []), current, now)
        self._diff_nodes(current, now, report.get("more") is True)
        self._diff_stats(report.get("stats", {}), now)
        self._broker = {
            "queued": report.get("queued", 0),
            "count": report.get("count", len(nodes)),
            "uptime_s": report.get("uptime_s"),
            "stats": dict(report.get("stats", {})),
            # A failover pair: this broker's role and state, and each broker's (poller.py).
            "failover": _brief_failover(report.get("failover")),
            "pair": [
                {
                    "url": _text(b.get("url")),
                    **(_brief_failover(b) or {"error": _text(b.get("error"))}),
                }
                for b in report.get("pair", [])[:2]
                if isinstance(b, dict)
            ],
        }
        self.version += 1

    def poll_failed(self, error: str, now: float) -> None:
        """The broker did not answer a poll (said once, until it answers again)."""
        if self._reachable is not False:
            self._event(now, "broker", f"the broker does not answer: {_text(error)}")
            self._reachable = False
            self.version += 1

    def add_result(
        self,
        *,
        name: str,
        node: str | None,
        error: str | None,
        ms: float | None,
        now: float,
        thumb: tuple[bytes, str] | None = None,
    ) -> int:
        """Take one result of the sending side; returns its id (``thumb``: image bytes and
        their media type, served at ``/thumb/ID``)."""
        rid = next(self._ids)
        self.totals["results"] += 1
        entry = {
            "id": rid,
            "name": _text(name, 300),
            "node": None if node is None else _text(node, 100),
            "error": None if error is None else _text(error),
            "ms": None if ms is None else round(float(ms), 1),
            "thumb": thumb is not None,
        }
        if len(self.results) == self.results.maxlen:
            self.thumbs.pop(self.results[0]["id"], None)
        self.results.append(entry)
        if thumb is not None:
            self.thumbs[rid] = thumb
        if error is not None:
            self.totals["failed"] += 1
            key = str(entry["node"] or "(no node)")
            if key in self._failed or len(self._failed) < self.limits.per_node:
                self._failed[key] = self._failed.get(key, 0) + 1
            where = f" on {entry['node']}" if entry["node"] else ""
            self._event(now, "failed", f"{entry['name']}{where}: {entry['error']}")
        self.version += 1
        return rid

    def request_failed(self, status: int, error: str, now: float) -> None:
        """A front-door request that failed: an event with its status and error text."""
        self._event(now, "failed", f"front door {status}: {error}")
        self.version += 1

    # ------------------------------------------------------------------ output

    def snapshot(self) -> dict[str, Any]:
        """The status as plain JSON-able data (what ``/api/status`` and the page get)."""
        nodes = [{**n, "failed": self._failed.get(n["name"], 0)} for n in self._nodes]
        gone = [{**g, "failed": self._failed.get(g["name"], 0)} for g in self._gone.values()]
        totals: dict[str, float] = {}
        for _, rates in self.history:
            for name, rate in rates.items():
                totals[name] = totals.get(name, 0.0) + rate
        busiest = sorted(totals, key=lambda n: (-totals[n], n))[: self.limits.series]
        names = sorted(busiest)
        return {
            "broker": {"url": self.broker, "reachable": self._reachable, **self._broker},
            "nodes": nodes + gone,
            "nodes_listed": len(nodes),
            "nodes_total": self._count,
            "events": list(self.events),
            "history": {
                "t": [round(t, 3) for t, _ in self.history],
                "series": {n: [rates.get(n) for _, rates in self.history] for n in names},
            },
            "results": list(self.results),
            "totals": dict(self.totals),
            "polls": self.polls,
            "version": self.version,
            **self.extra,
        }

    # ------------------------------------------------------------------ diffing

    def _back(self, now: float) -> None:
        if self._reachable is False:
            self._event(now, "broker", "the broker answers again")
        self._reachable = True

    def _diff_downs(self, downs: Any, current: dict[str, dict[str, Any]], now: float) -> None:
        told: set[tuple[str, Any]] = set()
        for d in downs if isinstance(downs, list) else []:
            if not isinstance(d, dict) or "name" not in d:
                continue
            name, inc = str(d["name"]), d.get("incarnation")
            told.add((name, inc))
            if (name, inc) in self._downs_told:
                continue
            why = _text(d.get("why") or d.get("reason") or "unknown", 200)
            reason = _text(d.get("reason") or "", 100)
            self._event(now, "down", f"{name} is down: {why} ({reason})", node=name)
            seen = self._seen.get(name)
            back = current.get(name)
            if back is None or back.get("incarnation") == inc:
                self._mark_gone(name, d.get("role"), f"{why} ({reason})", now)
            if seen is not None and seen.incarnation == inc:
                del self._seen[name]
        # Forget what the broker forgot: the set stays within its ring's size.
        self._downs_told = told | {k for k in self._downs_told if k in told}

    def _diff_nodes(
        self, current: dict[str, dict[str, Any]], now: float, report_more: bool = False
    ) -> None:
        # A report cut short (``more``) lists the names up to its last one only.
        horizon = max(current) if current and report_more else None
        for name in list(self._seen):
            if horizon is not None and name > horizon:
                continue  # not asked this time: neither seen nor gone
            if name not in current:
                del self._seen[name]
                if name not in self._gone:
                    self._event(now, "down", f"{name} left the node list (reason unknown)", name)
                    self._mark_gone(name, None, "left the node list", now)
        rates: dict[str, float] = {}
        view: list[dict[str, Any]] = []
        for name in sorted(current):
            n = current[name]
            inc, done = n.get("incarnation"), _int(n.get("done"))
            seen = self._seen.get(name)
            if seen is None:
                self._event(now, "up", f"{name} joined ({n.get('role', '?')})", node=name)
            elif seen.incarnation != inc:
                self._event(now, "up", f"{name} restarted (new incarnation)", node=name)
            elif now > seen.at and n.get("role") == "worker":
                rates[name] = round(max(0, done - seen.done) / (now - seen.at), 3)
            self._seen[name] = _Seen(inc, done, now)
            self._gone.pop(name, None)
            if len(view) < self.limits.nodes:
                view.append(_node_view(n, rates.get(name)))
        self._nodes = view
        self._count = len(current)
        if self.polls > 1:
            self.history.append((now, rates))

    def _diff_stats(self, stats: Any, now: float) -> None:
        if not isinstance(stats, dict):
            return
        if self._stats is not None:
            for key in COUNTERS:
                rise = _int(stats.get(key)) - self._stats.get(key, 0)
                if rise > 0:
                    self._event(now, "counter", f"broker {key} +{rise} (now {stats[key]})")
        self._stats = {key: _int(stats.get(key)) for key in COUNTERS}

    def _mark_gone(self, name: str, role: Any, reason: str, now: float) -> None:
        self._gone[name] = {"name": name, "role": role, "state": "down", "reason": reason}
        self._gone.move_to_end(name)
        while len(self._gone) > self.limits.gone:
            self._gone.popitem(last=False)

    def _event(self, now: float, kind: str, text: str, node: str | None = None) -> None:
        self.events.append({"t": round(now, 3), "kind": kind, "text": _text(text), "node": node})


def _int(value: Any) -> int:
    return value if type(value) is int else 0


def _hex(value: Any) -> str | None:
    """An incarnation as hex text: JavaScript numbers would round a 62-bit int."""
    return format(value, "x") if type(value) is int else None


def _node_view(n: dict[str, Any], rate: float | None) -> dict[str, Any]:
    cpus = n.get("cpus")
    return {
        "name": str(n["name"]),
        "role": n.get("role"),
        "state": "hung" if n.get("hung") else "up",
        "host": n.get("host"),
        "cpus": len(cpus) if isinstance(cpus, list) else None,
        "capacity": n.get("capacity"),
        "active": n.get("active"),
        "done": n.get("done"),
        "rate": rate,
        "last_seen_s": n.get("last_seen_s"),
        "uptime_s": n.get("uptime_s"),
        "incarnation": _hex(n.get("incarnation")),
        "malformed": n.get("malformed"),
        "dropped": n.get("dropped"),
    }


def _brief_failover(entry: Any) -> dict[str, str] | None:
    """A broker's ``role`` and ``state`` from its NODES ``failover`` entry, as short text; None
    for a broker that is not one of a failover pair (or did not answer)."""
    if not isinstance(entry, dict) or "state" not in entry:
        return None
    return {"role": _text(entry.get("role")), "state": _text(entry.get("state"))}
