"""What a watching dashboard costs the small-message benchmark (``zimg.bench.actors``).

Runs ``python -m zimg.bench.actors`` (``--quick`` by default) several times, alternately with
the dashboard closed and open. "Open" means a ``zimg dashboard`` process polling the benchmark's
broker (NODES every ``--interval`` seconds, the default 1) and one live view reading its
server-sent events, as a browser tab would. It prints the zimg figures of each run and the ratio
open / closed of their medians::

    python -m zimg.bench.dashboard_cost                   # 3 runs each way, --quick
    python -m zimg.bench.dashboard_cost --runs 5 --interval 0.25

Needs the ``dashboard`` extra. Rates: a ratio below 1 means slower with the dashboard open;
latencies: above 1 means slower.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

FIGURES = (
    ("one_way_n1_n2", "per_s", "one-way msgs/s n1->n2"),
    ("rtt_n1_n2", "per_s", "round trips/s n1<->n2"),
    ("rtt_n1_n2", "p50_us", "RTT p50 us n1<->n2"),
    ("rtt_main_n1", "p50_us", "RTT p50 us main<->n1"),
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.contextmanager
def _watching(url: str, interval_s: float) -> Iterator[None]:
    """A ``zimg dashboard`` process on ``url`` and one live view of it, while the block runs."""
    import requests

    http = f"127.0.0.1:{_free_port()}"
    cmd = [sys.executable, "-m", "zimg", "dashboard", "--broker", url, "--http", http]
    proc = subprocess.Popen([*cmd, "--no-front-door", "--interval", str(interval_s)])
    stop = threading.Event()
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if requests.get(f"http://{http}/api/status", timeout=1).json()["polls"] > 0:
                    break
            except (requests.RequestException, ValueError):
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("the dashboard did not start")
            time.sleep(0.05)

        def view() -> None:
            with requests.get(f"http://{http}/events", stream=True, timeout=30) as live:
                for _ in live.iter_lines():
                    if stop.is_set():
                        return

        threading.Thread(target=view, daemon=True).start()
        yield
    finally:
        stop.set()
        proc.terminate()
        proc.wait(10)


def _child(json_path: str, quick: bool, watched: bool, interval_s: float) -> int:
    """One benchmark run in this process (``--child``), the cluster watched or not."""
    import zimg
    from zimg.bench import actors

    if watched:
        original = zimg.local_cluster

        @contextlib.contextmanager
        def local_cluster(*args: Any, **kwargs: Any) -> Iterator[Any]:
            with original(*args, **kwargs) as node, _watching(node.url, interval_s):
                yield node

        zimg.local_cluster = local_cluster  # the cluster the benchmark starts
    return actors.main([*(["--quick"] if quick else []), "--json", json_path])


def _figures(report: dict[str, Any]) -> dict[str, float]:
    z = report["zimg"]
    return {label: float(z[group][stat]) for group, stat, label in FIGURES}


def main(argv: list[str] | None = None) -> int:
    """Run the comparison; returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m zimg.bench.dashboard_cost")
    parser.add_argument("--runs", type=int, default=3, help="runs each way (3)")
    parser.add_argument("--interval", type=float, default=1.0, help="the dashboard's poll (1 s)")
    parser.add_argument("--full", action="store_true", help="full benchmark counts, not --quick")
    parser.add_argument("--child", choices=("open", "closed"), help=argparse.SUPPRESS)
    parser.add_argument("--json", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return _child(args.json, not args.full, args.child == "open", args.interval)
    runs: dict[str, list[dict[str, float]]] = {"closed": [], "open": []}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.runs):
            for mode in ("closed", "open") if i % 2 == 0 else ("open", "closed"):
                out = Path(tmp) / f"{mode}-{i}.json"
                cmd = [sys.executable, "-m", "zimg.bench.dashboard_cost", "--child", mode]
                cmd += ["--json", str(out), "--interval", str(args.interval)]
                cmd += ["--full"] if args.full else []
                print(f"run {i + 1}/{args.runs}, dashboard {mode} ...", file=sys.stderr)
                subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
                runs[mode].append(_figures(json.loads(out.read_text())))
    print(f"{'figure':<26}{'closed':>12}{'open':>12}{'open/closed':>13}")
    for _, _, label in FIGURES:
        closed = statistics.median(r[label] for r in runs["closed"])
        opened = statistics.median(r[label] for r in runs["open"])
        print(f"{label:<26}{closed:>12.1f}{opened:>12.1f}{opened / closed:>13.3f}")
    each = {m: [round(r[FIGURES[0][2]]) for r in rs] for m, rs in runs.items()}
    print(f"\none-way msgs/s per run: {each} (median of {args.runs} each way, interleaved)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
