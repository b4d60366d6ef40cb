"""Where an actor message's CPU goes: ``python -m zimg.bench.actor_cpu``.

``zimg.bench.actors`` gives latencies and rates; this gives the CPU time of the calling thread
(``time.thread_time``) per send and per receive, so that the two ends of a message can be
compared with raw pyzmq's, measured in the same run:

- **raw pyzmq**: a DEALER's ``send`` and blocking ``recv`` in round trips with a ROUTER echo in
  another process (``zimg.bench.raw_zmq``);
- **zimg, round trips**: the main node's ``send`` and ``receive`` with an echo actor on a worker,
  over a lane (``lanes=True``);
- **zimg, a burst**: the main node's ``send`` of many messages in a row to a sink on the worker
  (they go in batches: ``docs/actors.md`` §4.1);
- **a mailbox alone**: ``Mailbox.receive`` of a message already there, in a loop, and after a
  2 ms sleep before each call.

A round trip wakes each side from sleep, and code that runs just after a sleep costs several
times what it costs in a hot loop (the last two lines show it for one function): the more
Python a hop runs, the more this costs it. Nothing is written to disk.
"""

from __future__ import annotations

import argparse
import multiprocessing
import tempfile
import time
from collections.abc import Callable
from typing import Any

import zimg
from zimg._mailbox import Mailbox
from zimg.bench._common import children, progress
from zimg.bench.actors import ECHO, MODULE, SINK
from zimg.bench.raw_zmq import _QUIT, _client, _raw_server

Figures = dict[str, float]


def _split(send: Callable[[], Any], receive: Callable[[], Any], rounds: int) -> Figures:
    """Thread CPU per ``send()`` and per ``receive()``, in microseconds, over ``rounds``."""
    clock = time.thread_time_ns
    sending = receiving = 0
    wall = time.perf_counter()
    for _ in range(rounds):
        t0 = clock()
        send()
        t1 = clock()
        receive()
        sending += t1 - t0
        receiving += clock() - t1
    wall = time.perf_counter() - wall
    return {
        "send_us": sending / rounds / 1e3,
        "receive_us": receiving / rounds / 1e3,
        "round_trip_us": wall / rounds * 1e6,
    }


def raw(rounds: int, warmup: int) -> Figures:
    """Raw pyzmq round trips with an echo in another process."""
    payload = b"x" * 64
    with tempfile.TemporaryDirectory(prefix="zimg-actor-cpu-") as tmp, children() as procs:
        endpoint = f"ipc://{tmp}/echo"
        mp = multiprocessing.get_context("spawn")
        server = mp.Process(target=_raw_server, args=(endpoint, False), daemon=True)
        server.start()
        procs.append(server)
        with _client(endpoint) as sock:
            for _ in range(warmup):
                sock.send(payload)
                sock.recv()
            figures = _split(lambda: sock.send(payload), sock.recv, rounds)
            sock.send(_QUIT)
        server.join(5)
    return figures


def zimg_lanes(rounds: int, warmup: int, burst: int) -> Figures:
    """zimg round trips and a burst, main node <-> worker n1, over a lane."""
    with zimg.local_cluster(workers=1, imports=[MODULE], lanes=True) as node:
        me = node.self()
        echo = node.spawn("n1", ECHO)
        for i in range(warmup):
            node.send(echo, ("echo", me, i))
            node.receive(None, 10)
        figures = _split(
            lambda: node.send(echo, ("echo", me, 0)), lambda: node.receive(None, 10), rounds
        )
        node.send(echo, "stop")
        sink = node.spawn("n1", SINK)
        node.send(sink, ("count", me, burst))
        clock = time.thread_time_ns
        started = clock()
        for i in range(burst):
            node.send(sink, ("m", i))
        figures["burst_send_us"] = (clock() - started) / burst / 1e3
        node.receive(lambda m: m == ("sunk", burst), 60)
        node.send(sink, "stop")
    return figures


def mailbox(rounds: int) -> Figures:
    """Thread CPU of one ``Mailbox.receive`` of a message already there, hot and after a sleep."""
    box = Mailbox()
    figures = {}
    for label, pause in (("mailbox_hot_us", 0.0), ("mailbox_after_sleep_us", 0.002)):
        spent = 0
        for i in range(rounds):
            box.put(("echo", i))
            if pause:
                time.sleep(pause)  # the thread sleeps, as a receive that waits for a reply does
            started = time.thread_time_ns()
            box.receive(None, 1)
            spent += time.thread_time_ns() - started
        figures[label] = spent / rounds / 1e3
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zimg.bench.actor_cpu", description=__doc__)
    parser.add_argument("--rounds", type=int, default=5000, help="timed round trips (5000)")
    parser.add_argument("--burst", type=int, default=50_000, help="messages in the burst")
    parser.add_argument("--quick", action="store_true", help="500 round trips, a burst of 5,000")
    args = parser.parse_args(argv)
    rounds, burst = (500, 5000) if args.quick else (args.rounds, args.burst)
    warmup = max(100, rounds // 10)
    progress("raw pyzmq ...")
    base = raw(rounds, warmup)
    progress("zimg, lanes ...")
    ours = zimg_lanes(rounds, warmup, burst)
    alone = mailbox(min(rounds, 2000))
    print(f"thread CPU per call, us ({rounds} round trips of each, one run)")
    print(f"{'':34}{'raw pyzmq':>12}{'zimg lanes':>12}{'ratio':>8}")
    for key, label in (
        ("send_us", "send, in a round trip"),
        ("receive_us", "receive, in a round trip"),
        ("round_trip_us", "round trip, wall"),
    ):
        print(f"{label:34}{base[key]:12.1f}{ours[key]:12.1f}{ours[key] / base[key]:7.2f}x")
    print(f"{'send, in a burst of ' + format(burst, ','):34}{'-':>12}{ours['burst_send_us']:12.1f}")
    print(f"{'Mailbox.receive, hot':34}{'-':>12}{alone['mailbox_hot_us']:12.1f}")
    print(f"{'Mailbox.receive, after a sleep':34}{'-':>12}{alone['mailbox_after_sleep_us']:12.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
