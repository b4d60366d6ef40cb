"""The contenders: each one way of running the job over a set of files, timed in three parts.

Every contender turns ``(files, outdir)`` into a :class:`RunTiming`: ``startup_s`` (from nothing to
ready to take work), ``run_s`` (from the first job handed over to the last output written: the
throughput figure) and ``stop_s`` (shutting down), plus when the first output was written where
the contender can tell. The plain single-process loop is the 1.00 reference.

- ``loop``: :func:`zimg.bench.workload.process_files` in this process.
- ``halves``: two processes, each a plain loop over half the files (the ceiling on 2 cores).
- ``pool``: ``multiprocessing.Pool(2).map(job, paths)``, what a user would write.
- ``zimg run``: :func:`zimg.local_cluster` (broker thread, N worker processes, ``ipc://``) and
  :func:`zimg.run_batch`, as ``zimg run FILES --workers N --payload MODE`` does, in the three
  modes (``path``, ``zimg run``'s default, then ``encoded`` and ``raw``).
- ``zimg 3-term``: ``python -m zimg broker`` and ``python -m zimg worker`` started as separate
  processes on ``tcp://127.0.0.1``, then :func:`zimg.run_batch` through a :class:`zimg.Connection`
  (the ``zimg broker`` / ``zimg worker`` / ``zimg send`` flow).

Ray and Dask are in :mod:`zimg.bench.peers`. Pools use the ``forkserver`` start method (Python
3.14's default on Linux) with the job module preloaded: safe in a process that has run threads,
and as cheap per child as ``fork``.
"""

from __future__ import annotations

import functools
import multiprocessing
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zimg
from zimg.bench._common import BenchError
from zimg.bench.workload import process_file, process_files
from zimg.cluster import wait_for_workers
from zimg.jobs import PayloadMode
from zimg.testing import Processes, free_tcp_url, wait_for_broker


@dataclass(frozen=True)
class RunTiming:
    """One timed run of one contender over one set."""

    startup_s: float
    run_s: float
    stop_s: float
    first_result_s: float | None = None  # from the start of start-up to the first output
    import_s: float | None = None  # importing the library in a fresh process (not in total_s)

    @property
    def total_s(self) -> float:
        """Start-up, run and shut-down: what a user waits for."""
        return self.startup_s + self.run_s + self.stop_s


Runner = Callable[[Sequence[Path], Path], RunTiming]


@dataclass(frozen=True)
class Contender:
    """A named way of running the job.

    Attributes:
        key: a short identifier, used in the JSON.
        label: how the table names it.
        family: the chart's line it belongs to.
        workers: worker processes (for the chart's x axis).
        run: does one timed run.
    """

    key: str
    label: str
    family: str
    workers: int
    run: Runner


def check_outputs(outdir: Path, expected: int, who: str) -> None:
    made = sum(1 for p in outdir.iterdir() if p.name.endswith(".jpg"))
    if made != expected:
        raise BenchError(f"{who}: {made} outputs written, expected {expected}")


# ---------------------------------------------------------------------- in-process and pools


def run_loop(files: Sequence[Path], outdir: Path) -> RunTiming:
    """The plain single-process loop."""
    paths = [str(f) for f in files]
    started = time.perf_counter()
    process_file(paths[0], str(outdir))
    first = time.perf_counter() - started
    process_files(paths[1:], str(outdir))
    run_s = time.perf_counter() - started
    check_outputs(outdir, len(files), "loop")
    return RunTiming(0.0, run_s, 0.0, first)


def noop(x: int) -> int:
    return x


def _pool_context() -> Any:
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["zimg.bench.workload"])
    return ctx


def _in_pool(
    processes: int, work: Callable[[Any], object], files: Sequence[Path], outdir: Path, who: str
) -> RunTiming:
    """Time ``work(pool)`` on a fresh pool of ``processes``, once its processes are up."""
    started = time.perf_counter()
    pool = _pool_context().Pool(processes)
    try:
        pool.map(noop, range(processes), chunksize=1)
        ready = time.perf_counter()
        work(pool)
        done = time.perf_counter()
    finally:
        pool.close()
        pool.join()
    stopped = time.perf_counter()
    check_outputs(outdir, len(files), who)
    return RunTiming(ready - started, done - ready, stopped - done)


def run_pool(files: Sequence[Path], outdir: Path, *, processes: int = 2) -> RunTiming:
    """``multiprocessing.Pool(processes).map`` over the paths, default chunk size."""
    paths = [str(f) for f in files]
    job = functools.partial(process_file, outdir=str(outdir))
    return _in_pool(processes, lambda pool: pool.map(job, paths), files, outdir, "pool")


def run_halves(files: Sequence[Path], outdir: Path) -> RunTiming:
    """Two plain loops in two processes, each over half the files."""
    paths = [str(f) for f in files]
    half = (len(paths) + 1) // 2
    halves = [(paths[:half], str(outdir)), (paths[half:], str(outdir))]
    return _in_pool(2, lambda pool: pool.starmap(process_files, halves, 1), files, outdir, "halves")


# ---------------------------------------------------------------------- zimg


def _batch(
    connection: zimg.Connection | zimg.JobRouter,
    files: Sequence[Path],
    outdir: Path,
    mode: PayloadMode,
    t0: float,
    workers: int | None = None,
) -> tuple[float, float | None]:
    """Run the batch; return its wall time and when (after ``t0``) the first entry came."""
    first: list[float] = []

    def on_entry(entry: dict[str, Any]) -> None:
        if not first:
            first.append(time.perf_counter() - t0)

    options = zimg.BatchOptions(outdir=outdir, mode=mode, workers=workers)
    started = time.perf_counter()
    report = zimg.run_batch(connection, files, options, on_entry=on_entry)
    run_s = time.perf_counter() - started
    if report.failed or report.count != len(files):
        detail = report.failures[0]["error"] if report.failures else "missing entries"
        raise BenchError(f"zimg: {report.failed} of {len(files)} failed: {detail}")
    return run_s, first[0] if first else None


def run_zimg_local(
    files: Sequence[Path], outdir: Path, *, workers: int, mode: PayloadMode
) -> RunTiming:
    """``zimg run`` through the library: an embedded cluster, then the batch."""
    t0 = time.perf_counter()
    cluster = zimg.local_cluster(workers)
    node = cluster.__enter__()
    try:
        ready = time.perf_counter()
        run_s, first = _batch(node.jobs, files, outdir, mode, t0, workers)  # as `zimg run`
        done = time.perf_counter()
    finally:
        cluster.__exit__(None, None, None)
    stopped = time.perf_counter()
    return RunTiming(ready - t0, run_s, stopped - done, first)


def run_zimg_three_terminal(
    files: Sequence[Path], outdir: Path, *, workers: int = 2, mode: PayloadMode = "encoded"
) -> RunTiming:
    """A broker process and worker processes started apart, then a sender's batch over TCP."""
    logs = Path(tempfile.mkdtemp(prefix="zimg-bench-logs-"))
    procs = Processes(logs)
    url = free_tcp_url()
    t0 = time.perf_counter()
    try:
        broker = procs.zimg("broker", "broker", "--bind", url, "--log-level", "warning")
        names = [f"w{i}" for i in range(1, workers + 1)]
        started = {
            name: procs.zimg(f"worker-{name}", "worker", "--name", name, "--connect", url)
            for name in names
        }
        wait_for_broker(url, process=broker)
        wait_for_workers(url, names, processes=started)
        conn = zimg.Connection(url, f"send-{os.getpid()}").start()
        ready = time.perf_counter()
        try:
            run_s, first = _batch(conn, files, outdir, mode, t0)
        finally:
            done = time.perf_counter()
            conn.close()
    except zimg.ZimgError as exc:
        raise BenchError(f"zimg 3-term: {exc}\n{procs.output()}") from exc
    finally:
        procs.stop_all()
        shutil.rmtree(logs, ignore_errors=True)
    stopped = time.perf_counter()
    return RunTiming(ready - t0, run_s, stopped - done, first)


def core_contenders(zimg_workers: Sequence[int] = (1, 2, 4)) -> list[Contender]:
    """Every contender that needs nothing beyond zimg's own dependencies."""
    out = [
        Contender("loop", "plain loop (1 process)", "plain loop", 1, run_loop),
        Contender("halves", "2 plain loops, half each", "2 loops (ceiling)", 2, run_halves),
        Contender("pool2", "multiprocessing.Pool(2)", "Pool", 2, run_pool),
    ]
    # path is what `zimg run` does by default (workers read and write the files); encoded and
    # raw are what crosses machines (`zimg send`) and what the notebook did.
    modes: tuple[PayloadMode, ...] = ("path", "encoded", "raw")
    for mode in modes:
        for n in zimg_workers:
            runner = functools.partial(run_zimg_local, workers=n, mode=mode)
            label = f"zimg run, {n} worker{'s' if n > 1 else ''}, {mode}"
            out.append(Contender(f"zimg-{mode}-{n}", label, f"zimg run ({mode})", n, runner))
    out.append(
        Contender(
            "zimg-3term-2",
            "zimg broker+2 workers+send, encoded",
            "zimg 3-terminal",
            2,
            run_zimg_three_terminal,
        )
    )
    return out
