"""The examples in examples/ run as a user would run them, and succeed.

Each runs as ``python examples/NAME.py`` from the repository root, starts its own embedded
cluster, checks its own results and exits 0 only if they are right; here we also look for the
key lines of its step-by-step output.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from zimg._affinity import usable_cpus

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.timeout(120)


def run_example(name: str, *args: str) -> str:
    """Run an example, assert it exits 0 without a traceback, and return its stdout."""
    proc = subprocess.run(
        [sys.executable, f"examples/{name}", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    report = f"exit code {proc.returncode}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
    assert proc.returncode == 0, report
    assert "Traceback" not in proc.stderr, report
    return proc.stdout


def test_distributed_main_runs_the_notebook_and_saves_32_results_and_a_grid(tmp_path):
    out = run_example("distributed_main.py", "--out", str(tmp_path))

    assert "node.nodes() = ['n1', 'n2', 'n3', 'n4']" in out
    assert "'main' answered" in out  # b: our own node
    assert "'n1' answered" in out  # c: one worker
    assert "32 results, all from ['n1']" in out  # d
    assert "results per node: {'n1': 8, 'n2': 8, 'n3': 8, 'n4': 8}" in out  # e
    # f: the job path starts one job per CPU at once, on workers that stand by otherwise.
    [used] = re.findall(r"32 results from (\[.*\])", out)
    nodes = set(ast.literal_eval(used))
    assert nodes <= {"n1", "n2", "n3", "n4"}
    assert len(nodes) >= min(4, len(usable_cpus()))
    for step in "bcdef":
        assert any(line.split()[:1] == [step] for line in out.splitlines()), f"no timing for {step}"
    assert "pixel-exact against the in-process reference: OK" in out
    saved = sorted(p.name for p in tmp_path.glob("chelsea_*_processed.jpg"))
    assert saved == [f"chelsea_{i:02d}_processed.jpg" for i in range(1, 33)]
    assert (tmp_path / "grid.jpg").stat().st_size > 0


def test_distributed_main_with_two_workers(tmp_path):
    out = run_example("distributed_main.py", "--out", str(tmp_path), "--workers", "2")

    assert "node.nodes() = ['n1', 'n2']" in out
    assert "results per node: {'n1': 16, 'n2': 16}" in out
    assert len(list(tmp_path.glob("*_processed.jpg"))) == 32


def test_ping_pong_plays_every_round_and_both_players_end_normally():
    out = run_example("ping_pong.py", "--rounds", "25")

    assert "node.nodes() = ['n1', 'n2']" in out
    assert "is registered as ('pong', 'n2')" in out
    assert "ping reports ('done', 25)" in out
    assert "round trip n1 -> n2 -> n1: min" in out
    assert out.count("exited: normal") == 2
    assert out.rstrip().endswith("OK")


def test_supervisor_restarts_its_child_then_gives_up():
    out = run_example("supervisor.py")

    assert "node.nodes() = ['n1', 'n2']" in out
    assert "went DOWN with ('error', 'RuntimeError', 'told to crash')" in out
    assert out.count("restarted as") == 3  # max_restarts, by default 3
    assert "went DOWN with ('shutdown', 'too many restarts')" in out
    assert "FAILED" not in out
    assert "OK: restarted 3 times, then the supervisor gave up" in out


def test_supervisor_exits_non_zero_when_an_expectation_fails():
    # With a period this short, crashes never pile up: the supervisor never gives up.
    proc = subprocess.run(
        [sys.executable, "examples/supervisor.py", "--period", "0.0001"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "FAILED: the supervisor gave up" in proc.stdout
