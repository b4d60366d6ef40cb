"""A real broker process against thousands of simulated nodes (``zimg.bench.simnodes``): mass
death, mass departure, frozen thousands beside healthy nodes, and a broker out of file
descriptors. Nothing here is about speed: only survival, answers and who is declared dead.

The same tests can be pointed at another checkout's broker (to see what they catch):
``ZIMG_SCALE_BROKER_PYTHONPATH=/tmp/old`` starts the broker with that ``PYTHONPATH``, and
``ZIMG_SCALE_HELLO_VERSION=2`` makes the simulated nodes say that protocol version in HELLO.
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from zimg import protocol
from zimg.bench.scale import BrokerProcess, NodesProbe
from zimg.bench.simnodes import SimNodes, SimProcess
from zimg.testing import Processes, wait_for_broker

pytestmark = pytest.mark.slow

OLD_BROKER = os.environ.get("ZIMG_SCALE_BROKER_PYTHONPATH")
HELLO_VERSION = os.environ.get("ZIMG_SCALE_HELLO_VERSION", str(protocol.PROTOCOL_VERSION))
NODES_ANSWER_S = 2.0  # a broker that lives answers NODES within this, even right after a storm


@pytest.fixture
def probe(tcp_url: str) -> Iterator[NodesProbe]:
    """A DEALER that asks the broker at ``tcp_url`` for NODES (it need not be up yet)."""
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    asker = NodesProbe(tcp_url, ctx)
    yield asker
    asker.close()
    ctx.term()


@pytest.fixture
def sims(procs: Processes) -> Iterator[list[SimProcess]]:
    """Simulated-node processes started by a test; continued (if stopped) and reaped after it."""
    started: list[SimProcess] = []
    yield started
    for sim in started:
        sim.stop()
        procs.logdir.joinpath(f"sim-{sim.pid}.out").write_text("\n".join(sim.lines))


def start_broker(
    procs: Processes, url: str, *args: str, low_fd_limit: int | None = None
) -> subprocess.Popen[bytes]:
    """A ``zimg broker`` process (with another checkout's code if the environment says so)."""
    env = dict(os.environ)
    if OLD_BROKER:
        env["PYTHONPATH"] = OLD_BROKER

    def limit() -> None:
        if low_fd_limit is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (low_fd_limit, low_fd_limit))

    broker = BrokerProcess(
        url,
        *args,
        log=procs.logdir / "broker.log",
        env=env,
        preexec_fn=limit,
        cwd=Path(OLD_BROKER) if OLD_BROKER else None,  # `python -m` looks in its folder first
    )
    procs.started.append(("broker", broker.proc))
    wait_for_broker(url, timeout_s=15.0, process=broker.proc)
    return broker.proc


def start_sims(
    sims: list[SimProcess], procs: Processes, url: str, count: int, *args: str
) -> SimProcess:
    sim = SimProcess(
        url,
        count,
        "--version",
        HELLO_VERSION,
        *args,
        log=procs.logdir / f"sim-{len(sims)}.log",
    )
    sims.append(sim)
    return sim


def wait_count(probe: NodesProbe, target: int, timeout_s: float, what: str) -> None:
    """Poll NODES until the broker counts ``target`` nodes."""
    deadline = time.monotonic() + timeout_s
    seen = None
    while time.monotonic() < deadline:
        try:
            seen = probe.count(timeout_s=NODES_ANSWER_S)
        except TimeoutError:
            seen = "no answer"
        if seen == target:
            return
        time.sleep(0.1)
    pytest.fail(f"{what}: the broker counts {seen} nodes, not {target}, after {timeout_s} s")


def ask(probe: NodesProbe, after: str | None = None) -> dict[str, Any]:
    """One NODES page; fails the test unless it comes within ``NODES_ANSWER_S``."""
    try:
        header, _ = probe.ask(NODES_ANSWER_S, after=after)
    except TimeoutError:
        pytest.fail(f"NODES was not answered within {NODES_ANSWER_S} s")
    return header


def healthy_entries(probe: NodesProbe) -> dict[str, dict[str, Any]]:
    """The NODES entries of h0, h1 and h2: the page after "g", past every frozen "f..." (a
    broker that does not page sends them all)."""
    return {e["name"]: e for e in ask(probe, after="g")["nodes"] if e["name"].startswith("h")}


@pytest.mark.timeout(60)
def test_mass_kill_of_1000_nodes_leaves_the_broker_alive(
    procs: Processes, tcp_url: str, sims: list[SimProcess], probe: NodesProbe
) -> None:
    broker = start_broker(procs, tcp_url)
    sim = start_sims(sims, procs, tcp_url, 1000, "--prefix", "w", "--per-host", "1")
    sim.wait_ready(40.0)
    wait_count(probe, 1000, 20.0, "joining")

    sim.kill()  # SIGKILL: the kernel closes 1,000 connections at once
    sim.proc.wait(10.0)
    ask(probe)  # right after the kill
    wait_count(probe, 0, 30.0, "after the kill")
    ask(probe)
    assert broker.poll() is None, f"the broker exited with code {broker.returncode}"


@pytest.mark.timeout(60)
def test_1000_nodes_leaving_at_once_leave_the_broker_alive(
    procs: Processes, tcp_url: str, sims: list[SimProcess], probe: NodesProbe
) -> None:
    broker = start_broker(procs, tcp_url)
    # Actor hosts of a real cluster watch each other; plain workers will do for the departure.
    sim = start_sims(sims, procs, tcp_url, 1000, "--prefix", "w")
    sim.wait_ready(40.0)
    wait_count(probe, 1000, 20.0, "joining")

    sim.send_signal(signal.SIGUSR1)  # every node sends DISCONNECT, within a fraction of a second
    left = int(sim.wait_line("left ", 10.0).split()[1])
    assert left == 1000
    ask(probe)
    wait_count(probe, 0, 30.0, "after the departure")
    ask(probe)
    assert broker.poll() is None, f"the broker exited with code {broker.returncode}"


@pytest.mark.timeout(60)
def test_frozen_thousands_do_not_take_healthy_nodes_with_them(
    procs: Processes, tcp_url: str, sims: list[SimProcess], probe: NodesProbe
) -> None:
    interval, liveness = 0.5, 3
    broker = start_broker(procs, tcp_url, "--heartbeat", str(interval), "--liveness", str(liveness))
    frozen = start_sims(sims, procs, tcp_url, 1000, "--prefix", "f")
    healthy = start_sims(sims, procs, tcp_url, 3, "--prefix", "h")
    frozen.wait_ready(40.0)
    healthy.wait_ready(10.0)
    wait_count(probe, 1003, 20.0, "joining")
    before = healthy_entries(probe)
    assert sorted(before) == ["h0", "h1", "h2"]
    down_before = ask(probe)["stats"]["nodes_down"]

    frozen.send_signal(signal.SIGSTOP)
    stopped_at = time.monotonic()
    wait_count(probe, 3, 30.0, "the frozen nodes are dropped")
    while time.monotonic() - stopped_at < interval * liveness + 1.0:  # well past the bound
        time.sleep(0.1)

    elapsed = time.monotonic() - stopped_at
    after = healthy_entries(probe)
    assert sorted(after) == ["h0", "h1", "h2"]
    for name, entry in after.items():
        assert entry["incarnation"] == before[name]["incarnation"]
        # Never dropped and re-admitted: its time in the broker's table ran on.
        assert entry["uptime_s"] >= before[name]["uptime_s"] + elapsed - 0.5, (before, after)
    status = healthy.status()
    assert status["disconnects"] == 0, status  # the broker never forgot them
    assert status["lost"] == 0, status  # and they always heard from it
    assert ask(probe)["stats"]["nodes_down"] - down_before == 1000
    frozen.send_signal(signal.SIGCONT)
    assert broker.poll() is None


@pytest.mark.timeout(60)
def test_a_broker_out_of_file_descriptors_refuses_nodes_with_the_reason(
    procs: Processes, tcp_url: str, probe: NodesProbe
) -> None:
    broker = start_broker(procs, tcp_url, low_fd_limit=256)
    nodes = SimNodes(tcp_url, 300, prefix="w", version=int(HELLO_VERSION), join_window=0)
    with nodes:
        nodes.wait_settled(40.0)  # each node welcomed or refused
        status = nodes.status()
        assert status["refused"] > 0, status
        assert status["refusals"] == {protocol.REJECT_LIMIT: status["refused"]}, status
        reason = status["first_refusal"]["reason"]
        assert "limit of" in reason, reason
        assert "ulimit -n 256" in reason, reason
        assert ask(probe)["count"] == status["ready"]
    assert broker.poll() is None


@pytest.mark.timeout(120)
def test_the_scale_harness_runs_end_to_end(tmp_path: Path) -> None:
    """A reduced ``python -m zimg.bench.scale``: it must finish, print the table, and the broker
    must survive every mass kill (speed is not judged)."""
    cmd = [
        sys.executable,
        "-m",
        "zimg.bench.scale",
        "--sizes",
        "10,100",
        "--jobs",
        "300",
        "--idle",
        "0.5",
        "--frozen",
        "100",
        "--json",
        str(tmp_path / "scale.json"),
        "--workdir",
        str(tmp_path / "work"),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=110, check=False)
    report = f"exit code {proc.returncode}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
    assert proc.returncode == 0, report
    assert "Traceback" not in proc.stderr, report
    assert "| 100 | placed, 1/host |" in proc.stdout, report
    assert "DIED" not in proc.stdout, report
    assert "none of 3 healthy ones declared dead — met" in proc.stdout, report
