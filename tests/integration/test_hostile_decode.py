"""Hash-collision headers against REAL processes (issue 12, item 1).

Before the fix, one 1 MB header whose map keys all shared one Python hash cost the broker 37 s
of CPU (NODES answered after 39 s, a healthy worker declared dead), and the same header in a SEND,
which the broker forwards unread, froze a worker's I/O thread for ~53 s. Now a key that is not
str or bytes is refused as msgpack reads it (``zimg.wire.decode``, ``docs/protocol.md`` §3).

- A peer that never sent HELLO sends the worst ~1 MB collision headers ``zimg.bench.decode``
  builds (and a flood that is refused only at its last byte): the broker counts each one
  ``malformed``, answers NODES at once, and its healthy worker stays up.
- A joined raw peer sends the collision headers in SENDs to a live pid on a worker: the broker
  forwards them on their ``to`` alone; the worker drops and counts them (its heartbeats report
  the count in NODES), stays joined, and its actor still answers.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

import msgpack
import pytest
import zmq

import zimg
from tests.integration.test_fuzz_broker import joined
from zimg import wire
from zimg.bench.decode import as_msgpack, collision_header, flood_header
from zimg.nodes_query import query_nodes
from zimg.testing import Processes
from zimg.wire import Command, Pid

HEARTBEAT_S = 0.5
LIVENESS = 6  # a node silent for 3 s is dead: far less than one stall the attack caused
PROMPT_S = 2.0  # NODES and an echo must come back within this, attack and all
WAIT_S = 10.0  # generous bound for what must happen eventually (a heartbeat's report)

# (command, header): the worst ~1 MB collision headers, at the top of the header and nested,
# and a valid-looking flood of nested lists that is refused only at its last key.
ATTACKS = [
    (Command.NODES, collision_header("tuples", where="top")),
    (Command.HELLO, collision_header("pids")),
    (Command.SEND, collision_header("mixed", where="top")),
    (Command.RESULT, collision_header("ints")),
    (Command.JOB, flood_header("nested lists", bad_end=True)),
]


def broker_cpu_s(pid: int) -> float:
    """User plus system CPU seconds the process has used (``/proc/PID/stat``)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.fixture
def dealers() -> Iterator[list[zmq.Socket[bytes]]]:
    """Raw DEALERs the test opens; all closed at the end."""
    opened: list[zmq.Socket[bytes]] = []
    yield opened
    for sock in opened:
        sock.close(linger=0)


def receive(sock: zmq.Socket[bytes], command: Command, deadline: float) -> wire.Message:
    """The next message with ``command`` (others are dropped), before ``deadline``."""
    while (left := deadline - time.monotonic()) > 0:
        if sock.poll(int(left * 1000) + 1):
            msg = wire.decode(sock.recv_multipart())
            if msg.command is command:
                return msg
    raise AssertionError(f"no {command.name} within the deadline")


@pytest.mark.timeout(90)
def test_an_unknown_peer_cannot_stall_the_broker_with_colliding_keys(
    procs: Processes, tcp_url: str, dealers: list[zmq.Socket[bytes]]
) -> None:
    broker = procs.broker(tcp_url, "--heartbeat", str(HEARTBEAT_S), "--liveness", str(LIVENESS))
    worker = procs.worker(tcp_url, "n1")
    before = query_nodes(tcp_url)
    cpu_before = broker_cpu_s(broker.pid)

    attacker: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.DEALER)
    dealers.append(attacker)
    attacker.setsockopt(zmq.LINGER, 0)
    attacker.setsockopt(zmq.ROUTING_ID, b"attacker-never-said-hello")
    attacker.connect(tcp_url)
    started = time.monotonic()
    for command, header in ATTACKS:
        assert len(header) > 1_000_000
        attacker.send_multipart([wire.lead_frame(command, header)])
    # The broker reads one connection in order: its answer to this NODES comes after it has
    # handled every attack message.
    attacker.send_multipart(wire.encode(Command.NODES, {}))
    reply = receive(attacker, Command.NODES, started + PROMPT_S).header
    latency = time.monotonic() - started
    cpu = broker_cpu_s(broker.pid) - cpu_before
    print(f"{len(ATTACKS)} attack messages: NODES after {latency:.3f} s; broker CPU {cpu:.2f} s")

    assert reply["stats"]["malformed"] - before["stats"]["malformed"] == len(ATTACKS)
    assert cpu < PROMPT_S
    after = query_nodes(tcp_url)
    assert after["stats"]["nodes_down"] == before["stats"]["nodes_down"]
    assert [n["name"] for n in after["nodes"]] == ["n1"]
    assert after["nodes"][0]["incarnation"] == before["nodes"][0]["incarnation"]
    assert worker.poll() is None
    assert broker.poll() is None


def to_pid(pid: Pid, body: bytes) -> bytes:
    """A SEND header ``{"to": pid, "msg": <body>}`` with ``to`` first, as the broker forwards
    unread; ``body`` is packed msgpack."""
    return b"\x82\xa2to" + bytes(msgpack.packb(as_msgpack(pid))) + b"\xa3msg" + body


def payload_of(header: bytes) -> bytes:
    """The packed value of a ``{"msg": value}`` header built by ``collision_header``."""
    assert header.startswith(b"\x81\xa3msg"), header[:8]
    return header[5:]


@pytest.mark.timeout(90)
def test_colliding_keys_forwarded_to_a_worker_are_dropped_and_counted_by_it(
    procs: Processes, tcp_url: str, dealers: list[zmq.Socket[bytes]]
) -> None:
    # Built first: a joined node silent for longer than the expiry would be dropped.
    attacks = [
        payload_of(collision_header(kind, size=1_040_000)) for kind in ("tuples", "pids", "mixed")
    ]
    procs.broker(tcp_url, "--heartbeat", str(HEARTBEAT_S), "--liveness", str(LIVENESS))
    worker = procs.worker(tcp_url, "n1")
    with zimg.connect(tcp_url, name="main") as node:
        echo = node.spawn("n1", "zimg.behaviours:echo")
        node.send(echo, ("echo", node.self(), "warm"))
        assert node.receive(timeout=WAIT_S) == ("echo", "warm")
        raw = joined(tcp_url, "raw")
        dealers.append(raw)
        raw_pid = Pid("raw", 1, 0)  # joined() says incarnation 1
        before = query_nodes(tcp_url)

        started = time.monotonic()
        for body in attacks:
            raw.send_multipart([wire.lead_frame(Command.SEND, to_pid(echo, body))])
        # The worker receives what the broker forwards in order: the echo's answer to this
        # comes after its node has handled every attack message.
        raw.send_multipart(wire.encode(Command.SEND, {"to": echo, "msg": ("echo", raw_pid, 1)}))
        answer = receive(raw, Command.SEND, started + PROMPT_S).header
        latency = time.monotonic() - started
        print(f"{len(attacks)} SENDs of ~1 MB: the echo answered after {latency:.3f} s")
        assert answer == {"to": raw_pid, "msg": ("echo", 1)}
        # ...and answers the other nodes too.
        node.send(echo, ("echo", node.self(), "after"))
        assert node.receive(timeout=PROMPT_S) == ("echo", "after")

        # The worker counted them, and says so in its heartbeats.
        deadline = time.monotonic() + WAIT_S
        while True:
            raw.send_multipart(wire.encode(Command.HEARTBEAT, {}))  # keep "raw" alive
            report = query_nodes(tcp_url)
            entry: dict[str, Any] = next(n for n in report["nodes"] if n["name"] == "n1")
            if entry["malformed"] - n1_malformed(before) >= len(attacks):
                break
            assert time.monotonic() < deadline, f"n1 reported {entry['malformed']} malformed"
            time.sleep(0.05)  # polling the broker's table: nothing to wait on instead
        assert entry["malformed"] - n1_malformed(before) == len(attacks)
        # Forwarded unread: the broker itself decoded none of them. Nobody fell off.
        assert report["stats"]["malformed"] == before["stats"]["malformed"]
        assert report["stats"]["nodes_down"] == before["stats"]["nodes_down"]
        assert {"n1", "main", "raw"} <= {n["name"] for n in report["nodes"]}
        assert entry["incarnation"] == next(
            n["incarnation"] for n in before["nodes"] if n["name"] == "n1"
        )
        assert worker.poll() is None


def n1_malformed(report: dict[str, Any]) -> int:
    """n1's malformed count in a NODES report."""
    return int(next(n["malformed"] for n in report["nodes"] if n["name"] == "n1"))
