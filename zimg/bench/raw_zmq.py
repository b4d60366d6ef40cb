"""The raw pyzmq baselines of :mod:`zimg.bench.actors`: an echo server in another process,
direct and through a ``zmq.proxy`` device, with the same message sizes and counts as zimg's;
and the Python floor of an actor message, the same path with zimg's encoding and decoding at
each end and nothing else."""

from __future__ import annotations

import contextlib
import multiprocessing
import signal
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import zmq

from zimg import wire
from zimg._heap import keep_freed_memory
from zimg.bench._common import BenchError, Timings, children
from zimg.bench.actor_figures import REPLY_TIMEOUT_S, Config, Rate, RawResults, Rtt, check_reply
from zimg.wire import Pid

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


_FLOOR_SERVER = Pid("floor-server", 1, 1)
_FLOOR_CLIENT = Pid("floor-client", 1, 1)
_MORE = int(zmq.SNDMORE)


def _floor_server(endpoint: str) -> None:
    """The Python floor of an actor's end, as a bound ROUTER: each message is decoded as a
    node decodes it (``wire.decode_common``) and its term passed through a deque (a mailbox
    with no thread between the socket and the reader); a round trip's request is answered with
    a SEND encoded as a node encodes it (``wire.encode_send``). ``C<n>``, sent raw, starts a
    batch of n to decode and count, answered by one raw ``D``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    try:
        sock = ctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.bind(endpoint)
        recv, send = sock.recv, sock.send
        decode, encode = wire.decode_common, wire.encode_send
        box: deque[Any] = deque()
        while True:
            identity, lead = recv(), recv()  # every message here is one frame
            if lead == _QUIT:
                return
            if lead[:1] == _COUNT:
                for _ in range(int(lead[1:])):
                    recv()
                    box.append(decode([recv()]).header["msg"])
                    box.popleft()
                send(identity, _MORE)
                send(_DONE)
                continue
            box.append(decode([lead]).header["msg"])
            _, reply_to, tag = box.popleft()  # ("echo", reply_to, tag), as zimg's ping sends
            send(identity, _MORE)
            send(encode(reply_to, ("echo", tag))[0])
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


def _round_trips(trip: Callable[[int], None], rounds: int, warmup: int) -> Rtt:
    """``warmup`` untimed calls of ``trip(i)``, then ``rounds`` timed ones, timed like
    :func:`zimg.bench.actors.ping_loop`."""
    for i in range(warmup):
        trip(i)
    samples = np.empty(rounds, dtype=np.float64)
    clock = time.perf_counter
    started = clock()
    for i in range(rounds):
        t0 = clock()
        trip(i)
        samples[i] = clock() - t0
    total = clock() - started
    return Rtt.of(samples * 1e6, total)


def raw_rtt(sock: zmq.Socket[bytes], payload: bytes, rounds: int, warmup: int) -> Rtt:
    """Round trips through ``sock`` to an echo server."""
    send, recv = sock.send, sock.recv

    def trip(_: int) -> None:
        send(payload)
        reply = recv()
        if reply != payload:
            check_reply(reply, payload)

    return _round_trips(trip, rounds, warmup)


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


def floor_rtt(sock: zmq.Socket[bytes], rounds: int, warmup: int) -> Rtt:
    """Round trips to :func:`_floor_server` with the messages of zimg's ping
    (``("echo", me, i)``, answered ``("echo", i)``), each encoded and decoded as a node does."""
    send, recv = sock.send, sock.recv
    decode, encode = wire.decode_common, wire.encode_send

    def trip(i: int) -> None:
        send(encode(_FLOOR_SERVER, ("echo", _FLOOR_CLIENT, i))[0])
        reply = decode([recv()]).header["msg"]
        if reply != ("echo", i):
            check_reply(reply, ("echo", i))

    return _round_trips(trip, rounds, warmup)


def floor_one_way(sock: zmq.Socket[bytes], count: int, warmup: int) -> Rate:
    """``("m", i)`` to :func:`_floor_server`, encoded as a node encodes it, as
    :func:`zimg.bench.actors.blast` sends: the rate of the Python floor."""
    send, encode = sock.send, wire.encode_send

    def batch(n: int) -> None:
        send(_COUNT + str(n).encode())
        for i in range(n):
            send(encode(_FLOOR_SERVER, ("m", i))[0])
        check_reply(sock.recv(), _DONE)

    batch(warmup)
    started = time.perf_counter()
    batch(count)
    return Rate.of(count, time.perf_counter() - started)


def run_pyzmq(cfg: Config, tmp: str, timings: Timings) -> dict[str, RawResults]:
    """The raw pyzmq figures: ``direct`` (DEALER-ROUTER) and ``proxy`` (through zmq.proxy);
    and ``floor``, the Python floor of an actor message (:func:`_floor_server`)."""
    direct, floor = f"ipc://{tmp}/direct", f"ipc://{tmp}/floor"
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
            (_floor_server, (floor,)),
        ):
            procs.append(mp.Process(target=target, args=args, daemon=True))
            procs[-1].start()
        for name, endpoint in (("direct", direct), ("proxy", front)):
            with timings.phase(f"pyzmq {name}"), _client(endpoint) as sock:
                rtt = raw_rtt(sock, rtt_payload, cfg.rounds, cfg.warmup_rounds)
                rate = raw_one_way(sock, one_way_payload, cfg.messages, cfg.warmup_messages)
                sock.send(_QUIT)
                results[name] = RawResults(rtt, rate)
        with timings.phase("python floor"), _client(floor) as sock:
            rtt = floor_rtt(sock, cfg.rounds, cfg.warmup_rounds)
            rate = floor_one_way(sock, cfg.messages, cfg.warmup_messages)
            sock.send(_QUIT)
            results["floor"] = RawResults(rtt, rate)
    return results
