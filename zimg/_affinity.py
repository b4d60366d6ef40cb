"""Which CPUs a worker process may run on: parsing ``--cpus``, pinning, and the embedded plan.

With more worker processes than CPUs, every worker is always runnable and the scheduler keeps
moving them between CPUs; each move leaves a worker's image data in the other CPU's cache. An
embedded cluster that is oversubscribed and whose broker runs every worker at once
(``--oversubscribe``) therefore pins worker ``i`` to CPU ``i mod n`` (of the CPUs this process
may use): the workers sharing a CPU take turns on it, and none migrates. Measured with 4 workers
on 2 cores, set A: 1-3% less time per batch (docs/performance-notes.md). By default the broker's
CPU slots (``zimg._placement``) let only one job per CPU run, so nothing is pinned; nor with no
more workers than CPUs: there was no gain to measure, and a pinned worker could not move away
from a CPU that another program keeps busy.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Collection


def usable_cpus() -> list[int]:
    """The CPUs this process may run on, in order (``os.cpu_count()`` of them where the system
    cannot say)."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def parse_cpus(text: str) -> set[int]:
    """Parse a CPU list such as ``"0"``, ``"0,2"`` or ``"0-3,6"`` (the ``taskset -c`` form).

    Raises:
        ValueError: the text is not such a list, or names no CPU.
    """
    cpus: set[int] = set()
    for part in text.split(","):
        first, dash, last = part.strip().partition("-")
        try:
            low = int(first)
            high = int(last) if dash else low
        except ValueError:
            raise ValueError(f"{text!r} is not a CPU list such as 0 or 0,2 or 0-3") from None
        if low < 0 or high < low:
            raise ValueError(f"{part.strip()!r} in {text!r} is not a CPU or an ascending range")
        cpus.update(range(low, high + 1))
    return cpus


def check_usable(cpus: Collection[int]) -> None:
    """Refuse CPUs this process may not run on (``os.sched_getaffinity``), naming those it may.

    Raises:
        ValueError: a CPU outside :func:`usable_cpus`; one line, such as "CPU 7 is not usable
            here; this process may use CPUs 0-1".
    """
    usable = usable_cpus()
    refused = set(cpus) - set(usable)
    if refused:
        which = f"CPUs {format_cpus(refused)} are" if len(refused) > 1 else f"CPU {min(refused)} is"
        raise ValueError(
            f"{which} not usable here; this process may use CPUs {format_cpus(usable)}"
        )


def format_cpus(cpus: Collection[int]) -> str:
    """The ``--cpus`` text for ``cpus``, runs written as ranges: ``0-3,6``."""
    runs: list[list[int]] = []  # [first, last] of each run of consecutive CPUs
    for cpu in sorted(set(cpus)):
        if runs and cpu == runs[-1][1] + 1:
            runs[-1][1] = cpu
        else:
            runs.append([cpu, cpu])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


def pin_process(cpus: Collection[int]) -> bool:
    """Run this process only on ``cpus``: its threads, and those it starts from now on.

    Threads that imports started (numpy's BLAS pool, for one) are pinned too, so that nothing of
    the process runs elsewhere.

    Returns:
        False where the system has no CPU affinity (macOS, Windows): nothing changes there.

    Raises:
        OSError: the system refused (a CPU that does not exist or is not allowed here).
    """
    if not hasattr(os, "sched_setaffinity"):
        return False
    wanted = set(cpus)
    os.sched_setaffinity(0, wanted)  # this thread first: it raises if ``cpus`` is refused
    try:
        threads = os.listdir("/proc/self/task")
    except OSError:
        return True  # no /proc: the threads started from now on are still pinned
    for tid in threads:
        with contextlib.suppress(ProcessLookupError):  # a thread that has just ended
            os.sched_setaffinity(int(tid), wanted)
    return True


def embedded_plan(workers: int, pin: bool | None = None) -> list[set[int] | None]:
    """The CPUs of each of an embedded cluster's ``workers`` (None: not pinned).

    ``pin`` None pins only when there are more workers than usable CPUs; True always pins
    (round robin); False never does.
    """
    cpus = usable_cpus()
    if pin is False or (pin is None and workers <= len(cpus)):
        return [None] * workers
    return [{cpus[i % len(cpus)]} for i in range(workers)]
