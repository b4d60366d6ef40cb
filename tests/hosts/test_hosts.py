"""Broker, workers and client on different hosts (network namespaces on a bridge)."""

from __future__ import annotations

import re
import signal
import subprocess
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.hosts.conftest import Hosts
from tests.reference import check_output, copies, manifest

SLOW_OPS = '''\
"""A slow pass-through op, and a mark file per call (to see that a worker has started a job)."""

import time
from pathlib import Path

from zimg.ops import op


@op
def slow(image, seconds=0.25, marks="", node=""):
    if marks:
        Path(marks, f"{node}-{time.monotonic_ns()}").touch()
    time.sleep(seconds)
    return image.copy()
'''


def photos(target: Path, n: int) -> list[Path]:
    """Photo-like 1280x720 JPEGs at quality 90: gradients, a ripple, and noise."""
    target.mkdir(parents=True, exist_ok=True)
    y, x = np.mgrid[0:720, 0:1280].astype(np.float32)
    base = np.dstack([x / 1280 * 255, y / 720 * 255, (x + y) / 2000 * 255])
    base += (40 * np.sin(x / 37) * np.cos(y / 23))[..., None]
    files = []
    for i in range(n):
        noise = np.random.default_rng(i).normal(0, 12, base.shape)
        img = np.clip(base + noise, 0, 255).astype(np.uint8)
        path = target / f"photo_{i:02d}.jpg"
        assert cv2.imwrite(str(path), img, [cv2.IMWRITE_JPEG_QUALITY, 90])
        files.append(path)
    return files


def check_all(outdir: Path, files: list[Path]) -> list[dict]:
    """Every input has exactly one manifest line and one pixel-exact output."""
    entries = manifest(outdir)
    assert sorted(e["input"] for e in entries) == sorted(map(str, files))
    assert len({e["output"] for e in entries}) == len(files)
    for entry in entries:
        check_output(entry)
    outputs = sorted(p.name for p in outdir.iterdir() if p.name != "manifest.jsonl")
    assert outputs == sorted(f"{f.stem}_processed{f.suffix}" for f in files)
    return entries


@pytest.mark.timeout(60)
def test_a_run_across_hosts_is_pixel_exact_and_uses_both_workers(hosts: Hosts, tmp_path, samples):
    for role in ("client", "w1"):
        routes = subprocess.run(
            [hosts.ip, "-n", hosts.ns[role], "route", "show", "default"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert routes.strip() == "", f"{role} has a default route: {routes}"
    hosts.broker()
    hosts.worker("w1")
    hosts.worker("w2")
    hosts.wait_ready(["w1", "w2"])
    files = copies(samples / "chelsea.jpg", tmp_path / "in", 16)
    result = hosts.send(tmp_path / "out", files)
    assert result.returncode == 0, result.stdout + result.stderr
    entries = check_all(tmp_path / "out", files)
    assert {e["node"] for e in entries} == {"w1", "w2"}
    assert "per node" in result.stdout


@pytest.mark.timeout(90)
@pytest.mark.parametrize("hosts", ["100mbit"], indirect=True)
def test_b_encoded_beats_raw_on_a_100mbit_network(hosts: Hosts, tmp_path):
    hosts.broker()
    hosts.worker("w1")
    hosts.worker("w2")
    hosts.wait_ready(["w1", "w2"])
    files = photos(tmp_path / "in", 12)
    wall: dict[str, float] = {}
    batch: dict[str, str] = {}
    sent: dict[str, int] = {}
    for mode in ("encoded", "raw"):  # encoded first: it pays for any warm-up
        outdir = tmp_path / f"out-{mode}"
        before = hosts.sent_bytes("broker")
        start = time.perf_counter()
        result = hosts.send(outdir, files, "--payload", mode)
        wall[mode] = time.perf_counter() - start
        sent[mode] = hosts.sent_bytes("broker") - before
        assert result.returncode == 0, result.stdout + result.stderr
        found = re.search(r"inputs in ([\d.]+) s", result.stdout)
        batch[mode] = found.group(1) if found else "?"
        check_all(outdir, files)
    for mode in wall:
        print(
            f"\n{mode:>7}: {wall[mode]:.2f} s wall ({batch[mode]} s batch), "
            f"broker sent {sent[mode] / 1e6:.1f} MB, {len(files)} x 1280x720 at 100 Mbit/s"
        )
    assert wall["encoded"] < wall["raw"]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("unplug", [False, True], ids=["kill", "kill-and-unplug"])
def test_c_killing_a_worker_host_mid_run_loses_nothing(hosts: Hosts, tmp_path, samples, unplug):
    ops_file = tmp_path / "slowops.py"
    ops_file.write_text(SLOW_OPS)
    marks = tmp_path / "marks"
    marks.mkdir()
    # 0.5 s beats: a dead host is noticed in 1.5 s. Not shorter: a node sends its first beat
    # 1 s after joining whatever the broker asks, so a 0.25 s beat (0.75 s expiry) makes the
    # broker drop healthy nodes once right after they join.
    hosts.broker("--heartbeat", "0.5")
    hosts.worker("w1", "--import", str(ops_file))
    w2 = hosts.worker("w2", "--import", str(ops_file))
    hosts.wait_ready(["w1", "w2"])
    files = copies(samples / "chelsea.jpg", tmp_path / "in", 24)
    ops = ["--op", f"slow:seconds=0.25,marks={marks}", "--op", "threshold", "--op", "label"]
    outdir = tmp_path / "out"
    send = subprocess.Popen(
        hosts.send_command(outdir, files, *ops),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not any(p.name.startswith("w2-") for p in marks.iterdir()):
            assert send.poll() is None, "the batch ended before w2 started a job"
            assert time.monotonic() < deadline, "w2 never started a job"
            time.sleep(0.005)  # polling a directory: there is no event to wait on
        if unplug:
            hosts.unplug("w2")
        killed = hosts.kill_host("w2")
        assert w2.pid in killed
        assert send.poll() is None, "the kill was not mid-run"
        stdout, stderr = send.communicate(timeout=45)
    finally:
        if send.poll() is None:
            send.kill()
            send.communicate()
    assert w2.wait(10) == -signal.SIGKILL
    assert send.returncode == 0, stdout + stderr
    entries = check_all(outdir, files)
    assert {e["node"] for e in entries} <= {"w1", "w2"}
    assert any(e["attempts"] > 1 for e in entries), "no job was redelivered"
    assert not any(e["node"] == "w2" and e["attempts"] > 1 for e in entries)
    assert "node w1 is down" not in hosts.output(), "the surviving worker was dropped"


# Runs on the client host: 200 round trips with an echo on w2, then CHECK.
_LANE_CLIENT = """
import sys, time
import zimg
from zimg._lanes import State
url = sys.argv[1]
with zimg.connect(url, name="client", lanes=True) as node:
    echo = node.spawn("w2", "zimg.behaviours:echo")
    for i in range(200):
        node.send(echo, ("echo", node.self(), i))
        assert node.receive(timeout=10) == ("echo", i)
    lanes = node.connection.lanes
    CHECK
print("ok")
"""

_ON_THE_LANE = """
    assert lanes.endpoint.startswith("tcp://198.18.0.4:"), lanes.endpoint
    assert lanes.sent > 0 and lanes.received > 0, (lanes.sent, lanes.received)
    deadline = time.monotonic() + 10
    while True:  # w2's counts come with its heartbeats
        w2 = next(n for n in node.report()["nodes"] if n["name"] == "w2")
        if w2["lanes"]["received"] > 0 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert w2["lanes"]["endpoint"].startswith("tcp://198.18.0.3:"), w2["lanes"]
    assert w2["lanes"]["received"] > 0 and w2["lanes"]["sent"] > 0, w2["lanes"]
"""

_THROUGH_THE_BROKER = """
    lane = lanes.state("w2")
    assert lane is not None and lane.state is State.CONNECTING, lane
    assert lanes.sent == 0
"""


def run_lane_client(hosts: Hosts, check: str) -> None:
    """Run the lane client on the client host, with ``check`` at its end."""
    script = _LANE_CLIENT.replace("    CHECK\n", check.lstrip("\n"))
    result = subprocess.run(
        hosts.command("client", "-c", script, hosts.broker_url),
        capture_output=True,
        text=True,
        timeout=45,
    )
    assert result.returncode == 0, result.stdout + result.stderr + hosts.output()
    assert "ok" in result.stdout


@pytest.mark.timeout(60)
def test_d_lanes_bind_on_the_address_each_host_reaches_the_broker_from(hosts: Hosts):
    """Each node's lane listens on its own 198.18 address (found from the route to the broker,
    with no default route), and actor messages between two hosts go on it."""
    hosts.broker()
    hosts.worker("w2", "--lanes")
    hosts.wait_ready(["w2"])
    run_lane_client(hosts, _ON_THE_LANE)


@pytest.mark.timeout(60)
def test_e_a_lane_its_peer_cannot_reach_is_never_used(hosts: Hosts):
    """w2 listens for lanes on its loopback only: the client's lane to it never connects, so
    every message keeps going through the broker, and none is lost."""
    hosts.broker()
    hosts.worker("w2", "--lanes", "--lane-host", "127.0.0.1")
    hosts.wait_ready(["w2"])
    run_lane_client(hosts, _THROUGH_THE_BROKER)


_A_SILENT_PARTITION_OF_THE_LANE = """
    import subprocess
    w2 = next(n for n in node.report()["nodes"] if n["name"] == "w2")
    port = w2["lanes"]["endpoint"].rsplit(":", 1)[1]
    ref = node.monitor(echo)
    lane = lanes.state("w2")
    assert lane is not None and lane.state is State.ACTIVE and lane.connected, lane
    # Starve what the client sends to w2's lane port (8 bit/s: nothing gets through, with no
    # reset and no close); the broker's path is untouched, so neither node is down. (A class
    # of htb, as the kernels here lack tc's drop action and the prio and netem qdiscs.)
    for command in (
        "tc qdisc add dev eth0 root handle 1: htb default 10",
        "tc class add dev eth0 parent 1: classid 1:10 htb rate 10gbit",
        "tc class add dev eth0 parent 1: classid 1:20 htb rate 8bit ceil 8bit",
        f"tc filter add dev eth0 parent 1: protocol ip prio 1 u32 match ip dport {port} 0xffff"
        " flowid 1:20",
    ):
        subprocess.run(command.split(), check=True, capture_output=True)
    started = time.monotonic()
    assert node.receive(lambda m: m[0] == "DOWN", timeout=20) == ("DOWN", ref, echo, "noconnection")
    took = time.monotonic() - started
    assert 4.0 <= took <= 12.0, took  # 3 s without a ping's answer, then 2 s for a NODEDOWN
    assert lanes.broken == 1
    node.send(echo, ("echo", node.self(), "after"))  # the echo lives: through the broker now
    assert node.receive(timeout=10) == ("echo", "after")
"""


@pytest.mark.timeout(60)
def test_f_a_lane_cut_off_silently_is_broken_and_says_noconnection(hosts: Hosts):
    """The client's lane to w2 stops carrying anything (dropped on the way, with no reset),
    while both stay joined to the broker: the lane's pings go unanswered, the lane is declared
    broken, and the client's monitor of a process on w2 ends with noconnection."""
    if hosts.tc is None:
        pytest.skip("tc is not installed")
    hosts.broker()
    hosts.worker("w2", "--lanes")
    hosts.wait_ready(["w2"])
    run_lane_client(hosts, _A_SILENT_PARTITION_OF_THE_LANE)
