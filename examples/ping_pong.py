"""Ping-pong: two actors on two worker nodes pass a ball back and forth.

What it shows:

- behaviours defined in your own script. The workers import this file (``imports=[__file__]``)
  as a module named ``ping_pong``, while here it is ``__main__``, so each behaviour is
  registered under an explicit name that is the same on both sides;
- a registered name as an address: ``pong`` registers itself, and ``ping`` sends to
  ``("pong", "n2")``; ``pong`` answers to the pid that came with the ball;
- ``spawn_monitor`` and selective receive: the main node waits for ``("done", count, ...)`` or for
  a ``DOWN``, whichever comes first, so a crashed player cannot make it hang.

Run it from the repository root::

    python examples/ping_pong.py              # 10 rounds
    python examples/ping_pong.py --rounds 1000

It exits 0 when the ball came back every time and both players ended normally, 1 otherwise.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

import zimg

TIMEOUT_S = 10.0


def tagged(*tags: str) -> Any:
    """A receive pattern: tuples whose first element is one of ``tags``."""
    return lambda m: isinstance(m, tuple) and m[0] in tags


# ---- the two players: these run on the workers ------------------------------------------------


@zimg.behaviour("ping_pong.pong")
def pong(ctx: zimg.Process, parent: zimg.Pid) -> None:
    """Register as ``pong``, then return every ball to whoever sent it, until ``finished``."""
    ctx.register("pong")  # from now on, ("pong", <this node>) reaches us
    ctx.send(parent, ("ready", ctx.node_name))
    while True:
        message = ctx.receive(timeout=TIMEOUT_S)
        if message == "finished":
            return  # returning is a "normal" exit
        _, ball, sender = message  # ("ping", ball, sender's pid)
        ctx.send(sender, ("pong", ball))


@zimg.behaviour("ping_pong.ping")
def ping(ctx: zimg.Process, partner: tuple[str, str], rounds: int, parent: zimg.Pid) -> None:
    """Serve ``rounds`` balls to ``partner``, timing each round trip; report to ``parent``."""
    round_trips = []
    for ball in range(rounds):
        started = time.perf_counter()
        ctx.send(partner, ("ping", ball, ctx.self()))
        ctx.receive(lambda m, ball=ball: m == ("pong", ball), timeout=TIMEOUT_S)
        round_trips.append(time.perf_counter() - started)
    ctx.send(partner, "finished")
    ctx.send(parent, ("done", len(round_trips), round_trips))


# ---- the main node: this runs here ------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10, help="balls to play (default 10)")
    args = parser.parse_args()
    problems: list[str] = []

    # The workers import this very file, so they know "ping_pong.ping" and "ping_pong.pong".
    this_file = str(Path(__file__).resolve())
    print("starting a local cluster of 2 workers that import this file")
    with zimg.local_cluster(workers=2, imports=[this_file]) as node:
        print(f"node.nodes() = {node.nodes()}")

        # Pong first, and wait until it has registered its name: a message sent to a name
        # nobody holds yet is dropped (as in Erlang), and spawn returns before the actor runs.
        pong_pid, pong_ref = node.spawn_monitor("n2", "ping_pong.pong", node.self())
        node.receive(tagged("ready"), timeout=TIMEOUT_S)
        print(f"pong {pong_pid} is registered as ('pong', 'n2')")

        ping_pid, ping_ref = node.spawn_monitor(
            "n1", "ping_pong.ping", ("pong", "n2"), args.rounds, node.self()
        )
        print(f"ping {ping_pid} serves {args.rounds} balls to ('pong', 'n2')")

        # "done" if all went well; a DOWN first means a player died before finishing.
        message = node.receive(tagged("done", "DOWN"), timeout=TIMEOUT_S + args.rounds)
        if message[0] == "DOWN":
            _, _, pid, reason = message
            print(f"{pid} died early: {reason}")
            return 1
        _, count, round_trips = message
        print(f"ping reports ('done', {count})")
        if count != args.rounds:
            problems.append(f"{count} balls came back, expected {args.rounds}")
        if round_trips:
            ms = sorted(1000 * s for s in round_trips)
            print(
                f"round trip n1 -> n2 -> n1: min {ms[0]:.2f} ms, "
                f"median {statistics.median(ms):.2f} ms, max {ms[-1]:.2f} ms"
            )

        # Both players end by returning, so both monitors report the reason "normal".
        for ref, pid in ((ping_ref, ping_pid), (pong_ref, pong_pid)):
            _, _, _, reason = node.receive(lambda m, ref=ref: m[:2] == ("DOWN", ref), TIMEOUT_S)
            print(f"{pid} exited: {reason}")
            if reason != "normal":
                problems.append(f"{pid} exited with {reason!r}, expected 'normal'")

    for problem in problems:
        print(f"FAILED: {problem}")
    if not problems:
        print("OK")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
