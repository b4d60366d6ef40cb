"""Shared pieces of the fault tests: inputs, the sender, polling the broker, memory figures."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import cv2
import numpy as np

from zimg._errors import ZimgTimeout
from zimg.nodes_query import query_nodes
from zimg.testing import Processes, free_tcp_url

T = TypeVar("T")

SLOW_OPS = str(Path(__file__).with_name("slow_ops.py"))
POISON_BGR = (1, 2, 3)  # the marker slow_ops.poison dies on

HEARTBEAT_S = 0.5
LIVENESS = 3
EXPIRY_S = HEARTBEAT_S * LIVENESS  # a silent node is dead after this long
MARGIN_S = 1.0  # scheduling slack on a loaded 2-core machine
BROKER_ARGS = ("--heartbeat", str(HEARTBEAT_S), "--liveness", str(LIVENESS))
SLEEPY_MS = 40
# The notebook's pipeline, then a slow op that returns its input unchanged (the reference holds).
PIPELINE = ("--op", "threshold", "--op", "label", "--op", f"sleepy:ms={SLEEPY_MS}")


def make_images(target: Path, n: int, *, size: int = 64, seed: int = 0) -> list[Path]:
    """``n`` small random images, PNG and JPEG alternately; none carries the poison marker."""
    target.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    files = []
    for i in range(n):
        image = rng.integers(0, 256, (size, size, 3), np.uint8)
        image[:8, :8] = 200  # a flat corner: pixel (0, 0) decodes far from the marker
        path = target / f"img_{i:04d}{'.png' if i % 2 == 0 else '.jpg'}"
        assert cv2.imwrite(str(path), image)
        files.append(path)
    return files


def make_poison(path: Path, *, size: int = 64) -> Path:
    """A lossless image whose pixel (0, 0) is the marker that makes slow_ops.poison crash."""
    image = np.full((size, size, 3), 90, np.uint8)
    image[0, 0] = POISON_BGR
    assert cv2.imwrite(str(path), image)
    return path


def start_send(
    procs: Processes,
    url: str,
    outdir: Path,
    files: list[Path],
    *extra: str,
    pipeline: tuple[str, ...] = PIPELINE,
    timeout_s: float = 30.0,
) -> tuple[subprocess.Popen[bytes], Path]:
    """Start ``zimg send`` on ``files``; return the process and the file its output goes to.

    One image per job (``--job-items 1``), so that what a fault test counts per job (the
    redelivered jobs of a dead worker, its credit) is counted per image too.
    """
    proc = procs.zimg(
        "send",
        "send",
        "--broker",
        url,
        "-o",
        str(outdir),
        "--timeout",
        str(timeout_s),
        "--import",
        SLOW_OPS,
        "--job-items",
        "1",
        *pipeline,
        *extra,
        *map(str, files),
    )
    return proc, procs.logdir / f"{procs.started[-1][0]}.log"


def assert_clean_log(text: str, *, expected: tuple[str, ...] = ()) -> None:
    """No traceback, no error or warning line, no failed input in a process's output, apart
    from lines that contain one of the ``expected`` fragments."""
    kept = "\n".join(line for line in text.splitlines() if not any(e in line for e in expected))
    for bad in ("Traceback", " ERROR ", " WARNING ", "error:", "failed:"):
        assert bad not in kept, f"{bad!r} in the log:\n{kept[-3000:]}"


def assert_no_tracebacks(procs: Processes) -> None:
    """No process the test started crashed with a Python traceback."""
    text = procs.output()
    assert "Traceback" not in text, text[-5000:]


def wait_for(probe: Callable[[], T], timeout_s: float, what: str, *, every_s: float = 0.01) -> T:
    """Poll ``probe`` until it returns something truthy, and return that; fail after
    ``timeout_s`` seconds naming ``what``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(every_s)


def report(url: str) -> dict[str, Any]:
    """The broker's NODES report."""
    return query_nodes(url, timeout_s=2.0)


def nodes(url: str) -> dict[str, dict[str, Any]]:
    """The broker's node table, by name."""
    return {n["name"]: n for n in report(url)["nodes"]}


def workers(url: str) -> dict[str, dict[str, Any]]:
    return {name: n for name, n in nodes(url).items() if n["role"] == "worker"}


def lines_written(outdir: Path) -> int:
    """Complete manifest lines written so far (0 before the manifest exists)."""
    try:
        return (outdir / "manifest.jsonl").read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def kill(proc: subprocess.Popen[bytes], sig: int) -> float:
    """Send ``sig``; for SIGKILL also reap the process. Returns the moment the signal went."""
    proc.send_signal(sig)
    sent = time.monotonic()
    if sig == 9:
        proc.wait(10)
    return sent


def vm_hwm_kb(pid: int) -> int | None:
    """Peak resident set size of a running process (VmHWM), or None once it has gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


def wait_with_rusage(proc: subprocess.Popen[bytes], timeout_s: float) -> tuple[int, int]:
    """Reap ``proc`` ourselves (wait4) to get its exact peak RSS. Returns (exit code, kB)."""
    deadline = time.monotonic() + timeout_s
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid == proc.pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return proc.returncode, usage.ru_maxrss
        if time.monotonic() > deadline:
            raise AssertionError(f"pid {proc.pid} still running after {timeout_s} s")
        time.sleep(0.05)


class BrokerSampler:
    """Asks the broker for its NODES report every ``every_s`` while a run goes on (its own
    thread), and keeps the largest queue, the most jobs one worker held, and the most workers
    holding jobs at once. Each report is one consistent snapshot of the broker's state."""

    def __init__(self, url: str, *, every_s: float) -> None:
        self.url = url
        self.every_s = every_s
        self.max_queued = 0
        self.max_active = 0
        self.most_busy = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> BrokerSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            table = report(self.url)
            self.max_queued = max(self.max_queued, table["queued"])
            active = [n["active"] for n in table["nodes"] if n["role"] == "worker"]
            self.max_active = max(self.max_active, *active, 0)
            self.most_busy = max(self.most_busy, sum(1 for a in active if a))
            self.samples += 1


# ---------------------------------------------------------------------- a failover pair


@dataclasses.dataclass
class Pair:
    """A primary and a backup broker (issue 17): their node endpoints, peer-link endpoints and
    processes. ``urls`` is what nodes are given: both endpoints, the primary's first."""

    primary_url: str
    backup_url: str
    primary_peer_bind: str
    backup_peer_bind: str
    primary: subprocess.Popen[bytes] | None = None
    backup: subprocess.Popen[bytes] | None = None

    @property
    def urls(self) -> str:
        return f"{self.primary_url},{self.backup_url}"

    @classmethod
    def on_loopback(cls) -> Pair:
        return cls(free_tcp_url(), free_tcp_url(), free_tcp_url(), free_tcp_url())

    def start_primary(self, procs: Processes, *, peer: str | None = None) -> None:
        """Start the primary; ``peer``: where it finds the backup's state (default: directly)."""
        self.primary = procs.broker(
            self.primary_url, "--primary", "--peer", peer or self.backup_peer_bind,
            "--peer-bind", self.primary_peer_bind, *BROKER_ARGS,
        )  # fmt: skip

    def start_backup(self, procs: Processes, *, peer: str | None = None) -> None:
        """Start the backup; ``peer``: where it finds the primary's state (default: directly)."""
        self.backup = procs.broker(
            self.backup_url, "--backup", "--peer", peer or self.primary_peer_bind,
            "--peer-bind", self.backup_peer_bind, *BROKER_ARGS,
        )  # fmt: skip


def pair_state(url: str, timeout_s: float = 2.0) -> str | None:
    """A broker's failover state (``active``, ``passive``, ``starting``), or None if it does
    not answer within ``timeout_s``."""
    try:
        return str(query_nodes(url, timeout_s=timeout_s)["failover"]["state"])
    except ZimgTimeout:
        return None


def wait_pair_ready(pair: Pair, timeout_s: float = 15.0) -> None:
    """Wait until the primary is active and the backup passive."""

    def ready() -> bool:
        return pair_state(pair.primary_url) == "active" and pair_state(pair.backup_url) == "passive"

    wait_for(
        ready,
        timeout_s,
        "the primary active and the backup passive",
        every_s=0.05,
    )
