"""zimg._heap: a worker keeps freed image buffers for the next image."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

GLIBC = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"

# Faults of allocating (and touching) a 6 MiB buffer, after one of that size was freed.
_SECOND_ALLOCATION_FAULTS = """
import resource, sys
import numpy as np
from zimg._heap import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(2):
    before = faults()
    block = np.ones(6 << 20, np.uint8)
    del block
print(faults() - before)
"""


def second_allocation_faults(mode: str) -> int:
    done = subprocess.run(
        [sys.executable, "-c", _SECOND_ALLOCATION_FAULTS, mode],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return int(done.stdout)


@pytest.mark.skipif(not GLIBC, reason="mallopt is glibc's")
def test_a_freed_image_buffer_is_reused_without_faulting_its_pages_in_again():
    # 6 MiB is 1,536 pages; reusing the freed block faults none of them.
    assert second_allocation_faults("keep") < 50


@pytest.mark.skipif(not GLIBC, reason="mallopt is glibc's")
def test_without_it_glibc_maps_the_second_buffer_afresh():
    # What keep_freed_memory is for: glibc's default gives the block back and faults it in
    # again (if this fails, glibc changed and the tuning may no longer be needed).
    assert second_allocation_faults("default") > 200


_BENCH_JOB_TWICE = """
import sys
from zimg.bench import workload
for _ in range(2):
    workload.process_file(sys.argv[1], sys.argv[2])
print(workload.same_heap_as_workers.cache_info().misses, workload.same_heap_as_workers())
"""


@pytest.mark.skipif(not GLIBC, reason="mallopt is glibc's")
def test_every_benchmark_contender_runs_the_job_with_the_workers_heap(samples, tmp_path):
    # The benchmark compares distribution, not glibc's heuristics: its job sets the heap as a
    # worker does, once per process (Pool, Ray and Dask processes included).
    done = subprocess.run(
        [sys.executable, "-c", _BENCH_JOB_TWICE, str(samples / "coins.png"), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stdout.split() == ["1", "True"]


def test_the_benchmarks_raw_proxy_keeps_freed_memory_as_the_broker_does(monkeypatch):
    from zimg.bench import raw_zmq

    calls: list[str] = []
    monkeypatch.setattr(raw_zmq, "keep_freed_memory", lambda: calls.append("heap") or True)
    monkeypatch.setattr(raw_zmq.zmq, "proxy", lambda front, back: calls.append("proxy"))
    raw_zmq.raw_proxy("inproc://zimg-test-front", "inproc://zimg-test-back")
    assert calls == ["heap", "proxy"]
