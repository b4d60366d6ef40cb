"""CPU slots with real processes: workers that share a CPU run one job at a time, unless the
broker is started with ``--oversubscribe``."""

from __future__ import annotations

import os

import pytest

from tests.fault.helpers import SLOW_OPS, BrokerSampler, make_images, report
from tests.fault.invariants import check_exactly_once
from zimg.batch import BatchOptions, run_batch
from zimg.connection import Connection
from zimg.ops import OpSpec

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no CPU affinity here"),
]

NAMES = ("n1", "n2", "n3")


@pytest.mark.parametrize("oversubscribe", [False, True], ids=["cpu-slots", "oversubscribe"])
def test_workers_pinned_to_one_cpu_take_turns_on_it(procs, tcp_url, tmp_path, oversubscribe):
    cpu = min(os.sched_getaffinity(0))
    procs.broker(tcp_url, *(["--oversubscribe"] if oversubscribe else []))
    for name in NAMES:
        procs.worker(tcp_url, name, "--cpus", str(cpu), "--capacity", "1", "--import", SLOW_OPS)
    table = {n["name"]: n for n in report(tcp_url)["nodes"]}
    assert {tuple(table[n]["cpus"]) for n in NAMES} == {(cpu,)}
    assert len({table[n]["host"] for n in NAMES}) == 1
    files = make_images(tmp_path / "in", 12)
    pipeline = [OpSpec("threshold", {}), OpSpec("label", {}), OpSpec("sleepy", {"ms": 150})]
    options = BatchOptions(outdir=tmp_path / "out", pipeline=pipeline, workers=3)
    with Connection(tcp_url, "main") as conn, BrokerSampler(tcp_url, every_s=0.02) as sampler:
        batch = run_batch(conn, files, options)
    assert batch.failed == 0
    check_exactly_once(tmp_path / "out", files)
    assert sampler.samples >= 10
    if oversubscribe:
        assert sampler.most_busy >= 2
    else:
        assert sampler.most_busy == 1
