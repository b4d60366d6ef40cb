"""Actor messaging benchmark: zimg actors side by side with raw pyzmq, in one run.

What is measured, on this machine, in one process tree:

1. **Round-trip latency** of a small message between actors on two worker nodes. The main node
   spawns the shipped echo behaviour (``zimg.behaviours:echo``) on ``n2`` and the pinger
   (``zimg.bench.ping``, defined here) on ``n1``. The pinger does a warm-up, then N round trips,
   timing each with :func:`time.perf_counter`, and sends the samples back to the main node.
   Each message goes actor -> I/O thread -> broker -> I/O thread -> actor, and back. Reported:
   p50, p99 and mean in microseconds, and round trips per second. The same is measured from the
   main node (this process, which also runs the broker thread) to an echo actor on ``n1``, and,
   for reference, between two actors on ``n1`` (same node: no broker, no socket).
2. **One-way message rate**: an actor on ``n1`` (``zimg.bench.blast``) sends M small messages to
   a counting sink (``zimg.bench.sink``) on ``n2``, which replies once it has them all.
   Messages per second is M over the time from the first send to that reply.
3. **Spawn to first reply**: the main node times ``node.spawn("n1", "zimg.behaviours:echo")``
   plus one echo round trip with the new actor; the median over K spawns (and the median of the
   ``spawn`` call alone).
4. **Raw pyzmq baselines** in the same run, with the same message sizes (the bytes zimg puts on
   the wire for the same message) and counts: (a) a DEALER in this process and a ROUTER echo
   server in another process, over ``ipc://`` in a temporary directory, for RTT and one-way
   rate; (b) the same through a ``zmq.proxy`` ROUTER-DEALER device in a third process (the
   server connects a DEALER to the proxy's back end), which has the shape of the zimg broker.
5. **Erlang/OTP distribution**, where ``erl`` and ``erlc`` are installed (Debian and Ubuntu:
   ``apt-get install erlang-base``): the same round trips and one-way rate, with the same counts
   and the same small terms, between a driver and an echo process on two BEAM nodes over
   loopback (:mod:`zimg.bench.erlang`). Without ``erl`` the column is left out with a note, and
   a peer that fails is reported as failed; neither fails the run.

The table gives each zimg figure next to its raw pyzmq counterpart (and the Erlang one) and the
ratio zimg / baseline: above 1 means slower for a latency, below 1 means slower for a rate.

Run it from the repository (or anywhere zimg is installed)::

    python -m zimg.bench.actors              # 5000 round trips, 50 000 messages, 50 spawns
    python -m zimg.bench.actors --quick      # 1000 round trips, 10 000 messages, 20 spawns
    python -m zimg.bench.actors --rounds 20000 --json bench.json

Small-message latency is mostly thread and process wake-ups, so it depends on where the
scheduler puts them: on a small VM a wake-up across CPUs can cost several times one on the same
CPU, and the raw figures can change by that much between runs. ``taskset -c 0 python -m
zimg.bench.actors`` (everything on one CPU) shows the CPU cost alone.

A full run takes 15 to 30 seconds on two cores, ``--quick`` 5 to 10 (more on a busy machine:
the load average before the run is printed, as the figures depend on it). Progress goes to
stderr, the table to stdout. The cluster and every child process are stopped on the way out,
on errors and on Ctrl-C (or SIGTERM) too.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import zmq

import zimg
from zimg import wire
from zimg._heap import keep_freed_memory
from zimg.bench import erlang
from zimg.bench._common import BenchError, Timings, children, interrupt, machine_info, progress
from zimg.wire import Command, Pid

MODULE = "zimg.bench.actors"
PING = "zimg.bench.ping"
SINK = "zimg.bench.sink"
BLAST = "zimg.bench.blast"
ECHO = "zimg.behaviours:echo"

REPLY_TIMEOUT_S = 10.0  # one reply; a benchmark that stalls this long has failed
RESULT_TIMEOUT_S = 300.0  # a whole measurement
MIN_RATE = 500.0  # messages/s below which a one-way batch counts as stalled

Samples = npt.NDArray[np.float64]
SendFn = Callable[[Any, Any], None]
ReceiveFn = Callable[[Any, float | None], Any]


# ---------------------------------------------------------------------- behaviours (on workers)


def ping_loop(
    send: SendFn, receive: ReceiveFn, target: Pid, me: Pid, rounds: int, warmup: int
) -> tuple[Samples, float]:
    """Round trips with an echo actor: ``warmup`` untimed, then ``rounds`` timed ones.

    ``send`` and ``receive`` are a process's (or a node's) own; the mailbox must hold nothing
    else meanwhile.

    Returns:
        Each timed round trip in microseconds, and the wall time of the timed loop in seconds.
    """
    for i in range(warmup):
        send(target, ("echo", me, i))
        _check_reply(receive(None, REPLY_TIMEOUT_S), ("echo", i))
    samples = np.empty(rounds, dtype=np.float64)
    clock = time.perf_counter
    started = clock()
    for i in range(rounds):
        t0 = clock()
        send(target, ("echo", me, i))
        reply = receive(None, REPLY_TIMEOUT_S)
        samples[i] = clock() - t0
        if reply != ("echo", i):
            _check_reply(reply, ("echo", i))
    total = clock() - started
    return samples * 1e6, total


def _check_reply(reply: Any, expected: Any) -> None:
    if reply != expected:
        raise BenchError(f"expected {expected!r}, got {reply!r}")


@zimg.behaviour(PING)
def ping(ctx: zimg.Process, target: Pid, report_to: Pid, rounds: int, warmup: int) -> None:
    """Ping the echo actor ``target``; send ``("ping-result", samples_us, total_s)`` back."""
    samples, total = ping_loop(ctx.send, ctx.receive, target, ctx.self(), rounds, warmup)
    ctx.send(report_to, ("ping-result", samples, total))


@zimg.behaviour(SINK)
def sink(ctx: zimg.Process) -> None:
    """Count messages in batches until ``"stop"``.

    ``("count", reply_to, n)`` announces a batch: after the n messages that follow it (any
    content), the sink sends ``("sunk", n)`` to ``reply_to``.
    """
    receive = ctx.receive
    while True:
        message = receive(None, None)
        if message == "stop":
            return
        if not (isinstance(message, tuple) and len(message) == 3 and message[0] == "count"):
            continue
        _, reply_to, n = message
        for _ in range(n):
            receive(None, REPLY_TIMEOUT_S)
        ctx.send(reply_to, ("sunk", n))


def _blast_batch(ctx: zimg.Process, to: Pid, n: int) -> None:
    send = ctx.send
    send(to, ("count", ctx.self(), n))
    for i in range(n):
        send(to, ("m", i))
    _check_reply(ctx.receive(None, max(REPLY_TIMEOUT_S, n / MIN_RATE)), ("sunk", n))


@zimg.behaviour(BLAST)
def blast(ctx: zimg.Process, to: Pid, report_to: Pid, count: int, warmup: int) -> None:
    """Send ``count`` messages to the sink ``to`` after a warm-up batch; report the time.

    Sends ``("blast-result", count, seconds)`` to ``report_to``.
    """
    _blast_batch(ctx, to, warmup)
    started = time.perf_counter()
    _blast_batch(ctx, to, count)
    ctx.send(report_to, ("blast-result", count, time.perf_counter() - started))


# ---------------------------------------------------------------------- results


@dataclass(frozen=True)
class Rtt:
    """Round-trip figures."""

    rounds: int
    p50_us: float
    p99_us: float
    mean_us: float
    per_s: float

    @classmethod
    def of(cls, samples_us: Samples, total_s: float) -> Rtt:
        p50, p99 = np.percentile(samples_us, [50, 99])
        n = len(samples_us)
        mean = float(samples_us.mean())
        return cls(
            n, round(float(p50), 2), round(float(p99), 2), round(mean, 2), round(n / total_s, 1)
        )


@dataclass(frozen=True)
class Rate:
    """A one-way message rate."""

    messages: int
    seconds: float
    per_s: float

    @classmethod
    def of(cls, messages: int, seconds: float) -> Rate:
        return cls(messages, round(seconds, 6), round(messages / seconds, 1))


@dataclass(frozen=True)
class Spawns:
    """Spawn timings, in milliseconds."""

    spawns: int
    first_reply_median_ms: float
    first_reply_min_ms: float
    first_reply_max_ms: float
    spawn_call_median_ms: float


@dataclass(frozen=True)
class ZimgResults:
    """Everything measured through zimg."""

    rtt_n1_n2: Rtt
    rtt_main_n1: Rtt
    rtt_same_node: Rtt
    one_way_n1_n2: Rate
    spawn: Spawns


@dataclass(frozen=True)
class RawResults:
    """One raw pyzmq path: its round trips and its one-way rate."""

    rtt: Rtt
    one_way: Rate


@dataclass(frozen=True)
class ErlangResults:
    """Erlang/OTP distribution between two BEAM nodes: round trips and one-way rate."""

    otp: str
    rtt_bytes: int  # term_to_binary size of the request term, for reference
    one_way_bytes: int
    rtt: Rtt
    one_way: Rate


@dataclass(frozen=True)
class Config:
    """What one run does."""

    rounds: int
    warmup_rounds: int
    messages: int
    warmup_messages: int
    spawns: int
    warmup_spawns: int
    rtt_bytes: int  # the zimg request, all frames: the raw RTT payload has this size
    one_way_bytes: int  # likewise for one one-way message


def make_config(
    *, quick: bool, rounds: int | None, messages: int | None, spawns: int | None
) -> Config:
    """The run's sizes: the defaults (or ``--quick`` ones) unless given."""
    rounds = rounds or (1000 if quick else 5000)
    messages = messages or (10_000 if quick else 50_000)
    spawns = spawns or (20 if quick else 50)
    # What zimg sends for one message: its lead frame (magic, command, header). The incarnation
    # is a 62-bit random number, so a large one gives the typical size; the counter is mid-range.
    incarnation = (1 << 61) + 12345
    n1, n2 = Pid("n1", incarnation, 3), Pid("n2", incarnation, 2)
    request = wire.encode(Command.SEND, {"to": n2, "msg": ("echo", n1, rounds // 2)})
    one_way = wire.encode(Command.SEND, {"to": n2, "msg": ("m", messages // 2)})
    return Config(
        rounds=rounds,
        warmup_rounds=max(100, rounds // 10),
        messages=messages,
        warmup_messages=max(500, messages // 10),
        spawns=spawns,
        warmup_spawns=3,
        rtt_bytes=sum(len(f) for f in request),
        one_way_bytes=sum(len(f) for f in one_way),
    )


# ---------------------------------------------------------------------- raw pyzmq baselines

_QUIT = b"Q"
_COUNT = b"C"
_DONE = b"D"


def _raw_server(endpoint: str, connect: bool) -> None:
    """Echo every message; ``C<n>`` starts a batch of n to count, answered by one ``D``.

    Bound ROUTER for the direct path; a DEALER connected to the proxy's back end behind it.
    Either way a message arrives as ``[client identity, payload]`` and goes back the same way.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops us, Ctrl-C or not
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    try:
        sock = ctx.socket(zmq.DEALER if connect else zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        if connect:
            sock.connect(endpoint)
        else:
            sock.bind(endpoint)
        recv, send = sock.recv_multipart, sock.send_multipart
        while True:
            frames = recv()
            body = frames[-1]
            if body == _QUIT:
                return
            if body[:1] == _COUNT:
                for _ in range(int(body[1:])):
                    recv()
                frames[-1] = _DONE
            send(frames)
    finally:
        ctx.destroy(linger=0)


def _raw_proxy(front: str, back: str) -> None:
    """A ROUTER-DEALER ``zmq.proxy`` device; runs until the parent terminates it.

    It keeps freed memory as ``zimg broker`` does (``zimg._heap``), so that the comparison is
    of the two forwarding loops, not of glibc's heap heuristics: each 6 MB frame is a fresh
    block, which glibc's default trims away and faults in again.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    keep_freed_memory()
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    try:
        frontend = ctx.socket(zmq.ROUTER)
        backend = ctx.socket(zmq.DEALER)
        for sock, url in ((frontend, front), (backend, back)):
            sock.setsockopt(zmq.LINGER, 0)
            sock.bind(url)
        zmq.proxy(frontend, backend)
    finally:
        ctx.destroy(linger=0)


@contextlib.contextmanager
def _client(endpoint: str) -> Iterator[zmq.Socket[bytes]]:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    try:
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        timeout_ms = int(REPLY_TIMEOUT_S * 1000)
        sock.setsockopt(zmq.RCVTIMEO, timeout_ms)
        sock.setsockopt(zmq.SNDTIMEO, timeout_ms)
        sock.connect(endpoint)
        yield sock
    except zmq.Again:
        raise BenchError(f"the raw pyzmq peer at {endpoint} did not answer in time") from None
    finally:
        ctx.destroy(linger=0)


def raw_rtt(sock: zmq.Socket[bytes], payload: bytes, rounds: int, warmup: int) -> Rtt:
    """Round trips through ``sock`` to an echo server, timed like :func:`ping_loop`."""
    send, recv = sock.send, sock.recv
    for _ in range(warmup):
        send(payload)
        _check_reply(recv(), payload)
    samples = np.empty(rounds, dtype=np.float64)
    clock = time.perf_counter
    started = clock()
    for i in range(rounds):
        t0 = clock()
        send(payload)
        reply = recv()
        samples[i] = clock() - t0
        if reply != payload:
            _check_reply(reply, payload)
    total = clock() - started
    return Rtt.of(samples * 1e6, total)


def raw_one_way(sock: zmq.Socket[bytes], payload: bytes, count: int, warmup: int) -> Rate:
    """Send ``count`` messages to a counting server after a warm-up batch, like :func:`blast`."""

    def batch(n: int) -> None:
        send(_COUNT + str(n).encode())
        for _ in range(n):
            send(payload)
        _check_reply(sock.recv(), _DONE)

    send = sock.send
    batch(warmup)
    started = time.perf_counter()
    batch(count)
    return Rate.of(count, time.perf_counter() - started)


def run_pyzmq(cfg: Config, tmp: str, timings: Timings) -> dict[str, RawResults]:
    """The raw pyzmq figures: ``direct`` (DEALER-ROUTER) and ``proxy`` (through zmq.proxy)."""
    direct = f"ipc://{tmp}/direct"
    front, back = f"ipc://{tmp}/proxy-front", f"ipc://{tmp}/proxy-back"
    rtt_payload = b"x" * cfg.rtt_bytes
    one_way_payload = b"x" * cfg.one_way_bytes
    mp = multiprocessing.get_context("spawn")  # a fresh interpreter: no inherited zmq state
    results: dict[str, RawResults] = {}
    with children() as procs:
        for target, args in (
            (_raw_server, (direct, False)),
            (_raw_proxy, (front, back)),
            (_raw_server, (back, True)),
        ):
            procs.append(mp.Process(target=target, args=args, daemon=True))
            procs[-1].start()
        for name, endpoint in (("direct", direct), ("proxy", front)):
            with timings.phase(f"pyzmq {name}"), _client(endpoint) as sock:
                rtt = raw_rtt(sock, rtt_payload, cfg.rounds, cfg.warmup_rounds)
                rate = raw_one_way(sock, one_way_payload, cfg.messages, cfg.warmup_messages)
                sock.send(_QUIT)
                results[name] = RawResults(rtt, rate)
    return results


# ---------------------------------------------------------------------- Erlang/OTP


def run_erlang(cfg: Config, tmp: str, timings: Timings) -> ErlangResults | str:
    """The Erlang/OTP figures, or why there are none (not installed, or the peer failed)."""
    why = erlang.missing()
    if why is not None:
        progress(f"Erlang/OTP peer: {why}")
        return why
    with timings.phase("erlang distribution"):
        try:
            out = erlang.run_peer(
                cfg.rounds,
                cfg.warmup_rounds,
                cfg.messages,
                cfg.warmup_messages,
                Path(tmp),
                RESULT_TIMEOUT_S,
            )
        except BenchError as exc:
            progress(f"Erlang/OTP peer failed: {exc}")
            return f"failed: {exc}"
    return ErlangResults(
        otp=out.otp,
        rtt_bytes=out.rtt_bytes,
        one_way_bytes=out.one_way_bytes,
        rtt=Rtt.of(out.samples_us, out.rtt_total_s),
        one_way=Rate.of(out.messages, out.one_way_s),
    )


def erlang_json(erl: ErlangResults | str) -> dict[str, Any]:
    """The Erlang figures as a JSON-ready dict, or ``{"skipped": why}``."""
    return asdict(erl) if isinstance(erl, ErlangResults) else {"skipped": erl}


# ---------------------------------------------------------------------- zimg


def _describe(reason: Any) -> str:
    if isinstance(reason, tuple) and len(reason) == 4 and reason[0] == "error":
        return f"{reason[1]}: {reason[2]}\n{reason[3]}"
    return repr(reason)


def _spawn_for_result(
    node: zimg.Node, where: str, behaviour: str, args: tuple[Any, ...], tag: str
) -> tuple[Any, ...]:
    """Spawn a monitored ``behaviour`` and wait for its ``(tag, ...)`` message (or its death)."""
    pid, ref = node.spawn_monitor(where, behaviour, *args)
    message = node.receive(
        lambda m: m[0] == tag or (m[0] == "DOWN" and m[1] == ref), RESULT_TIMEOUT_S
    )
    if message[0] == "DOWN":
        raise BenchError(f"{behaviour} on {where} ({pid!r}) died: {_describe(message[3])}")
    node.demonitor(ref, flush=True)
    return tuple(message)


def _measure_spawns(node: zimg.Node, where: str, spawns: int, warmup: int) -> Spawns:
    me = node.self()
    first_reply: list[float] = []
    spawn_call: list[float] = []
    clock = time.perf_counter
    for k in range(warmup + spawns):
        t0 = clock()
        pid = node.spawn(where, ECHO)
        t1 = clock()
        node.send(pid, ("echo", me, k))
        _check_reply(node.receive(None, REPLY_TIMEOUT_S), ("echo", k))
        t2 = clock()
        node.send(pid, "stop")
        if k >= warmup:
            spawn_call.append((t1 - t0) * 1e3)
            first_reply.append((t2 - t0) * 1e3)
    return Spawns(
        spawns=spawns,
        first_reply_median_ms=statistics.median(first_reply),
        first_reply_min_ms=min(first_reply),
        first_reply_max_ms=max(first_reply),
        spawn_call_median_ms=statistics.median(spawn_call),
    )


def run_zimg(cfg: Config, timings: Timings) -> ZimgResults:
    """The zimg figures, on a local cluster of two workers that import this module."""
    progress("zimg cluster start ...")
    starting = time.perf_counter()
    with zimg.local_cluster(workers=2, imports=[MODULE]) as node:
        timings.phases["zimg cluster start"] = round(time.perf_counter() - starting, 3)
        me = node.self()
        rounds, warm = cfg.rounds, cfg.warmup_rounds

        with timings.phase("zimg RTT n1<->n2"):
            echo_n2 = node.spawn("n2", ECHO)
            _, samples, total = _spawn_for_result(
                node, "n1", PING, (echo_n2, me, rounds, warm), "ping-result"
            )
            rtt_n1_n2 = Rtt.of(np.asarray(samples, dtype=np.float64), total)
            node.send(echo_n2, "stop")

        with timings.phase("zimg RTT main<->n1"):
            echo_n1 = node.spawn("n1", ECHO)
            samples, total = ping_loop(node.send, node.receive, echo_n1, me, rounds, warm)
            rtt_main_n1 = Rtt.of(samples, total)

        with timings.phase("zimg RTT n1<->n1"):
            _, samples, total = _spawn_for_result(
                node, "n1", PING, (echo_n1, me, rounds, warm), "ping-result"
            )
            rtt_same_node = Rtt.of(np.asarray(samples, dtype=np.float64), total)
            node.send(echo_n1, "stop")

        with timings.phase("zimg one-way n1->n2"):
            sink_n2 = node.spawn("n2", SINK)
            args = (sink_n2, me, cfg.messages, cfg.warmup_messages)
            _, count, seconds = _spawn_for_result(node, "n1", BLAST, args, "blast-result")
            one_way = Rate.of(count, seconds)
            node.send(sink_n2, "stop")

        with timings.phase("zimg spawn"):
            spawn = _measure_spawns(node, "n1", cfg.spawns, cfg.warmup_spawns)
        progress("zimg cluster stop ...")
        stopping = time.perf_counter()
    timings.phases["zimg cluster stop"] = round(time.perf_counter() - stopping, 3)
    return ZimgResults(rtt_n1_n2, rtt_main_n1, rtt_same_node, one_way, spawn)


# ---------------------------------------------------------------------- report


Row = tuple[str, float, tuple[float | None, ...], str]  # label, zimg, one base per column, format


def _rows(z: ZimgResults, raw: dict[str, RawResults], erl: ErlangResults | None) -> list[Row | str]:
    """The table's rows; the bases are pyzmq direct, pyzmq proxy and (if given) Erlang."""
    paths = [raw["direct"], raw["proxy"]]
    rows: list[Row | str] = []
    for label, rtt, compare, with_erl in (
        ("RTT n1 <-> n2 (actors, 2 workers)", z.rtt_n1_n2, True, True),
        ("RTT main <-> n1 (main node, echo)", z.rtt_main_n1, True, False),
        ("RTT n1 <-> n1 (same node: no socket)", z.rtt_same_node, False, False),
    ):
        rtts: list[Rtt | None] = [b.rtt for b in paths] if compare else [None, None]
        if erl is not None:
            rtts.append(erl.rtt if with_erl else None)
        rows.append(label)
        for stat, fmt in (("p50_us", ".1f"), ("p99_us", ".1f"), ("mean_us", ".1f")):
            name = f"  {stat.removesuffix('_us')} (us)"
            bases = tuple(None if b is None else getattr(b, stat) for b in rtts)
            rows.append((name, getattr(rtt, stat), bases, fmt))
        per_s = tuple(None if b is None else b.per_s for b in rtts)
        rows.append(("  round trips/s", rtt.per_s, per_s, ",.0f"))
    rows.append("One-way n1 -> n2 (counting sink)")
    rates = [b.one_way.per_s for b in paths] + ([erl.one_way.per_s] if erl is not None else [])
    rows.append(("  messages/s", z.one_way_n1_n2.per_s, tuple(rates), ",.0f"))
    rows.append("Spawn on n1 (zimg.behaviours:echo)")
    s = z.spawn
    none = (None,) * len(rates)
    rows.append(("  spawn -> first reply, median (ms)", s.first_reply_median_ms, none, ".2f"))
    rows.append(("  spawn -> first reply, min (ms)", s.first_reply_min_ms, none, ".2f"))
    rows.append(("  spawn -> first reply, max (ms)", s.first_reply_max_ms, none, ".2f"))
    rows.append(("  spawn() call alone, median (ms)", s.spawn_call_median_ms, none, ".2f"))
    return rows


def format_table(
    cfg: Config,
    machine: dict[str, Any],
    z: ZimgResults,
    raw: dict[str, RawResults],
    erl: ErlangResults | str,
) -> str:
    """The printed report; ``erl`` is the Erlang figures or why there are none."""
    m = machine
    lines = [
        f"zimg actor benchmark, {m['date']}",
        f"machine: {m['cpu_count']} CPUs ({m['cpus_usable']} usable), {m['cpu_model']}, "
        f"load {m['load_avg_1m']} before the run",
        f"         {m['platform']}",
        f"         {m['python']}, pyzmq {m['pyzmq']}, libzmq {m['libzmq']}, "
        f"msgpack {m['msgpack']}, numpy {m['numpy']}, zimg {m['zimg']}"
        + (f", Erlang/OTP {erl.otp}" if isinstance(erl, ErlangResults) else ""),
        f"sizes:   {cfg.rounds} round trips (+{cfg.warmup_rounds} warm-up), "
        f"{cfg.messages} one-way messages (+{cfg.warmup_messages}), "
        f"{cfg.spawns} spawns (+{cfg.warmup_spawns})",
        f"         message bytes on the wire, zimg = raw payload: RTT request {cfg.rtt_bytes} B, "
        f"one-way {cfg.one_way_bytes} B (zimg: 1 lead frame, raw: 1 frame); transport ipc://",
        "",
    ]
    # (heading, width) of each base's column, then its ratio column
    columns = [("pyzmq direct", 14, "zimg/dir"), ("pyzmq proxy", 13, "zimg/prx")]
    if isinstance(erl, ErlangResults):
        columns.append(("erlang", 12, "zimg/erl"))
    head = f"{'':38}{'zimg':>12}" + "".join(f"{c:>{w}}{r:>10}" for c, w, r in columns)
    lines += [head, "-" * len(head)]
    for row in _rows(z, raw, erl if isinstance(erl, ErlangResults) else None):
        if isinstance(row, str):
            lines.append(row)
            continue
        label, value, bases, fmt = row
        text = f"{label:38}{value:>12{fmt}}"
        for base, (_, width, _) in zip(bases, columns, strict=True):
            if base is None:
                text += f"{'-':>{width}}{'-':>10}"
            else:
                text += f"{base:>{width}{fmt}}{value / base:>9.2f}x"
        lines.append(text)
    lines += [
        "-" * len(head),
        "ratio = zimg / baseline: above 1 is slower for latencies, below 1 is slower for rates.",
        "pyzmq direct: DEALER (this process) <-> ROUTER echo (child process).",
        "pyzmq proxy:  DEALER <-> zmq.proxy ROUTER|DEALER (child) <-> DEALER echo (child).",
        "zimg n1<->n2: actor thread -> I/O thread -> broker thread (main process) -> I/O thread"
        " -> actor, each way.",
    ]
    if isinstance(erl, ErlangResults):
        lines += [
            "erlang:       driver process on one BEAM node <-> echo process on another,"
            " distribution over TCP loopback;",
            f"              terms of {erl.rtt_bytes} B (RTT) and {erl.one_way_bytes} B (one-way)"
            " in the external format.",
        ]
    else:
        lines.append(f"erlang:       {erl}")
    return "\n".join(lines)


def to_json(
    cfg: Config,
    machine: dict[str, Any],
    z: ZimgResults,
    raw: dict[str, RawResults],
    timings: Timings,
    erl: ErlangResults | str,
) -> dict[str, Any]:
    """Every figure, as a JSON-ready dict (``"erlang": {"skipped": why}`` without Erlang)."""
    ratios: dict[str, float] = {}
    for base_name, base in raw.items():
        for name, rtt in (("rtt_n1_n2", z.rtt_n1_n2), ("rtt_main_n1", z.rtt_main_n1)):
            for stat in ("p50_us", "p99_us", "mean_us", "per_s"):
                key = f"{name}.{stat}/{base_name}"
                ratios[key] = round(getattr(rtt, stat) / getattr(base.rtt, stat), 4)
        ratio = z.one_way_n1_n2.per_s / base.one_way.per_s
        ratios[f"one_way.per_s/{base_name}"] = round(ratio, 4)
    if isinstance(erl, ErlangResults):
        for stat in ("p50_us", "p99_us", "mean_us", "per_s"):
            ratio = getattr(z.rtt_n1_n2, stat) / getattr(erl.rtt, stat)
            ratios[f"rtt_n1_n2.{stat}/erlang"] = round(ratio, 4)
        ratios["one_way.per_s/erlang"] = round(z.one_way_n1_n2.per_s / erl.one_way.per_s, 4)
    return {
        "machine": machine,
        "config": asdict(cfg),
        "zimg": asdict(z),
        "pyzmq": {name: asdict(r) for name, r in raw.items()},
        "erlang": erlang_json(erl),
        "ratios": ratios,
        "phases_s": timings.phases,
    }


# ---------------------------------------------------------------------- command line


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(
        prog=f"python -m {MODULE}",
        description="Actor messaging latency, rate and spawn time, next to raw pyzmq.",
    )
    parser.add_argument("--quick", action="store_true", help="smaller counts (under 30 s)")
    parser.add_argument("--json", metavar="PATH", type=Path, help="also write every figure here")
    parser.add_argument(
        "--rounds", metavar="N", type=int, help="timed round trips per RTT (5000; quick 1000)"
    )
    parser.add_argument(
        "--messages", metavar="M", type=int, help="one-way messages (50000; quick 10000)"
    )
    parser.add_argument("--spawns", metavar="K", type=int, help="timed spawns (50; quick 20)")
    args = parser.parse_args(argv)
    for name in ("rounds", "messages", "spawns"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name} must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print the table, write the JSON; returns the exit code."""
    args = parse_args(argv)
    cfg = make_config(
        quick=args.quick, rounds=args.rounds, messages=args.messages, spawns=args.spawns
    )
    previous = signal.signal(signal.SIGTERM, interrupt)  # clean up on SIGTERM as on Ctrl-C
    timings = Timings()
    machine = machine_info()
    started = time.perf_counter()
    tmp = tempfile.mkdtemp(prefix="zimg-bench-")
    try:
        raw = run_pyzmq(cfg, tmp, timings)
        erl = run_erlang(cfg, tmp, timings)
        z = run_zimg(cfg, timings)
    except KeyboardInterrupt:
        progress("interrupted; everything was stopped")
        return 130
    except (BenchError, zimg.ZimgError) as exc:
        progress(f"failed: {exc}")
        return 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        signal.signal(signal.SIGTERM, previous)
    timings.phases["total"] = round(time.perf_counter() - started, 3)
    print(format_table(cfg, machine, z, raw, erl))
    print(
        f"\nwall time: {timings.phases['total']:.1f} s  ("
        + ", ".join(f"{name} {s:.1f}" for name, s in timings.phases.items() if name != "total")
        + ")"
    )
    if args.json is not None:
        report = to_json(cfg, machine, z, raw, timings, erl)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        progress(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
