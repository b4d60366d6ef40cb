"""A supervisor restarts a crashing child, until it crashes too often and the supervisor gives up.

What it shows:

- the shipped ``zimg.behaviours:supervisor`` (Erlang's one_for_one) running on node ``n1``, with
  one child on node ``n2``: a behaviour defined in this file, which crashes when told ``"crash"``;
- the supervisor's ``("started", index, pid)`` notes: a restarted child has a new pid;
- a crash as a monitor sees it: ``("DOWN", ref, pid, ("error", type, message, traceback))``;
- restart intensity: more than ``--max-restarts`` restarts within ``--period`` seconds and the
  supervisor exits with ``("shutdown", "too many restarts")``, which our monitor reports.

The workers import this file as a module named ``supervisor``, while here it is ``__main__``, so
the child behaviour is registered under an explicit name, ``supervisor_example.crasher``.

Run it from the repository root::

    python examples/supervisor.py
    python examples/supervisor.py --max-restarts 5

It exits 0 when every restart and the final give-up happened as expected, 1 otherwise.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import zimg

TIMEOUT_S = 10.0
SUPERVISOR = "zimg.behaviours:supervisor"


def started(message: Any) -> bool:
    """The pattern of the supervisor's notes, ``("started", index, pid)``."""
    return isinstance(message, tuple) and message[0] == "started"


@zimg.behaviour("supervisor_example.crasher")
def crasher(ctx: zimg.Process) -> None:
    """The child: idles until told ``"crash"`` (an abnormal exit) or ``"stop"`` (a normal one)."""
    while True:
        message = ctx.receive()
        if message == "crash":
            raise RuntimeError("told to crash")
        if message == "stop":
            return


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-restarts", type=int, default=3, help="restarts allowed (default 3)")
    parser.add_argument("--period", type=float, default=10.0, help="...within seconds (default 10)")
    args = parser.parse_args()
    if args.max_restarts < 1:
        parser.error("--max-restarts must be at least 1 to show a restart")
    problems: list[str] = []

    def expect(ok: bool, what: str) -> None:
        print(f"   {'ok' if ok else 'FAILED'}: {what}")
        if not ok:
            problems.append(what)

    print("starting a local cluster of 2 workers that import this file")
    with zimg.local_cluster(workers=2, imports=[str(Path(__file__).resolve())]) as node:
        print(f"node.nodes() = {node.nodes()}")

        # The supervisor's arguments: its children as [node, behaviour, args], then at most
        # max_restarts restarts in period_s seconds, then who gets the ("started", ...) notes.
        # spawn_monitor: we get ("DOWN", sup_ref, sup, reason) when the supervisor ends.
        children = [["n2", "supervisor_example.crasher", []]]
        sup, sup_ref = node.spawn_monitor(
            "n1", SUPERVISOR, children, args.max_restarts, args.period, node.self()
        )
        _, index, child = node.receive(started, timeout=TIMEOUT_S)
        print(f"\nsupervisor {sup} on n1 started child {index} as {child} on n2")

        def supervisor_down(m: Any) -> bool:
            return m[0] == "DOWN" and m[1] == sup_ref

        # 1. One crash: watch the child die, then come back with a new pid.
        print(f"\n1. telling {child} to crash")
        child_ref = node.monitor(child)
        node.send(child, "crash")
        _, _, _, reason = node.receive(lambda m: m[:2] == ("DOWN", child_ref), timeout=TIMEOUT_S)
        print(f"   {child} went DOWN with {reason[:3]} (and a traceback)")
        expect(reason[:3] == ("error", "RuntimeError", "told to crash"), "the crash reason")
        _, _, new_child = node.receive(started, timeout=TIMEOUT_S)
        print(f"   restarted as {new_child}")
        expect(new_child != child, "the restarted child has a new pid")
        child, restarts = new_child, 1

        # 2. Keep crashing it: the restart that would exceed max_restarts within the period
        #    never happens; the supervisor exits instead, and our monitor tells us why.
        print(
            f"\n2. crashing it again and again ({args.max_restarts} restarts per {args.period} s)"
        )
        gave_up = None  # the supervisor's exit reason, once it has given up
        for _ in range(args.max_restarts + 1):
            node.send(child, "crash")
            message = node.receive(lambda m: started(m) or supervisor_down(m), timeout=TIMEOUT_S)
            if message[0] == "DOWN":
                gave_up = message[3]
                print(f"   supervisor {sup} went DOWN with {gave_up}")
                break
            restarts += 1
            child = message[2]
            print(f"   restarted as {child} (restart {restarts})")
        expect(restarts == args.max_restarts, f"{restarts} restarts, {args.max_restarts} expected")
        expect(gave_up == ("shutdown", "too many restarts"), "the supervisor gave up")

    print()
    for problem in problems:
        print(f"FAILED: {problem}")
    if not problems:
        print(f"OK: restarted {restarts} times, then the supervisor gave up")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
