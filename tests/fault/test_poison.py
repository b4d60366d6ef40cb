"""A poison input that kills every worker that touches it: it fails after max_attempts with an
error naming the workers tried, the rest of the batch completes, and no worker is lost for good."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from tests.fault.helpers import (
    BROKER_ARGS,
    EXPIRY_S,
    MARGIN_S,
    PIPELINE,
    SLOW_OPS,
    assert_clean_log,
    assert_no_tracebacks,
    make_images,
    make_poison,
    report,
    start_send,
    wait_for,
    workers,
)
from tests.fault.invariants import check_exactly_once
from zimg.cluster import WorkerKeeper, wait_for_workers, worker_command

MAX_ATTEMPTS = 3
POISON_PIPELINE = ("--op", "poison", *PIPELINE)


def gave_up_on(entry: dict) -> list[str]:
    """The workers a 'gave up after N attempts' error names, in order."""
    error = entry["error"]
    assert "gave up" in error, error
    assert str(MAX_ATTEMPTS) in error, error
    assert "died" in error, error
    return error.rsplit("(tried ", 1)[1].rstrip(")").split(", ")


@pytest.mark.timeout(60)
def test_poison_job_fails_after_max_attempts_and_restarted_workers_all_come_back(
    procs, tcp_url, tmp_path
):
    procs.broker(tcp_url, *BROKER_ARGS, "--max-attempts", str(MAX_ATTEMPTS))
    names = ["w1", "w2", "w3"]
    # Capacity 1: a worker that dies holds the poison only, so no innocent job pays for it.
    commands = {n: worker_command(tcp_url, n, capacity=1, imports=[SLOW_OPS]) for n in names}
    keeper = WorkerKeeper(commands, env={**os.environ, "PYTHONUNBUFFERED": "1"}).start()
    try:
        wait_for_workers(tcp_url, names, timeout_s=30, keeper=keeper)
        files = make_images(tmp_path / "in", 30, seed=5)
        poison = make_poison(tmp_path / "in" / "poison.png")
        files.insert(10, poison)
        out = tmp_path / "out"
        # One image per job (start_send's): the poison alone in its job from the start
        # (grouped, it would first fail its job whole, then again alone once split).
        sender, log = start_send(procs, tcp_url, out, files, pipeline=POISON_PIPELINE)
        assert sender.wait(45) == 1, log.read_text()  # 1: an input failed

        entries = check_exactly_once(out, files, failed=[poison])
        bad = entries[str(poison)]
        tried = gave_up_on(bad)
        assert len(tried) == MAX_ATTEMPTS
        assert set(tried) <= set(names)
        assert bad["attempts"] == MAX_ATTEMPTS
        assert bad["node"] == tried[-1]
        # Each death is noticed within the liveness bound, so the poison is settled in time.
        assert bad["latency_ms"] / 1000 < MAX_ATTEMPTS * (EXPIRY_S + MARGIN_S), bad
        assert all(e["attempts"] == 1 for e in entries.values() if e is not bad)
        assert bad["error"] in log.read_text()  # the sender says why it failed

        # Every worker that died was restarted under its name and is back: none lost for good.
        wait_for(lambda: set(workers(tcp_url)) == set(names), 15, "every worker back")
        back = workers(tcp_url)
        assert keeper.restarts == MAX_ATTEMPTS
        assert not keeper.gave_up
        stats = report(tcp_url)["stats"]
        assert stats["jobs_failed"] == 1
        assert stats["nodes_down"] == MAX_ATTEMPTS + 1  # the three deaths, and the sender
        assert sorted(back) == names
        print(f"\nMEASURED poison settled in {bad['latency_ms'] / 1000:.2f} s, tried {tried}")
    finally:
        keeper.stop()
    assert_no_tracebacks(procs)


@pytest.mark.timeout(60)
def test_poison_under_zimg_run_ends_with_exit_1_and_the_workers_restarted(tmp_path):
    # The poison comes first, with 24 more behind it, so that the first job holds it and two
    # neighbours (job sizes shrink to one image over the last 8 of a batch).
    others = make_images(tmp_path / "in", 24, seed=6)
    poison = make_poison(tmp_path / "in" / "poison.png")
    files = [poison, *others]
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "zimg", "run", "--workers", "3", "--capacity", "1"]
    cmd += ["--import", SLOW_OPS, *POISON_PIPELINE, "-o", str(out), *map(str, files)]
    started = time.monotonic()
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=50)
    elapsed = time.monotonic() - started
    assert result.returncode == 1, result.stdout + result.stderr
    entries = check_exactly_once(out, files, failed=[poison])
    tried = gave_up_on(entries[str(poison)])
    assert len(tried) == MAX_ATTEMPTS
    assert set(tried) <= {"n1", "n2", "n3"}
    # The embedded cluster's keeper restarted each worker the poison killed, and gave up on none.
    # `zimg run` ships small images several to a job: the poison's job failed whole after
    # MAX_ATTEMPTS deaths, was split, and only the poison failed again, MAX_ATTEMPTS times, on
    # its own (its neighbours all succeeded: check_exactly_once above).
    assert result.stderr.count("restarting it") == 2 * MAX_ATTEMPTS, result.stderr
    assert "not restarting it again" not in result.stderr
    assert_clean_log(
        result.stdout + result.stderr,
        expected=("restarting it", entries[str(poison)]["error"], "1 failed;"),
    )
    print(f"\nMEASURED zimg run with a poison input: {elapsed:.2f} s")
