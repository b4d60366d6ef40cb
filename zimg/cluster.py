"""An embedded local cluster: a broker thread and N worker processes, for one ``with`` block."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager

import cv2

from zimg import ops, protocol
from zimg._affinity import embedded_plan, format_cpus
from zimg._broker_state import BrokerConfig
from zimg._children import ChildProcess, can_fork, fork_call
from zimg._errors import ClusterStartError, ZimgTimeout
from zimg.broker import Broker
from zimg.node import Node
from zimg.nodes_query import query_nodes
from zimg.security import ClientKeys
from zimg.worker import serve

log = logging.getLogger("zimg.cluster")


# Embedded workers share this machine with each other: one job thread each, with a credit of
# ``capacity`` so the next job is already waiting (measured: two threads per worker cost
# ~7% more CPU per image on 2 cores; see docs/performance.md).
EMBEDDED_THREADS = 1


class WorkerKeeper:
    """Runs worker processes and restarts any that dies, until :meth:`stop`.

    A restarted worker keeps its name and is a new incarnation. A worker that dies more than
    ``max_restarts`` times within ``period_s`` is left dead (and logged), so a worker that
    cannot start does not spin.
    """

    def __init__(
        self,
        commands: dict[str, list[str]],
        *,
        env: dict[str, str] | None = None,
        max_restarts: int = 5,
        period_s: float = 30.0,
        first_start: Callable[[str], ChildProcess] | None = None,
    ) -> None:
        self.commands = commands
        self.env = env
        self.max_restarts = max_restarts
        self.period_s = period_s
        self.first_start = first_start
        self.processes: dict[str, ChildProcess] = {}
        self.restarts = 0
        self.gave_up: set[str] = set()
        self._lock = threading.Lock()
        self._stopping = False
        self._threads: list[threading.Thread] = []

    def start(self) -> WorkerKeeper:
        """Start every worker, and a thread per worker that restarts it when it exits.

        The first start uses ``first_start`` (a fork) if given; restarts run the command.
        """
        for name, cmd in self.commands.items():
            if self.first_start is not None:
                self.processes[name] = self.first_start(name)
            else:
                self.processes[name] = subprocess.Popen(cmd, env=self.env)
        for name in self.commands:
            thread = threading.Thread(
                target=self._watch, args=(name,), name=f"zimg-keeper-{name}", daemon=True
            )
            self._threads.append(thread)
            thread.start()
        return self

    def _watch(self, name: str) -> None:
        recent: deque[float] = deque()
        while True:
            proc = self.processes[name]
            code = proc.wait()
            with self._lock:
                if self._stopping:
                    return
                now = time.monotonic()
                while recent and now - recent[0] > self.period_s:
                    recent.popleft()
                if len(recent) >= self.max_restarts:
                    log.error(
                        "worker %s keeps dying (code %s); not restarting it again", name, code
                    )
                    self.gave_up.add(name)
                    return
                recent.append(now)
                self.restarts += 1
                log.warning("worker %s exited with code %s; restarting it", name, code)
                self.processes[name] = subprocess.Popen(self.commands[name], env=self.env)

    def stop(self) -> None:
        """Stop restarting, then stop every worker (SIGTERM, then SIGKILL)."""
        with self._lock:
            self._stopping = True
            procs = list(self.processes.values())
        stop_processes(procs)
        for thread in self._threads:
            thread.join(5.0)


def _fork_worker(
    url: str,
    capacity: int,
    imports: Sequence[str],
    cpus: Mapping[str, set[int] | None],
    death_timeout_s: float,
    lanes: bool = False,
) -> Callable[[str], ChildProcess]:
    def start(name: str) -> ChildProcess:
        def main() -> None:
            for module in imports:
                ops.load_module(module)
            serve(
                url,
                name,
                capacity=capacity,
                threads=EMBEDDED_THREADS,
                allow_paths=True,
                cpus=cpus.get(name),
                death_timeout_s=death_timeout_s,
                lanes=lanes,
            )

        # OpenCV's thread pool does not survive a fork: a child that touches it can hang on a
        # mutex copied in a locked state. Stop the pool (1 thread) while forking.
        threads = cv2.getNumThreads()
        cv2.setNumThreads(1)
        try:
            return fork_call(main)
        finally:
            cv2.setNumThreads(threads)

    return start


class LocalCluster(Node):
    """A running embedded cluster, and this process's own node in it (a :class:`Node`).

    Attributes:
        url: the broker's endpoint.
        broker: the broker, running on a thread of this process.
        workers: worker node names.
        processes: the worker processes, by name (restarted ones replace the dead).
        keeper: restarts workers that die.
    """

    def __init__(
        self, url: str, name: str, broker: Broker, workers: list[str], lanes: bool = False
    ) -> None:
        # This node reaches the broker thread over inproc (no kernel, no copies); ``url`` is
        # for everyone else.
        super().__init__(broker.also_bind[0], name, context=broker.context, lanes=lanes)
        self.url = url
        self.broker = broker
        self.workers = workers
        self.processes: dict[str, ChildProcess] = {}
        self.keeper: WorkerKeeper | None = None


def worker_command(
    url: str,
    name: str,
    *,
    capacity: int = 2,
    threads: int = EMBEDDED_THREADS,
    imports: Sequence[str] = (),
    log_level: str = "warning",
    cpus: set[int] | None = None,
    death_timeout_s: float | None = None,
    lanes: bool = False,
) -> list[str]:
    """The command line that starts an embedded cluster's worker process (which may read and
    write the client's files: its broker is private). ``death_timeout_s``: see
    :func:`zimg.worker.serve`."""
    cmd = [sys.executable, "-m", "zimg", "worker", "--name", name, "--connect", url]
    cmd += ["--capacity", str(capacity), "--threads", str(threads), "--allow-paths"]
    cmd += ["--log-level", log_level]
    if cpus:
        cmd += ["--cpus", format_cpus(cpus)]
    if death_timeout_s is not None:
        cmd += ["--death-timeout", f"{death_timeout_s:g}"]
    if lanes:
        cmd.append("--lanes")
    for module in imports:
        cmd += ["--import", module]
    return cmd


def wait_for_workers(
    url: str,
    names: Sequence[str],
    *,
    timeout_s: float = 30.0,
    processes: Mapping[str, ChildProcess] | None = None,
    keys: ClientKeys | None = None,
    keeper: WorkerKeeper | None = None,
) -> None:
    """Block until every worker in ``names`` has joined the broker at ``url``.

    Raises:
        ClusterStartError: a worker process exited before joining (without ``keeper``), or
            ``keeper`` gave up restarting it.
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
                raise ClusterStartError(
                    f"worker {name} exited with code {proc.returncode} before joining"
                )
        if keeper is not None and keeper.gave_up:
            raise ClusterStartError(f"workers {sorted(keeper.gave_up)} keep dying before they join")
        if time.monotonic() > deadline:
            missing = ", ".join(sorted(want - joined))
            raise ZimgTimeout(f"workers {missing} did not join {url} within {timeout_s} s")
        time.sleep(0.02)  # polling a remote table: there is no event to wait on


def stop_process(proc: ChildProcess, timeout_s: float = 5.0) -> None:
    """SIGTERM, wait, then SIGKILL: a process is always reaped."""
    stop_processes([proc], timeout_s)


def stop_processes(procs: Iterable[ChildProcess], timeout_s: float = 5.0) -> None:
    """SIGTERM every process still running, then reap them all, SIGKILLing any still there
    ``timeout_s`` after the signal: they shut down side by side, not one after another."""
    running = [proc for proc in procs if proc.poll() is None]
    for proc in running:
        proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    for proc in running:
        try:
            proc.wait(max(0.0, deadline - time.monotonic()))
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
    pin: bool | None = None,
    lanes: bool = False,
) -> Iterator[LocalCluster]:
    """Start a broker (a thread here) and ``workers`` worker processes; stop them on exit.

    Args:
        workers: how many worker processes, named ``n1`` ... ``nN``.
        capacity: jobs each worker holds at once: its credit (it runs one at a time; the next
            is already waiting when one ends).
        name: this process's node name.
        imports: modules each worker imports (user ops and behaviours).
        url: the broker endpoint; by default a fresh ``ipc://`` path.
        config: broker settings.
        timeout_s: how long to wait for the workers to join.
        pin: pin worker ``i`` to CPU ``i mod n`` of the CPUs this process may use. None (the
            default) pins only when there are more workers than CPUs and ``config`` turns the
            broker's CPU slots off (see ``zimg._affinity``): with them on, only as many
            workers run at once as there are CPUs, and the system places those best.
        lanes: every node of the cluster sends actor messages to the others on direct lanes
            once introduced, not through the broker (``docs/actors.md``).

    Yields:
        The running :class:`LocalCluster`.
    """
    if workers < 1:
        raise ValueError(f"a local cluster needs at least one worker, got {workers}")
    tmp = tempfile.mkdtemp(prefix="zimg-")
    endpoint = url or f"ipc://{tmp}/broker"
    broker: Broker | None = None
    cluster: LocalCluster | None = None
    keeper: WorkerKeeper | None = None
    try:
        # Workers first (forked before this process has a ZeroMQ context or threads); they
        # connect before the broker binds, which ZeroMQ retries.
        names = [f"n{i + 1}" for i in range(workers)]
        if pin is None and (config or BrokerConfig()).cpu_slots:
            pin = False
        cpus = dict(zip(names, embedded_plan(workers, pin), strict=True))
        # A worker waits for its broker no longer than this process waits for the workers:
        # one whose parent died before the broker bound must not wait for ever.
        commands = {
            n: worker_command(
                endpoint,
                n,
                capacity=capacity,
                imports=imports,
                cpus=cpus[n],
                death_timeout_s=timeout_s,
                lanes=lanes,
            )
            for n in names
        }
        fork = None
        if can_fork():
            fork = _fork_worker(endpoint, capacity, imports, cpus, timeout_s, lanes)
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        keeper = WorkerKeeper(commands, env=env, first_start=fork).start()
        broker = Broker(endpoint, config, also_bind=[f"inproc://zimg-local-{os.getpid()}-{tmp}"])
        broker.start()
        cluster = LocalCluster(endpoint, name, broker, names, lanes)
        cluster.processes = keeper.processes
        cluster.keeper = keeper
        cluster.start(timeout_s)
        wait_for_workers(endpoint, names, timeout_s=timeout_s, keeper=keeper)
        yield cluster
    finally:
        if cluster is not None:
            cluster.close()
        if keeper is not None:
            keeper.stop()
        if broker is not None:
            broker.stop()
        shutil.rmtree(tmp, ignore_errors=True)
