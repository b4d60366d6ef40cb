"""Packed payloads end to end (issue 18): a real ``zimg send`` through a real broker to
simulated workers that echo each job's one packed frame back (``zimg.bench.simnodes``), and
to a real worker. Every input gets exactly one manifest line and its output; the echoed ones
are the input's bytes exactly, so a payload cut at the wrong offset would show."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.reference import check_output, copies, manifest
from zimg.bench.simnodes import SimNodes

pytestmark = pytest.mark.timeout(120)


def send(url: str, outdir: Path, files: list[Path], *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "zimg", "send", "--broker", url, "-o", str(outdir)]
    cmd += ["--timeout", "60", *extra, *map(str, files)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=90)


def test_echoing_workers_return_each_packed_payload_exactly(procs, tcp_url, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    rng = np.random.default_rng(5)
    files = []
    for i in range(60):  # sizes differ, so each payload's offset does too; one is empty
        path = folder / f"f{i:02d}.jpg"
        path.write_bytes(rng.integers(0, 256, 0 if i == 7 else 50 + 37 * i, np.uint8).tobytes())
        files.append(path)
    procs.broker(tcp_url)
    with SimNodes(tcp_url, 2, prefix="sim") as nodes:
        nodes.wait_ready(20.0)
        result = send(tcp_url, tmp_path / "out", files, "--job-items", "16")
        status = nodes.status()
    report = f"exit {result.returncode}\n{result.stdout}\n{result.stderr}\n{status}"
    assert result.returncode == 0, report
    assert status["jobs"] <= 60 // 16 + 2, status  # several images to a job
    entries = manifest(tmp_path / "out")
    assert sorted(e["index"] for e in entries) == list(range(60)), report
    for entry in entries:
        assert entry["error"] is None, entry
        assert Path(entry["output"]).read_bytes() == files[entry["index"]].read_bytes(), entry


def test_a_real_worker_answers_a_packed_batch_pixel_exact(procs, tcp_url, tmp_path, samples):
    inputs = []
    for name in ("chelsea.jpg", "coins.png", "brick.jpg", "grass.png"):
        inputs += copies(samples / name, tmp_path / "in" / name, 5)
    procs.broker(tcp_url)
    procs.worker(tcp_url, "n1")
    result = send(tcp_url, tmp_path / "out", inputs, "--job-items", "8")
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    entries = manifest(tmp_path / "out")
    assert len(entries) == len(inputs)
    for entry in entries:
        check_output(entry)
