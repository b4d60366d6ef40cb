"""The scale harness's frozen check: workers SIGSTOPped past the liveness bound beside healthy
ones, none of which may be declared dead."""

from __future__ import annotations

import signal
import time
from dataclasses import dataclass, field
from typing import Any

import zmq

from zimg import protocol
from zimg.bench.broker_process import BrokerProcess, NodesProbe
from zimg.bench.scale_runs import Options, progress, start_sims, wait_joined
from zimg.bench.simnodes import SimProcess
from zimg.testing import free_tcp_url


@dataclass
class Frozen:
    frozen: int
    healthy: int
    frozen_s: float | None = None
    dropped_s: float | None = None
    nodes_down: int | None = None
    healthy_declared_dead: bool | None = None
    healthy_disconnects: int | None = None
    healthy_lost: int | None = None
    healthy_uptime_ok: bool | None = None
    rejoined_s: float | None = None
    survived: bool | None = None
    notes: list[str] = field(default_factory=list)


def _healthy_entries(probe: NodesProbe) -> dict[str, dict[str, Any]]:
    """The NODES entries of the healthy nodes (``h0`` to ``h2``: the page after ``g``, past
    every frozen ``f...``)."""
    header, _ = probe.ask(5.0, after="g")
    return {e["name"]: e for e in header["nodes"] if e["name"].startswith("h")}


def frozen_check(opts: Options, context: zmq.Context[zmq.Socket[bytes]]) -> Frozen:
    """``opts.frozen`` workers SIGSTOPped past the liveness bound, 3 healthy ones beside."""
    result = Frozen(frozen=opts.frozen, healthy=3)
    url = free_tcp_url()
    broker = BrokerProcess(url, *opts.broker_args, log=opts.workdir / "broker-frozen.log")
    probe = NodesProbe(url, context)
    sims: list[SimProcess] = []
    try:
        probe.wait_count(0, 15.0)
        progress(f"frozen check: {opts.frozen} nodes to freeze, 3 healthy")
        frozen = start_sims(url, opts.frozen, opts, "f", [], "frozen")
        healthy = SimProcess(url, 3, "--prefix", "h", log=opts.workdir / "sim-healthy.log")
        sims = [*frozen, healthy]
        wait_joined(sims, probe, opts.frozen + 3, timeout_s=30.0 + opts.frozen / 50)
        before = _healthy_entries(probe)
        down0 = probe.ask(5.0)[0]["stats"]["nodes_down"]
        bound = opts.heartbeat_s * protocol.DEFAULT_LIVENESS
        stopped_at = time.monotonic()
        for sim in frozen:
            sim.send_signal(signal.SIGSTOP)
        result.dropped_s = round(probe.wait_count(3, 30.0 + opts.frozen / 100), 2)
        # Stay frozen well past the bound, whatever the drop took.
        while time.monotonic() - stopped_at < bound + 3.0:
            time.sleep(0.1)
        result.frozen_s = round(time.monotonic() - stopped_at, 2)
        after = _healthy_entries(probe)
        header, _ = probe.ask(5.0)
        result.nodes_down = header["stats"]["nodes_down"] - down0
        elapsed = time.monotonic() - stopped_at
        result.healthy_uptime_ok = set(after) == set(before) and all(
            after[k]["incarnation"] == before[k]["incarnation"]
            and after[k]["uptime_s"] >= before[k]["uptime_s"] + elapsed - 1.0
            for k in before
        )
        status = healthy.status()
        result.healthy_disconnects = status["disconnects"]
        result.healthy_lost = status["lost"]
        result.healthy_declared_dead = not (
            result.healthy_uptime_ok
            and status["disconnects"] == 0
            and status["lost"] == 0
            and result.nodes_down <= opts.frozen
        )
        progress("frozen check: SIGCONT")
        for sim in frozen:
            sim.send_signal(signal.SIGCONT)
        try:
            result.rejoined_s = round(probe.wait_count(opts.frozen + 3, 30.0 + opts.frozen / 50), 2)
        except TimeoutError as exc:
            result.notes.append(f"after SIGCONT: {exc}")
        result.survived = broker.alive()
    except (TimeoutError, RuntimeError) as exc:
        result.notes.append(str(exc))
        progress(f"frozen check: {exc}")
    finally:
        for sim in sims:
            sim.stop()
        probe.close()
        if result.survived is None:
            result.survived = broker.alive()
        broker.stop()
    return result
