"""A ``python -m zimg.bench.simnodes`` subprocess seen from the harness that starts it:
:class:`SimProcess` reads the lines it prints (``ready N``, ``status {json}``...) and sends it
its signals."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any


class SimProcess:
    """A ``python -m zimg.bench.simnodes`` subprocess, with the lines it prints.

    ``args`` are the command-line options after ``--url`` and ``--count`` (``--prefix w``,
    ``--role client``...). Its stderr goes to ``log`` (else nowhere).
    """

    def __init__(
        self,
        url: str,
        count: int,
        *args: str,
        log: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        cmd = [sys.executable, "-m", "zimg.bench.simnodes", "--url", url, "--count", str(count)]
        cmd += [*args, "--die-with-parent"]
        self.count = count
        self.command = cmd
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        err: IO[bytes] | int = subprocess.DEVNULL
        if log is not None:
            err = open(log, "ab")  # noqa: SIM115  # closed once Popen has it
        try:
            self.proc = subprocess.Popen(
                cmd,
                stdout=subprocess.PIPE,
                stderr=err,
                env={**(env or os.environ), "PYTHONUNBUFFERED": "1"},
                text=True,
            )
        finally:
            if not isinstance(err, int):
                err.close()
        self._reader = threading.Thread(target=self._read, name="simnodes-reader", daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_line(self, prefix: str, timeout_s: float) -> str:
        """The next line that starts with ``prefix``.

        Raises:
            RuntimeError: the process ended first.
            TimeoutError: none within ``timeout_s``.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(
                    f"no {prefix!r} line from {' '.join(self.command[2:])} within {timeout_s} s; "
                    f"it printed {self.lines[-5:]}"
                )
            try:
                line = self._queue.get(timeout=min(left, 0.5))
            except queue.Empty:
                continue
            if line is None:
                self._queue.put(None)  # stay at the end for later callers
                raise RuntimeError(
                    f"the simulated nodes exited (code {self.proc.wait()}) before {prefix!r}; "
                    f"they printed {self.lines[-5:]}"
                )
            self.lines.append(line)
            if line.startswith(prefix):
                return line

    def wait_ready(self, timeout_s: float) -> None:
        """Block until the process says every node is welcomed."""
        if not any(line.startswith("ready ") for line in self.lines):
            self.wait_line("ready ", timeout_s)

    def poll_line(self, prefix: str) -> bool:
        """Has the process printed a line starting with ``prefix`` yet? Never blocks."""
        while True:
            try:
                line = self._queue.get_nowait()
            except queue.Empty:
                break
            if line is None:
                self._queue.put(None)
                break
            self.lines.append(line)
        return any(line.startswith(prefix) for line in self.lines)

    def status(self, timeout_s: float = 10.0) -> dict[str, Any]:
        """Ask for the counters (SIGUSR2) and return them."""
        self.proc.send_signal(signal.SIGUSR2)
        result: dict[str, Any] = json.loads(self.wait_line("status ", timeout_s)[len("status ") :])
        return result

    def send_signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def kill(self) -> None:
        """SIGKILL (every node dies at once, its connections closed by the kernel)."""
        self.send_signal(signal.SIGKILL)

    def stop(self, timeout_s: float = 10.0) -> int:
        """SIGCONT and SIGTERM, then SIGKILL if it lingers; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        code = self.proc.wait()
        self._reader.join(timeout_s)  # it ends at the end of the output
        if self.proc.stdout is not None and not self._reader.is_alive():
            self.proc.stdout.close()
        return code
