"""Child processes for embedded clusters: forked from this process when that is safe, else spawned.

Forking a process that has already imported zimg, numpy and OpenCV starts a worker in
milliseconds instead of the ~0.3 s a fresh interpreter needs. It is only done while this process
has no other Python threads (pyzmq's garbage-collector thread excepted, which handles forks
itself), because a fork copies locks that other threads may hold.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import Protocol


class ChildProcess(Protocol):
    """What both ``subprocess.Popen`` and :class:`ForkedProcess` offer."""

    @property
    def pid(self) -> int: ...

    @property
    def returncode(self) -> int | None: ...

    def poll(self) -> int | None: ...

    def wait(self, timeout: float | None = None) -> int: ...

    def send_signal(self, sig: int) -> None: ...

    def kill(self) -> None: ...


class ForkedProcess:
    """A forked child, with the part of ``subprocess.Popen``'s interface zimg uses."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self._lock = threading.Lock()

    def _reap(self, flags: int) -> None:
        try:
            pid, status = os.waitpid(self.pid, flags)
        except ChildProcessError:  # reaped already: by whom, we cannot tell
            self.returncode = self.returncode if self.returncode is not None else -1
            return
        if pid != 0:
            self.returncode = os.waitstatus_to_exitcode(status)

    def poll(self) -> int | None:
        """The exit code, or None while it runs (or while another thread is waiting for it)."""
        if self.returncode is None and self._lock.acquire(blocking=False):
            try:
                self._reap(os.WNOHANG)
            finally:
                self._lock.release()
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the exit code; raises ``subprocess.TimeoutExpired`` after ``timeout``."""
        if timeout is None:
            with self._lock:
                while self.returncode is None:
                    self._reap(0)
            return self.returncode
        deadline = time.monotonic() + timeout
        while (code := self.poll()) is None:
            if time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(f"pid {self.pid}", timeout)
            time.sleep(0.005)  # no event exists for another thread's waitpid: poll, as Popen does
        return code

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


def can_fork() -> bool:
    """True if forking now copies no Python thread but this one (and pyzmq's GC thread)."""
    if not hasattr(os, "fork"):
        return False
    others = [t for t in threading.enumerate() if t is not threading.current_thread()]
    return all(type(t).__name__ == "GarbageCollectorThread" for t in others)


def fork_call(target: Callable[[], None]) -> ForkedProcess:
    """Run ``target()`` in a forked child, which exits with 0 when it returns, 1 if it raises.

    The child leaves with ``os._exit``: it never runs this process's atexit handlers or
    finalizers (which would close sockets the parent still uses).
    """
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid != 0:
        return ForkedProcess(pid)
    code = 1
    try:
        target()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
