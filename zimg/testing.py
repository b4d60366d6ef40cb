"""Test helpers: a fake clock for the pure state machines; an in-memory transport and router
for the actor runtime; real zimg processes, always reaped."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from zimg._errors import ClusterStartError, ZimgTimeout
from zimg._memory import MemoryRouter, MemoryTransport
from zimg.cluster import stop_process, wait_for_workers
from zimg.nodes_query import query_nodes
from zimg.security import ClientKeys

__all__ = [
    "FakeClock",
    "MemoryRouter",
    "MemoryTransport",
    "Processes",
    "free_tcp_url",
    "wait_for_broker",
]


class FakeClock:
    """A clock that moves only when told, for the pure state machines (``NodeSession``,
    ``BrokerState``), whose every event takes ``now``.

    Args:
        start: the first reading, in seconds (any origin).
    """

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        """The current reading (so the clock can stand in for ``time.monotonic``)."""
        return self.now

    def advance(self, seconds: float) -> float:
        """Move the clock on by ``seconds``; returns the new reading."""
        self.now += seconds
        return self.now


def free_tcp_url(host: str = "127.0.0.1") -> str:
    """A ``tcp://`` endpoint on a port free a moment ago (``::1``: ``tcp://[::1]:P``)."""
    v6 = ":" in host
    with socket.socket(socket.AF_INET6 if v6 else socket.AF_INET) as s:
        s.bind((host, 0))
        port = s.getsockname()[1]
    return f"tcp://[{host}]:{port}" if v6 else f"tcp://{host}:{port}"


class Processes:
    """Starts ``python -m zimg ...`` subprocesses, logs each to a file, and reaps them all.

    Args:
        logdir: where each process's combined stdout and stderr go.
    """

    def __init__(self, logdir: Path) -> None:
        self.logdir = logdir
        logdir.mkdir(parents=True, exist_ok=True)
        self.started: list[tuple[str, subprocess.Popen[bytes]]] = []
        self._count = 0

    def zimg(self, label: str, *args: str) -> subprocess.Popen[bytes]:
        """Start ``python -m zimg *args``; its output goes to ``logdir/<label>-<n>.log``."""
        self._count += 1
        log = open(self.logdir / f"{label}-{self._count}.log", "wb")  # noqa: SIM115  # closed below
        try:
            env = {**os.environ, "PYTHONUNBUFFERED": "1"}
            cmd = [sys.executable, "-m", "zimg", *args]
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        finally:
            log.close()
        self.started.append((f"{label}-{self._count}", proc))
        return proc

    def broker(
        self, url: str, *args: str, timeout_s: float = 15.0, keys: ClientKeys | None = None
    ) -> subprocess.Popen[bytes]:
        """Start a broker bound to ``url`` and wait until it answers (``keys``: to ask it)."""
        proc = self.zimg("broker", "broker", "--bind", url, *args)
        wait_for_broker(url, timeout_s=timeout_s, process=proc, keys=keys)
        return proc

    def worker(
        self,
        url: str,
        name: str,
        *args: str,
        wait: bool = True,
        timeout_s: float = 30.0,
        keys: ClientKeys | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start a worker named ``name``; by default wait until the broker lists it."""
        proc = self.zimg(f"worker-{name}", "worker", "--name", name, "--connect", url, *args)
        if wait:
            wait_for_workers(url, [name], timeout_s=timeout_s, processes={name: proc}, keys=keys)
        return proc

    def output(self) -> str:
        """Everything the processes printed, for a failing test's message."""
        parts = []
        for path in sorted(self.logdir.glob("*.log")):
            parts.append(f"----- {path.name}\n{path.read_text(errors='replace')}")
        return "\n".join(parts)

    def stop_all(self) -> None:
        """SIGTERM every process still running, then SIGKILL any that linger."""
        for _, proc in reversed(self.started):
            stop_process(proc)


def wait_for_broker(
    url: str,
    *,
    timeout_s: float = 15.0,
    process: subprocess.Popen[bytes] | None = None,
    keys: ClientKeys | None = None,
) -> None:
    """Block until a broker at ``url`` answers NODES.

    Raises:
        ClusterStartError: ``process`` exited first.
        ZimgTimeout: no answer within ``timeout_s``.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            query_nodes(url, timeout_s=0.2, keys=keys, until=lambda _: True)  # one page
            return
        except ZimgTimeout:
            if process is not None and process.poll() is not None:
                raise ClusterStartError(
                    f"the broker exited with code {process.returncode}"
                ) from None
            if time.monotonic() > deadline:
                raise
