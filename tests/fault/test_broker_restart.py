"""The broker SIGKILLed mid-run and restarted on the same address: the workers and the sender
rejoin by themselves, the sender resends what was unanswered, and the output stays exactly once."""

from __future__ import annotations

import signal
import time

import pytest

from tests.fault.helpers import (
    BROKER_ARGS,
    EXPIRY_S,
    HEARTBEAT_S,
    MARGIN_S,
    SLOW_OPS,
    assert_clean_log,
    assert_no_tracebacks,
    kill,
    lines_written,
    make_images,
    nodes,
    report,
    start_send,
    wait_for,
)
from tests.fault.invariants import check_exactly_once
from zimg.cluster import wait_for_workers


@pytest.mark.timeout(60)
def test_broker_sigkill_and_restart_loses_nothing_and_writes_nothing_twice(
    procs, tcp_url, tmp_path
):
    broker = procs.broker(tcp_url, *BROKER_ARGS)
    started = {n: procs.worker(tcp_url, n, "--import", SLOW_OPS, wait=False) for n in ("n1", "n2")}
    wait_for_workers(tcp_url, list(started), timeout_s=30, processes=started)
    files = make_images(tmp_path / "in", 200, seed=2)
    out = tmp_path / "out"
    sender, log = start_send(procs, tcp_url, out, files, "--log-level", "info")
    wait_for(lambda: lines_written(out) >= 40, 20, "40 results")
    old_epoch = report(tcp_url)["epoch"]

    kill(broker, signal.SIGKILL)
    lines_at_kill = lines_written(out)
    restarted_at = time.monotonic()
    procs.broker(tcp_url, *BROKER_ARGS)
    up_s = time.monotonic() - restarted_at

    # Every node rejoins the new broker without being restarted: the workers, and the sender.
    def everyone_back() -> bool:
        table = nodes(tcp_url)
        return {"n1", "n2"} <= set(table) and any(n.startswith("send-") for n in table)

    wait_for(everyone_back, 15, "the workers and the sender to rejoin")
    rejoin_s = time.monotonic() - restarted_at - up_s
    # A node that hears nothing for EXPIRY_S reconnects on a fresh socket and says HELLO (and
    # says it again every heartbeat until welcomed), so it is back soon after the broker is.
    assert rejoin_s < EXPIRY_S + HEARTBEAT_S + MARGIN_S, f"rejoined {rejoin_s:.2f} s after"
    new = report(tcp_url)
    assert new["epoch"] != old_epoch
    assert lines_at_kill < len(files), "the run ended before the broker was killed"

    assert sender.wait(45) == 0, log.read_text()
    text = log.read_text()
    assert_clean_log(text, expected=("lost the broker",))  # its own loss detection, a warning
    assert "rejoined the broker" in text
    assert "resending" in text  # the unanswered jobs went to the new broker
    check_exactly_once(out, files)
    stats = report(tcp_url)["stats"]
    assert stats["jobs_failed"] == 0
    assert all(proc.poll() is None for proc in started.values())  # same worker processes
    print(f"\nMEASURED broker up in {up_s:.3f} s; all rejoined {rejoin_s:.3f} s after that")
    assert_no_tracebacks(procs)
