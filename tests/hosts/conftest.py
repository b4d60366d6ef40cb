"""Hosts made of network namespaces: broker, w1, w2 and client on a bridge, zimg run in each.

Topology (one set per test; names carry the pytest pid so parallel or aborted runs never
collide, and the root namespace is left untouched)::

    <P>-broker 198.18.0.1 ─┐
    <P>-w1     198.18.0.2 ─┤ veth ── br0 in <P>-sw (the switch)
    <P>-w2     198.18.0.3 ─┤
    <P>-client 198.18.0.4 ─┘

Each host has ``lo`` and ``eth0`` up and no default route. ``tc tbf`` can limit every host's
link in both directions (``hosts.limit(...)``, or parametrize the ``hosts`` fixture
indirectly with a rate such as ``"100mbit"``). Processes run as
``ip netns exec NS python -m zimg ...``; teardown SIGTERMs them, SIGKILLs whatever is left in
each namespace, and deletes the namespaces (which deletes their veths), whatever the outcome.
Tests skip where ``ip netns`` is missing or not permitted.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from zimg.cluster import stop_process

ROLES = ("broker", "w1", "w2", "client")
SUBNET = "198.18.0"
PREFIX = "zimgt"
BROKER_PORT = 5555
_STALE = re.compile(rf"^{PREFIX}(\d+)-\d+-\w+$")
_serial = itertools.count(1)

# Runs inside a namespace: wait until the broker answers and the named workers have joined.
_WAIT = """
import sys
from zimg.cluster import wait_for_workers
from zimg.testing import wait_for_broker
url, timeout = sys.argv[1], float(sys.argv[2])
wait_for_broker(url, timeout_s=timeout)
if sys.argv[3:]:
    wait_for_workers(url, sys.argv[3:], timeout_s=timeout)
"""


class Unavailable(Exception):
    """The machine cannot build the namespaces (a reason to skip, not a failure)."""


class Hosts:
    """Four hosts on one bridge, and the zimg processes started on them."""

    def __init__(self, ip: str, logdir: Path) -> None:
        self.ip = ip
        self.tc = shutil.which("tc")
        self.logdir = logdir
        logdir.mkdir(parents=True, exist_ok=True)
        stem = f"{PREFIX}{os.getpid()}-{next(_serial)}"
        self.switch = f"{stem}-sw"
        self.ns = {role: f"{stem}-{role}" for role in ROLES}
        self.addr = {role: f"{SUBNET}.{i}" for i, role in enumerate(ROLES, start=1)}
        self.broker_url = f"tcp://{self.addr['broker']}:{BROKER_PORT}"
        self.created: list[str] = []
        self.started: list[tuple[str, subprocess.Popen[bytes]]] = []
        self._count = 0

    # ------------------------------------------------------------------ network

    def _ip(self, *args: str, probe: bool = False) -> str:
        """Run ``ip ARGS``; a failing ``probe`` means the machine cannot do it (skip)."""
        result = subprocess.run(
            [self.ip, *args], capture_output=True, text=True, timeout=30, check=False
        )
        if result.returncode != 0:
            msg = f"`ip {' '.join(args)}` failed: {result.stderr.strip()}"
            raise Unavailable(msg) if probe else RuntimeError(msg)
        return result.stdout

    def build(self) -> None:
        """Create the switch and the hosts (probing steps raise Unavailable)."""
        for ns in (self.switch, *self.ns.values()):
            self._ip("netns", "add", ns, probe=True)
            self.created.append(ns)
        self._ip("-n", self.switch, "link", "add", "br0", "type", "bridge", probe=True)
        self._ip("-n", self.switch, "link", "set", "br0", "up")
        for role, ns in self.ns.items():
            port = f"p-{role}"
            self._ip(
                "-n", self.switch, "link", "add", port, "type", "veth",
                "peer", "name", "eth0", "netns", ns, probe=True,
            )  # fmt: skip
            self._ip("-n", self.switch, "link", "set", port, "master", "br0", "up")
            self._ip("-n", ns, "addr", "add", f"{self.addr[role]}/24", "dev", "eth0")
            self._ip("-n", ns, "link", "set", "lo", "up")
            self._ip("-n", ns, "link", "set", "eth0", "up")

    def limit(self, rate: str, burst: str = "32kbit", latency: str = "50ms") -> None:
        """Rate-limit every host's link, both ways, with ``tc qdisc ... tbf``."""
        if self.tc is None:
            raise Unavailable("no `tc` binary (iproute2)")
        tbf = ["root", "tbf", "rate", rate, "burst", burst, "latency", latency]
        for role, ns in self.ns.items():
            for where, dev in ((ns, "eth0"), (self.switch, f"p-{role}")):
                cmd = [self.tc, "-n", where, "qdisc", "replace", "dev", dev, *tbf]
                result = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
                if result.returncode != 0:
                    raise Unavailable(f"`{' '.join(cmd)}` failed: {result.stderr.strip()}")

    def sent_bytes(self, role: str) -> int:
        """Bytes the host's ``eth0`` has sent (its link counter)."""
        stats = self._ip("-n", self.ns[role], "-s", "link", "show", "dev", "eth0")
        lines = stats.splitlines()
        tx = next(i for i, line in enumerate(lines) if line.strip().startswith("TX:"))
        return int(lines[tx + 1].split()[0])

    def pids(self, role: str) -> list[int]:
        """Every process whose network namespace is the host's."""
        out = subprocess.run(
            [self.ip, "netns", "pids", self.ns[role]], capture_output=True, text=True, timeout=30
        ).stdout
        return [int(p) for p in out.split()]

    def kill_host(self, role: str) -> list[int]:
        """SIGKILL everything running on the host; return the pids."""
        pids = self.pids(role)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return pids

    def unplug(self, role: str) -> None:
        """Take the host's switch port down: packets (FIN and RST included) stop flowing."""
        self._ip("-n", self.switch, "link", "set", f"p-{role}", "down")

    # ------------------------------------------------------------------ processes

    def command(self, role: str, *args: str) -> list[str]:
        """``ip netns exec NS python ARGS`` (``ip`` execs, so the pid is Python's)."""
        return [self.ip, "netns", "exec", self.ns[role], sys.executable, *args]

    def start(self, role: str, label: str, *args: str) -> subprocess.Popen[bytes]:
        """Start ``python ARGS`` on ``role``; output goes to ``logdir/<label>-<n>.log``."""
        self._count += 1
        log = open(self.logdir / f"{label}-{self._count}.log", "wb")  # noqa: SIM115  # closed below
        try:
            env = {**os.environ, "PYTHONUNBUFFERED": "1"}
            proc = subprocess.Popen(
                self.command(role, *args), stdout=log, stderr=subprocess.STDOUT, env=env
            )
        finally:
            log.close()
        self.started.append((f"{label}-{self._count}", proc))
        return proc

    def broker(self, *args: str) -> subprocess.Popen[bytes]:
        """Start the broker on its host, bound to its 198.18 address (not loopback)."""
        return self.start(
            "broker", "broker", "-m", "zimg", "broker", "--bind", self.broker_url,
            "--insecure", *args,
        )  # fmt: skip

    def worker(self, role: str, *args: str) -> subprocess.Popen[bytes]:
        """Start a worker named ``role`` on that host."""
        return self.start(
            role, f"worker-{role}", "-m", "zimg", "worker", "--name", role,
            "--connect", self.broker_url, *args,
        )  # fmt: skip

    def send_command(self, outdir: Path, files: list[Path], *extra: str) -> list[str]:
        return self.command(
            "client", "-m", "zimg", "send", "--broker", self.broker_url, "-o", str(outdir),
            "--timeout", "60", *extra, *map(str, files),
        )  # fmt: skip

    def send(
        self, outdir: Path, files: list[Path], *extra: str, timeout_s: float = 90.0
    ) -> subprocess.CompletedProcess[str]:
        """Run ``zimg send`` on the client host and wait for it."""
        return subprocess.run(
            self.send_command(outdir, files, *extra),
            capture_output=True,
            text=True,
            timeout=timeout_s,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )

    def wait_ready(self, workers: list[str], timeout_s: float = 30.0) -> None:
        """Wait, from the client host, until the broker answers and ``workers`` joined.

        Fails early (with the logs) if a started process exits meanwhile.
        """
        helper = self.start(
            "client", "wait", "-c", _WAIT, self.broker_url, str(timeout_s), *workers
        )
        deadline = time.monotonic() + timeout_s + 10.0
        while True:
            try:
                code = helper.wait(0.05)
            except subprocess.TimeoutExpired:
                code = None
            if code == 0:
                return
            if code is not None:
                raise AssertionError(f"the cluster did not come up:\n{self.output()}")
            dead = [label for label, p in self.started if p is not helper and p.poll() is not None]
            if dead or time.monotonic() > deadline:
                stop_process(helper)
                raise AssertionError(f"{dead or 'timeout'}: cluster not up:\n{self.output()}")

    def output(self) -> str:
        """Everything the processes printed, for a failing test's message."""
        parts = []
        for path in sorted(self.logdir.glob("*.log")):
            parts.append(f"----- {path.name}\n{path.read_text(errors='replace')}")
        return "\n".join(parts)

    # ------------------------------------------------------------------ teardown

    def teardown(self) -> None:
        """Stop every process, kill what is left in each namespace, delete the namespaces."""
        for _, proc in reversed(self.started):
            stop_process(proc, timeout_s=3.0)
        for role in ROLES:
            if self.ns[role] in self.created:
                self.kill_host(role)
        for _, proc in self.started:
            proc.wait(10)
        for ns in reversed(self.created):
            subprocess.run([self.ip, "netns", "del", ns], capture_output=True, timeout=30)
        self.created.clear()


def _remove_stale(ip: str) -> None:
    """Delete namespaces left by earlier runs of this suite whose pytest process is gone."""
    listing = subprocess.run([ip, "netns", "list"], capture_output=True, text=True, timeout=30)
    for line in listing.stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        match = _STALE.match(name)
        if match is None or _alive(int(match.group(1))):
            continue
        pids = subprocess.run([ip, "netns", "pids", name], capture_output=True, text=True).stdout
        for pid in map(int, pids.split()):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        subprocess.run([ip, "netns", "del", name], capture_output=True, timeout=30)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@pytest.fixture
def hosts(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Hosts]:
    """Broker, w1, w2 and client hosts; ``request.param`` (indirect), if any, is a tbf rate."""
    ip = shutil.which("ip")
    if ip is None:
        pytest.skip("no `ip` binary (iproute2) on PATH")
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    _remove_stale(ip)
    net = Hosts(ip, tmp_path / "logs")
    try:
        try:
            net.build()
            rate = getattr(request, "param", None)
            if rate is not None:
                net.limit(rate)
        except Unavailable as exc:
            pytest.skip(f"cannot build network namespaces here: {exc}")
        yield net
    finally:
        net.teardown()
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        print(net.output())
