"""The floor of a job broker written in Python: the socket calls of zimg's broker loop and
nothing else, to measure beside it (``python -m zimg.bench.throughput``).

Per job it does what any Python ROUTER loop that forwards jobs must do: receive the JOB (its
routing id, then its frames), append a ticket to its header, send it to a worker, receive the
RESULT, read its ticket, and send it to the client. It keeps one dict (ticket -> client) and a
round-robin list of workers. It leaves out everything that makes the broker a broker: it checks
nothing a peer sends (no decoding, no limits), gives workers no credit, keeps no deadlines, no
redelivery, no counters, no liveness. So it is a floor, not a rival: a Python broker that makes
these socket calls through pyzmq spends at least this per job, and the broker's CPU per job above
it is its bookkeeping.

A bench tool only, for trusted peers on one machine: ``python -m zimg.bench.floor_broker --bind
URL`` serves until killed. It answers HELLO with a WELCOME and sends HEARTBEATs, enough for the
light client and the simulated workers of :mod:`zimg.bench.simnodes`.
"""

from __future__ import annotations

import argparse
import itertools
import secrets
import time
from collections.abc import Sequence
from typing import Any

import msgpack
import zmq

from zimg import protocol, wire
from zimg._broker_job_flow import _quick_head
from zimg._broker_jobs import _append_entries
from zimg._wire_decode import _map_size
from zimg._wire_terms import _PREFIX
from zimg._zsock import NOBLOCK, recv_frames, send_frames
from zimg.wire import Command

_COMMAND_AT = _PREFIX - 1
_JOB, _RESULT, _HELLO, _DISCONNECT = (
    int(Command.JOB),
    int(Command.RESULT),
    int(Command.HELLO),
    int(Command.DISCONNECT),
)
_BEAT = wire.lead_frame(Command.HEARTBEAT, b"\x80")
_LIMITS = wire.Limits()


def serve(url: str, *, deadline_s: float = 60.0) -> None:
    """Bind a ROUTER to ``url`` and forward jobs until the process is killed."""
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.bind(url)
    interval = protocol.DEFAULT_HEARTBEAT_INTERVAL_S
    epoch = secrets.randbits(63)
    nodes: set[bytes] = set()
    workers: list[bytes] = []
    waiting: dict[int, bytes] = {}  # ticket -> the client's routing id
    tickets = itertools.count(1)
    poller = zmq.Poller()  # as the broker's loop polls
    poller.register(sock, zmq.POLLIN)
    poll, recv, monotonic = poller.poll, sock.recv, time.monotonic
    beat_at = monotonic() + interval
    while True:
        if poll(int(interval * 1000)):
            while True:
                try:
                    identity = recv(NOBLOCK)
                except zmq.Again:
                    break
                frames = recv_frames(sock)
                lead = frames[0]
                command = lead.buffer[_COMMAND_AT] if len(lead) > _COMMAND_AT else -1
                if command == _JOB and workers:
                    ticket = next(tickets)
                    waiting[ticket] = identity
                    extra = {"ticket": ticket, "attempt": 1, "deadline_s": deadline_s}
                    entries = _map_size(lead.buffer[_PREFIX:])
                    jobs = _append_entries(lead.buffer, entries, extra)
                    worker = workers[ticket % len(workers)]
                    send_frames(sock, [worker, jobs, *frames[1:]], NOBLOCK)
                elif command == _RESULT:
                    head = _quick_head(frames, _LIMITS)
                    ticket = -1 if head is None else head.get("ticket", -1)
                    client = waiting.pop(ticket, None)
                    if client is not None:
                        send_frames(sock, [client, *frames], NOBLOCK)
                elif command == _HELLO:
                    _welcome(sock, identity, frames, epoch, interval, nodes, workers)
                elif command == _DISCONNECT:
                    nodes.discard(identity)
                    if identity in workers:
                        workers.remove(identity)
        now = monotonic()
        if now >= beat_at:
            beat_at = now + interval
            for identity in nodes:
                send_frames(sock, [identity, _BEAT], NOBLOCK)


def _welcome(
    sock: zmq.Socket[bytes],
    identity: bytes,
    frames: Sequence[Any],
    epoch: int,
    interval: float,
    nodes: set[bytes],
    workers: list[bytes],
) -> None:
    hello = msgpack.unpackb(frames[0].bytes[_PREFIX:], raw=False)
    nodes.add(identity)
    if hello.get("role") == protocol.ROLE_WORKER and identity not in workers:
        workers.append(identity)
    welcome = {
        "name": hello.get("name"),
        "epoch": epoch,
        "heartbeat_interval_s": interval,
        "liveness": protocol.DEFAULT_LIVENESS,
        "version": protocol.PROTOCOL_VERSION,
    }
    send_frames(sock, [identity, *wire.encode(Command.WELCOME, welcome)], NOBLOCK)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zimg.bench.floor_broker", description=__doc__)
    parser.add_argument("--bind", required=True, help="the ROUTER's endpoint")
    args = parser.parse_args(argv)
    serve(args.bind)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
