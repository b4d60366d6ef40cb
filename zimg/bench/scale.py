"""Scale harness (issue 13): one real broker process, up to 10,000 simulated nodes.

``python -m zimg.bench.scale`` (``just scale``) starts a fresh ``python -m zimg broker`` process
for each number of workers N and each placement, then:

1. starts N simulated workers (:mod:`zimg.bench.simnodes`, at most 5,000 to a process) and waits
   until the broker's NODES ``count`` is N;
2. **idle**: the broker's CPU time over a few seconds with every worker connected and beating
   (-> % of one core, and microseconds per node per second), and its resident memory with N
   nodes minus before they joined (-> KiB per node);
3. **jobs**: a light client on a raw DEALER keeps a window of small JOBs in flight (one 100-byte
   ``|u1`` item each; the simulated workers echo it back at once): the broker's CPU time per
   job, less its idle CPU for the same wall time, and jobs per second;
4. **mass kill**: SIGKILL of every simulated-node process at once; whether the broker lives,
   how long NODES takes to answer right after (the first answer, and the worst while the broker
   drops the dead), and when its node count reaches 0.

Then the **frozen check**: 3,000 simulated workers in one process SIGSTOPped past the liveness
bound while 3 healthy ones in another process keep beating; a healthy node declared dead
(DISCONNECT received, a new ``uptime_s`` in NODES, or ``nodes_down`` grown by more than the
frozen count) fails it.

CPU time is read from ``/proc/PID/task/*/schedstat`` (nanoseconds, every thread of the broker:
its Python loop and libzmq's I/O thread), falling back to ``/proc/PID/stat`` (utime + stime,
clock ticks); memory from ``VmRSS`` in ``/proc/PID/status``. Ratios compare figures of the same
run. Progress goes to stderr, the Markdown table to stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import zmq

from zimg import protocol, wire
from zimg.bench.simnodes import MAX_PER_PROCESS, SimProcess
from zimg.cluster import stop_process
from zimg.testing import free_tcp_url
from zimg.wire import Command

FULL_SIZES = (10, 100, 1000, 10_000)
QUICK_SIZES = (10, 100, 1000)
WINDOW = 256  # JOBs the light client keeps in flight
PAYLOAD_BYTES = 100
_POLLIN, _NOBLOCK = int(zmq.POLLIN), int(zmq.NOBLOCK)
NODES_ANSWER_S = 2.0  # the target for NODES right after a mass kill


def progress(text: str) -> None:
    print(f"[scale] {text}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------- the broker process


def _clock_ticks() -> int:
    return os.sysconf("SC_CLK_TCK")


class BrokerProcess:
    """A ``python -m zimg broker`` subprocess, and its CPU time and memory from ``/proc``."""

    def __init__(
        self,
        url: str,
        *args: str,
        log: Path,
        env: dict[str, str] | None = None,
        preexec_fn: Callable[[], None] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.url = url
        cmd = [sys.executable, "-m", "zimg", "broker", "--bind", url, *args]
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(
                cmd,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**(env or os.environ), "PYTHONUNBUFFERED": "1"},
                preexec_fn=preexec_fn,  # tests: a low open-file limit
                cwd=cwd,
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def cpu_s(self) -> float:
        """CPU seconds used so far by all the broker's threads."""
        return sum(self.thread_cpu_s().values())

    def thread_cpu_s(self) -> dict[str, float]:
        """CPU seconds of each live thread, by name (``python`` is the loop, ``ZMQbg/IO/0``
        libzmq's I/O thread; several of one name are added up)."""
        out: dict[str, float] = {}
        base = Path(f"/proc/{self.pid}/task")
        try:
            tasks = list(base.iterdir())
        except OSError:
            return out
        for task in tasks:
            try:
                name = (task / "comm").read_text().strip()
                try:
                    seconds = int((task / "schedstat").read_text().split()[0]) / 1e9
                except (OSError, ValueError, IndexError):
                    fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
                    seconds = (int(fields[11]) + int(fields[12])) / _clock_ticks()
            except (OSError, ValueError, IndexError):
                continue  # the thread ended meanwhile
            out[name] = out.get(name, 0.0) + seconds
        return out

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    def stop(self) -> int | None:
        stop_process(self.proc)
        return self.proc.returncode


# ---------------------------------------------------------------------- NODES


class NodesProbe:
    """One DEALER kept connected to the broker, asking NODES (first pages only: the count)."""

    def __init__(self, url: str, context: zmq.Context[zmq.Socket[bytes]]) -> None:
        self.url = url
        self.context = context
        self.sock = self._connect()

    def _connect(self) -> zmq.Socket[bytes]:
        sock = self.context.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(self.url)
        return sock

    def ask(self, timeout_s: float, after: str | None = None) -> tuple[dict[str, Any], float]:
        """One NODES page and how long it took to come (seconds).

        Raises:
            TimeoutError: no answer within ``timeout_s``.
        """
        started = time.monotonic()
        self.sock.send_multipart(
            wire.encode(Command.NODES, {} if after is None else {"after": after})
        )
        deadline = started + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            if not self.sock.poll(max(1, int(left * 1000))):
                break
            msg = wire.decode(self.sock.recv_multipart())
            if msg.command is Command.NODES:
                return msg.header, time.monotonic() - started
        # A late answer would be taken for the next question's: start over on a new socket.
        self.sock.close(linger=0)
        self.sock = self._connect()
        raise TimeoutError(f"NODES was not answered within {timeout_s} s")

    def count(self, timeout_s: float = 5.0) -> int:
        header, _ = self.ask(timeout_s)
        return int(header.get("count", len(header.get("nodes", []))))

    def wait_count(self, target: int, timeout_s: float, every_s: float = 0.1) -> float:
        """Poll until the node count is ``target``; returns the seconds it took.

        Raises:
            TimeoutError: not within ``timeout_s``.
        """
        started = time.monotonic()
        seen = None
        while True:
            with contextlib.suppress(TimeoutError):
                seen = self.count(timeout_s=2.0)
                if seen == target:
                    return time.monotonic() - started
            if time.monotonic() - started > timeout_s:
                raise TimeoutError(
                    f"the broker counts {seen} nodes, not {target}, after {timeout_s} s"
                )
            time.sleep(every_s)

    def close(self) -> None:
        self.sock.close(linger=0)


# ---------------------------------------------------------------------- the light client


@dataclass
class JobRun:
    jobs: int  # answered with the payload echoed back
    wall_s: float
    failed: int
    busy: int
    complete: bool = True  # False: the time ran out first (``jobs`` were done by then)


class LightClient:
    """A client on a raw DEALER: HELLO as a client, then a window of small JOBs in flight."""

    def __init__(
        self, url: str, context: zmq.Context[zmq.Socket[bytes]], name: str = "bench-client"
    ) -> None:
        self.name = name
        self.incarnation = secrets.randbits(62)
        self.sock = context.socket(zmq.DEALER)
        self.sock.setsockopt(
            zmq.IDENTITY, protocol.node_identity(name, self.incarnation, secrets.randbits(64))
        )
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(url)
        self.interval_s = protocol.DEFAULT_HEARTBEAT_INTERVAL_S
        self.payload = (np.arange(PAYLOAD_BYTES) % 251).astype(np.uint8)
        self._next_id = 0
        self._beat_at = 0.0

    def join(self, timeout_s: float = 10.0) -> None:
        hello = {
            "name": self.name,
            "role": protocol.ROLE_CLIENT,
            "capacity": 0,
            "incarnation": self.incarnation,
            "session": 0,
            "version": protocol.PROTOCOL_VERSION,
        }
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.sock.send_multipart(wire.encode(Command.HELLO, hello))
            if self.sock.poll(1000):
                msg = wire.decode(self.sock.recv_multipart())
                if msg.command is Command.WELCOME:
                    self.interval_s = float(msg.header["heartbeat_interval_s"])
                    self._beat_at = time.monotonic() + self.interval_s
                    return
                if msg.command is Command.REJECT:
                    raise RuntimeError(f"the broker refused the client: {msg.header}")
        raise TimeoutError(f"no WELCOME within {timeout_s} s")

    def _job(self, job_id: int) -> list[Any]:
        header = {
            "id": job_id,
            "mode": "encoded",
            "ops": [],
            "items": [{"name": "x", "ext": ".jpg", "payload": self.payload}],
        }
        lead, *raw = wire.encode(Command.JOB, header)
        return [lead, *(bytes(f) for f in raw)]

    def run(self, jobs: int, window: int = WINDOW, timeout_s: float = 120.0) -> JobRun:
        """Send ``jobs`` JOBs, at most ``window`` unanswered, and wait for every RESULT, or
        until ``timeout_s`` has passed (then ``complete`` is False; the jobs still out are
        forgotten: their ids are never used again).

        The client costs little per job, as the ``zmq.proxy`` benchmark's client does, so that
        the jobs per second are the broker's: the JOBs are encoded before the clock starts, and a
        RESULT is read by its first entries and its payload frame (a RESULT that is not a plain
        success is decoded in full).
        """
        sock, monotonic = self.sock, time.monotonic
        ids = range(self._next_id, self._next_id + jobs)
        self._next_id += jobs
        encoded = {job_id: self._job(job_id) for job_id in ids}
        to_send = list(reversed(ids))
        payload = self.payload.tobytes()
        outstanding: set[int] = set()
        done = failed = busy = 0
        started = monotonic()
        deadline = started + timeout_s
        beat = wire.encode(Command.HEARTBEAT, {})
        send, recv, peek_head = sock.send_multipart, sock.recv_multipart, wire.peek_head
        while done + failed < jobs:
            while to_send and len(outstanding) < window:
                job_id = to_send.pop()
                outstanding.add(job_id)
                send(encoded[job_id])
            now = monotonic()
            if now >= self._beat_at:
                send(beat)
                self._beat_at = now + self.interval_s
            if now > deadline:
                return JobRun(done, now - started, failed, busy, complete=False)
            if not sock.poll(100):
                continue
            while int(sock.getsockopt(zmq.EVENTS)) & _POLLIN:
                frames = recv(_NOBLOCK)
                head = peek_head(frames, 5)
                if head is None or head[0] is not Command.RESULT:
                    if wire.command_of(frames) is Command.DISCONNECT:
                        raise RuntimeError(f"the broker dropped the client: {frames!r}")
                    continue
                answered = head[1].get("id")
                if answered not in outstanding:
                    continue  # a duplicate
                outstanding.discard(answered)
                if head[1].get("ok") is True and len(frames) == 2 and frames[1] == payload:
                    done += 1  # the payload came back: a plain success
                    continue
                h = wire.decode(frames).header
                if h.get("busy") is True:
                    busy += 1
                    to_send.append(answered)  # the broker is full: send it again
                    continue
                items = h.get("items") or []
                if (
                    h.get("ok") is True
                    and len(items) == 1
                    and items[0].get("ok") is True
                    and np.array_equal(items[0].get("payload"), self.payload)
                ):
                    done += 1
                else:
                    failed += 1
        return JobRun(jobs=done, wall_s=monotonic() - started, failed=failed, busy=busy)

    def leave(self) -> None:
        with contextlib.suppress(zmq.ZMQError):
            self.sock.send_multipart(
                wire.encode(Command.DISCONNECT, {"reason": "normal"}), zmq.NOBLOCK
            )
        self.sock.close(linger=500)


# ---------------------------------------------------------------------- one measurement


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


def _start_sims(
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


def _wait_joined(
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
        sims = _start_sims(url, n, opts, "w", extra, tag)
        try:
            row.join_s = round(_wait_joined(sims, probe, n, timeout_s=30.0 + n / 100), 2)
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


# ---------------------------------------------------------------------- frozen check


@dataclass
class Frozen:
    frozen: int
    healthy: int
    frozen_s: float | None = None
    dropped_s: float | None = None
    nodes_down: int | None = None
    healthy_declared_dead: bool | None = None
    healthy_disconnects: int | None = None
    healthy_lost: int | None = None
    healthy_uptime_ok: bool | None = None
    rejoined_s: float | None = None
    survived: bool | None = None
    notes: list[str] = field(default_factory=list)


def _healthy_entries(probe: NodesProbe) -> dict[str, dict[str, Any]]:
    """The NODES entries of the healthy nodes (``h0`` to ``h2``: the page after ``g``, past
    every frozen ``f...``)."""
    header, _ = probe.ask(5.0, after="g")
    return {e["name"]: e for e in header["nodes"] if e["name"].startswith("h")}


def frozen_check(opts: Options, context: zmq.Context[zmq.Socket[bytes]]) -> Frozen:
    """``opts.frozen`` workers SIGSTOPped past the liveness bound, 3 healthy ones beside."""
    result = Frozen(frozen=opts.frozen, healthy=3)
    url = free_tcp_url()
    broker = BrokerProcess(url, *opts.broker_args, log=opts.workdir / "broker-frozen.log")
    probe = NodesProbe(url, context)
    sims: list[SimProcess] = []
    try:
        probe.wait_count(0, 15.0)
        progress(f"frozen check: {opts.frozen} nodes to freeze, 3 healthy")
        frozen = _start_sims(url, opts.frozen, opts, "f", [], "frozen")
        healthy = SimProcess(url, 3, "--prefix", "h", log=opts.workdir / "sim-healthy.log")
        sims = [*frozen, healthy]
        _wait_joined(sims, probe, opts.frozen + 3, timeout_s=30.0 + opts.frozen / 50)
        before = _healthy_entries(probe)
        down0 = probe.ask(5.0)[0]["stats"]["nodes_down"]
        bound = opts.heartbeat_s * protocol.DEFAULT_LIVENESS
        stopped_at = time.monotonic()
        for sim in frozen:
            sim.send_signal(signal.SIGSTOP)
        result.dropped_s = round(probe.wait_count(3, 30.0 + opts.frozen / 100), 2)
        # Stay frozen well past the bound, whatever the drop took.
        while time.monotonic() - stopped_at < bound + 3.0:
            time.sleep(0.1)
        result.frozen_s = round(time.monotonic() - stopped_at, 2)
        after = _healthy_entries(probe)
        header, _ = probe.ask(5.0)
        result.nodes_down = header["stats"]["nodes_down"] - down0
        elapsed = time.monotonic() - stopped_at
        result.healthy_uptime_ok = set(after) == set(before) and all(
            after[k]["incarnation"] == before[k]["incarnation"]
            and after[k]["uptime_s"] >= before[k]["uptime_s"] + elapsed - 1.0
            for k in before
        )
        status = healthy.status()
        result.healthy_disconnects = status["disconnects"]
        result.healthy_lost = status["lost"]
        result.healthy_declared_dead = not (
            result.healthy_uptime_ok
            and status["disconnects"] == 0
            and status["lost"] == 0
            and result.nodes_down <= opts.frozen
        )
        progress("frozen check: SIGCONT")
        for sim in frozen:
            sim.send_signal(signal.SIGCONT)
        try:
            result.rejoined_s = round(probe.wait_count(opts.frozen + 3, 30.0 + opts.frozen / 50), 2)
        except TimeoutError as exc:
            result.notes.append(f"after SIGCONT: {exc}")
        result.survived = broker.alive()
    except (TimeoutError, RuntimeError) as exc:
        result.notes.append(str(exc))
        progress(f"frozen check: {exc}")
    finally:
        for sim in sims:
            sim.stop()
        probe.close()
        if result.survived is None:
            result.survived = broker.alive()
        broker.stop()
    return result


# ---------------------------------------------------------------------- report


def _f(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def table(rows: Sequence[Row]) -> str:
    head = (
        "| N | placement | µs/job | x N=10 | idle CPU % | µs per node-s | KiB per node | jobs/s "
        "| mass kill: survived | NODES after kill, ms (first / worst) | to 0 nodes, s |"
    )
    lines = [head, "|" + "---|" * 11]
    for r in rows:
        survived = {None: "-", True: "yes", False: "**no**"}[r.survived]
        nodes = f"{_f(r.nodes_first_ms)} / {_f(r.nodes_worst_ms)}"
        if r.nodes_unanswered:
            nodes += f" ({r.nodes_unanswered} unanswered)"
        if r.joined < r.n:
            lines.append(
                f"| {r.n:,} | {r.placement} | at most {r.joined:,} of {r.n:,} joined | | | | | "
                f"| {survived} | {nodes} | {_f(r.to_zero_s, 2)} |"
            )
            continue
        lines.append(
            f"| {r.n:,} | {r.placement} | {_f(r.us_per_job)} | {_f(r.ratio, 2)} "
            f"| {_f(r.idle_cpu_pct, 2)} | {_f(r.us_per_node_s)} | {_f(r.kib_per_node)} "
            f"| {_f(r.jobs_per_s, 0)} | {survived} | {nodes} | {_f(r.to_zero_s, 2)} |"
        )
    return "\n".join(lines)


def frozen_line(f: Frozen) -> str:
    dead = {None: "unknown", True: "**yes**", False: "no"}[f.healthy_declared_dead]
    text = (
        f"Frozen check: {f.frozen:,} nodes SIGSTOPped for {_f(f.frozen_s)} s (dropped after "
        f"{_f(f.dropped_s)} s, `nodes_down` +{f.nodes_down}), 3 healthy nodes in another process: "
        f"healthy declared dead: {dead}; after SIGCONT all re-joined in {_f(f.rejoined_s)} s; "
        f"broker survived: {'yes' if f.survived else '**no**'}."
    )
    if f.notes:
        text += " Notes: " + "; ".join(f.notes)
    return text


def _verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def targets(rows: Sequence[Row], frozen: Frozen | None) -> list[str]:
    """The issue's targets against this run, judged at the largest N measured (10,000 in a
    full run)."""
    out = []
    if rows:
        top = max(r.n for r in rows)
        for r in (r for r in rows if r.n == top):
            where = f"N={top:,} ({r.placement})"
            if r.joined < r.n:
                out.append(
                    f"{where}: only {r.joined:,} nodes joined, so per-job, idle and memory "
                    "figures were not measured — NOT met"
                )
            if r.ratio is not None:
                out.append(
                    f"µs/job at {where} <= 1.5 x N={min(b.n for b in rows)}: "
                    f"{r.ratio:.2f} x — {_verdict(r.ratio <= 1.5)}"
                )
            if r.idle_cpu_pct is not None and r.us_per_node_s is not None:
                ok = r.idle_cpu_pct <= 5.0 and r.us_per_node_s <= 5.0
                out.append(
                    f"idle CPU at {where} <= 5 % of a core and <= 5 µs per node-s: "
                    f"{r.idle_cpu_pct:.2f} %, {r.us_per_node_s:.1f} µs — {_verdict(ok)}"
                )
            if r.kib_per_node is not None:
                out.append(
                    f"RSS at {where} <= 20 KiB per idle node: {r.kib_per_node:.1f} KiB — "
                    f"{_verdict(r.kib_per_node <= 20.0)}"
                )
            if r.survived is not None:
                worst = r.nodes_worst_ms
                ok = bool(r.survived) and worst is not None and worst <= 1000 * NODES_ANSWER_S
                out.append(
                    f"SIGKILL of {r.killed:,} nodes at once ({r.placement}): the broker "
                    f"{'survived' if r.survived else 'DIED'}, NODES answered within "
                    f"{_f(worst)} ms at worst (<= 2 s) — {_verdict(ok)}"
                )
    if frozen is not None:
        ok = frozen.healthy_declared_dead is False
        out.append(
            f"{frozen.frozen:,} nodes frozen past the liveness bound, none of 3 healthy ones "
            f"declared dead — {_verdict(ok)}"
        )
    return out


# ---------------------------------------------------------------------- main


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m zimg.bench.scale", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--quick", action="store_true", help="N = 10, 100, 1,000; shorter phases")
    p.add_argument("--sizes", help="comma-separated N, e.g. 10,100,1000,10000")
    p.add_argument(
        "--placements", default="unplaced,placed", help="unplaced, placed, or both (the default)"
    )
    p.add_argument("--per-host", type=int, default=1, help="placed workers per simulated host")
    p.add_argument("--cpus", type=int, default=2, help="CPUs per simulated host")
    p.add_argument("--jobs", type=int, help="measured jobs per row (default 10,000; --quick 3,000)")
    p.add_argument(
        "--heartbeat",
        type=float,
        default=protocol.DEFAULT_HEARTBEAT_INTERVAL_S,
        help="the brokers' heartbeat interval in seconds (zimg broker --heartbeat)",
    )
    p.add_argument("--idle", type=float, help="seconds of idle measurement (default 5; --quick 2)")
    p.add_argument(
        "--frozen",
        type=int,
        help="nodes in the frozen check (default 3,000; --quick 1,000; 0: skip)",
    )
    p.add_argument(
        "--per-process", type=int, default=MAX_PER_PROCESS, help="simulated nodes per process"
    )
    p.add_argument("--json", type=Path, metavar="PATH", help="also write the figures as JSON")
    p.add_argument("--workdir", type=Path, help="where the logs go (default: a temporary folder)")
    return p.parse_args(argv)


@contextlib.contextmanager
def _workdir(path: Path | None) -> Iterator[Path]:
    if path is not None:
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    import tempfile

    with tempfile.TemporaryDirectory(prefix="zimg-scale-") as tmp:
        yield Path(tmp)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    sizes = (
        tuple(int(s) for s in args.sizes.split(","))
        if args.sizes
        else (QUICK_SIZES if args.quick else FULL_SIZES)
    )
    placements = tuple(p.strip() for p in args.placements.split(",") if p.strip())
    for p in placements:
        if p not in ("unplaced", "placed"):
            raise SystemExit(f"unknown placement {p!r}: use unplaced, placed or both")
    frozen_n = args.frozen if args.frozen is not None else (1000 if args.quick else 3000)
    given = list(sys.argv[1:] if argv is None else argv)
    command = " ".join(["python -m zimg.bench.scale", *given])
    started = time.monotonic()
    with _workdir(args.workdir) as workdir:
        opts = Options(
            sizes=sizes,
            placements=placements,
            per_host=args.per_host,
            cpus=args.cpus,
            jobs=args.jobs or (3000 if args.quick else 10_000),
            heartbeat_s=args.heartbeat,
            idle_s=args.idle or (2.0 if args.quick else 5.0),
            settle_s=0.5 if args.quick else 1.0,
            per_process=args.per_process,
            frozen=frozen_n,
            workdir=workdir,
        )
        context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        rows: list[Row] = []
        frozen: Frozen | None = None
        try:
            for n in sizes:
                for placement in placements:
                    rows.append(measure(n, placement, opts, context))
            for r in rows:
                base = next(
                    (b for b in rows if b.n == min(sizes) and b.placement == r.placement), None
                )
                if base is not None and base.us_per_job and r.us_per_job is not None:
                    r.ratio = round(r.us_per_job / base.us_per_job, 2)
            if frozen_n > 0:
                frozen = frozen_check(opts, context)
        finally:
            context.destroy(linger=0)
        wall = time.monotonic() - started
        load = os.getloadavg()
        out = [
            f"Scale: {command} ({wall:.0f} s wall, {os.cpu_count()} CPUs, load average "
            f"{load[0]:.2f} at the end)",
            "",
            table(rows),
            "",
        ]
        if frozen is not None:
            out += [frozen_line(frozen), ""]
        out += ["Targets:", *[f"- {t}" for t in targets(rows, frozen)]]
        notes = [f"N={r.n:,} {r.placement}: {note}" for r in rows for note in r.notes]
        notes += [
            f"N={r.n:,} {r.placement}: {r.sim_lost} simulated nodes lost the broker for a "
            f"liveness bound, {r.sim_rejoins} re-joined"
            for r in rows
            if r.sim_lost or r.sim_rejoins
        ]
        notes += [
            f"N={r.n:,} {r.placement}: {r.jobs_failed} jobs failed" for r in rows if r.jobs_failed
        ]
        if notes:
            out += ["", "Notes:", *[f"- {n}" for n in notes]]
        print("\n".join(out), flush=True)
        if args.json is not None:
            report = {
                "command": command,
                "wall_s": round(wall, 1),
                "cpus": os.cpu_count(),
                "load_end": load,
                "rows": [asdict(r) for r in rows],
                "frozen": asdict(frozen) if frozen is not None else None,
                "targets": targets(rows, frozen),
            }
            args.json.write_text(json.dumps(report, indent=2) + "\n")
    failed = any(r.survived is False for r in rows) or (
        frozen is not None and frozen.survived is False
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
