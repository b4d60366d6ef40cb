"""``python -m zimg.bench`` (``just bench``): zimg against a plain loop, ``multiprocessing.Pool``,
Ray and Dask on the same generated JPEGs, plus micro-figures against raw pyzmq, in one run.

Modes:

- full (default): set A (64 images at 1920x1080) and set B (256 at 640x480), 5 repetitions of
  every contender, the actor, broker-loop and start-up micro-figures, and the memory streams of
  1,000 and 20,000 tiny images. Writes ``bench/results.json``, ``docs/performance.md`` and
  ``bench/throughput.png`` (with matplotlib). About 6 to 10 minutes on two cores.
- ``--quick``: 16 and 64 images, 1 repetition, smaller micro-figures, streams of 500 and 2,000
  images; under 2 minutes. Writes ``bench/results-quick.json`` and ``bench/throughput-quick.png``
  only, so that ``docs/performance.md`` keeps the last full table.
- ``--smoke``: a few images and tiny counts, no Ray or Dask; for the test that keeps the
  harness from rotting. Written like ``--quick``.

Neither mode asserts anything about speed. ``--out DIR`` puts all the outputs in DIR instead;
``--json``, ``--markdown`` and ``--chart`` set each path. Repetitions are interleaved (each
round runs every contender once, starting one further along each round) so that a burst of load
from elsewhere on a shared machine spreads over the contenders instead of landing on one. Progress
goes to stderr, the table to stdout. Every process started is stopped on the way out, on errors
and on Ctrl-C or SIGTERM too.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import cv2
import zmq

import zimg
from zimg.bench import micro, page, report
from zimg.bench._common import BenchError, Spread, Timings, interrupt, machine_info, progress
from zimg.bench.contenders import Contender, RunTiming, core_contenders
from zimg.bench.peers import peer_contenders
from zimg.bench.rss import run_memory
from zimg.bench.workload import SETS, SetSpec, Workload, make_set, process_files

EXTRA_VERSIONS = ("opencv-python-headless", "ray", "dask", "distributed", "matplotlib")


@dataclass(frozen=True)
class Plan:
    """What one run does."""

    mode: str
    sets: tuple[SetSpec, ...]
    reps: int
    peers: bool
    micro: bool
    memory_counts: tuple[int, int]
    cli_reps: int


def make_plan(args: argparse.Namespace) -> Plan:
    """The sizes of a full, ``--quick`` or ``--smoke`` run, with the overrides given."""
    mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    counts = {"full": (64, 256), "quick": (16, 64), "smoke": (2, 6)}[mode]
    sets = tuple(spec.scaled(n) for spec, n in zip(SETS, counts, strict=True))
    if args.sets:
        wanted = {s.strip().upper() for s in args.sets.split(",")}
        sets = tuple(s for s in sets if s.name in wanted)
    return Plan(
        mode=mode,
        sets=sets,
        reps=args.reps or (5 if mode == "full" else 1),
        peers=not args.no_peers and mode != "smoke",
        micro=not args.no_micro,
        memory_counts={"full": (1000, 20_000), "quick": (500, 2000), "smoke": (100, 300)}[mode],
        cli_reps={"full": 5, "quick": 1, "smoke": 1}[mode],
    )


def _load() -> float | None:
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None


def _other_threads() -> list[str]:
    """Threads besides this one (and pyzmq's garbage collector, which zimg's fork allows)."""
    return [
        t.name
        for t in threading.enumerate()
        if t is not threading.current_thread() and type(t).__name__ != "GarbageCollectorThread"
    ]


def run_set(
    workload: Workload, contenders: list[Contender], reps: int, tmp: Path
) -> dict[str, Any]:
    """Every contender ``reps`` times over one set, interleaved; the summary of each."""
    files = workload.files
    name = workload.spec.name
    load_before = _load()
    warm = tmp / f"warm-{name}"
    warm.mkdir()
    process_files([str(f) for f in files[:4]], str(warm))  # page cache, lazy imports
    shutil.rmtree(warm)
    runs: dict[str, list[RunTiming]] = {c.key: [] for c in contenders}
    errors: dict[str, str] = {}
    for rep in range(reps):
        shift = rep % len(contenders)
        for c in contenders[shift:] + contenders[:shift]:
            if c.key in errors:
                continue
            outdir = tmp / f"out-{name}-{c.key}-{rep}"
            outdir.mkdir()
            progress(f"set {name}, round {rep + 1}/{reps}: {c.label}")
            others = _other_threads()
            if others:
                progress(f"  note: other threads in this process: {others}")
            try:
                runs[c.key].append(c.run(files, outdir))
            except (BenchError, zimg.ZimgError) as exc:
                if c.key == report.LOOP:
                    raise  # the reference: nothing can be compared without it
                errors[c.key] = f"{type(exc).__name__}: {exc}"
                progress(f"  {c.label} failed: {exc}")
            finally:
                shutil.rmtree(outdir, ignore_errors=True)
    loop_runs = runs.get(report.LOOP)
    if not loop_runs:
        raise BenchError("the plain loop (the reference) did not run")
    loop_median = Spread.of([r.run_s for r in loop_runs]).median
    summaries = {
        c.key: report.summarise(c, runs[c.key], loop_median, len(files))
        for c in contenders
        if runs[c.key]
    }
    return {
        "spec": asdict(workload.spec),
        "total_bytes": workload.total_bytes,
        "digest": workload.digest,
        "repetitions": reps,
        "load_before": load_before,
        "load_after": _load(),
        "contenders": summaries,
        "errors": errors,
    }


def run_micro(
    plan: Plan, sets: dict[str, Any], workloads: list[Workload], tmp: Path, timings: Timings
) -> dict[str, Any]:
    """The micro-figures: actors, the broker loop, start-up, memory."""
    out: dict[str, Any] = {}
    errors: dict[str, str] = {}
    out["errors"] = errors

    def attempt(key: str, fn: Callable[[Path], Any]) -> None:
        where = tmp / key
        where.mkdir()
        try:
            out[key] = fn(where)
        except (BenchError, zimg.ZimgError, zmq.ZMQError, OSError) as exc:
            errors[key] = f"{type(exc).__name__}: {exc}"
            progress(f"  micro-figure {key} failed: {exc}")

    attempt("actors", lambda where: micro.run_actors(plan.mode, where, timings))
    forward = micro.forward_config(plan.mode)
    attempt("forwarding", lambda where: micro.run_forwarding(forward, where, timings))
    source = "B" if "B" in sets else next(iter(sets), None)
    startup: dict[str, Any] = {"set": source, "workers": 2, "payload": "path"}
    z2 = report.lookup(sets, source, "contenders", "zimg-path-2") if source else None
    startup["first_result_s"] = z2["first_result_s"] if z2 else None
    startup["cluster_ready_s"] = z2["startup_s"] if z2 else None
    if workloads:
        small = min(workloads, key=lambda w: w.spec.width * w.spec.height)
        startup["cli_image"] = f"{small.spec.width}x{small.spec.height}"
        attempt(
            "cli",
            lambda where: report.spread(
                micro.run_cli_startup(small.files[0], plan.cli_reps, where, timings)
            ),
        )
        startup["cli_wall_s"] = out.pop("cli", None)
    out["startup"] = startup
    attempt("memory", lambda where: run_memory(plan.memory_counts, where, timings))
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(
        prog="python -m zimg.bench",
        description="zimg against a plain loop, multiprocessing.Pool, Ray and Dask, and "
        "micro-figures against raw pyzmq; ratios measured in one run.",
    )
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="a reduced run (under 2 minutes)")
    size.add_argument("--smoke", action="store_true", help="the smallest run (for tests)")
    parser.add_argument("--reps", type=int, metavar="N", help="repetitions (5; quick/smoke 1)")
    parser.add_argument("--sets", metavar="A,B", help="only these image sets")
    parser.add_argument("--no-peers", action="store_true", help="skip Ray and Dask")
    parser.add_argument("--no-micro", action="store_true", help="skip the micro-figures")
    parser.add_argument("--out", type=Path, metavar="DIR", help="write every output in DIR")
    parser.add_argument("--json", type=Path, metavar="PATH", help="where results go")
    parser.add_argument("--markdown", type=Path, metavar="PATH", help="where the page goes")
    parser.add_argument("--chart", type=Path, metavar="PATH", help="where the PNG chart goes")
    args = parser.parse_args(argv)
    if args.reps is not None and args.reps < 1:
        parser.error("--reps must be at least 1")
    return args


def _outputs(args: argparse.Namespace, mode: str) -> tuple[Path, Path | None, Path]:
    """Where the JSON, the Markdown page (None: not written) and the chart go."""
    if args.out is not None:
        json_path, md, chart = (
            args.out / "results.json",
            args.out / "performance.md",
            args.out / "throughput.png",
        )
    elif mode == "full":
        json_path, md, chart = (
            Path("bench/results.json"),
            Path("docs/performance.md"),
            Path("bench/throughput.png"),
        )
    else:
        json_path, md, chart = (
            Path("bench/results-quick.json"),
            None,
            Path("bench/throughput-quick.png"),
        )
    return args.json or json_path, args.markdown or md, args.chart or chart


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print the table, write the outputs; returns the exit code."""
    args = parse_args(argv)
    plan = make_plan(args)
    command = shlex.join(["python", "-m", "zimg.bench", *(sys.argv[1:] if argv is None else argv)])
    json_path, md_path, chart_path = _outputs(args, plan.mode)
    previous = signal.signal(signal.SIGTERM, interrupt)
    timings = Timings()
    machine = machine_info(EXTRA_VERSIONS)
    machine["opencv_threads_main"] = cv2.getNumThreads()
    started = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="zb-", dir="/tmp" if Path("/tmp").is_dir() else None))
    skipped: list[str] = []
    try:
        contenders = core_contenders()
        if plan.peers:
            found, missing = peer_contenders()
            contenders += found
            skipped += missing
        else:
            skipped.append("Ray and Dask (--no-peers or --smoke)")
        sets: dict[str, Any] = {}
        workloads: list[Workload] = []
        for spec in plan.sets:
            with timings.phase(f"generate set {spec.name}"):
                workload = make_set(spec, tmp / f"in-{spec.name}")
            workloads.append(workload)
            with timings.phase(f"set {spec.name}"):
                sets[spec.name] = run_set(workload, contenders, plan.reps, tmp)
        micro_results = run_micro(plan, sets, workloads, tmp, timings) if plan.micro else {}
        if not plan.micro:
            skipped.append("micro-figures (--no-micro)")
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
    results: dict[str, Any] = {
        "mode": plan.mode,
        "command": command,
        "machine": machine,
        "load_after": _load(),
        "config": {**asdict(plan), "sets": [asdict(s) for s in plan.sets]},
        "sets": sets,
        "micro": micro_results,
        "skipped": skipped,
        "phases_s": timings.phases,
    }
    results["targets"] = report.targets(results)
    table = report.format_table(results)
    print(table)
    print(
        f"\nwall time: {timings.phases['total']:.1f} s ("
        + ", ".join(f"{k} {v:.1f}" for k, v in timings.phases.items() if k != "total")
        + ")"
    )
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(results, indent=1) + "\n")
    progress(f"wrote {json_path}")
    if md_path is not None:
        md_path.parent.mkdir(parents=True, exist_ok=True)
        before = md_path.read_text() if md_path.exists() else None
        md_path.write_text(page.keep_other_sections(page.to_markdown(results, table), before))
        progress(f"wrote {md_path}")
    if page.write_chart(results, chart_path):
        progress(f"wrote {chart_path}")
    else:
        progress("no chart: matplotlib is not installed (pip install -e '.[bench]')")
    failures = report.failures(results)
    for failure in failures:
        progress(f"FAILED: {failure}")
    return 1 if any(not f.startswith(report.OPTIONAL) for f in failures) else 0


if __name__ == "__main__":
    sys.exit(main())
