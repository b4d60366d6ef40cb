"""Micro-figures, each next to its raw pyzmq counterpart measured in the same run.

1. **Actors** (reused from :mod:`zimg.bench.actors`): small-message round trip between actors on
   two worker nodes (p50/p99) and the one-way message rate, against a direct DEALER-ROUTER echo
   and against an echo behind ``zmq.proxy``; and against Erlang/OTP distribution between two
   BEAM nodes where ``erl`` is installed (:mod:`zimg.bench.erlang`).
2. **The broker loop alone**: raw pyzmq DEALERs that speak the zimg wire format (HELLO, then
   pre-encoded SEND messages to a pid on the other DEALER) exchange messages through a
   ``python -m zimg broker`` process, and the very same frames go through a ``zmq.proxy``
   ROUTER-DEALER process. The clients do no Python work per message beyond a send and a receive,
   so the difference is the broker's loop (decode, route, send). Two figures:

   - small messages: round trips per second with :data:`WINDOW` requests in flight;
   - a 6.2 MB array frame (a 1920x1080 BGR image) one way, acknowledged by a small message,
     :data:`BIG_WINDOW` in flight: gigabytes per second.

Both paths use ``ipc://`` in a temporary directory, and every process is stopped on the way out.

3. **Start-up**: the wall time of ``python -m zimg run IMAGE --workers 2`` to exit, one image, as
   a user sees it (interpreter, imports, cluster, one job, shut-down). The library figure (cluster
   call to first result) comes from the contenders' runs.
"""

from __future__ import annotations

import multiprocessing
import secrets
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

import numpy as np
import zmq

from zimg import protocol, wire
from zimg.bench import actor_figures, actor_report, actors, raw_zmq
from zimg.bench._common import BenchError, Timings, children
from zimg.testing import Processes
from zimg.wire import Command, Pid

WINDOW = 32  # small requests in flight
BIG_WINDOW = 4  # 6 MB messages in flight
BIG_SHAPE = (1080, 1920, 3)
TIMEOUT_MS = 10_000


@dataclass(frozen=True)
class ForwardConfig:
    """Counts for the broker-loop figures."""

    small_round_trips: int  # per round
    big_messages: int  # per round
    rounds: int = 1  # the two paths take turns this many times; the median round counts


def forward_config(mode: str) -> ForwardConfig:
    """Counts for ``full``, ``quick`` or ``smoke``."""
    return {
        "full": ForwardConfig(10_000, 50, rounds=21),
        "quick": ForwardConfig(5_000, 25, rounds=5),
        "smoke": ForwardConfig(1_000, 5, rounds=2),
    }[mode]


def actor_config(mode: str) -> actor_figures.Config:
    """The actor benchmark's sizes for ``full``, ``quick`` or ``smoke``."""
    if mode == "smoke":
        return actor_figures.make_config(quick=True, rounds=200, messages=2000, spawns=5)
    return actor_figures.make_config(quick=mode == "quick", rounds=None, messages=None, spawns=None)


# ---------------------------------------------------------------------- raw peers (children)


def _hello(sock: zmq.Socket[bytes], name: str, incarnation: int) -> None:
    """Join a zimg broker as a client node and wait for WELCOME."""
    header = {
        "name": name,
        "role": protocol.ROLE_CLIENT,
        "capacity": 0,
        "incarnation": incarnation,
        "session": 0,
        "version": protocol.PROTOCOL_VERSION,
    }
    sock.send_multipart(wire.encode(Command.HELLO, header))
    while True:
        if not sock.poll(TIMEOUT_MS):
            raise BenchError("no WELCOME from the broker")
        frames = sock.recv_multipart()
        if wire.command_of(frames) is Command.WELCOME:
            return
        if wire.command_of(frames) is Command.REJECT:
            raise BenchError(f"the broker refused {name}")


def _identity(pid: Pid) -> bytes:
    """The routing id a node with this pid's name and incarnation would use."""
    return protocol.node_identity(pid.node, pid.incarnation, secrets.randbits(64))


def _dealer(ctx: zmq.Context[zmq.Socket[bytes]], endpoint: str, identity: bytes) -> Any:
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.ROUTING_ID, identity)
    sock.setsockopt(zmq.RCVTIMEO, TIMEOUT_MS)
    sock.setsockopt(zmq.SNDTIMEO, TIMEOUT_MS)
    sock.connect(endpoint)
    return sock


def _peer(endpoint: str, via_broker: bool, me: Pid, reply: list[bytes], ready: Event) -> None:
    """Answer every SEND with ``reply`` (pre-encoded) until the parent terminates us.

    Through the broker the peer is a node (HELLO first, heartbeats while idle); behind
    ``zmq.proxy`` a message arrives as ``[client identity, *frames]`` and goes back the same way.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops us
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    try:
        sock = _dealer(ctx, endpoint, _identity(me))
        sock.setsockopt(zmq.RCVTIMEO, 500)
        if via_broker:
            _hello(sock, me.node, me.incarnation)
        ready.set()
        recv, send = sock.recv_multipart, sock.send_multipart
        beat = wire.encode(Command.HEARTBEAT, {})
        envelope = 0 if via_broker else 1
        while True:
            try:
                frames = recv(copy=False)
            except zmq.Again:
                if via_broker:
                    send(beat)
                continue
            if wire.command_of(frames[envelope:]) is not Command.SEND:
                continue  # the broker's heartbeats
            send([*(f.bytes for f in frames[:envelope]), *reply], copy=False)
    finally:
        ctx.destroy(linger=0)


# ---------------------------------------------------------------------- the client (this process)


def _exchange(
    sock: zmq.Socket[bytes], request: list[Any], count: int, window: int, *, copy: bool
) -> float:
    """Keep ``window`` requests in flight until ``count`` replies came; return the seconds."""
    send, recv = sock.send_multipart, sock.recv_multipart
    started = time.perf_counter()
    sent = got = 0
    while sent < min(window, count):
        send(request, copy=copy)
        sent += 1
    while got < count:
        frames = recv()
        if wire.command_of(frames) is not Command.SEND:
            continue  # a heartbeat from the broker
        got += 1
        if sent < count:
            send(request, copy=copy)
            sent += 1
    return time.perf_counter() - started


@dataclass(frozen=True)
class PathFigures:
    """One path's figures in one round: small round trips per second, big-frame throughput."""

    small_round_trips_per_s: float
    small_seconds: float
    big_gb_per_s: float
    big_seconds: float


class _Path:
    """A forwarding path ready to measure: the echo peer runs and the client has joined."""

    def __init__(self, sock: zmq.Socket[bytes], small: list[Any], big: list[Any]) -> None:
        self.sock, self.small, self.big = sock, small, big

    def measure(self, cfg: ForwardConfig) -> PathFigures:
        """One round: ``cfg.small_round_trips`` small round trips, then ``cfg.big_messages``."""
        small_s = _exchange(self.sock, self.small, cfg.small_round_trips, WINDOW, copy=True)
        big_s = _exchange(self.sock, self.big, cfg.big_messages, BIG_WINDOW, copy=False)
        return PathFigures(
            small_round_trips_per_s=round(cfg.small_round_trips / small_s, 1),
            small_seconds=round(small_s, 4),
            big_gb_per_s=round(int(np.prod(BIG_SHAPE)) * cfg.big_messages / big_s / 1e9, 3),
            big_seconds=round(big_s, 4),
        )


@contextmanager
def _path(
    client_endpoint: str, peer_endpoint: str, via_broker: bool, procs: list[Any]
) -> Iterator[_Path]:
    """A path through the broker (one endpoint) or a proxy (front, back), warmed up."""
    incarnation = secrets.randbits(60)
    tag = secrets.token_hex(3)
    client = Pid(f"bench-c-{tag}", incarnation, 1)
    peer = Pid(f"bench-p-{tag}", incarnation + 1, 1)
    small = wire.encode(Command.SEND, {"to": peer, "msg": ("echo", client, 12345)})
    reply = wire.encode(Command.SEND, {"to": client, "msg": ("echo", peer, 12345)})
    big_array = np.random.default_rng(0).integers(0, 256, size=BIG_SHAPE, dtype=np.uint8)
    big = wire.encode(Command.SEND, {"to": peer, "msg": ("blob", client, big_array)})
    mp = multiprocessing.get_context("spawn")
    ready = mp.Event()
    proc = mp.Process(
        target=_peer,
        args=(peer_endpoint, via_broker, peer, [bytes(f) for f in reply], ready),
        daemon=True,
    )
    proc.start()
    procs.append(proc)
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    try:
        sock = _dealer(ctx, client_endpoint, _identity(client))
        if via_broker:
            _hello(sock, client.node, client.incarnation)
        if not ready.wait(TIMEOUT_MS / 1000):
            raise BenchError("the raw peer did not start")
        path = _Path(sock, small, big)
        path.measure(ForwardConfig(500, 2))  # warm-up
        yield path
        if via_broker:
            sock.send_multipart(wire.encode(Command.DISCONNECT, {"reason": protocol.NORMAL}))
    except zmq.Again:
        raise BenchError(f"no reply through {client_endpoint} within {TIMEOUT_MS} ms") from None
    finally:
        ctx.destroy(linger=0)
        proc.terminate()
        proc.join(3.0)


@contextmanager
def _zimg_broker(tmp: Path) -> Iterator[str]:
    """A ``python -m zimg broker`` process on an ``ipc://`` endpoint in ``tmp``."""
    url = f"ipc://{tmp}/zb"
    procs = Processes(tmp / "logs")
    try:
        procs.broker(url, "--log-level", "warning")
        yield url
    finally:
        procs.stop_all()


def run_forwarding(cfg: ForwardConfig, tmp: Path, timings: Timings) -> dict[str, Any]:
    """The broker-loop figures through the zimg broker and through ``zmq.proxy``.

    Both paths stay open for the whole measurement and take turns, round by round, in
    alternating order, so that load from elsewhere on a shared machine hits both alike. A ratio
    is the median of the rounds' ratios (each round's broker figure over its proxy figure).
    """
    out: dict[str, Any] = {
        "window_small": WINDOW,
        "window_big": BIG_WINDOW,
        "big_frame_bytes": int(np.prod(BIG_SHAPE)),
        "config": asdict(cfg),
        "transport": "ipc",
    }
    proxies: list[PathFigures] = []
    brokers: list[PathFigures] = []
    with children() as procs, _zimg_broker(tmp) as url:
        front, back = f"ipc://{tmp}/pf", f"ipc://{tmp}/pb"
        mp = multiprocessing.get_context("spawn")
        procs.append(mp.Process(target=raw_zmq.raw_proxy, args=(front, back), daemon=True))
        procs[-1].start()
        # The client talks to the proxy's front end; the peer to its back end.
        with (
            _path(front, back, False, procs) as proxy,
            _path(url, url, True, procs) as broker,
            timings.phase(f"forwarding, {cfg.rounds} rounds on each path"),
        ):
            for i in range(cfg.rounds):
                turns = ((proxies, proxy), (brokers, broker))
                for figures, path in turns if i % 2 == 0 else reversed(turns):
                    figures.append(path.measure(cfg))
    out["rounds"] = cfg.rounds
    out["zimg_broker"] = asdict(_median_figures(brokers))
    out["zmq_proxy"] = asdict(_median_figures(proxies))
    for key, field in (("small", "small_round_trips_per_s"), ("big", "big_gb_per_s")):
        pairs = zip(brokers, proxies, strict=True)
        ratios = [getattr(b, field) / getattr(p, field) for b, p in pairs]
        out[f"ratio_{key}"] = round(statistics.median(ratios), 4)
        out[f"ratio_{key}_range"] = [round(min(ratios), 4), round(max(ratios), 4)]
    return out


def _median_figures(runs: list[PathFigures]) -> PathFigures:
    """Each figure's median over the rounds."""
    return PathFigures(
        *(statistics.median(getattr(r, f.name) for r in runs) for f in fields(PathFigures))
    )


# ---------------------------------------------------------------------- actors and start-up


def run_actors(mode: str, tmp: Path, timings: Timings) -> dict[str, Any]:
    """The actor figures of :mod:`zimg.bench.actors`, zimg, raw pyzmq and (where ``erl`` is
    installed) Erlang/OTP, in this run."""
    cfg = actor_config(mode)
    raw = raw_zmq.run_pyzmq(cfg, str(tmp), timings)
    erl = actors.run_erlang(cfg, str(tmp), timings)
    z = actors.run_zimg(cfg, timings)
    return {
        "config": asdict(cfg),
        "zimg": asdict(z),
        "pyzmq": {name: asdict(r) for name, r in raw.items()},
        "erlang": actor_report.erlang_json(erl),
    }


def run_cli_startup(image: Path, reps: int, tmp: Path, timings: Timings) -> list[float]:
    """Wall time of ``python -m zimg run IMAGE --workers 2`` to exit, as a user would see it."""
    walls: list[float] = []
    with timings.phase(f"zimg run CLI start-up x{reps}"):
        for i in range(reps):
            outdir = tmp / f"cli-{i}"
            cmd = [sys.executable, "-m", "zimg", "run", str(image), "--workers", "2"]
            started = time.perf_counter()
            done = subprocess.run(
                [*cmd, "-o", str(outdir)], capture_output=True, text=True, timeout=120, check=False
            )
            walls.append(time.perf_counter() - started)
            if done.returncode != 0:
                raise BenchError(f"zimg run failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return walls
