"""Which worker gets the next job, kept as indexes so that a pick does not look at every node.

The rule (``docs/protocol.md`` §7.3): among the workers with credit left, the one with the
lowest load ``held / capacity``; then, with CPU slots, one whose CPUs all idle; then the one that
was assigned least recently (among those never assigned, the first to join). With CPU slots a
job starts at once only on a host with fewer jobs running than CPUs; on a full host an idle
worker stands by and a running one gets the job *queued*, behind the jobs it runs (see
``zimg._placement``).

How it stays cheap with thousands of workers:

- The candidates sit in a heap keyed by that rank. An entry carries its worker's ``version``;
  every change to the worker (a job given or ended, its credit, hung) bumps the version and
  pushes a fresh entry, so stale entries are skipped when they reach the top. A pick therefore
  costs O(log N) amortised, N workers.
- What depends on the *host* (is a CPU free? are this worker's CPUs busy?) is kept per host and
  checked when an entry reaches the top. A worker found idle on a full host is *parked* in its
  host's stand-by set, out of the heap, until a job on that host ends.
- When a host's CPUs go idle, its workers' entries are renewed: that costs O(workers on that
  host), which the CPU count bounds in practice (workers beyond a host's CPUs only stand by).

``steps`` counts heap operations, so tests can show that the cost of a pick does not grow with
the number of workers without timing anything.
"""

from __future__ import annotations

import heapq
import itertools
from typing import Any

from zimg._broker_records import NodeRecord


class HostState:
    """One host's CPUs and the jobs running on it, as the broker counts them.

    Attributes:
        workers: the placed workers on this host.
        cpus: every CPU a worker of this host may use, as a bit mask.
        cpu_count: how many CPUs that is.
        running: jobs running on the host (a worker runs at most ``threads`` of its jobs).
        busy: the CPUs of the workers running at least one job, as a bit mask.
        standby: idle workers parked while the host has no CPU free.
    """

    __slots__ = ("busy", "cpu_count", "cpus", "running", "standby", "workers")

    def __init__(self) -> None:
        self.workers: set[NodeRecord] = set()
        self.cpus = 0
        self.cpu_count = 0
        self.running = 0
        self.busy = 0
        self.standby: set[NodeRecord] = set()

    def full(self) -> bool:
        """No more jobs may start here until one ends."""
        return self.running >= self.cpu_count

    def recount(self) -> None:
        """Work out the CPU masks again from the workers (after one leaves, or goes idle)."""
        cpus = busy = 0
        for node in self.workers:
            mask = _mask(node)
            cpus |= mask
            if node.running():
                busy |= mask
        self.cpus, self.busy, self.cpu_count = cpus, busy, cpus.bit_count()


def _mask(node: NodeRecord) -> int:
    return node.placement.cpu_mask if node.placement is not None else 0


# The rank, then a push counter (unique: entries never compare their node), then the
# worker's version when the entry was pushed, then the worker.
_Entry = tuple[float, bool, int, int, int, int, NodeRecord]  # ratio, shares, seq, order, n, ...
_SpawnEntry = tuple[float, int, int, int, int, NodeRecord]  # ratio, seq, order, n, ...


class WorkerIndex:
    """The workers, indexed for :meth:`pick` (jobs) and :meth:`pick_any` (SPAWN to ``"*"``).

    Callers report every change to a worker through :meth:`add`, :meth:`remove`,
    :meth:`dispatched`, :meth:`finished` and :meth:`changed`.
    """

    def __init__(self, cpu_slots: bool) -> None:
        self.cpu_slots = cpu_slots
        self.hosts: dict[str, HostState] = {}
        self.workers = 0
        self.steps = 0
        self._jobs: list[_Entry] = []
        self._spawns: list[_SpawnEntry] = []
        # Workers changed since the last SPAWN pick: their spawn entries are renewed then, not
        # at every change (a job costs three changes; a SPAWN to "*" is rare).
        self._spawn_dirty: set[NodeRecord] = set()
        self._n = itertools.count()
        self._orders = itertools.count(1)  # join order: ties among never-assigned workers
        self._seq = 0

    # ------------------------------------------------------------------ changes

    def add(self, node: NodeRecord) -> None:
        """A worker joined."""
        self.workers += 1
        node.indexed = True
        if not node.order:
            node.order = next(self._orders)
        host = self._placed_host(node, create=True)
        if host is not None:
            had_room = not host.full()
            host.workers.add(node)
            host.running += node.running()
            host.recount()
            if not had_room and not host.full():
                self._unpark(host)
        self._touch(node)

    def remove(self, node: NodeRecord) -> None:
        """A worker left (or is about to change its placement)."""
        if not node.indexed:
            return
        self.workers -= 1
        node.indexed = False
        node.version += 1  # its entries are stale from now on
        self._spawn_dirty.discard(node)
        host = self._placed_host(node)
        if host is not None and node in host.workers:
            was_full = host.full()
            host.workers.discard(node)
            host.standby.discard(node)
            host.running -= node.running()
            if host.workers:
                host.recount()
                if was_full and not host.full():
                    self._unpark(host)
                self._renew(host)
            else:
                del self.hosts[node.placement.host]  # type: ignore[union-attr]
        node.parked = False

    def dispatched(self, node: NodeRecord, ticket: int, queued: int) -> None:
        """``node`` was sent the job ``ticket`` (``queued``: behind that many of its jobs)."""
        before = node.running()
        node.active.add(ticket)
        if queued:
            node.waiting += 1
        self._seq += 1
        node.assigned_seq = self._seq
        self.changed(node, before)

    def finished(self, node: NodeRecord, ticket: int) -> None:
        """``node`` no longer holds job ``ticket`` (it answered, or the job was taken back)."""
        if ticket not in node.active:
            return
        before = node.running()
        node.active.discard(ticket)
        if node.waiting:
            node.waiting -= 1  # one of its jobs ended: the next in line starts
        node.waiting = min(node.waiting, len(node.active))
        self.changed(node, before)

    def changed(self, node: NodeRecord, running_before: int | None = None) -> None:
        """Something about ``node`` changed (its jobs, credit or hung state); ``running_before``
        is its :meth:`~NodeRecord.running` count before the change, if that may have moved."""
        if not node.indexed:
            return
        host = self._placed_host(node) if self.cpu_slots else None
        if host is not None and running_before is not None:
            now_running = node.running()
            if now_running != running_before:
                was_full = host.full()
                host.running += now_running - running_before
                if (running_before > 0) != (now_running > 0):
                    busy_before = host.busy
                    host.recount()
                    if busy_before & ~host.busy:  # CPUs went idle: their workers rank higher
                        self._renew(host, skip=node)
                if was_full and not host.full():
                    self._unpark(host)
        self._touch(node)

    # ------------------------------------------------------------------ picks

    def pick(self) -> tuple[NodeRecord, int] | None:
        """The worker for the next job, and the job's ``queued``: 0 if it starts at once, else
        how many of the worker's jobs run now (it starts when one of them ends). None if no
        worker may take a job now.

        Does not change anything visible: report the dispatch with :meth:`dispatched`.
        """
        heap = self._jobs
        while heap:
            self.steps += 1
            ratio, shares, *_, version, node = heap[0]
            if version != node.version:
                heapq.heappop(heap)
                continue
            placed = node.placement
            waits = placed is not None and node.running() >= placed.threads
            shares_now = False
            if self.cpu_slots and placed is not None and not waits:
                host = self.hosts[placed.host]
                if host.full():
                    if not node.active:  # idle on a host whose CPUs all run jobs: stand by
                        heapq.heappop(heap)  # its only live job entry; its SPAWN entry stays
                        node.parked = True
                        host.standby.add(node)
                        continue
                    waits = True  # next in line behind the job it runs
                shares_now = not placed.cpu_mask & ~host.busy
            if shares_now != shares:
                heapq.heappop(heap)
                self._push_job(node, ratio, shares_now)
                continue
            return node, node.running() if waits else 0
        return None

    def pick_any(self) -> NodeRecord | None:
        """The worker for a SPAWN to ``"*"``: the lowest ``held / capacity``, then the least
        recently assigned, credit or not. Counts as an assignment."""
        self._renew_spawns()
        heap = self._spawns
        while heap:
            self.steps += 1
            *_, version, node = heap[0]
            if version != node.version:
                heapq.heappop(heap)
                continue
            self._seq += 1
            node.assigned_seq = self._seq
            self._touch(node)
            return node
        return None

    # ------------------------------------------------------------------ internals

    def _placed_host(self, node: NodeRecord, *, create: bool = False) -> HostState | None:
        if not self.cpu_slots or node.placement is None:
            return None
        host = self.hosts.get(node.placement.host)
        if host is None and create:
            host = self.hosts[node.placement.host] = HostState()
        return host

    def _touch(self, node: NodeRecord) -> None:
        """Renew ``node``'s entries after a change (the old ones go stale); its spawn entry is
        renewed at the next :meth:`pick_any`."""
        node.version += 1
        if not node.indexed:
            return
        self._spawn_dirty.add(node)
        active = len(node.active)
        if active < node.capacity and not node.hung and not node.parked:  # it has credit
            shares = self._shares(node) if self.cpu_slots else False
            self._push_job(node, active / node.capacity, shares)
        bound = self._heap_bound()
        if len(self._jobs) > bound or len(self._spawns) > bound:
            self._compact()

    def _renew_spawns(self) -> None:
        """Push a fresh spawn entry for every worker changed since the last SPAWN pick."""
        dirty, self._spawn_dirty = self._spawn_dirty, set()
        for node in dirty:
            if node.indexed:
                self.steps += 1
                heapq.heappush(
                    self._spawns,
                    (len(node.active) / max(1, node.capacity), node.assigned_seq, node.order,
                     next(self._n), node.version, node),
                )  # fmt: skip
        self._compact()

    def _push_job(self, node: NodeRecord, ratio: float, shares: bool) -> None:
        self.steps += 1
        entry = (ratio, shares, node.assigned_seq, node.order, next(self._n), node.version, node)
        heapq.heappush(self._jobs, entry)

    def _shares(self, node: NodeRecord) -> bool:
        """Are all of ``node``'s CPUs running jobs already (it ranks after one with an idle
        CPU)? Only meaningful with CPU slots; checked again when its entry reaches the top."""
        host = self._placed_host(node)
        if host is None or node.placement is None:
            return False
        return not node.placement.cpu_mask & ~host.busy

    def _renew(self, host: HostState, skip: NodeRecord | None = None) -> None:
        for other in host.workers:
            if other is not skip and not other.parked:
                self._touch(other)

    def _unpark(self, host: HostState) -> None:
        """A job may start on ``host`` again: its stand-bys are candidates again."""
        parked, host.standby = host.standby, set()
        for node in parked:
            node.parked = False
            self._touch(node)

    def _heap_bound(self) -> int:
        """Entries a heap may hold, live or stale, before :meth:`_compact` drops the stale."""
        return 4 * self.workers + 64

    def _compact(self) -> None:
        """Drop stale entries once they outnumber the live ones (bounded memory)."""
        for heap in (self._jobs, self._spawns):
            if len(heap) > self._heap_bound():
                live: list[Any] = [e for e in heap if e[-2] == e[-1].version]
                heapq.heapify(live)
                self.steps += len(heap)
                heap[:] = live
