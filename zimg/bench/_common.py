"""Helpers shared by the benchmarks: progress lines, phase timings, machine facts, child processes.

Used by :mod:`zimg.bench.actors` and by the ``python -m zimg.bench`` harness. Nothing here
measures anything by itself.
"""

from __future__ import annotations

import contextlib
import datetime
import importlib.metadata
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

import numpy as np
import zmq


class BenchError(RuntimeError):
    """A measurement failed (an actor died, a reply was wrong or never came)."""


def progress(text: str) -> None:
    """One progress line on stderr (the tables go to stdout)."""
    print(f"[bench] {text}", file=sys.stderr, flush=True)


@dataclass
class Timings:
    """Wall time of each phase, in seconds."""

    phases: dict[str, float] = field(default_factory=dict)

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        progress(f"{name} ...")
        started = time.perf_counter()
        try:
            yield
        finally:
            self.phases[name] = round(time.perf_counter() - started, 3)


@dataclass(frozen=True)
class Spread:
    """Median, minimum and maximum of repeated measurements (and how many there were)."""

    median: float
    min: float
    max: float
    n: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        if not values:
            raise ValueError("no values")
        return cls(float(statistics.median(values)), min(values), max(values), len(values))


def version(dist: str) -> str:
    """The installed version of a distribution, or ``"?"``."""
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def cpu_model() -> str:
    """The CPU's model name, from /proc/cpuinfo where there is one."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "?"


def machine_info(extra: Sequence[str] = ()) -> dict[str, Any]:
    """CPU, OS, interpreter and library versions, load and date; ``extra``: more distributions."""
    affinity = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    info: dict[str, Any] = {
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(affinity) if affinity is not None else None,
        "cpu_model": cpu_model(),
        "load_avg_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "platform": platform.platform(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "pyzmq": zmq.pyzmq_version(),
        "libzmq": zmq.zmq_version(),
        "msgpack": version("msgpack"),
        "numpy": np.__version__,
        "zimg": version("zimg"),
        "source": source_revision(),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    for dist in extra:
        info[dist] = version(dist)
    return info


def source_revision() -> str | None:
    """The git commit zimg runs from (``abc1234``, ``+changes`` if its tree differs from it),
    or None outside a git checkout."""
    root = Path(__file__).resolve().parents[2]
    if not (root / ".git").exists():
        return None

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10, check=True
        )
        return done.stdout.strip()

    try:
        head = git("rev-parse", "--short", "HEAD")
        changed = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{head}+changes" if changed else head


@contextlib.contextmanager
def children() -> Iterator[list[BaseProcess]]:
    """A list to put started child processes in; all are terminated and reaped on exit."""
    procs: list[BaseProcess] = []
    try:
        yield procs
    finally:
        for proc in procs:
            if proc.pid is not None and proc.is_alive():
                proc.terminate()
        for proc in procs:
            if proc.pid is None:
                continue
            proc.join(3.0)
            if proc.is_alive():
                proc.kill()
                proc.join()


def interrupt(signum: int, frame: object) -> None:
    """A SIGTERM handler that unwinds like Ctrl-C, so every ``finally`` runs."""
    raise KeyboardInterrupt(f"signal {signum}")


def peak_rss_kib(pid: int | None = None) -> int | None:
    """A process's peak resident set (``VmHWM``) in KiB, or None where /proc cannot tell."""
    where = f"/proc/{pid if pid is not None else 'self'}/status"
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path(where).read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return None
