"""Peak memory of the sender and of the broker over a short and a long stream of tiny images.

A ``python -m zimg broker`` process, two ``python -m zimg worker`` processes and a sender process
(this module's ``main``: :func:`zimg.run_batch` through a :class:`zimg.Connection`, as
``zimg send`` does) are started fresh for each stream length; the sender reports its own peak
resident set (``VmHWM``) and the broker's is read from ``/proc`` before it is stopped. If memory
is flat in the stream's length, the long stream's peak is close to the short one's: the figure
is the ratio long / short for each process. The sender also reports its resident set after
listing the files and before the batch, so the list of paths (which grows with the stream, as
any caller's would) can be told apart from the batch itself.

Run by the harness; ``python -m zimg.bench.rss --broker URL --inputs DIR --count N --out DIR``
is the sender alone, printing one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import zimg
from zimg.bench._common import BenchError, Timings, peak_rss_kib
from zimg.bench.workload import make_tiny_stream
from zimg.testing import Processes


@dataclass(frozen=True)
class StreamMemory:
    """One stream: its length, both peaks (KiB), and how long the batch took."""

    images: int
    sender_peak_kib: int | None
    sender_before_batch_kib: int | None
    broker_peak_kib: int | None
    batch_s: float


def _rss_kib() -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def run_stream(inputs: Path, count: int, tmp: Path) -> StreamMemory:
    """One stream of ``count`` images from ``inputs`` through fresh processes."""
    url = f"ipc://{tmp}/rss-{count}"
    outdir = tmp / f"out-{count}"
    procs = Processes(tmp / f"logs-{count}")
    try:
        broker = procs.broker(url, "--log-level", "warning")
        for name in ("r1", "r2"):
            procs.worker(url, name, "--log-level", "warning")
        cmd = [sys.executable, "-m", "zimg.bench.rss", "--broker", url, "--inputs", str(inputs)]
        cmd += ["--count", str(count), "--out", str(outdir)]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
        if done.returncode != 0:
            raise BenchError(f"the sender failed ({done.returncode}):\n{done.stderr[-2000:]}")
        report = json.loads(done.stdout.strip().splitlines()[-1])
        broker_peak = peak_rss_kib(broker.pid)
    except zimg.ZimgError as exc:
        raise BenchError(f"memory stream of {count}: {exc}\n{procs.output()}") from exc
    finally:
        procs.stop_all()
        shutil.rmtree(outdir, ignore_errors=True)
    if report["count"] != count or report["failed"]:
        raise BenchError(f"memory stream of {count}: {report}")
    return StreamMemory(
        images=count,
        sender_peak_kib=report["peak_kib"],
        sender_before_batch_kib=report["before_batch_kib"],
        broker_peak_kib=broker_peak,
        batch_s=round(report["batch_s"], 3),
    )


def run_memory(counts: tuple[int, int], tmp: Path, timings: Timings) -> dict[str, Any]:
    """Both streams, and the ratios long / short."""
    long = max(counts)
    inputs = tmp / "tiny"
    with timings.phase(f"memory: {long} tiny images"):
        make_tiny_stream(inputs, long)
    results = []
    for count in counts:
        with timings.phase(f"memory stream of {count}"):
            results.append(run_stream(inputs, count, tmp))
    shutil.rmtree(inputs, ignore_errors=True)
    a, b = results

    def ratio(x: int | None, y: int | None) -> float | None:
        return round(y / x, 4) if x and y else None

    def growth(m: StreamMemory) -> int | None:
        if m.sender_peak_kib is None or m.sender_before_batch_kib is None:
            return None
        return m.sender_peak_kib - m.sender_before_batch_kib

    return {
        "image_size": "64x48 JPEG",
        "workers": 2,
        "short": asdict(a),
        "long": asdict(b),
        "ratio_sender": ratio(a.sender_peak_kib, b.sender_peak_kib),
        "ratio_broker": ratio(a.broker_peak_kib, b.broker_peak_kib),
        "sender_batch_growth_kib": {"short": growth(a), "long": growth(b)},
    }


def main(argv: list[str] | None = None) -> int:
    """The sender: a batch through the broker, then one JSON line with its memory figures."""
    parser = argparse.ArgumentParser(prog="python -m zimg.bench.rss")
    parser.add_argument("--broker", required=True)
    parser.add_argument("--inputs", type=Path, required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    files = sorted(args.inputs.glob("t_*.jpg"))[: args.count]
    before = _rss_kib()
    options = zimg.BatchOptions(outdir=args.out, idle_timeout_s=60.0)
    with zimg.Connection(args.broker, f"rss-send-{os.getpid()}").start() as conn:
        started = time.perf_counter()
        report = zimg.run_batch(conn, files, options)
        batch_s = time.perf_counter() - started
    line = {
        "count": report.count,
        "failed": report.failed,
        "batch_s": batch_s,
        "before_batch_kib": before,
        "peak_kib": peak_rss_kib(),
    }
    print(json.dumps(line))
    return 0


if __name__ == "__main__":
    sys.exit(main())
