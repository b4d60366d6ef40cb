"""Floods against a real worker process: its mailboxes, its process table, and the links and
monitors of one of its processes stay bounded, and what was refused is counted.

A broker and a worker ``n1`` run as ``python -m zimg`` subprocesses with the default limits
(``zimg.ActorLimits``); this test process is the attacking node ``main``. Memory and threads
are read from the worker's ``/proc/PID/status``. A probe (``zt.limits.*``, spawned on the worker
after the flood) travels the same path as the flood, so it runs once the worker has taken every
message of it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import zimg
from zimg.cluster import wait_for_workers
from zimg.wire import Command, Pid, Ref

pytestmark = pytest.mark.timeout(180)

BEHAVIOURS = str(Path(__file__).with_name("zt_limits.py"))
WAIT = 30.0  # generous: the machine may be busy


@pytest.fixture
def cluster(procs, ipc_url):
    """Broker, worker n1 (default limits), and this process as node 'main'."""
    procs.broker(ipc_url)
    worker = procs.worker(ipc_url, "n1", "--import", BEHAVIOURS, wait=False)
    wait_for_workers(ipc_url, ["n1"], timeout_s=30, processes={"n1": worker})
    with zimg.connect(ipc_url, name="main") as node:
        yield node, worker


def status(pid: int, field: str) -> int:
    """A number from /proc/PID/status (VmRSS in kB, Threads)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def probe(node, *args):
    """Run a zt.limits behaviour on n1 and return its answer (it comes after all that we sent
    to n1 before: one path, FIFO)."""
    behaviour = "zt.limits.stats" if not args else "zt.limits.inspect"
    node.spawn("n1", behaviour, node.self(), *args, timeout=WAIT)
    tag = "stats" if not args else "inspect"
    return node.receive(lambda m: m[0] == tag, timeout=WAIT)


def test_a_send_flood_to_a_mailbox_nobody_reads_leaves_the_worker_bounded(cluster):
    node, worker = cluster
    _, before, main_pid = probe(node)  # the worker's main process never reads its mailbox
    blob = b"x" * (1 << 20)
    rss = [status(worker.pid, "VmRSS")]
    for _ in range(2):
        for _ in range(600):
            node.send(main_pid, blob)
        _, after, _ = probe(node)
        rss.append(status(worker.pid, "VmRSS"))
    first, second = (rss[1] - rss[0]) / 1024, (rss[2] - rss[1]) / 1024
    peak = status(worker.pid, "VmHWM") / 1024
    print(f"worker VmRSS +{first:.0f} MB, then +{second:.0f} MB, peak {peak:.0f} MB; {after}")
    # Its mailbox keeps 64 MiB; the worker keeps up to 128 MiB of freed heap for its next
    # images (zimg._heap): what the flood's dropped messages used is in there, not more.
    assert first < 64 + 128
    assert second < 64  # a second flood mostly reuses what the first one freed (+624 MB before)
    assert after["dropped_messages"] - before["dropped_messages"] >= 2 * 600 - 64


def test_a_flood_of_small_sends_is_bounded_by_the_message_count(cluster):
    node, _ = cluster
    _, before, main_pid = probe(node)
    for i in range(110_000):
        node.send(main_pid, i)
    _, after, _ = probe(node)
    assert after["dropped_messages"] - before["dropped_messages"] == 10_000


def test_a_spawn_flood_is_refused_beyond_max_processes(cluster):
    node, worker = cluster
    probe(node)  # the probe's process has ended by the time we hear from it
    threads_before = status(worker.pid, "Threads")
    spawned, refused = [], []
    for _ in range(3000):
        try:
            spawned.append(node.spawn("n1", "zimg.behaviours:echo", timeout=WAIT))
        except zimg.SpawnError as exc:
            refused.append(str(exc))
    threads = status(worker.pid, "Threads")
    print(f"worker threads {threads_before} -> {threads} after 3000 spawns")
    assert len(spawned) == 1000
    assert len(refused) == 2000
    assert "max_processes 1000" in refused[0]
    assert threads <= threads_before + 1000 + 5  # + a thread or two of its own
    # one ends: there is room again (for the probe)
    ref = node.monitor(spawned[0])
    node.send(spawned[0], "stop")
    assert node.receive(lambda m: m[0] == "DOWN", timeout=WAIT)[1] == ref
    _, counters, *_ = probe(node)
    assert counters["refused_spawns"] == 2000


def forged_pids(node, count):
    """Pids of our own node that no process has: what a flooding peer sends as ``from``."""
    me = node.self()
    return [Pid(me.node, me.incarnation, 1_000_000 + i) for i in range(count)]


def test_a_link_flood_is_bounded_and_answered_with_system_limit(cluster):
    node, _ = cluster
    target = node.spawn("n1", "zimg.behaviours:echo", timeout=WAIT)
    for sender in forged_pids(node, 12_000):
        node.connection.send(Command.LINK, {"to": target, "from": sender})
    _, counters, links, _, _ = probe(node, target)
    assert links == 10_000
    assert counters["refused_links"] == 2_000
    node.trap_exit = True
    node.link(target)
    assert node.receive(lambda m: m[0] == "EXIT", timeout=WAIT) == ("EXIT", target, "system_limit")


def test_a_link_flood_over_many_processes_is_bounded_for_the_node(cluster):
    node, worker = cluster
    targets = [node.spawn("n1", "zimg.behaviours:echo", timeout=WAIT) for _ in range(11)]
    rss_before = status(worker.pid, "VmRSS")
    senders = forged_pids(node, 10_000)
    for target in targets:
        for sender in senders:
            node.connection.send(Command.LINK, {"to": target, "from": sender})
    _, counters, *_ = probe(node)
    grown_mb = (status(worker.pid, "VmRSS") - rss_before) / 1024
    print(f"worker VmRSS +{grown_mb:.0f} MB for 110,000 links from another node; {counters}")
    assert counters["remote_refs"] == 100_000  # max_remote_refs
    assert counters["refused_links"] == 10_000


def test_a_monitor_flood_is_bounded_and_answered_with_system_limit(cluster):
    node, _ = cluster
    target = node.spawn("n1", "zimg.behaviours:echo", timeout=WAIT)
    me = node.self()
    for i in range(12_000):
        ref = Ref(me.node, me.incarnation, 1_000_000 + i)
        node.connection.send(Command.MONITOR, {"to": target, "from": me, "ref": ref})
    _, counters, _, monitored_by, _ = probe(node, target)
    assert monitored_by == 10_000
    assert counters["refused_monitors"] == 2_000
    ref = node.monitor(target)
    assert node.receive(lambda m: m[0] == "DOWN", timeout=WAIT) == (
        "DOWN",
        ref,
        target,
        "system_limit",
    )
