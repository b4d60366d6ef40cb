"""A failover pair on two hosts, joined by their own link for the peer link (issue 17): that link
is taken down (``ip link set down``) while every node still reaches both brokers over the bridge.
The backup must never become active.

Hosts (the ``hosts`` fixture, plus one veth pair)::

    <P>-broker (the primary) 198.18.0.1 ─┐            ┌─ 198.18.1.1 peerA
    <P>-w2     (the backup)  198.18.0.3 ─┤ bridge     └─ 198.18.1.2 peerB (veth, the peer link)
    <P>-w1     (worker w1)   198.18.0.2 ─┤
    <P>-client (send, sampler) 198.18.0.4┘
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.fault.helpers import (
    BROKER_ARGS,
    EXPIRY_S,
    SLOW_OPS,
    lines_written,
    make_images,
    wait_for,
)
from tests.fault.invariants import check_exactly_once
from tests.hosts.conftest import Hosts

PRIMARY, BACKUP = "tcp://198.18.0.1:5555", "tcp://198.18.0.3:5555"
PEER_A, PEER_B = "tcp://198.18.1.1:5556", "tcp://198.18.1.2:5556"
FAILOVER_S = EXPIRY_S

# Runs on the client host: ask both brokers for their failover state until a condition holds,
# printing one JSON line per sample; exits 0 when the condition held, 1 at the deadline.
_SAMPLE = """
import json, sys, time
from zimg.nodes_query import query_nodes
from zimg._errors import ZimgTimeout
urls, until, limit, deadline = sys.argv[1:3], sys.argv[3], float(sys.argv[4]), float(sys.argv[5])
end = time.monotonic() + deadline
while time.monotonic() < end:
    row = []
    for url in urls:
        try:
            row.append(query_nodes(url, timeout_s=1.0)["failover"])
        except ZimgTimeout:
            row.append(None)
    print(json.dumps(row), flush=True)
    p, b = row
    if p and b:
        if until == "ready" and p["state"] == "active" and b["state"] == "passive":
            sys.exit(0)
        silent = [s["peer_silent_s"] for s in row]
        if until == "split" and None not in silent and min(silent) > limit:
            sys.exit(0)
        if until == "healed" and silent[1] is not None and silent[1] < limit:
            sys.exit(0)
    time.sleep(0.02)
sys.exit(1)
"""


def sample(hosts: Hosts, until: str, limit: float, deadline_s: float) -> list[list[dict | None]]:
    """Sample both brokers' states from the client host until ``until`` holds."""
    cmd = hosts.command("client", "-c", _SAMPLE, PRIMARY, BACKUP, until, str(limit), "20")
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=deadline_s)
    rows = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("[")]
    assert done.returncode == 0, f"{until} not reached: {rows[-3:]}\n{done.stderr}"
    return rows


@pytest.mark.timeout(120)
def test_cutting_only_the_peer_link_never_makes_two_active_brokers(
    hosts: Hosts, tmp_path: Path
) -> None:
    ip = hosts.ip
    link = ["-n", hosts.ns["broker"], "link"]
    subprocess.run(
        [ip, *link, "add", "peerA", "type", "veth", "peer", "name", "peerB",
         "netns", hosts.ns["w2"]],
        check=True, timeout=30,
    )  # fmt: skip
    for ns, dev, addr in (("broker", "peerA", "198.18.1.1"), ("w2", "peerB", "198.18.1.2")):
        subprocess.run(
            [ip, "-n", hosts.ns[ns], "addr", "add", f"{addr}/30", "dev", dev], check=True
        )
        subprocess.run([ip, "-n", hosts.ns[ns], "link", "set", dev, "up"], check=True)

    common = ("--insecure", *BROKER_ARGS)
    hosts.start(
        "broker", "primary", "-m", "zimg", "broker", "--primary", "--bind", PRIMARY,
        "--peer-bind", PEER_A, "--peer", PEER_B, *common,
    )  # fmt: skip
    hosts.start(
        "w2", "backup", "-m", "zimg", "broker", "--backup", "--bind", BACKUP,
        "--peer-bind", PEER_B, "--peer", PEER_A, *common,
    )  # fmt: skip
    pair = f"{PRIMARY},{BACKUP}"
    hosts.start(
        "w1", "worker-w1", "-m", "zimg", "worker", "--name", "w1", "--connect", pair,
        "--import", SLOW_OPS,
    )  # fmt: skip
    hosts.wait_ready(["w1"])  # at the primary (hosts.broker_url)
    sample(hosts, "ready", 0, 30)

    files = make_images(tmp_path / "in", 400, seed=20)
    out = tmp_path / "out"
    sender = hosts.start(
        "client", "send", "-m", "zimg", "send", "--broker", pair, "-o", str(out),
        "--timeout", "60", "--import", SLOW_OPS, "--job-items", "1",
        "--op", "threshold", "--op", "label", "--op", "sleepy:ms=40", *map(str, files),
    )  # fmt: skip
    wait_for(lambda: lines_written(out) >= 20, 30, "20 results")

    subprocess.run([ip, *link, "set", "peerA", "down"], check=True, timeout=30)
    split = sample(hosts, "split", 3 * FAILOVER_S, 40)
    assert lines_written(out) < len(files), "the run ended before the split was long"
    for primary, backup in split:
        assert primary is not None
        assert backup is not None
        assert primary["state"] == "active", primary
        assert backup["state"] == "passive", backup

    subprocess.run([ip, *link, "set", "peerA", "up"], check=True, timeout=30)
    rows = sample(hosts, "healed", 1.0, 40)
    assert rows[-1][0]["state"] == "active"
    assert rows[-1][1]["state"] == "passive"

    assert sender.wait(60) == 0, hosts.output()
    check_exactly_once(out, files)
    backup_log = next(hosts.logdir.glob("backup-*.log")).read_text()
    assert "now active" not in backup_log, backup_log
    assert "silent" in backup_log  # it did notice the split
    print(f"\nMEASURED netns split: {len(split)} samples of both brokers, never two active")
