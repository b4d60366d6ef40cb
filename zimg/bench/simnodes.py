"""Simulated zimg nodes: many DEALERs in one process, each a node of its own on the wire.

Each simulated node is one pyzmq ``DEALER`` with its own routing id
(``protocol.node_identity(name, incarnation, secret)``) that speaks the wire protocol (version 3)
the way a third-party implementation written from ``docs/protocol.md`` would: it builds its
headers with msgpack itself and only borrows the command bytes from :mod:`zimg.wire`.

- **Join**: HELLO (role, capacity, and for a placed worker ``host``/``cpus``/``threads``), again
  every interval (1 s before any WELCOME) until WELCOME or REJECT. A REJECT on the first join is
  final: the node closes its socket, as a real node ends. A node that was welcomed before keeps
  asking after the retryable codes (``name_taken``, ``limit``).
- **Heartbeats**: ``HEARTBEAT {}`` every adopted interval, staggered at random over the interval
  so that thousands of nodes do not all beat at once. A node that hears nothing from the broker
  for ``liveness x interval`` sends HELLO again with its session incremented (it keeps its
  DEALER: reopening it is what a real node does, and changes nothing the broker can see here).
- **DISCONNECT** from the broker while ready: HELLO with the session incremented.
- **Jobs** (workers): each JOB is answered at once with a RESULT whose first entries are ``id``,
  ``ticket``, ``attempt`` (copied), then ``node``, ``ok: true``, ``error: nil``, and one item
  ``{ok: true, ms: 0.0, error: nil, payload}`` per JOB item, the payload echoed back by re-sending
  the received frames (zero-copy). With ``answer=False`` jobs are kept and never answered.
- **Leaving**: :meth:`SimNodes.disconnect_all` (SIGUSR1 for the subprocess) sends
  ``DISCONNECT {"reason": "normal"}`` from every ready node at once and closes them.

Scaling to thousands of sockets in one process: the context's ``MAX_SOCKETS`` is raised, the
open-file limit is raised to its hard limit (each DEALER costs two descriptors: its mailbox and
its TCP connection, so 20,000 allows about 9,900 nodes; use several processes beyond a few
thousand), and the loop never polls every socket: each socket's ``ZMQ_FD`` is registered in one
``epoll``, and only sockets whose descriptor fires are read, until ``ZMQ_EVENTS`` says nothing is
left (the descriptor is edge-triggered, so the loop also looks at ``ZMQ_EVENTS`` after every send).
Timers (heartbeats, HELLO retries) sit in one heap: the work per wake-up is O(ready sockets + due
timers), whatever the number of nodes.

As a subprocess (``python -m zimg.bench.simnodes --url URL --count N ...``), it prints
``ready N`` once all N nodes are welcomed (``settled W R`` once every node is welcomed or
refused, when some were refused), then runs until SIGTERM (exit 0) or SIGKILL; SIGUSR1 makes
every node leave gracefully (``left N``), SIGUSR2 prints ``status {json}``. :class:`SimProcess`
starts one and reads its lines; :class:`SimNodes` is the same thing on a thread.

The parts: :mod:`zimg.bench.simnodes_loop` (:class:`SimNodes`, the engine) and
:mod:`zimg.bench.simnodes_process` (:class:`SimProcess`); this module is the command line, and
re-exports their names.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import signal
import sys
import threading
from collections.abc import Sequence

from zimg import protocol
from zimg.bench.simnodes_loop import (
    DEFAULT_JOIN_WINDOW,
    FDS_PER_NODE,
    MAX_PER_PROCESS,
    RESERVED_FDS,
    SimNodes,
    placement_of,
)
from zimg.bench.simnodes_process import SimProcess

__all__ = [
    "DEFAULT_JOIN_WINDOW",
    "FDS_PER_NODE",
    "MAX_PER_PROCESS",
    "RESERVED_FDS",
    "SimNodes",
    "SimProcess",
    "main",
    "placement_of",
]

_PR_SET_PDEATHSIG = 1  # prctl(2)


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m zimg.bench.simnodes",
        description="Simulated zimg nodes in one process: prints 'ready N' once all are welcomed, "
        "then runs until SIGTERM. SIGUSR1: every node leaves (DISCONNECT); SIGUSR2: print status.",
    )
    p.add_argument("--url", required=True, help="the broker's endpoint")
    p.add_argument("--count", type=int, required=True, help="how many nodes")
    p.add_argument("--prefix", default="w", help="node names are PREFIX + number")
    p.add_argument("--first", type=int, default=0, help="the number of the first node")
    p.add_argument("--role", choices=protocol.ROLES, default=protocol.ROLE_WORKER)
    p.add_argument("--capacity", type=int, default=2, help="each node's job credit")
    p.add_argument(
        "--per-host", type=int, default=None, help="placed workers: this many to a simulated host"
    )
    p.add_argument("--cpus", type=int, default=2, help="CPUs per simulated host")
    p.add_argument("--threads", type=int, default=None, help="threads per placed worker")
    p.add_argument("--no-answer", action="store_true", help="never answer a JOB")
    p.add_argument(
        "--version", type=int, default=protocol.PROTOCOL_VERSION, help="protocol version in HELLO"
    )
    p.add_argument(
        "--die-with-parent",
        action="store_true",
        help="exit (SIGTERM) when the process that started this one ends (Linux)",
    )
    p.add_argument(
        "--join-window",
        type=int,
        default=DEFAULT_JOIN_WINDOW,
        help="nodes waiting for their first WELCOME at once (0: all)",
    )
    return p.parse_args(argv)


def _die_with_parent() -> None:
    """Ask Linux for SIGTERM when our parent ends, so that a harness that crashes leaves no
    thousands of simulated nodes behind."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    if args.die_with_parent:
        _die_with_parent()
    nodes = SimNodes(
        args.url,
        args.count,
        prefix=args.prefix,
        first=args.first,
        role=args.role,
        capacity=args.capacity,
        per_host=args.per_host,
        cpus=args.cpus,
        threads=args.threads,
        answer=not args.no_answer,
        version=args.version,
        join_window=args.join_window,
    )

    def say(line: str) -> None:
        print(line, flush=True)

    nodes.on_ready = lambda n: say(f"ready {n.ready}")
    nodes.on_settled = lambda n: say(f"settled {n.ready} {n.refused}")
    status_asked = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: nodes.stop_soon())
    signal.signal(signal.SIGINT, lambda *_: nodes.stop_soon())
    signal.signal(signal.SIGUSR1, lambda *_: nodes.disconnect_all())
    signal.signal(signal.SIGUSR2, lambda *_: status_asked.set())
    reporter_stop = threading.Event()

    def report() -> None:  # status lines come from here, not from a signal handler
        while not reporter_stop.wait(0.05):
            if status_asked.is_set():
                status_asked.clear()
                say(f"status {json.dumps(nodes.status())}")
            if nodes.gone.is_set():
                nodes.gone.clear()
                say(f"left {nodes.left}")

    reporter = threading.Thread(target=report, name="simnodes-report", daemon=True)
    reporter.start()
    try:
        nodes.run()
    except OSError as exc:
        print(f"simnodes: {exc}", file=sys.stderr)
        return 1
    finally:
        reporter_stop.set()
        reporter.join(1.0)
    say(f"status {json.dumps(nodes.status())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
