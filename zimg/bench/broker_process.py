"""A real ``python -m zimg broker`` subprocess seen from outside, for the scale harness: its CPU
time and memory read from ``/proc`` (:class:`BrokerProcess`), its node count asked with NODES
(:class:`NodesProbe`)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import zmq

from zimg import wire
from zimg.cluster import stop_process
from zimg.wire import Command


def _clock_ticks() -> int:
    return os.sysconf("SC_CLK_TCK")


def process_cpu_s(pid: int) -> float:
    """CPU seconds used so far by all the live threads of process ``pid``."""
    return sum(thread_cpu_s(pid).values())


def process_total_cpu_s(pid: int) -> float:
    """CPU seconds used so far by process ``pid``, threads that have ended included
    (``/proc/PID/stat``: user and system time)."""
    return _stat_cpu_s(Path(f"/proc/{pid}/stat"))


def _stat_cpu_s(stat: Path) -> float:
    """User plus system CPU seconds from a ``/proc`` ``stat`` file (a process's or a thread's)."""
    fields = stat.read_text().rpartition(")")[2].split()  # after the name, which may hold spaces
    return (int(fields[11]) + int(fields[12])) / _clock_ticks()


def thread_cpu_s(pid: int) -> dict[str, float]:
    """CPU seconds of each live thread of process ``pid``, by thread name (several of one
    name are added up); empty once the process is gone."""
    out: dict[str, float] = {}
    base = Path(f"/proc/{pid}/task")
    try:
        tasks = list(base.iterdir())
    except OSError:
        return out
    for task in tasks:
        try:
            name = (task / "comm").read_text().strip()
            try:
                seconds = int((task / "schedstat").read_text().split()[0]) / 1e9
            except (OSError, ValueError, IndexError):
                seconds = _stat_cpu_s(task / "stat")
        except (OSError, ValueError, IndexError):
            continue  # the thread ended meanwhile
        out[name] = out.get(name, 0.0) + seconds
    return out


class BrokerProcess:
    """A ``python -m zimg broker`` subprocess, and its CPU time and memory from ``/proc``."""

    def __init__(
        self,
        url: str,
        *args: str,
        log: Path,
        env: dict[str, str] | None = None,
        preexec_fn: Callable[[], None] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.url = url
        cmd = [sys.executable, "-m", "zimg", "broker", "--bind", url, *args]
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(
                cmd,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**(env or os.environ), "PYTHONUNBUFFERED": "1"},
                preexec_fn=preexec_fn,  # tests: a low open-file limit
                cwd=cwd,
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def cpu_s(self) -> float:
        """CPU seconds used so far by all the broker's threads."""
        return process_cpu_s(self.pid)

    def thread_cpu_s(self) -> dict[str, float]:
        """CPU seconds of each live thread, by name (``python`` is the loop, ``ZMQbg/IO/0``
        libzmq's I/O thread; several of one name are added up)."""
        return thread_cpu_s(self.pid)

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    def stop(self) -> int | None:
        stop_process(self.proc)
        return self.proc.returncode


# ---------------------------------------------------------------------- NODES


class NodesProbe:
    """One DEALER kept connected to the broker, asking NODES (first pages only: the count)."""

    def __init__(self, url: str, context: zmq.Context[zmq.Socket[bytes]]) -> None:
        self.url = url
        self.context = context
        self.sock = self._connect()

    def _connect(self) -> zmq.Socket[bytes]:
        sock = self.context.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(self.url)
        return sock

    def ask(self, timeout_s: float, after: str | None = None) -> tuple[dict[str, Any], float]:
        """One NODES page and how long it took to come (seconds).

        Raises:
            TimeoutError: no answer within ``timeout_s``.
        """
        started = time.monotonic()
        self.sock.send_multipart(
            wire.encode(Command.NODES, {} if after is None else {"after": after})
        )
        deadline = started + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            if not self.sock.poll(max(1, int(left * 1000))):
                break
            msg = wire.decode(self.sock.recv_multipart())
            if msg.command is Command.NODES:
                return msg.header, time.monotonic() - started
        # A late answer would be taken for the next question's: start over on a new socket.
        self.sock.close(linger=0)
        self.sock = self._connect()
        raise TimeoutError(f"NODES was not answered within {timeout_s} s")

    def count(self, timeout_s: float = 5.0) -> int:
        header, _ = self.ask(timeout_s)
        return int(header.get("count", len(header.get("nodes", []))))

    def wait_count(self, target: int, timeout_s: float, every_s: float = 0.1) -> float:
        """Poll until the node count is ``target``; returns the seconds it took.

        Raises:
            TimeoutError: not within ``timeout_s``.
        """
        started = time.monotonic()
        seen = None
        while True:
            with contextlib.suppress(TimeoutError):
                seen = self.count(timeout_s=2.0)
                if seen == target:
                    return time.monotonic() - started
            if time.monotonic() - started > timeout_s:
                raise TimeoutError(
                    f"the broker counts {seen} nodes, not {target}, after {timeout_s} s"
                )
            time.sleep(every_s)

    def close(self) -> None:
        self.sock.close(linger=0)
