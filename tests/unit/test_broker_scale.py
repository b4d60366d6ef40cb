"""The broker's per-event work does not grow with the number of nodes: shown by counting
operations (heap steps, instructions), never by timing them. The timed figures are in
``python -m zimg.bench.scale``."""

from __future__ import annotations

from typing import Any

import pytest

from zimg import wire
from zimg._broker_state import BrokerConfig, BrokerState, Send
from zimg.testing import FakeClock
from zimg.wire import Command

from .test_broker_state import hello, ident, job, sends, ticket_of

JOBS = 300


def cluster(workers: int, *, per_host: int | None, cpus: int = 2) -> tuple[BrokerState, FakeClock]:
    """A broker with one client and ``workers`` workers, ``per_host`` to a host of ``cpus``
    CPUs (None: the workers say nothing of where they run)."""
    clock = FakeClock()
    state = BrokerState(BrokerConfig(), now=clock.now, epoch=1)
    state.on_message(ident("c"), hello("c", role="client", capacity=0), clock.now)
    for i in range(workers):
        placement: dict[str, Any] = {}
        if per_host is not None:
            placement = {"host": f"h{i // per_host}", "cpus": list(range(cpus)), "threads": 1}
        name = f"w{i}"
        state.on_message(ident(name), hello(name, capacity=2, **placement), clock.now)
    return state, clock


def steps_per_job(state: BrokerState, clock: FakeClock) -> float:
    """Heap operations per job in a steady stream: each job is submitted, dispatched and
    answered, with a window of 20 jobs in flight (those beyond the CPU slots queue)."""
    client = ident("c")
    running: list[tuple[bytes, int]] = []
    for i in range(20):  # a window in flight
        out = sends(state.on_message(client, job(i), clock.now))
        running += [(to, m.header["id"]) for to, m in out if m.command is Command.JOB]
    before = state.index.steps
    for i in range(20, 20 + JOBS):
        worker, job_id = running.pop(0)
        header = {"id": job_id, "ticket": ticket_of(state, job_id, client), "attempt": 1}
        frames = wire.encode(Command.RESULT, {**header, "ok": True})
        out = sends(state.on_message(worker, frames, clock.now))
        out += sends(state.on_message(client, job(i), clock.now))
        running += [(to, m.header["id"]) for to, m in out if m.command is Command.JOB]
    assert running, "the stream stalled"
    return (state.index.steps - before) / JOBS


@pytest.mark.parametrize(
    ("per_host", "cpus"),
    [(None, 2), (1, 2), (4, 2)],
    ids=["unplaced", "one-per-host", "four-per-host-of-two-cpus"],
)
def test_the_pick_costs_the_same_with_100_or_10000_workers(per_host: int | None, cpus: int) -> None:
    # 100 workers, not 10: with 10 the window of 20 jobs fills every CPU slot and the stream
    # runs in another regime (every job waits queued), which costs fewer steps, not more.
    small = steps_per_job(*cluster(100, per_host=per_host, cpus=cpus))
    large = steps_per_job(*cluster(10_000, per_host=per_host, cpus=cpus))
    assert large <= small * 1.5 + 2, (small, large)
    assert large < 40  # a handful of heap operations per job, whatever the size


def test_heartbeats_go_round_in_slices_and_expiry_rearms_once_per_node() -> None:
    state, clock = cluster(5000, per_host=1)
    # 5,001 nodes: beyond 500 heartbeats a second until the interval is 16 s.
    assert state.interval_s == 16.0
    # A tick sends the heartbeats due since the last one, not one to every node.
    [beats] = state.on_tick(clock.advance(0.1))
    assert len(beats.identities) == pytest.approx(5001 * 0.1 / 16.0, abs=1)  # type: ignore[union-attr]
    # Every node heard from; the expiry checks then re-arm one timer per node, once per
    # liveness period, not once per tick.
    for step in range(8):
        clock.advance(0.5)
        for i in range(5000):
            state.heard(ident(f"w{i}"), clock.now)
        state.heard(ident("c"), clock.now)
        out = state.on_tick(clock.now)
        assert all(type(i).__name__ == "SendMany" for i in out), step
    assert len(state.nodes) == 5001
    assert state.liveness.timers <= 2 * 5001  # one live entry per node, and no pile-up


def test_a_mass_death_costs_linear_work_not_quadratic() -> None:
    """1,000 nodes die at once; each was watched by one other node. The broker's work (the
    instructions it produces) is O(1,000), not O(1,000²) as a NODEDOWN broadcast was."""
    clock = FakeClock()
    state = BrokerState(BrokerConfig(), now=clock.now, epoch=1)
    n = 1000
    for i in range(2 * n):
        state.on_message(ident(f"n{i}"), hello(f"n{i}", role="client", capacity=0), clock.now)
    for i in range(n):  # n{n+i} watches n{i}, as a node with a link into it would
        header = {"node": f"n{i}", "incarnation": 1}
        state.on_message(ident(f"n{n + i}"), wire.encode(Command.WATCH, header), clock.now)
    for i in range(n):  # each is marked unreachable, and declared down once the loop drained
        assert state.on_unreachable(ident(f"n{i}"), clock.now) == []
    out = state.on_tick(clock.advance(0.001), drained_at=clock.now)
    sent = sum(1 for i in out if isinstance(i, Send))
    assert sent == n  # one NODEDOWN per death, to its one watcher
    assert len(state.nodes) == n
    assert state.actors.watch_total == n  # the watchers' watches stay until they UNWATCH


def test_a_client_leaving_costs_its_own_jobs_not_everyones() -> None:
    state, clock = cluster(0, per_host=None)
    for name in ("a", "b"):
        state.on_message(ident(name), hello(name, role="client", capacity=0), clock.now)
    for i in range(2000):
        state.on_message(ident("a"), job(i), clock.now)
    state.on_message(ident("b"), job(0), clock.now)
    state.on_unreachable(ident("b"), clock.now)
    state.on_tick(clock.advance(0.001), drained_at=clock.now)
    assert len(state.table.jobs) == 2000
    assert state.by_name["a"].submitted_bytes == state.table.nbytes
