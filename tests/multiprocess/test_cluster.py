"""The whole path with real processes: `python -m zimg broker`, `worker` and `send`."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.reference import check_output, copies, manifest
from zimg._affinity import usable_cpus
from zimg.batch import BatchOptions, run_batch
from zimg.cluster import wait_for_workers
from zimg.connection import Connection
from zimg.nodes_query import query_nodes

pytestmark = pytest.mark.timeout(120)


def send(
    url: str, outdir: Path, *files: Path, extra: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    cmd = [
        sys.executable,
        "-m",
        "zimg",
        "send",
        "--broker",
        url,
        "-o",
        str(outdir),
        "--timeout",
        "60",
    ]
    cmd += [*extra, *map(str, files)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=90)


@pytest.mark.parametrize("workers", [1, 2, 4])
def test_32_copies_over_workers_are_pixel_exact(procs, tcp_url, tmp_path, samples, workers):
    procs.broker(tcp_url)
    names = [f"n{i + 1}" for i in range(workers)]
    for name in names:
        procs.worker(tcp_url, name, wait=False)
    wait_for_workers(tcp_url, names, timeout_s=30)
    files = copies(samples / "chelsea.jpg", tmp_path / "in", 32)
    result = send(tcp_url, tmp_path / "out", *files)
    assert result.returncode == 0, result.stderr
    entries = manifest(tmp_path / "out")
    assert len(entries) == 32
    assert sorted(e["input"] for e in entries) == sorted(map(str, files))
    assert len({e["output"] for e in entries}) == 32
    # One job per CPU at once: with more workers than CPUs, the others stand by.
    used = {e["node"] for e in entries}
    assert used <= set(names)
    assert len(used) >= min(workers, len(usable_cpus()))
    for entry in entries:
        assert entry["attempts"] == 1
        check_output(entry)
    assert sorted(p.name for p in (tmp_path / "out").glob("*.jpg")) == sorted(
        f"img_{i:02d}_processed.jpg" for i in range(32)
    )
    assert "per node" in result.stdout


def _image_kinds(target: Path, samples: Path) -> list[Path]:
    """Grayscale JPEG and PNG, BGR, BGRA, and 16-bit gray and colour PNGs."""
    target.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    y, x = np.mgrid[0:120, 0:160]
    gradient = (x * 400 + y * 100).astype(np.uint16)
    made = {
        "rgba.png": np.dstack(
            [rng.integers(0, 256, (120, 160, 3), np.uint8), (x % 256).astype(np.uint8)]
        ),
        "gray16.png": gradient,
        "bgr16.png": np.dstack([gradient, gradient[::-1], gradient[:, ::-1]]),
    }
    files = []
    for name, arr in made.items():
        assert cv2.imwrite(str(target / name), arr)
        files.append(target / name)
    for name in ("brick.jpg", "coins.png", "chelsea.jpg"):
        shutil.copyfile(samples / name, target / name)
        files.append(target / name)
    return files


@pytest.mark.parametrize("mode", ["encoded", "raw"])
def test_payload_modes_and_image_kinds_are_pixel_exact(procs, ipc_url, tmp_path, samples, mode):
    procs.broker(ipc_url)
    procs.worker(ipc_url, "n1")
    procs.worker(ipc_url, "n2")
    files = _image_kinds(tmp_path / "in", samples)
    with Connection(ipc_url, "tester").start() as conn:
        report = run_batch(conn, files, BatchOptions(outdir=tmp_path / "out", mode=mode))
    assert report.failed == 0, report.failures
    entries = manifest(tmp_path / "out")
    assert len(entries) == len(files)
    for entry in entries:
        check_output(entry)
    # the kinds survive: 16-bit stays 16-bit, RGBA keeps its alpha channel
    out16 = cv2.imread(str(tmp_path / "out" / "bgr16_processed.png"), cv2.IMREAD_UNCHANGED)
    assert out16.dtype == np.uint16
    assert out16.shape == (120, 160, 3)
    assert (
        cv2.imread(str(tmp_path / "out" / "rgba_processed.png"), cv2.IMREAD_UNCHANGED).shape[2] == 4
    )


def test_bad_inputs_get_errors_and_the_rest_completes(procs, tcp_url, tmp_path, samples):
    procs.broker(tcp_url)
    procs.worker(tcp_url, "n1")
    good = copies(samples / "chelsea.jpg", tmp_path / "in", 3)
    text = tmp_path / "in" / "notes.jpg"
    text.write_text("this is not a picture")
    truncated = tmp_path / "in" / "cut.jpg"
    truncated.write_bytes((samples / "chelsea.jpg").read_bytes()[:5000])
    missing = tmp_path / "in" / "missing.png"
    result = send(tcp_url, tmp_path / "out", good[0], text, missing, good[1], truncated, good[2])
    assert result.returncode == 1, result.stdout + result.stderr
    entries = {Path(e["input"]).name: e for e in manifest(tmp_path / "out")}
    assert len(entries) == 6
    for name in ("notes.jpg", "missing.png", "cut.jpg"):
        assert entries[name]["output"] is None
        assert name in entries[name]["error"]
    assert (
        "not an image" in entries["notes.jpg"]["error"]
        or "unrecognised" in entries["notes.jpg"]["error"]
    )
    assert "no such file" in entries["missing.png"]["error"]
    for g in good:
        check_output(entries[g.name])
    assert "3 failed" in result.stdout
    assert "notes.jpg" in result.stderr


def test_nodes_lists_workers_and_clients(procs, tcp_url):
    procs.broker(tcp_url)
    procs.worker(tcp_url, "n1", "--capacity", "3")
    procs.worker(tcp_url, "n2")
    cmd = [sys.executable, "-m", "zimg", "nodes", "--broker", tcp_url, "--json"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=True)
    report = json.loads(result.stdout)
    nodes = {n["name"]: n for n in report["nodes"]}
    assert set(nodes) == {"n1", "n2"}
    assert nodes["n1"]["role"] == "worker"
    assert nodes["n1"]["capacity"] == 3
    assert nodes["n2"]["capacity"] == 2
    assert all(0 <= n["last_seen_s"] < 3 for n in nodes.values())
    table = subprocess.run(cmd[:-1], capture_output=True, text=True, timeout=30, check=True).stdout
    for fragment in ("n1", "worker", "seen (s ago)"):
        assert fragment in table


def test_duplicate_worker_name_is_refused_with_a_clear_message(procs, tcp_url):
    procs.broker(tcp_url)
    procs.worker(tcp_url, "n1")
    second = procs.worker(tcp_url, "n1", wait=False)
    assert second.wait(30) == 1
    assert "held by a live node" in procs.output()
    assert [n["name"] for n in query_nodes(tcp_url)["nodes"]] == ["n1"]


def test_worker_rejoins_after_the_broker_restarts(procs, tcp_url, tmp_path, samples):
    broker = procs.broker(tcp_url, "--heartbeat", "0.2")
    procs.worker(tcp_url, "n1")
    broker.send_signal(signal.SIGKILL)
    broker.wait(10)
    procs.broker(tcp_url, "--heartbeat", "0.2")
    wait_for_workers(tcp_url, ["n1"], timeout_s=20)
    files = copies(samples / "coins.png", tmp_path / "in", 4)
    result = send(tcp_url, tmp_path / "out", *files)
    assert result.returncode == 0, result.stderr
    entries = manifest(tmp_path / "out")
    assert {e["node"] for e in entries} == {"n1"}
    for entry in entries:
        check_output(entry)


def test_local_cluster_restarts_a_worker_that_dies():
    import zimg

    with zimg.local_cluster(workers=2) as cluster:
        first = cluster.processes["n1"]
        cluster.monitor_node("n1")
        os.kill(first.pid, signal.SIGKILL)
        assert cluster.receive(timeout=10) == ("nodedown", "n1")
        wait_for_workers(cluster.url, ["n1"], timeout_s=20)
        assert cluster.processes["n1"].pid != first.pid
        assert cluster.keeper is not None
        assert cluster.keeper.restarts == 1
        pid = cluster.spawn("n1", "zimg.behaviours:echo")
        cluster.send(pid, ("echo", cluster.self(), "back"))
        assert cluster.receive(timeout=10) == ("echo", "back")


def test_path_jobs_need_a_worker_started_with_allow_paths(procs, ipc_url, tmp_path, samples):
    from zimg.cluster import stop_process

    procs.broker(ipc_url)
    plain = procs.worker(ipc_url, "n1")
    files = copies(samples / "coins.png", tmp_path / "in", 3)
    with Connection(ipc_url, "tester").start() as conn:
        options = BatchOptions(outdir=tmp_path / "refused", mode="path", job_items=8)
        report = run_batch(conn, files, options)
    assert report.failed == 3
    assert all("--allow-paths" in e["error"] for e in manifest(tmp_path / "refused"))
    # the three small files went as one job, refused whole and not split (no worker died)
    assert query_nodes(ipc_url)["stats"]["jobs_received"] == 1
    assert [p.name for p in (tmp_path / "refused").iterdir()] == ["manifest.jsonl"]
    stop_process(plain)  # leaves gracefully: the broker forgets it at once
    procs.worker(ipc_url, "n2", "--allow-paths")
    assert [n["name"] for n in query_nodes(ipc_url)["nodes"]] == ["n2"]
    with Connection(ipc_url, "tester2").start() as conn:
        report = run_batch(conn, files, BatchOptions(outdir=tmp_path / "ok", mode="path"))
    assert report.failed == 0
    for entry in manifest(tmp_path / "ok"):
        assert entry["node"] == "n2"
        check_output(entry)
    assert sorted(p.name for p in (tmp_path / "ok").iterdir()) == sorted(
        ["manifest.jsonl", *(f"img_{i:02d}_processed.png" for i in range(3))]
    )


def thread_cpus(pid: int) -> set[frozenset[int]]:
    """The CPU sets of every thread of process ``pid``."""
    return {frozenset(os.sched_getaffinity(int(tid))) for tid in os.listdir(f"/proc/{pid}/task")}


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no CPU affinity here")
def test_pinned_local_cluster_runs_each_worker_on_its_cpu_even_after_a_restart(tmp_path, samples):
    import zimg

    cpus = sorted(os.sched_getaffinity(0))
    expected = {f"n{i + 1}": frozenset({cpus[i % len(cpus)]}) for i in range(3)}
    with zimg.local_cluster(workers=3, pin=True) as cluster:
        for name, proc in cluster.processes.items():
            assert thread_cpus(proc.pid) == {expected[name]}, name
        first = cluster.processes["n2"]
        cluster.monitor_node("n2")
        os.kill(first.pid, signal.SIGKILL)
        assert cluster.receive(timeout=10) == ("nodedown", "n2")
        wait_for_workers(cluster.url, ["n2"], timeout_s=20)
        restarted = cluster.processes["n2"]
        assert restarted.pid != first.pid
        assert thread_cpus(restarted.pid) == {expected["n2"]}
        files = copies(samples / "coins.png", tmp_path / "in", 6)
        report = run_batch(cluster, files, BatchOptions(outdir=tmp_path / "out"))
        assert report.failed == 0
    with zimg.local_cluster(workers=1) as cluster:  # not oversubscribed: left to the system
        (proc,) = cluster.processes.values()
        assert thread_cpus(proc.pid) == {frozenset(cpus)}


@pytest.mark.skipif(
    not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) > 3,
    reason="no CPU affinity here, or too many CPUs to oversubscribe cheaply",
)
@pytest.mark.parametrize("cpu_slots", [True, False], ids=["cpu-slots", "oversubscribe"])
def test_an_oversubscribed_local_cluster_pins_its_workers_only_without_cpu_slots(cpu_slots):
    import zimg
    from zimg._broker_state import BrokerConfig

    cpus = sorted(os.sched_getaffinity(0))
    config = BrokerConfig(cpu_slots=cpu_slots)
    with zimg.local_cluster(workers=len(cpus) + 1, config=config) as cluster:
        placed = {name: thread_cpus(proc.pid) for name, proc in cluster.processes.items()}
    for i, name in enumerate(sorted(placed, key=lambda n: int(n[1:]))):
        # With CPU slots only as many workers run as there are CPUs: the system places them.
        expected = frozenset(cpus) if cpu_slots else frozenset({cpus[i % len(cpus)]})
        assert placed[name] == {expected}, name
