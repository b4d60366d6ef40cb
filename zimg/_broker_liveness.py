"""The broker's two timers per node: when it is owed a heartbeat, and when its silence makes it
dead.

Heartbeats go round the nodes in a ring, ``len(nodes)`` per interval, a few at each tick, not all
at once. Expiry sits in a heap with one live entry per node, re-armed once per liveness period
(not once per message heard). The interval grows with the cluster (``BrokerConfig.interval_for``)
and never shrinks back while the broker runs, so no node is ever held to a shorter interval than
it was told. Pure bookkeeping, no clock of its own: ``BrokerState`` decides what to do with a
silent node.
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque

from zimg._broker_records import BrokerConfig, NodeRecord

_BEAT_SLICE_S = 0.05  # heartbeats go out in slices at least this far apart


class Liveness:
    """Heartbeats owed and silence allowed, for every node of one broker."""

    def __init__(self, config: BrokerConfig, now: float) -> None:
        self.config = config
        self.interval_s = config.heartbeat_interval_s
        self._ring: deque[NodeRecord] = deque()
        self._owed = 0.0
        self._beaten_at = now
        self._expiry: list[tuple[float, int, NodeRecord]] = []
        self._n = itertools.count()

    @property
    def expiry_s(self) -> float:
        """How long a node may stay silent before it is declared dead, now."""
        return self.interval_s * self.config.liveness

    @property
    def timers(self) -> int:
        """Expiry entries held (live or stale): at most about two per node."""
        return len(self._expiry)

    def add(self, node: NodeRecord, now: float) -> None:
        """A node joined: it is owed heartbeats, and must be heard from within the expiry."""
        heapq.heappush(self._expiry, (now + self.expiry_s, next(self._n), node))
        self._ring.append(node)

    def widen(self, node_count: int) -> bool:
        """Double the interval if ``node_count`` nodes outgrew it; True if it changed (every
        node must then be told)."""
        interval = self.config.interval_for(node_count)
        if interval <= self.interval_s:
            return False
        self.interval_s = interval
        return True

    def beats_due(self, nodes: dict[bytes, NodeRecord], now: float) -> list[bytes]:
        """The nodes due a heartbeat now: ``len(nodes)`` per interval, round the ring, so each
        node gets one per interval, spread evenly. A node no longer in ``nodes`` leaves the
        ring."""
        owed = self._owed + len(nodes) * (now - self._beaten_at) / self.interval_s
        self._beaten_at = now
        count = min(int(owed), len(nodes))
        self._owed = owed - int(owed) if count == int(owed) else 0.0
        due: list[bytes] = []
        ring = self._ring
        while len(due) < count and ring:
            node = ring.popleft()
            if nodes.get(node.identity) is node:  # else it is gone: drop it from the ring
                due.append(node.identity)
                ring.append(node)
        return due

    def silent(self, nodes: dict[bytes, NodeRecord], limit: float) -> list[NodeRecord]:
        """The nodes of ``nodes`` that sent nothing for longer than the expiry before ``limit``;
        the others whose timer ran out are re-armed from when they were last heard."""
        out: list[NodeRecord] = []
        expiry_s = self.expiry_s
        heap = self._expiry
        while heap and heap[0][0] < limit:
            _, _, node = heapq.heappop(heap)
            if nodes.get(node.identity) is not node:
                continue  # gone already
            due = node.last_seen + expiry_s
            if due < limit:
                out.append(node)
            else:
                heapq.heappush(heap, (due, next(self._n), node))
        return out

    def next_deadline(self, node_count: int) -> float:
        """When the next heartbeat slice or expiry falls due."""
        # Heartbeats go out in slices at least _BEAT_SLICE_S apart: a wake-up per beat would
        # cost more than the beats.
        deadline = self._beaten_at + max(_BEAT_SLICE_S, self.interval_s / max(1, node_count))
        if self._expiry:
            deadline = min(deadline, self._expiry[0][0])
        return deadline
