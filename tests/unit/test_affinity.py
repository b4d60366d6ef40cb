"""zimg._affinity: CPU lists, pinning a process, and the embedded cluster's plan."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from zimg import _affinity
from zimg._affinity import check_usable, embedded_plan, format_cpus, parse_cpus

CAN_PIN = hasattr(os, "sched_setaffinity")


@pytest.mark.parametrize(
    ("text", "cpus"),
    [("0", {0}), ("0,2", {0, 2}), ("0-3,6", {0, 1, 2, 3, 6}), (" 1 , 3-3 ", {1, 3})],
)
def test_parse_cpus(text, cpus):
    assert parse_cpus(text) == cpus
    assert parse_cpus(format_cpus(cpus)) == cpus


@pytest.mark.parametrize("text", ["", "a", "3-1", "-1", "1-", "0,,1", "1.5"])
def test_parse_cpus_refuses_what_is_not_a_cpu_list(text):
    with pytest.raises(ValueError, match="CPU"):
        parse_cpus(text)


def test_check_usable_names_the_cpus_this_process_may_use(monkeypatch):
    monkeypatch.setattr(_affinity, "usable_cpus", lambda: [0, 1, 4])
    check_usable({0, 4})
    with pytest.raises(ValueError, match=r"^CPU 7 is not usable here; .* may use CPUs 0-1,4$"):
        check_usable({7})
    with pytest.raises(ValueError, match=r"^CPUs 2-3 are not usable here; .* CPUs 0-1,4$"):
        check_usable(parse_cpus("0-3"))


def test_embedded_plan_pins_only_when_oversubscribed(monkeypatch):
    monkeypatch.setattr(_affinity, "usable_cpus", lambda: [2, 5])
    assert embedded_plan(1) == [None]
    assert embedded_plan(2) == [None, None]
    assert embedded_plan(3) == [{2}, {5}, {2}]
    assert embedded_plan(4) == [{2}, {5}, {2}, {5}]
    assert embedded_plan(2, pin=True) == [{2}, {5}]
    assert embedded_plan(4, pin=False) == [None] * 4


_PIN_BETWEEN_THREADS = """
import os, sys, threading
from zimg._affinity import pin_process
cpu = int(sys.argv[1])
started, stop = threading.Event(), threading.Event()
before = threading.Thread(target=lambda: (started.set(), stop.wait()))
before.start(); started.wait()
assert pin_process({cpu})
seen = []
after = threading.Thread(target=lambda: seen.append(os.sched_getaffinity(0)))
after.start(); after.join()
mine, theirs = os.sched_getaffinity(0), os.sched_getaffinity(before.native_id)
print(sorted(mine), sorted(theirs), sorted(seen[0]))
stop.set(); before.join()
"""


@pytest.mark.skipif(not CAN_PIN, reason="no CPU affinity on this system")
def test_pin_process_covers_threads_started_before_and_after_it():
    cpu = max(os.sched_getaffinity(0))
    done = subprocess.run(
        [sys.executable, "-c", _PIN_BETWEEN_THREADS, str(cpu)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stdout.split() == [f"[{cpu}]"] * 3


@pytest.mark.parametrize(
    ("cpus", "text"),
    [({0}, "0"), ({0, 2}, "0,2"), ({0, 1, 2, 3, 6}, "0-3,6"), ({5, 4, 9, 8, 1}, "1,4-5,8-9")],
)
def test_format_cpus_writes_runs_as_ranges(cpus, text):
    assert format_cpus(cpus) == text
