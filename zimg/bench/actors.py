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
   Messages per second is M over the time from the first send to that reply. Beside it, the CPU
   each of the two worker processes used per message (``/proc/PID/stat``, warm-up included): a
   steadier figure than the rate on a shared machine.
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
import json
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

import zimg
from zimg.bench import erlang
from zimg.bench._common import BenchError, Timings, interrupt, machine_info, progress
from zimg.bench.actor_figures import (
    REPLY_TIMEOUT_S,
    Config,
    ErlangResults,
    Rate,
    Rtt,
    Samples,
    Spawns,
    ZimgResults,
    check_reply,
    make_config,
)
from zimg.bench.actor_report import format_table, to_json
from zimg.bench.broker_process import process_total_cpu_s
from zimg.bench.raw_zmq import run_pyzmq
from zimg.wire import Pid

MODULE = "zimg.bench.actors"
PING = "zimg.bench.ping"
SINK = "zimg.bench.sink"
BLAST = "zimg.bench.blast"
ECHO = "zimg.behaviours:echo"

RESULT_TIMEOUT_S = 300.0  # a whole measurement
MIN_RATE = 500.0  # messages/s below which a one-way batch counts as stalled

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
        check_reply(receive(None, REPLY_TIMEOUT_S), ("echo", i))
    samples = np.empty(rounds, dtype=np.float64)
    clock = time.perf_counter
    started = clock()
    for i in range(rounds):
        t0 = clock()
        send(target, ("echo", me, i))
        reply = receive(None, REPLY_TIMEOUT_S)
        samples[i] = clock() - t0
        if reply != ("echo", i):
            check_reply(reply, ("echo", i))
    total = clock() - started
    return samples * 1e6, total


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
    check_reply(ctx.receive(None, max(REPLY_TIMEOUT_S, n / MIN_RATE)), ("sunk", n))


@zimg.behaviour(BLAST)
def blast(ctx: zimg.Process, to: Pid, report_to: Pid, count: int, warmup: int) -> None:
    """Send ``count`` messages to the sink ``to`` after a warm-up batch; report the time.

    Sends ``("blast-result", count, seconds)`` to ``report_to``.
    """
    _blast_batch(ctx, to, warmup)
    started = time.perf_counter()
    _blast_batch(ctx, to, count)
    ctx.send(report_to, ("blast-result", count, time.perf_counter() - started))


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
        check_reply(node.receive(None, REPLY_TIMEOUT_S), ("echo", k))
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


def run_zimg(cfg: Config, timings: Timings, lanes: bool = False) -> ZimgResults:
    """The zimg figures, on a local cluster of two workers that import this module (whose
    nodes use lanes, with ``lanes``: then the phases' names end in "(lanes)")."""
    on = " (lanes)" if lanes else ""
    progress(f"zimg cluster start{on} ...")
    starting = time.perf_counter()
    with zimg.local_cluster(workers=2, imports=[MODULE], lanes=lanes) as node:
        timings.phases[f"zimg cluster start{on}"] = round(time.perf_counter() - starting, 3)
        me = node.self()
        rounds, warm = cfg.rounds, cfg.warmup_rounds

        with timings.phase(f"zimg RTT n1<->n2{on}"):
            echo_n2 = node.spawn("n2", ECHO)
            _, samples, total = _spawn_for_result(
                node, "n1", PING, (echo_n2, me, rounds, warm), "ping-result"
            )
            rtt_n1_n2 = Rtt.of(np.asarray(samples, dtype=np.float64), total)
            node.send(echo_n2, "stop")

        with timings.phase(f"zimg RTT main<->n1{on}"):
            echo_n1 = node.spawn("n1", ECHO)
            samples, total = ping_loop(node.send, node.receive, echo_n1, me, rounds, warm)
            rtt_main_n1 = Rtt.of(samples, total)

        with timings.phase(f"zimg RTT n1<->n1{on}"):
            _, samples, total = _spawn_for_result(
                node, "n1", PING, (echo_n1, me, rounds, warm), "ping-result"
            )
            rtt_same_node = Rtt.of(np.asarray(samples, dtype=np.float64), total)
            node.send(echo_n1, "stop")

        with timings.phase(f"zimg one-way n1->n2{on}"):
            sink_n2 = node.spawn("n2", SINK)
            args = (sink_n2, me, cfg.messages, cfg.warmup_messages)
            cpu = _WorkersCpu(node, ("n1", "n2"))
            _, count, seconds = _spawn_for_result(node, "n1", BLAST, args, "blast-result")
            sender_cpu_us, receiver_cpu_us = cpu.per_message_us(count + cfg.warmup_messages)
            one_way = Rate.of(count, seconds)
            node.send(sink_n2, "stop")

        with timings.phase(f"zimg spawn{on}"):
            spawn = _measure_spawns(node, "n1", cfg.spawns, cfg.warmup_spawns)
        progress(f"zimg cluster stop{on} ...")
        stopping = time.perf_counter()
    timings.phases[f"zimg cluster stop{on}"] = round(time.perf_counter() - stopping, 3)
    return ZimgResults(
        rtt_n1_n2, rtt_main_n1, rtt_same_node, one_way, spawn, sender_cpu_us, receiver_cpu_us
    )


class _WorkersCpu:
    """The CPU time local-cluster workers use from now on (``/proc``; None where it is not
    there): the whole process, the threads that end meanwhile included."""

    def __init__(self, cluster: zimg.LocalCluster, names: tuple[str, ...]) -> None:
        self.pids = [cluster.processes[name].pid for name in names]
        self.start = [self._cpu_s(pid) for pid in self.pids]

    @staticmethod
    def _cpu_s(pid: int) -> float | None:
        try:
            return process_total_cpu_s(pid)
        except (OSError, ValueError, IndexError):  # no /proc (not Linux), or the process went
            return None

    def per_message_us(self, messages: int) -> list[float | None]:
        """Each worker's CPU since this was made, in microseconds per message."""
        out: list[float | None] = []
        for pid, start in zip(self.pids, self.start, strict=True):
            end = self._cpu_s(pid)
            used = None if start is None or end is None else end - start
            out.append(None if used is None else round(used / messages * 1e6, 1))
        return out


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
    parser.add_argument(
        "--no-lanes",
        action="store_true",
        help="skip the second zimg cluster, whose nodes use lanes (docs/actors.md)",
    )
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
        z_lanes = run_zimg(cfg, timings, lanes=True) if not args.no_lanes else None
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
    print(format_table(cfg, machine, z, raw, erl, z_lanes))
    print(
        f"\nwall time: {timings.phases['total']:.1f} s  ("
        + ", ".join(f"{name} {s:.1f}" for name, s in timings.phases.items() if name != "total")
        + ")"
    )
    if args.json is not None:
        report = to_json(cfg, machine, z, raw, timings, erl, z_lanes)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        progress(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
