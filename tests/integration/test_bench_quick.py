"""The benchmark harness runs end to end (``python -m zimg.bench --smoke``), so it cannot rot.

Nothing here is about speed: the run must finish, exit 0 and write results with every part the
report needs. Outputs go to a temporary directory, never into the repository.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]

TOP_KEYS = {
    "mode",
    "command",
    "machine",
    "load_after",
    "config",
    "sets",
    "micro",
    "skipped",
    "phases_s",
    "targets",
}
CONTENDERS = {
    "loop",
    "halves",
    "pool2",
    "zimg-path-1",
    "zimg-path-2",
    "zimg-path-4",
    "zimg-encoded-1",
    "zimg-encoded-2",
    "zimg-encoded-4",
    "zimg-raw-1",
    "zimg-raw-2",
    "zimg-raw-4",
    "zimg-3term-2",
}
SUMMARY_KEYS = {"label", "run_s", "startup_s", "stop_s", "ratio", "ratio_end_to_end", "runs"}


def test_smoke_run_writes_complete_results(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "zimg.bench", "--smoke", "--out", str(out)],
        cwd=tmp_path,  # relative default paths, if any were used, would land here
        capture_output=True,
        text=True,
        timeout=400,
        check=False,
    )
    report = f"exit code {proc.returncode}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
    assert proc.returncode == 0, report
    assert "Traceback" not in proc.stderr, report
    assert "Targets (issue 5)" in proc.stdout, report

    results = json.loads((out / "results.json").read_text())
    assert results.keys() >= TOP_KEYS
    assert results["mode"] == "smoke"
    assert set(results["sets"]) == {"A", "B"}
    for data in results["sets"].values():
        assert data["contenders"].keys() >= CONTENDERS
        for summary in data["contenders"].values():
            assert summary.keys() >= SUMMARY_KEYS
            assert summary["run_s"]["median"] > 0
        assert data["contenders"]["loop"]["ratio"]["median"] == pytest.approx(1.0)
    assert {"actors", "forwarding", "startup", "memory"} <= results["micro"].keys()
    floor = results["micro"]["actors"]["pyzmq"]["floor"]  # the Python floor of a message
    assert floor["rtt"]["p50_us"] > 0
    assert floor["one_way"]["per_s"] > 0
    zimg_actors = results["micro"]["actors"]["zimg"]  # the workers' CPU per one-way message
    assert zimg_actors["one_way_sender_cpu_us"] > 0
    assert zimg_actors["one_way_receiver_cpu_us"] > 0
    assert len(results["targets"]) == 7
    page = (out / "performance.md").read_text()
    assert page.startswith("# Performance")
    source = results["machine"]["source"]  # None outside a git checkout
    assert source is None or f"commit `{source}`" in page
    assert not list(tmp_path.glob("bench")), "nothing may be written outside --out"


@pytest.mark.timeout(240)
def test_the_throughput_harness_runs_end_to_end(tmp_path: Path) -> None:
    """``python -m zimg.bench.throughput`` with a few images: it finishes, and reports every
    figure of its table (nothing about speed)."""
    out = tmp_path / "throughput.json"
    cmd = [sys.executable, "-m", "zimg.bench.throughput", "--quick", "--images", "60"]
    result = subprocess.run(
        [*cmd, "--light-jobs", "300", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=220,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(out.read_text())
    for key in ("send_images_per_s", "broker_jobs_per_s", "proxy_round_trips_per_s"):
        assert figures[key] > 0, figures
    assert isinstance(figures["send_cpu_ms_per_image"], float)
    for key in (
        "broker_us_per_job_light",
        "client_us_per_job_light",
        "workers_us_per_job_light",
        "floor_jobs_per_s",
        "floor_us_per_job",
    ):
        assert figures[key] > 0, figures
    assert figures["images"] == 60
    assert "zimg --help" in result.stdout


@pytest.mark.timeout(120)
def test_actor_cpu_runs_and_prints_each_figure(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "zimg.bench.actor_cpu", "--quick"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=100,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    for label in ("send, in a round trip", "receive, in a round trip", "round trip, wall"):
        (line,) = [x for x in lines if x.startswith(label)]
        raw, ours, ratio = line[len(label) :].split()
        assert float(raw) > 0
        assert float(ours) > 0
        assert ratio.endswith("x")
    for label in ("send, in a burst of 5,000", "Mailbox.receive, hot", "Mailbox.receive, after"):
        (line,) = [x for x in lines if x.startswith(label)]
        assert float(line.split()[-1]) > 0
