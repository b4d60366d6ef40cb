"""Hostile peers against a REAL broker process (and real nodes): each test mounts one attack of
issue 12 and checks that the answer is a bounded, counted refusal.

- taking over a live node's connection, with and without CURVE keys;
- learning a client's routing id from the jobs a worker gets;
- forging another node's actor signals (EXIT kill, replies);
- jobs that fill the broker's memory; frames left half-sent;
- NODES replies too large to send; a worker that holds jobs and never answers;
- a paused node that loses its name; a key that claims a longer key's name.
"""

from __future__ import annotations

import os
import queue
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zmq

import zimg
from tests.integration.test_fuzz_broker import closed_within, vm_kb, zmtp_connect, zmtp_frame
from tests.reference import check_output, manifest
from zimg import protocol, wire
from zimg._errors import RejectedError
from zimg.connection import Connection
from zimg.nodes_query import query_nodes
from zimg.security import ClientKeys, create_keys
from zimg.testing import Processes
from zimg.wire import Command

pytestmark = pytest.mark.timeout(90)
TESTS = Path(__file__).resolve().parent.parent
BEHAVIOURS = str(TESTS / "multiprocess" / "zt_behaviours.py")
WAIT_S = 10.0


def wait_until(condition: Callable[[], Any], what: str, timeout_s: float = WAIT_S) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


class Raw:
    """A raw DEALER speaking the protocol by hand, as an attacker's script would."""

    def __init__(self, url: str, identity: bytes | None = None, keys: ClientKeys | None = None):
        self.ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        if identity is not None:
            self.sock.setsockopt(zmq.ROUTING_ID, identity)
        if keys is not None:
            keys.apply(self.sock)
        self.sock.connect(url)

    def send(self, command: Command, header: dict[str, Any]) -> None:
        self.sock.send_multipart(wire.encode(command, header))

    def hello(self, name: str, *, role: str = "client", incarnation: int = 1, **extra: Any) -> None:
        header = {
            "name": name,
            "role": role,
            "capacity": 2 if role == "worker" else 0,
            "incarnation": incarnation,
            "version": protocol.PROTOCOL_VERSION,
            **extra,
        }
        self.send(Command.HELLO, header)

    def recv(self, timeout_s: float = WAIT_S) -> tuple[wire.Message, list[zmq.Frame]] | None:
        if not self.sock.poll(int(timeout_s * 1000)):
            return None
        frames = self.sock.recv_multipart(copy=False)
        return wire.decode(frames), frames

    def expect(self, command: Command, timeout_s: float = WAIT_S) -> tuple[wire.Message, Any]:
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            got = self.recv(left)
            if got is not None and got[0].command is command:
                return got
        raise AssertionError(f"no {command.name} within {timeout_s} s")

    def everything(self, within_s: float) -> list[wire.Message]:
        """Every message that arrives within ``within_s``."""
        out = []
        deadline = time.monotonic() + within_s
        while (left := deadline - time.monotonic()) > 0:
            got = self.recv(left)
            if got is not None:
                out.append(got[0])
        return out

    def keep_alive(self, every_s: float) -> None:
        """From now on, only a thread of this peer's uses its socket: it sends HEARTBEATs and
        reads (and counts) whatever comes, until :meth:`close`."""
        self.received: list[Command] = []
        self._stop = threading.Event()

        def run() -> None:
            while not self._stop.wait(every_s):
                self.send(Command.HEARTBEAT, {})
                while (got := self.recv(0)) is not None:
                    self.received.append(got[0].command)

        self._beater = threading.Thread(target=run, daemon=True)
        self._beater.start()

    def close(self) -> None:
        if hasattr(self, "_beater"):
            self._stop.set()
            self._beater.join(WAIT_S)
        self.ctx.destroy(linger=0)


def stats(url: str, keys: ClientKeys | None = None) -> dict[str, int]:
    return dict(query_nodes(url, keys=keys)["stats"])


# ------------------------------------------------------------------ connections and ids


@pytest.fixture
def keyring(tmp_path: Path) -> Path:
    """Broker keys with n1, n1.gpu, main and evil authorised."""
    broker_dir = tmp_path / "keys" / "broker"
    create_keys("broker", broker_dir)
    (broker_dir / "authorized").mkdir()
    for name in ("n1", "n1.gpu", "main", "evil"):
        public, _ = create_keys(name, tmp_path / "keys" / "nodes")
        (broker_dir / "authorized" / public.name).write_bytes(public.read_bytes())
    return tmp_path / "keys"


def node_keys(keyring: Path, name: str) -> ClientKeys:
    return ClientKeys.load(keyring / "nodes" / f"{name}.key_secret", keyring / "broker/broker.key")


@pytest.mark.parametrize("with_keys", [False, True], ids=["plain", "curve"])
def test_a_second_connection_never_takes_over_a_live_nodes_id(
    procs: Processes, tcp_url: str, keyring: Path, raws: list[Raw], with_keys: bool
) -> None:
    """The attacker knows the client's full routing id (the worst case) and connects with it,
    with a valid key of its own under CURVE. It receives nothing meant for the client, and the
    client's session never breaks."""
    broker_args = ["--keys", str(keyring / "broker")] if with_keys else []
    main_keys = node_keys(keyring, "main") if with_keys else None
    evil_keys = node_keys(keyring, "evil") if with_keys else None
    procs.broker(tcp_url, "--heartbeat", "0.5", *broker_args, keys=main_keys)
    with Connection(tcp_url, "main", keys=main_keys).start() as conn:
        attacker = Raw(tcp_url, identity=conn.identity, keys=evil_keys)
        raws.append(attacker)
        attacker.send(Command.NODES, {})  # it tries to speak under the client's id
        replies: queue.SimpleQueue[wire.Message] = queue.SimpleQueue()
        conn.on(Command.NODES, replies.put)  # once: a command has one handler
        for _ in range(20):
            report = _report(conn, replies)
            assert report["count"] == 1
        got = attacker.everything(2.0)
        assert got == [], [m.command.name for m in got]
        assert conn.sessions == 1  # never lost its session
        assert stats(tcp_url, keys=main_keys)["nodes_down"] == 0


def _report(conn: Connection, replies: queue.SimpleQueue[wire.Message]) -> dict[str, Any]:
    """NODES through the connection's own DEALER (what a node's report() does)."""
    conn.send(Command.NODES, {})
    return replies.get(timeout=WAIT_S).header


def test_a_worker_never_learns_a_clients_routing_id(
    procs: Processes, tcp_url: str, raws: list[Raw]
) -> None:
    procs.broker(tcp_url)
    worker = Raw(tcp_url)
    raws.append(worker)
    worker.hello("w1", role="worker")
    worker.expect(Command.WELCOME)
    with Connection(tcp_url, "main").start() as conn:
        results: list[Any] = []
        images = [np.full((4, 4), 200, np.uint8)]
        client = threading.Thread(
            target=lambda: results.extend(zimg.distribute(images, conn, pipeline=[]))
        )
        client.start()
        secret = conn.identity.rsplit(b"/", 1)[1]
        job, frames = worker.expect(Command.JOB)
        lead = bytes(frames[0])
        assert conn.identity not in lead
        assert secret not in lead
        assert "client" not in job.header
        assert type(job.header["ticket"]) is int
        reply = {
            "id": job.header["id"],
            "ticket": job.header["ticket"],
            "attempt": job.header["attempt"],
            "node": "w1",
            "ok": True,
            "error": None,
            "items": [
                {"ok": True, "ms": 0.0, "error": None, "payload": np.zeros((4, 4), np.uint8)}
            ],
        }
        worker.send(Command.RESULT, reply)
        client.join(WAIT_S)
        [done] = results
        assert done.node == "w1"
        assert done.error is None


# ------------------------------------------------------------------ forged actor messages


def test_forged_signals_neither_kill_nor_fool_a_linked_process(
    procs: Processes, tcp_url: str, raws: list[Raw]
) -> None:
    """main links to an echo process on n1. A joined attacker sends main an EXIT "kill" that
    claims to come from that process, and a MONITOR and SPAWN in its name; an unjoined one
    sends main a forged reply. None of it reaches main; each is counted."""
    procs.broker(tcp_url)
    procs.worker(tcp_url, "n1", "--import", BEHAVIOURS)
    with zimg.connect(tcp_url, name="main") as node:
        echo = node.spawn("n1", "zimg.behaviours:echo", link=True)
        attacker = Raw(tcp_url)
        raws.append(attacker)
        attacker.hello("evil")
        attacker.expect(Command.WELCOME)
        me = node.self()
        attacker.send(Command.EXIT, {"to": me, "from": echo, "reason": "kill", "link": True})
        attacker.send(Command.EXIT, {"to": me, "from": echo, "reason": "kill", "link": False})
        attacker.send(Command.LINK, {"to": me, "from": echo})
        stranger = Raw(tcp_url)
        raws.append(stranger)
        stranger.send(Command.SEND, {"to": me, "msg": ("echo", "forged")})
        assert stranger.expect(Command.DISCONNECT)[0].header["reason"].startswith("unknown node")
        wait_until(lambda: stats(tcp_url)["forged"] >= 3, "the broker to count the forgeries")
        # main is alive, linked, and its mailbox holds only the real reply.
        node.send(echo, ("echo", me, "real"))
        assert node.receive(timeout=WAIT_S) == ("echo", "real")
        with pytest.raises(zimg.ZimgTimeout):
            node.receive(timeout=0.3)
        assert stats(tcp_url)["forged"] == 3


# ------------------------------------------------------------------ memory at the broker


def job_header(i: int, payload: np.ndarray[Any, Any]) -> dict[str, Any]:
    item = {"name": f"f{i}.jpg", "ext": ".jpg", "payload": payload}
    return {"id": i, "mode": "encoded", "ops": [], "items": [item]}


@pytest.mark.timeout(120)
def test_jobs_the_broker_cannot_hold_are_refused_and_its_memory_stays_bounded(
    procs: Processes, tcp_url: str, raws: list[Raw]
) -> None:
    """No worker: every job would wait in the broker. A client sends 8 jobs of 64 MiB (the
    finding: 24 of them took the broker from 69 to 1,605 MB). It holds 4 (256 MiB per client) and
    answers the others busy; its RSS stays within the cap."""
    broker = procs.broker(tcp_url)
    before = vm_kb(broker.pid)
    client = Raw(tcp_url)
    raws.append(client)
    client.hello("greedy")
    client.expect(Command.WELCOME)
    payload = np.ones((64 << 20) - 4096, np.uint8)  # 64 MiB with its header
    for i in range(8):
        client.send(Command.JOB, job_header(i, payload))
    refused = []
    while len(refused) < 4:
        msg, _ = client.expect(Command.RESULT)
        refused.append((msg.header["id"], msg.header.get("busy")))
    assert sorted(refused) == [(4, True), (5, True), (6, True), (7, True)]
    report = query_nodes(tcp_url)
    assert (report["queued"], report["stats"]["jobs_refused"]) == (4, 4)
    grown_mb = (vm_kb(broker.pid, "VmHWM") - before) / 1024
    print(f"broker peak growth: {grown_mb:.0f} MB")
    # What it holds (256 MiB), and the jobs it is reading before it refuses them (a message
    # is in memory whole while the broker reads it): measured 384 MB.
    assert grown_mb < 256 + 3 * 64


@pytest.mark.timeout(60)
def test_a_peer_stalled_in_the_middle_of_a_frame_is_cut_off_and_its_memory_freed(
    procs: Processes, tcp_url: str
) -> None:
    """Four raw connections each announce a 200 MiB frame, send 100 MiB of it and stop (the
    finding: such peers held 1,269 MB for good). The broker's ZMTP heartbeats close them after
    the liveness bound, and the memory goes back."""
    broker = procs.broker(tcp_url, "--stall-timeout", "0.5")  # cut after 0.5 to 1 s
    before = vm_kb(broker.pid)
    chunk = b"\0" * (1 << 20)
    conns = []
    for i in range(4):
        conn = zmtp_connect(tcp_url, b"stall%d" % i)
        conn.sendall(zmtp_frame(b"", more=False, declared=200 << 20)[:9])
        for _ in range(100):
            conn.sendall(chunk)
        conns.append(conn)
    try:
        held_mb = (vm_kb(broker.pid) - before) / 1024
        for conn in conns:
            assert closed_within(conn, 10.0), "the broker kept a stalled connection open"
        wait_until(
            lambda: vm_kb(broker.pid) - before < 64 * 1024, "the broker to free the partial frames"
        )
        print(f"held {held_mb:.0f} MB while the frames were half-sent; freed after the cut")
        assert query_nodes(tcp_url)["count"] == 0
    finally:
        for conn in conns:
            conn.close()


# ------------------------------------------------------------------ NODES


def test_nodes_answers_however_large_the_placements(
    procs: Processes, tcp_url: str, raws: list[Raw]
) -> None:
    """100 fake workers each declare 4,096 CPUs and a 256-character host (the finding: the
    NODES reply grew to 1.23 MB, failed to encode, and `zimg nodes` timed out for everyone)."""
    procs.broker(tcp_url)
    for i in range(100):
        raw = Raw(tcp_url)
        raws.append(raw)
        raw.hello(f"fat{i:03d}", role="worker", host="h" * 256, cpus=list(range(4096)), threads=1)
    for raw in raws:
        raw.expect(Command.WELCOME)
    report = query_nodes(tcp_url)
    assert [n["name"] for n in report["nodes"]] == [f"fat{i:03d}" for i in range(100)]
    assert all(len(n["cpus"]) == 4096 for n in report["nodes"])
    with zimg.connect(tcp_url, name="main") as node:
        assert len(node.nodes()) == 100


# ------------------------------------------------------------------ jobs that never come back


def test_a_job_its_worker_never_answers_is_retried_elsewhere_after_the_deadline(
    procs: Processes, tcp_url: str, raws: list[Raw], tmp_path: Path, samples: Path
) -> None:
    """A worker that takes jobs and never answers (the finding: it held a 200-job batch at 169
    results for good). Past the deadline its jobs go to n1 and it is marked hung."""
    procs.broker(tcp_url, "--job-deadline", "1", "--heartbeat", "0.3")
    sink = Raw(tcp_url)
    raws.append(sink)
    sink.hello("sink", role="worker")
    sink.expect(Command.WELCOME)
    sink.keep_alive(0.1)  # alive, reading its jobs, never answering them
    procs.worker(tcp_url, "n1")
    files = [samples / "coins.png"] * 6
    outdir = tmp_path / "out"
    with Connection(tcp_url, "main").start() as conn:
        options = zimg.BatchOptions(outdir=outdir, window=4, idle_timeout_s=30)
        report = zimg.run_batch(conn, files, options)
    assert report.failed == 0, report.failures
    entries = manifest(outdir)
    assert len(entries) == len(files)
    for entry in entries:
        assert entry["node"] == "n1"
        check_output(entry)
    nodes = {n["name"]: n for n in query_nodes(tcp_url)["nodes"]}
    assert nodes["sink"].get("hung") is True
    assert nodes["sink"]["active"] == 0
    assert stats(tcp_url)["jobs_expired"] >= 1
    assert sink.received.count(Command.JOB) == 2  # its credit: then hung, nothing more


# ------------------------------------------------------------------ names


@pytest.mark.timeout(60)
def test_a_paused_worker_that_lost_its_name_keeps_asking_and_comes_back(
    procs: Processes, tcp_url: str, raws: list[Raw]
) -> None:
    """n1 is paused past the liveness bound; an impostor joins as n1. When n1 wakes, the broker
    refuses it the name; n1 says why and keeps asking (the finding: it exited with code 1), and
    gets its name back once the impostor leaves."""
    procs.broker(tcp_url, "--heartbeat", "0.3")
    worker = procs.worker(tcp_url, "n1")
    incarnation = next(n for n in query_nodes(tcp_url)["nodes"])["incarnation"]
    os.kill(worker.pid, signal.SIGSTOP)
    try:
        wait_until(lambda: query_nodes(tcp_url)["count"] == 0, "n1 to be declared dead")
        impostor = Raw(tcp_url)
        raws.append(impostor)
        impostor.hello("n1", role="worker", incarnation=12345)
        impostor.expect(Command.WELCOME)
    finally:
        os.kill(worker.pid, signal.SIGCONT)
    log = procs.logdir / "worker-n1-2.log"

    def impostor_beats(condition: Callable[[], Any]) -> Callable[[], Any]:
        # The impostor must stay alive (it beats at every check: the broker drops a silent node
        # after 0.9 s) until n1 has been refused, or n1 may simply get its name back.
        return lambda: impostor.send(Command.HEARTBEAT, {}) or condition()

    wait_until(
        impostor_beats(lambda: "refused to take us back" in log.read_text()),
        "n1 to say why it waits",
    )
    wait_until(
        impostor_beats(lambda: stats(tcp_url)["rejected"] >= 3), "n1 to ask again after refusals"
    )
    assert worker.poll() is None, log.read_text()
    impostor.send(Command.DISCONNECT, {"reason": "normal"})
    back = wait_until(
        lambda: [n for n in query_nodes(tcp_url)["nodes"] if n["incarnation"] == incarnation],
        "n1 to get its name back",
    )
    assert back[0]["name"] == "n1"


def test_a_key_cannot_join_under_a_name_that_belongs_to_a_longer_key(
    procs: Processes, tcp_url: str, keyring: Path
) -> None:
    keys = node_keys(keyring, "n1")
    procs.broker(tcp_url, "--keys", str(keyring / "broker"), keys=keys)
    with pytest.raises(RejectedError, match="registered as 'n1'"):
        Connection(tcp_url, "n1.gpu", keys=keys).start()
    with Connection(tcp_url, "n1.cpu", keys=keys).start():
        pass
    with Connection(tcp_url, "n1.gpu", keys=node_keys(keyring, "n1.gpu")).start():
        pass


# ------------------------------------------------------------------ odd terms where names go


def test_arrays_where_a_node_or_a_registered_name_goes_are_dropped_as_malformed(
    procs: Processes, tcp_url: str, raws: list[Raw]
) -> None:
    """A joined peer puts a NumPy array where SPAWN's node name, or a ``(name, node)`` pair's
    name or node, goes. Compared with a str, an array answers with an array whose truth is an
    error: one such SPAWN used to stop the broker. Each is now refused as malformed, and
    counted; the broker goes on serving, and n1 never sees one."""
    procs.broker(tcp_url)
    worker = procs.worker(tcp_url, "n1", "--import", BEHAVIOURS)
    attacker = Raw(tcp_url)
    raws.append(attacker)
    attacker.hello("evil")
    attacker.expect(Command.WELCOME)
    me, odd = wire.Pid("evil", 1, 1), np.arange(4, dtype=np.uint8)
    spawn = {"from": me, "ref": wire.Ref("evil", 1, 1), "behaviour": "zimg.behaviours:echo"}
    before = stats(tcp_url)["malformed"]
    for to in (odd, ("n1", odd), [odd, "n1"], ("*", odd)):
        attacker.send(Command.SPAWN, {**spawn, "to": to, "args": []})
    attacker.send(Command.SEND, {"to": (odd, "n1"), "msg": 1})
    attacker.send(Command.SEND, {"to": ("echo", odd), "msg": 1})
    wait_until(lambda: stats(tcp_url)["malformed"] - before >= 6, "the broker to count all six")
    with zimg.connect(tcp_url, name="main") as node:  # the cluster still works end to end
        echo = node.spawn("n1", "zimg.behaviours:echo")
        node.send(echo, ("echo", node.self(), "after"))
        assert node.receive(timeout=WAIT_S) == ("echo", "after")
    assert stats(tcp_url)["malformed"] - before == 6
    assert attacker.everything(0.2) == []  # dropped, not answered
    log = (procs.logdir / "worker-n1-2.log").read_text()
    assert worker.poll() is None, log
    assert "Traceback" not in log, log
