"""Where a worker runs its jobs, and the broker's CPU slots: a host runs at most as many jobs at
once as it has CPUs.

A worker says in its HELLO which host it is on, which CPUs it may use and how many jobs it runs
at once (:class:`Placement`). The broker keeps, per host, the jobs running there and the CPUs
its workers may use (``zimg._dispatch.HostState``), and hands a job to an idle worker only while
its host has a CPU without a running job. A worker that is already running gets its next job in
line sent ``queued``: it starts that job when the one it runs ends, even if it has a thread free,
so the CPUs stay busy between jobs and never run more than one job each. The rules are in
``zimg._dispatch`` and in ``docs/protocol.md`` §7.3.

Why: more jobs than CPUs at once cost CPU time rather than save it. Four 1080p workers on two
CPUs spent 1-4% more CPU per image than two, and finished a batch 3-8% later
(``docs/decisions.md``, "CPU slots"). With CPU slots the extra workers wait idle and take over
when a running one dies or leaves; a broker started with ``--oversubscribe`` gives every worker
jobs.

A host is a running kernel: its boot id where Linux has one (containers and network namespaces
share their machine's CPUs, so they count as one host), else its host name. Old workers send no
placement and are never held back.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from zimg import protocol
from zimg._affinity import usable_cpus
from zimg._errors import WireError

MAX_HOST_CHARS = 256
MAX_CPUS = 4096

_BOOT_ID = "/proc/sys/kernel/random/boot_id"


@dataclass(frozen=True, slots=True)
class Placement:
    """Where a worker runs jobs.

    Attributes:
        host: which machine (see :func:`this_host`).
        cpus: the CPUs the worker's process may run on.
        threads: how many jobs it runs at once.
        cpu_mask: ``cpus`` as a bit mask (bit *i* for CPU *i*), which the broker combines for
            every job it hands out.
    """

    host: str
    cpus: frozenset[int]
    threads: int
    cpu_mask: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "cpu_mask", sum(1 << cpu for cpu in self.cpus))

    @classmethod
    def here(cls, threads: int) -> Placement:
        """This process's placement, for a worker running ``threads`` jobs at once."""
        return cls(this_host(), frozenset(usable_cpus()), threads)

    def to_hello(self) -> dict[str, Any]:
        """The HELLO fields that carry this placement."""
        return {"host": self.host, "cpus": sorted(self.cpus), "threads": self.threads}

    @classmethod
    def from_hello(cls, header: Mapping[str, Any]) -> Placement | None:
        """The placement a HELLO carries; None if it carries none (a client, an old worker).

        Raises:
            WireError: the fields are there but malformed.
        """
        if "host" not in header:
            return None
        host = protocol.field(header, "host", str)
        if not 0 < len(host) <= MAX_HOST_CHARS:
            raise WireError(f"host must be 1 to {MAX_HOST_CHARS} characters")
        cpus = protocol.field(header, "cpus", list)
        if not 0 < len(cpus) <= MAX_CPUS:
            raise WireError(f"cpus must list 1 to {MAX_CPUS} CPUs")
        if not all(type(c) is int and 0 <= c < 1 << 16 for c in cpus):
            raise WireError("cpus must be CPU numbers (ints in 0..65535)")
        threads = protocol.field(header, "threads", int)
        if not 0 < threads <= protocol.MAX_CAPACITY:
            raise WireError(f"threads {threads} is outside 1..{protocol.MAX_CAPACITY}")
        return cls(host, frozenset(cpus), threads)


def this_host() -> str:
    """An id of the running kernel: the Linux boot id, else the host name."""
    try:
        with open(_BOOT_ID) as f:
            boot_id = f.read().strip()
    except OSError:
        boot_id = ""
    return f"boot:{boot_id}" if boot_id else f"name:{socket.gethostname()}"[:MAX_HOST_CHARS]
