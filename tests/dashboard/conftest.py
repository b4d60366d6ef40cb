"""Shared pieces of the dashboard tests: a broker with workers, and `zimg dashboard` processes."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass

import pytest

pytest.importorskip("starlette", reason="the dashboard extra is not installed")
pytest.importorskip("uvicorn", reason="the dashboard extra is not installed")

import requests  # after the skip: nothing here works without the extra

from tests.fault.helpers import BROKER_ARGS, SLOW_OPS, wait_for
from zimg.testing import Processes, free_tcp_url


def free_http() -> str:
    """``127.0.0.1:PORT`` on a port free a moment ago."""
    return free_tcp_url().removeprefix("tcp://")


@dataclass
class Web:
    """A running `zimg dashboard` (or `--dashboard`) process and its address."""

    proc: subprocess.Popen[bytes]
    base: str

    def get(self, path: str, **kw: object) -> requests.Response:
        return requests.get(self.base + path, timeout=10, **kw)  # type: ignore[arg-type]

    def status(self) -> dict:
        return self.get("/api/status").json()


def start_dashboard(procs: Processes, url: str, *args: str, http: str | None = None) -> Web:
    """Start `zimg dashboard` for the broker at ``url``; wait until its page answers."""
    http = http or free_http()
    proc = procs.zimg("dashboard", "dashboard", "--broker", url, "--http", http, *args)
    return wait_web(proc, f"http://{http}")


def wait_web(proc: subprocess.Popen[bytes], base: str, timeout_s: float = 30.0) -> Web:
    """Wait until ``base``/api/status answers (any status) or ``proc`` exits."""

    def up() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"the dashboard exited with code {proc.returncode}")
        try:
            requests.get(base + "/api/status", timeout=1)
        except requests.ConnectionError:
            return False
        return True

    wait_for(up, timeout_s, f"a dashboard at {base}", every_s=0.05)
    return Web(proc, base)


@pytest.fixture
def cluster(procs: Processes, tcp_url: str) -> str:
    """A broker (fast heartbeats) with workers n1 and n2 (which know the ``sleepy`` op)."""
    procs.broker(tcp_url, *BROKER_ARGS)
    procs.worker(tcp_url, "n1", "--import", SLOW_OPS)
    procs.worker(tcp_url, "n2", "--import", SLOW_OPS)
    return tcp_url
