"""Scale harness (issue 13): one real broker process, up to 10,000 simulated nodes.

``python -m zimg.bench.scale`` (``just scale``) starts a fresh ``python -m zimg broker`` process
for each number of workers N and each placement, then:

1. starts N simulated workers (:mod:`zimg.bench.simnodes`, at most 5,000 to a process) and waits
   until the broker's NODES ``count`` is N;
2. **idle**: the broker's CPU time over a few seconds with every worker connected and beating
   (-> % of one core, and microseconds per node per second), and its resident memory with N
   nodes minus before they joined (-> KiB per node);
3. **jobs**: a light client on a raw DEALER keeps a window of small JOBs in flight (one 100-byte
   ``|u1`` item each; the simulated workers echo it back at once): the broker's CPU time per
   job, less its idle CPU for the same wall time, and jobs per second;
4. **mass kill**: SIGKILL of every simulated-node process at once; whether the broker lives,
   how long NODES takes to answer right after (the first answer, and the worst while the broker
   drops the dead), and when its node count reaches 0.

Then the **frozen check**: 3,000 simulated workers in one process SIGSTOPped past the liveness
bound while 3 healthy ones in another process keep beating; a healthy node declared dead
(DISCONNECT received, a new ``uptime_s`` in NODES, or ``nodes_down`` grown by more than the
frozen count) fails it.

CPU time is read from ``/proc/PID/task/*/schedstat`` (nanoseconds, every thread of the broker:
its Python loop and libzmq's I/O thread), falling back to ``/proc/PID/stat`` (utime + stime,
clock ticks); memory from ``VmRSS`` in ``/proc/PID/status``. Ratios compare figures of the same
run. Progress goes to stderr, the Markdown table to stdout.

The parts: :mod:`zimg.bench.broker_process` (the broker process, its ``/proc`` figures and the
NODES probe), :mod:`zimg.bench.light_client` (the JOB load), :mod:`zimg.bench.scale_runs` (one
row), :mod:`zimg.bench.scale_frozen` (the frozen check) and :mod:`zimg.bench.scale_report` (the
table and the targets); this module is the command line.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from pathlib import Path

import zmq

from zimg import protocol
from zimg.bench.broker_process import BrokerProcess, NodesProbe
from zimg.bench.light_client import LightClient
from zimg.bench.scale_frozen import Frozen, frozen_check
from zimg.bench.scale_report import frozen_line, table, targets
from zimg.bench.scale_runs import Options, Row, measure
from zimg.bench.simnodes import MAX_PER_PROCESS

__all__ = ["BrokerProcess", "LightClient", "NodesProbe", "main"]

FULL_SIZES = (10, 100, 1000, 10_000)
QUICK_SIZES = (10, 100, 1000)


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m zimg.bench.scale", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--quick", action="store_true", help="N = 10, 100, 1,000; shorter phases")
    p.add_argument("--sizes", help="comma-separated N, e.g. 10,100,1000,10000")
    p.add_argument(
        "--placements", default="unplaced,placed", help="unplaced, placed, or both (the default)"
    )
    p.add_argument("--per-host", type=int, default=1, help="placed workers per simulated host")
    p.add_argument("--cpus", type=int, default=2, help="CPUs per simulated host")
    p.add_argument("--jobs", type=int, help="measured jobs per row (default 10,000; --quick 3,000)")
    p.add_argument(
        "--heartbeat",
        type=float,
        default=protocol.DEFAULT_HEARTBEAT_INTERVAL_S,
        help="the brokers' heartbeat interval in seconds (zimg broker --heartbeat)",
    )
    p.add_argument("--idle", type=float, help="seconds of idle measurement (default 5; --quick 2)")
    p.add_argument(
        "--frozen",
        type=int,
        help="nodes in the frozen check (default 3,000; --quick 1,000; 0: skip)",
    )
    p.add_argument(
        "--per-process", type=int, default=MAX_PER_PROCESS, help="simulated nodes per process"
    )
    p.add_argument("--json", type=Path, metavar="PATH", help="also write the figures as JSON")
    p.add_argument("--workdir", type=Path, help="where the logs go (default: a temporary folder)")
    return p.parse_args(argv)


@contextlib.contextmanager
def _workdir(path: Path | None) -> Iterator[Path]:
    if path is not None:
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    import tempfile

    with tempfile.TemporaryDirectory(prefix="zimg-scale-") as tmp:
        yield Path(tmp)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    sizes = (
        tuple(int(s) for s in args.sizes.split(","))
        if args.sizes
        else (QUICK_SIZES if args.quick else FULL_SIZES)
    )
    placements = tuple(p.strip() for p in args.placements.split(",") if p.strip())
    for p in placements:
        if p not in ("unplaced", "placed"):
            raise SystemExit(f"unknown placement {p!r}: use unplaced, placed or both")
    frozen_n = args.frozen if args.frozen is not None else (1000 if args.quick else 3000)
    given = list(sys.argv[1:] if argv is None else argv)
    command = " ".join(["python -m zimg.bench.scale", *given])
    started = time.monotonic()
    with _workdir(args.workdir) as workdir:
        opts = Options(
            sizes=sizes,
            placements=placements,
            per_host=args.per_host,
            cpus=args.cpus,
            jobs=args.jobs or (3000 if args.quick else 10_000),
            heartbeat_s=args.heartbeat,
            idle_s=args.idle or (2.0 if args.quick else 5.0),
            settle_s=0.5 if args.quick else 1.0,
            per_process=args.per_process,
            frozen=frozen_n,
            workdir=workdir,
        )
        context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        rows: list[Row] = []
        frozen: Frozen | None = None
        try:
            for n in sizes:
                for placement in placements:
                    rows.append(measure(n, placement, opts, context))
            for r in rows:
                base = next(
                    (b for b in rows if b.n == min(sizes) and b.placement == r.placement), None
                )
                if base is not None and base.us_per_job and r.us_per_job is not None:
                    r.ratio = round(r.us_per_job / base.us_per_job, 2)
            if frozen_n > 0:
                frozen = frozen_check(opts, context)
        finally:
            context.destroy(linger=0)
        wall = time.monotonic() - started
        load = os.getloadavg()
        out = [
            f"Scale: {command} ({wall:.0f} s wall, {os.cpu_count()} CPUs, load average "
            f"{load[0]:.2f} at the end)",
            "",
            table(rows),
            "",
        ]
        if frozen is not None:
            out += [frozen_line(frozen), ""]
        out += ["Targets:", *[f"- {t}" for t in targets(rows, frozen)]]
        notes = [f"N={r.n:,} {r.placement}: {note}" for r in rows for note in r.notes]
        notes += [
            f"N={r.n:,} {r.placement}: {r.sim_lost} simulated nodes lost the broker for a "
            f"liveness bound, {r.sim_rejoins} re-joined"
            for r in rows
            if r.sim_lost or r.sim_rejoins
        ]
        notes += [
            f"N={r.n:,} {r.placement}: {r.jobs_failed} jobs failed" for r in rows if r.jobs_failed
        ]
        if notes:
            out += ["", "Notes:", *[f"- {n}" for n in notes]]
        print("\n".join(out), flush=True)
        if args.json is not None:
            report = {
                "command": command,
                "wall_s": round(wall, 1),
                "cpus": os.cpu_count(),
                "load_end": load,
                "rows": [asdict(r) for r in rows],
                "frozen": asdict(frozen) if frozen is not None else None,
                "targets": targets(rows, frozen),
            }
            args.json.write_text(json.dumps(report, indent=2) + "\n")
    failed = any(r.survived is False for r in rows) or (
        frozen is not None and frozen.survived is False
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
