"""A failover pair of brokers (issue 17, Binary Star): the active one SIGKILLed mid-run, the
backup SIGKILLed, and the peer link between them cut while the nodes still reach the primary."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import pytest

from tests.fault.helpers import (
    EXPIRY_S,
    HEARTBEAT_S,
    MARGIN_S,
    SLOW_OPS,
    Pair,
    assert_clean_log,
    assert_no_tracebacks,
    kill,
    lines_written,
    make_images,
    nodes,
    report,
    start_send,
    wait_for,
    wait_pair_ready,
)
from tests.fault.invariants import check_exactly_once
from tests.fault.proxy import TcpProxy
from zimg._errors import ZimgTimeout
from zimg.cluster import wait_for_workers
from zimg.testing import Processes

FAILOVER_S = EXPIRY_S  # the brokers' default failover timeout: liveness x heartbeat
WORKERS = ("n1", "n2")


def start_workers(procs: Processes, pair: Pair) -> dict[str, Any]:
    started = {n: procs.worker(pair.urls, n, "--import", SLOW_OPS, wait=False) for n in WORKERS}
    wait_for_workers(pair.primary_url, list(started), timeout_s=30, processes=started)
    return started


def failover_of(url: str) -> dict[str, Any] | None:
    """The ``failover`` part of a broker's NODES report, or None if it does not answer."""
    try:
        return dict(report(url)["failover"])
    except ZimgTimeout:
        return None


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


@pytest.mark.timeout(90)
def test_killing_the_active_broker_mid_run_the_backup_takes_over_and_nothing_is_lost(
    procs: Processes, tmp_path: Path
) -> None:
    # 600 images of 64x64, one per job, each op sleeping 40 ms: ~15 s on 2 cores.
    pair = Pair.on_loopback()
    pair.start_primary(procs)
    pair.start_backup(procs)
    wait_pair_ready(pair)
    workers = start_workers(procs, pair)
    files = make_images(tmp_path / "in", 600, seed=17)
    out = tmp_path / "out"
    sender, log = start_send(procs, pair.urls, out, files, "--log-level", "info")
    wait_for(lambda: lines_written(out) >= 60, 30, "60 results")
    assert pair.primary is not None

    killed_at = kill(pair.primary, signal.SIGKILL)
    lines_at_kill = lines_written(out)
    active_s = answered_s = None
    deadline = killed_at + 15
    while answered_s is None and time.monotonic() < deadline:
        state = failover_of(pair.backup_url)
        if state is not None and state["state"] == "active" and active_s is None:
            active_s = time.monotonic() - killed_at
        if state is not None and report(pair.backup_url)["stats"]["jobs_done"] > 0:
            answered_s = time.monotonic() - killed_at
        time.sleep(0.01)
    assert answered_s is not None, "the backup answered no job within 15 s of the kill"
    assert active_s is not None

    def everyone_on_the_backup() -> bool:
        table = nodes(pair.backup_url)
        return set(WORKERS) <= set(table) and any(n.startswith("send-") for n in table)

    wait_for(everyone_on_the_backup, 15, "the workers and the sender to rejoin the backup")
    assert lines_at_kill < len(files), "the run ended before the broker was killed"
    assert sender.wait(60) == 0, log.read_text()
    text = log.read_text()
    assert_clean_log(text, expected=("lost the broker",))  # its own loss detection, a warning
    assert f"rejoined the broker at {pair.backup_url}" in text
    assert "resending" in text  # the unanswered jobs went to the backup
    check_exactly_once(out, files)
    assert report(pair.backup_url)["stats"]["jobs_failed"] == 0
    assert all(proc.poll() is None for proc in workers.values())  # the same worker processes
    # The bound: nodes notice the silence after liveness x heartbeat, the backup takes the first
    # HELLO after the failover timeout, and a node says HELLO again every heartbeat.
    assert answered_s <= FAILOVER_S + HEARTBEAT_S + MARGIN_S, f"took {answered_s:.2f} s"
    print(
        f"\nMEASURED failover: primary SIGKILLed -> backup active {active_s:.3f} s, "
        f"first job answered by the backup {answered_s:.3f} s "
        f"(failover timeout {FAILOVER_S} s, heartbeat {HEARTBEAT_S} s)"
    )
    assert_no_tracebacks(procs)


@pytest.mark.timeout(60)
def test_killing_the_backup_changes_nothing_for_the_nodes(procs: Processes, tmp_path: Path) -> None:
    pair = Pair.on_loopback()
    pair.start_primary(procs)
    pair.start_backup(procs)
    wait_pair_ready(pair)
    workers = start_workers(procs, pair)
    files = make_images(tmp_path / "in", 200, seed=18)
    out = tmp_path / "out"
    sender, log = start_send(procs, pair.urls, out, files, "--log-level", "info")
    wait_for(lambda: lines_written(out) >= 30, 30, "30 results")
    assert pair.backup is not None

    killed_at = kill(pair.backup, signal.SIGKILL)
    lines_at_kill = lines_written(out)

    def primary_saw_it() -> bool:
        state = failover_of(pair.primary_url)
        return state is not None and (state["peer_silent_s"] or 0) > FAILOVER_S

    wait_for(primary_saw_it, 15, "the primary to notice its peer's silence")
    assert failover_of(pair.primary_url)["state"] == "active"  # type: ignore[index]
    assert lines_at_kill < len(files), "the run ended before the backup was killed"
    assert sender.wait(45) == 0, log.read_text()
    assert_clean_log(log.read_text())  # not even a loss warning: the sender never noticed
    check_exactly_once(out, files)
    # The workers never left the primary: the sessions they had before the kill go on.
    since_kill = time.monotonic() - killed_at
    table = nodes(pair.primary_url)
    assert all(table[n]["uptime_s"] > since_kill for n in WORKERS), table
    assert all(proc.poll() is None for proc in workers.values())
    for path in procs.logdir.glob("worker-*.log"):
        assert "lost the broker" not in path.read_text()
    assert_no_tracebacks(procs)


@pytest.mark.timeout(60)
def test_a_cut_peer_link_never_makes_two_active_brokers(procs: Processes, tmp_path: Path) -> None:
    """Loopback variant of the split: each broker hears the other through a TCP proxy, which
    the test cuts while the nodes keep working through the primary (tests/hosts has none: a
    pair needs a second link between two hosts)."""
    pair = Pair.on_loopback()
    to_primary = TcpProxy(port_of(pair.primary_peer_bind))
    to_backup = TcpProxy(port_of(pair.backup_peer_bind))
    try:
        pair.start_primary(procs, peer=to_backup.url)
        pair.start_backup(procs, peer=to_primary.url)
        wait_pair_ready(pair)
        start_workers(procs, pair)
        files = make_images(tmp_path / "in", 300, seed=19)
        out = tmp_path / "out"
        sender, log = start_send(procs, pair.urls, out, files, "--log-level", "info")
        wait_for(lambda: lines_written(out) >= 20, 30, "20 results")

        to_primary.cut()
        to_backup.cut()
        samples: list[tuple[float, str | None, str | None]] = []

        def both_silent_long_enough() -> bool:
            p, b = failover_of(pair.primary_url), failover_of(pair.backup_url)
            samples.append((time.monotonic(), p and p["state"], b and b["state"]))
            assert not (p and b and p["state"] == "active" and b["state"] == "active")
            silent = [s["peer_silent_s"] or 0 for s in (p, b) if s is not None]
            return len(silent) == 2 and min(silent) > 3 * FAILOVER_S

        wait_for(both_silent_long_enough, 20, "both brokers to hear nothing for 3 timeouts")
        assert lines_written(out) < len(files), "the run ended before the split was long"
        assert {s[1] for s in samples} == {"active"}
        assert {s[2] for s in samples} == {"passive"}

        # The link heals: the brokers are in touch again, the backup still passive.
        to_primary = TcpProxy(port_of(pair.primary_peer_bind), port=to_primary.port)
        to_backup = TcpProxy(port_of(pair.backup_peer_bind), port=to_backup.port)

        def in_touch() -> bool:
            b = failover_of(pair.backup_url)
            return b is not None and b["peer_silent_s"] is not None and b["peer_silent_s"] < 1

        wait_for(in_touch, 15, "the backup to hear the primary again")
        assert failover_of(pair.backup_url)["state"] == "passive"  # type: ignore[index]
        assert failover_of(pair.primary_url)["state"] == "active"  # type: ignore[index]

        assert sender.wait(45) == 0, log.read_text()
        assert_clean_log(log.read_text())
        check_exactly_once(out, files)
        backup_log = next(procs.logdir.glob("broker-2.log")).read_text()
        assert "now active" not in backup_log, backup_log
        assert "silent" in backup_log  # it did notice the split
        print(
            f"\nMEASURED split: {len(samples)} samples of both brokers over "
            f"{samples[-1][0] - samples[0][0]:.1f} s of a cut peer link, never two active"
        )
    finally:
        to_primary.cut()
        to_backup.cut()
    assert_no_tracebacks(procs)
