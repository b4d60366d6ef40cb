"""An embedded local cluster: a broker thread and N worker processes, for one ``with`` block."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from zimg import protocol
from zimg._broker_state import BrokerConfig
from zimg._errors import ZimgError, ZimgTimeout
from zimg.broker import Broker
from zimg.connection import query_nodes
from zimg.node import Node
from zimg.security import ClientKeys


class LocalCluster(Node):
    """A running embedded cluster, and this process's own node in it (a :class:`Node`).

    Attributes:
        url: the broker's endpoint.
        broker: the broker, running on a thread of this process.
        workers: worker node names.
        processes: the worker processes, by name.
    """

    def __init__(self, url: str, name: str, broker: Broker, workers: list[str]) -> None:
        super().__init__(url, name)
        self.url = url
        self.broker = broker
        self.workers = workers
        self.processes: dict[str, subprocess.Popen[bytes]] = {}


def worker_command(
    url: str,
    name: str,
    *,
    capacity: int = 2,
    imports: Sequence[str] = (),
    log_level: str = "warning",
) -> list[str]:
    """The command line that starts a worker process."""
    cmd = [sys.executable, "-m", "zimg", "worker", "--name", name, "--connect", url]
    cmd += ["--capacity", str(capacity), "--log-level", log_level]
    for module in imports:
        cmd += ["--import", module]
    return cmd


def wait_for_workers(
    url: str,
    names: Sequence[str],
    *,
    timeout_s: float = 30.0,
    processes: dict[str, subprocess.Popen[bytes]] | None = None,
    keys: ClientKeys | None = None,
) -> None:
    """Block until every worker in ``names`` has joined the broker at ``url``.

    Raises:
        ZimgError: a worker process exited before joining.
        ZimgTimeout: they did not all join within ``timeout_s``.
    """
    deadline = time.monotonic() + timeout_s
    want = set(names)
    while True:
        report = query_nodes(url, timeout_s=max(0.1, deadline - time.monotonic()), keys=keys)
        joined = {n["name"] for n in report["nodes"] if n["role"] == protocol.ROLE_WORKER}
        if want <= joined:
            return
        for name, proc in (processes or {}).items():
            if proc.poll() is not None:
                raise ZimgError(f"worker {name} exited with code {proc.returncode} before joining")
        if time.monotonic() > deadline:
            missing = ", ".join(sorted(want - joined))
            raise ZimgTimeout(f"workers {missing} did not join {url} within {timeout_s} s")
        time.sleep(0.02)  # polling a remote table: there is no event to wait on


def stop_process(proc: subprocess.Popen[bytes], timeout_s: float = 5.0) -> None:
    """SIGTERM, wait, then SIGKILL: a process is always reaped."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def local_cluster(
    workers: int = 2,
    *,
    capacity: int = 2,
    name: str = "main",
    imports: Sequence[str] = (),
    url: str | None = None,
    config: BrokerConfig | None = None,
    timeout_s: float = 30.0,
) -> Iterator[LocalCluster]:
    """Start a broker (a thread here) and ``workers`` worker processes; stop them on exit.

    Args:
        workers: how many worker processes, named ``n1`` ... ``nN``.
        capacity: jobs each worker runs at once.
        name: this process's node name.
        imports: modules each worker imports (user ops and behaviours).
        url: the broker endpoint; by default a fresh ``ipc://`` path.
        config: broker settings.
        timeout_s: how long to wait for the workers to join.

    Yields:
        The running :class:`LocalCluster`.
    """
    if workers < 1:
        raise ValueError(f"a local cluster needs at least one worker, got {workers}")
    tmp = tempfile.mkdtemp(prefix="zimg-")
    broker = Broker(url or f"ipc://{tmp}/broker", config)
    cluster: LocalCluster | None = None
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        broker.start()
        endpoint = broker.endpoint or broker.url
        names = [f"n{i + 1}" for i in range(workers)]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        for worker_name in names:
            cmd = worker_command(endpoint, worker_name, capacity=capacity, imports=imports)
            procs[worker_name] = subprocess.Popen(cmd, env=env)
        cluster = LocalCluster(endpoint, name, broker, names)
        cluster.processes = procs
        cluster.start(timeout_s)
        wait_for_workers(endpoint, names, timeout_s=timeout_s, processes=procs)
        yield cluster
    finally:
        if cluster is not None:
            cluster.close()
        for proc in procs.values():
            stop_process(proc)
        broker.stop()
        shutil.rmtree(tmp, ignore_errors=True)
