"""The raw pyzmq baselines of :mod:`zimg.bench.actors`: an echo server in another process,
direct and through a ``zmq.proxy`` device, with the same message sizes and counts as zimg's."""

from __future__ import annotations

import contextlib
import multiprocessing
import signal
import time
from collections.abc import Iterator

import numpy as np
import zmq

from zimg._heap import keep_freed_memory
from zimg.bench._common import BenchError, Timings, children
from zimg.bench.actor_figures import REPLY_TIMEOUT_S, Config, Rate, RawResults, Rtt, check_reply

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


def raw_proxy(front: str, back: str) -> None:
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
        check_reply(recv(), payload)
    samples = np.empty(rounds, dtype=np.float64)
    clock = time.perf_counter
    started = clock()
    for i in range(rounds):
        t0 = clock()
        send(payload)
        reply = recv()
        samples[i] = clock() - t0
        if reply != payload:
            check_reply(reply, payload)
    total = clock() - started
    return Rtt.of(samples * 1e6, total)


def raw_one_way(sock: zmq.Socket[bytes], payload: bytes, count: int, warmup: int) -> Rate:
    """Send ``count`` messages to a counting server after a warm-up batch, like :func:`blast`."""

    def batch(n: int) -> None:
        send(_COUNT + str(n).encode())
        for _ in range(n):
            send(payload)
        check_reply(sock.recv(), _DONE)

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
            (raw_proxy, (front, back)),
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
