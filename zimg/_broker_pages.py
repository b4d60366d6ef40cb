"""What the broker says about its nodes: the pages of its NODES answer.

Nodes are listed by name, a page at a time (``after``: the last name of the previous page), each
page as many entries as fit in about ``nodes_page_bytes``, so that an answer about 10,000 nodes is
many small messages, each paid for from the asker's byte budget (``BrokerState._nodes``). The
sorted names are rebuilt only after a node joins or leaves, not per page.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Mapping, Sequence
from typing import Any

from zimg._broker_records import NodeRecord


class NodePages:
    """The node entries of NODES pages, from the broker's live table of nodes by name."""

    def __init__(self, by_name: Mapping[str, NodeRecord], page_bytes: int) -> None:
        self.by_name = by_name
        self.page_bytes = page_bytes
        self._names: list[str] | None = []  # sorted names, rebuilt lazily after a change

    def changed(self) -> None:
        """A node joined or left: the names are sorted again when a page is next asked for."""
        self._names = None

    def page(self, now: float, after: str | None) -> tuple[list[dict[str, Any]], bool, int, int]:
        """The entries of the nodes whose names sort after ``after``, as many as fit in about
        ``page_bytes``; whether more follow; how many nodes there are; the page's estimated
        size in bytes."""
        if self._names is None:
            self._names = sorted(self.by_name)
        names = self._names
        start = bisect.bisect_right(names, after) if after is not None else 0
        entries: list[dict[str, Any]] = []
        size = 0
        for name in itertools.islice(names, start, None):
            node = self.by_name[name]
            cost = _entry_cost(node)
            if entries and size + cost > self.page_bytes:
                break
            entries.append(_node_entry(node, now))
            size += cost
        return entries, start + len(entries) < len(names), len(names), size


def down_entries(downs: Sequence[dict[str, Any]], now: float) -> tuple[list[dict[str, Any]], int]:
    """The recent downs as NODES reports them (how long ago, not when), and their size."""
    out = []
    for down in downs:
        entry = {k: v for k, v in down.items() if k != "at"}
        entry["ago_s"] = round(now - down["at"], 3)
        out.append(entry)
    return out, 160 * len(out)


def _node_entry(n: NodeRecord, now: float) -> dict[str, Any]:
    entry = {
        "name": n.name,
        "role": n.role,
        "capacity": n.capacity,
        "active": len(n.active),
        "done": n.done,
        "last_seen_s": round(now - n.last_seen, 3),
        "uptime_s": round(now - n.joined_at, 3),
        "incarnation": n.incarnation,
        "malformed": n.malformed,
        "dropped": n.dropped,
        **(n.placement.to_hello() if n.placement else {}),
    }
    if n.hung:
        entry["hung"] = True
    if n.lane is not None:
        entry["lanes"] = {
            "endpoint": n.lane,
            "peers": len(n.lane_peers),
            "sent": n.lane_sent,
            "received": n.lane_received,
            "refused": n.lane_refused,
            "lost": n.lane_lost,
            "broken": n.lane_broken,
        }
    return entry


def _entry_cost(n: NodeRecord) -> int:
    """An upper bound of the encoded size of a node's NODES entry, in bytes."""
    placed = n.placement
    lanes = 128 + len(n.lane) if n.lane is not None else 0
    return 256 + lanes + len(n.name) + (len(placed.host) + 3 * len(placed.cpus) if placed else 0)
