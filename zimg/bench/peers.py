"""Ray and Dask as contenders, when installed (``pip install -e '.[peers]'``); skipped otherwise.

Both run the same job function as the other contenders (:func:`zimg.bench.workload.process_file`)
on two CPUs, one task per file, as their documentation's first example would:

- Ray: ``ray.init(num_cpus=2)``, one ``@ray.remote`` task per path, ``ray.get`` on them all.
- Dask: ``LocalCluster(n_workers=2, threads_per_worker=1)``, ``client.map`` then
  ``client.gather``.

Start-up (until a no-op task has come back from each CPU, so their worker processes exist) is
timed apart from the run, as is shutting down. Each run happens in a fresh interpreter (a
``spawn`` child), so that nothing they leave behind (threads, processes, signal handlers) weighs
on the contenders that follow; the import time of the library is reported too, but is not part
of the start-up. The libraries are imported by name at run time, so this module type-checks and
imports without them.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import logging
import multiprocessing
import time
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from zimg.bench._common import BenchError
from zimg.bench.contenders import Contender, Runner, RunTiming, check_outputs, noop
from zimg.bench.workload import process_file

CPUS = 2
PEER_TIMEOUT_S = 600.0  # one run of one peer over one set


def available(module: str) -> bool:
    """Whether ``module`` can be imported (without importing it)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def run_ray(files: Sequence[Path], outdir: Path) -> RunTiming:
    """One Ray task per file on a fresh local Ray instance of two CPUs."""
    ray: Any = importlib.import_module("ray")
    paths = [str(f) for f in files]
    started = time.perf_counter()
    ray.init(
        num_cpus=CPUS,
        include_dashboard=False,
        log_to_driver=False,
        logging_level=logging.ERROR,
    )
    try:
        job = ray.remote(num_cpus=1)(process_file)
        ready_task = ray.remote(num_cpus=1)(noop)
        ray.get([ready_task.remote(i) for i in range(CPUS)])
        ready = time.perf_counter()
        ray.get([job.remote(p, str(outdir)) for p in paths])
        done = time.perf_counter()
    finally:
        ray.shutdown()
    stopped = time.perf_counter()
    check_outputs(outdir, len(files), "ray")
    return RunTiming(ready - started, done - ready, stopped - done)


def run_dask(files: Sequence[Path], outdir: Path) -> RunTiming:
    """``client.map`` over the files on a fresh Dask LocalCluster of two worker processes."""
    distributed: Any = importlib.import_module("distributed")
    paths = [str(f) for f in files]
    started = time.perf_counter()
    cluster = distributed.LocalCluster(
        n_workers=CPUS,
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        silence_logs=logging.ERROR,
    )
    client = distributed.Client(cluster)
    try:
        client.wait_for_workers(CPUS)
        client.gather(client.map(noop, range(CPUS), pure=False))
        ready = time.perf_counter()
        client.gather(client.map(process_file, paths, outdir=str(outdir), pure=False))
        done = time.perf_counter()
    finally:
        client.close()
        cluster.close()
    stopped = time.perf_counter()
    check_outputs(outdir, len(files), "dask")
    return RunTiming(ready - started, done - ready, stopped - done)


_RUNNERS: dict[str, tuple[str, Callable[[Sequence[Path], Path], RunTiming]]] = {
    "ray": ("ray", run_ray),
    "dask": ("distributed", run_dask),
}


def _child(which: str, files: list[Path], outdir: Path, conn: Connection) -> None:
    """In the fresh interpreter: import the library (timed), run, send the timing back."""
    try:
        module, runner = _RUNNERS[which]
        started = time.perf_counter()
        importlib.import_module(module)
        import_s = time.perf_counter() - started
        timing = runner(files, outdir)
        conn.send(("ok", dataclasses.replace(timing, import_s=import_s)))
    except BaseException as exc:
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        conn.close()


def isolated(which: str) -> Runner:
    """A runner that does ``which`` (``ray`` or ``dask``) in a fresh ``spawn`` child."""

    def run(files: Sequence[Path], outdir: Path) -> RunTiming:
        ctx = multiprocessing.get_context("spawn")
        receiver, sender = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=_child, args=(which, list(files), outdir, sender))
        proc.start()
        sender.close()
        try:
            if not receiver.poll(PEER_TIMEOUT_S):
                raise BenchError(f"{which}: no result within {PEER_TIMEOUT_S} s")
            status, payload = receiver.recv()
        except EOFError:
            raise BenchError(f"{which}: the child process died (code {proc.exitcode})") from None
        finally:
            proc.join(30.0)
            if proc.is_alive():
                proc.kill()
                proc.join()
        if status != "ok":
            raise BenchError(f"{which}: {payload}")
        timing: RunTiming = payload
        return timing

    return run


def peer_contenders() -> tuple[list[Contender], list[str]]:
    """The installed peers as contenders, and a note for each one that is not installed."""
    found: list[Contender] = []
    missing: list[str] = []
    if available("ray"):
        found.append(Contender("ray2", "Ray, 2 CPUs", "Ray", CPUS, isolated("ray")))
    else:
        missing.append("Ray (not installed: pip install -e '.[peers]')")
    if available("distributed"):
        found.append(
            Contender("dask2", "Dask LocalCluster, 2 workers", "Dask", CPUS, isolated("dask"))
        )
    else:
        missing.append("Dask (not installed: pip install -e '.[peers]')")
    return found, missing
