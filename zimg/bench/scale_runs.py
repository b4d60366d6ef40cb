"""One row of the scale table: N simulated workers of one placement on a fresh broker, measured
idle, under jobs, and through a mass kill (:func:`measure`), and the helpers that start the
simulated-node processes and wait for them to join."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import zmq

from zimg import protocol
from zimg.bench.broker_process import BrokerProcess, NodesProbe
from zimg.bench.light_client import LightClient
from zimg.bench.simnodes import SimProcess
from zimg.testing import free_tcp_url


def progress(text: str) -> None:
    print(f"[scale] {text}", file=sys.stderr, flush=True)


@dataclass
class Row:
    """One line of the table: N workers of one placement."""

    n: int
    placement: str
    joined: int = 0
    join_s: float | None = None
    join_split_pct: dict[str, float] = field(default_factory=dict)
    empty_cpu_pct: float | None = None  # idle, before any node joined
    idle_cpu_pct: float | None = None
    us_per_node_s: float | None = None
    idle_split_pct: dict[str, float] = field(default_factory=dict)
    kib_per_node: float | None = None
    rss_before_kib: int | None = None
    rss_after_kib: int | None = None
    us_per_job: float | None = None
    job_split_us: dict[str, float] = field(default_factory=dict)
    ratio: float | None = None
    jobs: int = 0
    jobs_per_s: float | None = None
    jobs_failed: int = 0
    jobs_busy: int = 0
    killed: int = 0
    survived: bool | None = None
    nodes_first_ms: float | None = None
    nodes_worst_ms: float | None = None
    nodes_unanswered: int = 0
    to_zero_s: float | None = None
    sim_lost: int = 0
    sim_rejoins: int = 0
    notes: list[str] = field(default_factory=list)


@dataclass
class Options:
    sizes: tuple[int, ...]
    placements: tuple[str, ...]
    per_host: int
    cpus: int
    jobs: int
    idle_s: float
    settle_s: float
    per_process: int
    frozen: int
    workdir: Path
    heartbeat_s: float = protocol.DEFAULT_HEARTBEAT_INTERVAL_S
    jobs_timeout_s: float = 60.0

    @property
    def broker_args(self) -> list[str]:
        """What every broker is started with."""
        if self.heartbeat_s == protocol.DEFAULT_HEARTBEAT_INTERVAL_S:
            return []
        return ["--heartbeat", str(self.heartbeat_s)]


def _split(n: int, per_process: int) -> list[tuple[int, int]]:
    """``(first, count)`` of each simulated-node process."""
    parts = []
    first = 0
    while first < n:
        count = min(per_process, n - first)
        parts.append((first, count))
        first += count
    return parts


def _delta(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {k: after[k] - before.get(k, 0.0) for k in after}


def _shares(cpu: dict[str, float], since: float) -> dict[str, float]:
    """CPU seconds per thread as % of one core since ``since`` (monotonic)."""
    wall = max(1e-9, time.monotonic() - since)
    return {k: round(100 * v / wall, 1) for k, v in cpu.items() if v > 0}


def start_sims(
    url: str, n: int, opts: Options, prefix: str, extra: Sequence[str], tag: str
) -> list[SimProcess]:
    sims = []
    for first, count in _split(n, opts.per_process):
        args = ["--prefix", prefix, "--first", str(first), "--capacity", "2", *extra]
        sims.append(SimProcess(url, count, *args, log=opts.workdir / f"sim-{tag}-{first}.log"))
    return sims


class JoinStalled(TimeoutError):
    """Not every simulated node joined: the count stopped growing, or the time ran out."""

    def __init__(self, text: str, best: int) -> None:
        super().__init__(text)
        self.best = best


def wait_joined(
    sims: Sequence[SimProcess], probe: NodesProbe, n: int, timeout_s: float, stall_s: float = 20.0
) -> float:
    """Wait until every simulated process says all its nodes are welcomed and the broker counts
    ``n``; returns the seconds it took.

    Raises:
        JoinStalled: the count has not grown for ``stall_s``, or ``timeout_s`` passed (with the
            highest count seen).
    """
    started = time.monotonic()
    best, best_at = -1, started
    pending = list(sims)
    while True:
        pending = [sim for sim in pending if not sim.poll_line("ready ")]
        with contextlib.suppress(TimeoutError):
            count = probe.count(timeout_s=2.0)
            if count > best:
                best, best_at = count, time.monotonic()
            if count == n and not pending:
                return time.monotonic() - started
        now = time.monotonic()
        for sim in sims:
            if sim.proc.poll() is not None:
                raise JoinStalled(f"a simulated-node process exited: {sim.lines[-3:]}", best)
        if now - best_at > stall_s or now - started > timeout_s:
            why = f"no new node for {stall_s:.0f} s" if now - best_at > stall_s else "time ran out"
            raise JoinStalled(
                f"{best:,} of {n:,} nodes joined at most ({why}, {now - started:.0f} s)", best
            )
        time.sleep(0.25)


def measure(n: int, placement: str, opts: Options, context: zmq.Context[zmq.Socket[bytes]]) -> Row:
    """Every figure of one row, on a fresh broker."""
    label = "unplaced" if placement == "unplaced" else f"placed, {opts.per_host}/host"
    row = Row(n=n, placement=label)
    tag = f"{n}-{placement}"
    url = free_tcp_url()
    broker = BrokerProcess(url, *opts.broker_args, log=opts.workdir / f"broker-{tag}.log")
    probe = NodesProbe(url, context)
    sims: list[SimProcess] = []
    try:
        probe.wait_count(0, 15.0)
        time.sleep(opts.settle_s)
        row.rss_before_kib = broker.rss_kib()
        # The same idle measurement with no node: what N nodes add is the difference.
        split0, t0 = broker.thread_cpu_s(), time.monotonic()
        time.sleep(opts.idle_s)
        split1, t1 = broker.thread_cpu_s(), time.monotonic()
        empty_rate = sum(_delta(split1, split0).values()) / (t1 - t0)
        row.empty_cpu_pct = round(100 * empty_rate, 2)
        extra = (
            []
            if placement == "unplaced"
            else ["--per-host", str(opts.per_host), "--cpus", str(opts.cpus)]
        )
        progress(f"N={n} {label}: joining")
        split0, t0 = broker.thread_cpu_s(), time.monotonic()
        sims = start_sims(url, n, opts, "w", extra, tag)
        try:
            row.join_s = round(wait_joined(sims, probe, n, timeout_s=30.0 + n / 100), 2)
        except JoinStalled as exc:
            row.join_split_pct = _shares(_delta(broker.thread_cpu_s(), split0), t0)
            row.joined = exc.best
            row.notes.append(f"broker CPU while joining, % of a core: {row.join_split_pct}")
            row.notes.append(f"join: {exc}")
            progress(f"N={n} {label}: {exc}")
            kill_report(sims, probe, broker, row)  # the mass kill tells something all the same
            return row
        row.join_split_pct = _shares(_delta(broker.thread_cpu_s(), split0), t0)
        row.joined = n
        time.sleep(opts.settle_s)

        try:
            # Idle: every worker connected, nothing to do but heartbeats.
            progress(f"N={n} {label}: idle for {opts.idle_s} s")
            split0, t0 = broker.thread_cpu_s(), time.monotonic()
            time.sleep(opts.idle_s)
            split1, t1 = broker.thread_cpu_s(), time.monotonic()
            idle = _delta(split1, split0)
            idle_wall = t1 - t0
            idle_rate = sum(idle.values()) / idle_wall
            row.idle_cpu_pct = round(100 * idle_rate, 2)
            row.us_per_node_s = round(1e6 * (idle_rate - empty_rate) / n, 2)
            row.idle_split_pct = {
                k: round(100 * v / (t1 - t0), 2) for k, v in idle.items() if v > 0
            }
            row.rss_after_kib = broker.rss_kib()
            row.kib_per_node = round((row.rss_after_kib - row.rss_before_kib) / n, 2)
            if probe.count() != n:
                row.notes.append("nodes dropped while idle")

            # Jobs.
            progress(f"N={n} {label}: {opts.jobs} jobs")
            client = LightClient(url, context)
            client.join()
            warm = client.run(min(1000, max(100, opts.jobs // 5)), timeout_s=opts.jobs_timeout_s)
            split0, t0 = broker.thread_cpu_s(), time.monotonic()
            run = client.run(opts.jobs, timeout_s=opts.jobs_timeout_s) if warm.complete else warm
            split1, t1 = broker.thread_cpu_s(), time.monotonic()
            busy = _delta(split1, split0)
            wall = t1 - t0
            row.jobs, row.jobs_failed, row.jobs_busy = run.jobs, run.failed, run.busy
            if not run.complete:
                row.notes.append(
                    f"jobs: only {run.jobs:,} answered within {opts.jobs_timeout_s:.0f} s; "
                    "no per-job figure"
                )
            elif run.jobs:
                row.jobs_per_s = round(run.jobs / wall, 1)
                row.us_per_job = round(1e6 * (sum(busy.values()) - idle_rate * wall) / run.jobs, 2)
                row.job_split_us = {
                    k: round(1e6 * (v - idle.get(k, 0.0) / idle_wall * wall) / run.jobs, 2)
                    for k, v in busy.items()
                    if v > 0
                }
            client.leave()
            with contextlib.suppress(TimeoutError):
                probe.wait_count(n, 10.0)
            for sim in sims:
                with contextlib.suppress(TimeoutError, RuntimeError):
                    status = sim.status(timeout_s=5.0)
                    row.sim_lost += status["lost"]
                    row.sim_rejoins += status["rejoins"]

        except (TimeoutError, RuntimeError, zmq.ZMQError) as exc:
            row.notes.append(f"idle or jobs: {exc}")
            progress(f"N={n} {label}: {exc}")

        # Mass kill.
        progress(f"N={n} {label}: SIGKILL of {n} nodes")
        kill_report(sims, probe, broker, row)
        return row
    finally:
        for sim in sims:
            sim.stop()
        probe.close()
        alive = broker.alive()
        code = broker.stop()
        if not alive:
            row.notes.append(f"the broker had exited (code {code})")


def kill_report(
    sims: Sequence[SimProcess], probe: NodesProbe, broker: BrokerProcess, row: Row
) -> None:
    """SIGKILL every simulated-node process at once, then time NODES and the drop to 0."""
    row.killed = sum(sim.count for sim in sims)
    killed_at = time.monotonic()
    for sim in sims:
        sim.kill()
    worst = 0.0
    first: float | None = None
    unanswered = 0
    zero_at: float | None = None
    deadline = killed_at + 30.0
    while time.monotonic() < deadline and broker.alive():
        try:
            header, took = probe.ask(timeout_s=5.0)
        except TimeoutError:
            unanswered += 1
            worst = max(worst, 5.0)
            continue
        if first is None:
            first = took
        worst = max(worst, took)
        if header.get("count", len(header.get("nodes", []))) == 0:
            zero_at = time.monotonic()
            break
        time.sleep(0.05)
    for sim in sims:
        sim.proc.wait()
    # Alive, and still answering.
    survived = broker.alive()
    if survived:
        try:
            probe.ask(timeout_s=5.0)
        except TimeoutError:
            survived = False
            row.notes.append("the broker is alive but no longer answers NODES")
    row.survived = survived
    row.nodes_first_ms = None if first is None else round(1000 * first, 1)
    row.nodes_worst_ms = round(1000 * worst, 1)
    row.nodes_unanswered = unanswered
    row.to_zero_s = None if zero_at is None else round(zero_at - killed_at, 2)
