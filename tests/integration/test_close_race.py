"""A node whose connection closes while the broker is behind, against a REAL broker process.

Node x sends two messages that take the broker a while to read (headers it refuses only after
decoding about 1 MB each), then what a leaving node sends last: a NODES request, an exit signal
for a process on node y, and DISCONNECT; then it closes its connection. While the broker decodes,
its I/O thread takes in the rest and the close, so when the broker answers x's NODES the reply
fails (ROUTER_MANDATORY): x's connection is gone, but x's exit signal and DISCONNECT still wait in
the broker's socket. The broker used to declare x down then (`noconnection`) and drop what
followed: y never got x's exit signal, and heard `noconnection` where x had said `normal`. Now
x is declared down only once the broker has read what x queued, and x leaves with its own reason.

The order is fixed by the slow messages, not by timing: they are read before the rest, and take
the broker far longer than its I/O thread needs to take in a few small messages and a close.
"""

from __future__ import annotations

import time

import pytest

from tests.integration.test_hostile_peers import Raw
from zimg import protocol, wire
from zimg.bench.decode import flood_header
from zimg.testing import Processes
from zimg.wire import Command, Pid

pytestmark = pytest.mark.timeout(60)


def test_a_node_whose_connection_closes_while_the_broker_is_behind_leaves_with_its_reason(
    procs: Processes, any_url: str, raws: list[Raw]
) -> None:
    url = any_url
    # No heartbeat to x during the test: the one message the broker sends x is the reply.
    procs.broker(url, "--heartbeat", "60")
    x, y = Raw(url), Raw(url)
    raws.append(y)  # x closes itself, below
    x.hello("x")
    x.expect(Command.WELCOME)
    y.hello("y")
    y.expect(Command.WELCOME)
    y.send(Command.WATCH, {"node": "x", "incarnation": 1})
    y.send(Command.NODES, {})  # answered after the WATCH is registered
    y.expect(Command.NODES)
    slow = [wire.lead_frame(Command.NODES, flood_header("pids", bad_end=True))]
    for _ in range(2):
        x.sock.send_multipart(slow)
    x.send(Command.NODES, {})  # the reply finds x's connection gone
    x.send(Command.EXIT, {"to": Pid("y", 1, 7), "from": Pid("x", 1, 3), "reason": "shutdown"})
    x.send(Command.DISCONNECT, {"reason": protocol.NORMAL})
    x.sock.close(linger=20_000)  # what x queued still goes out, then the connection closes
    x.ctx.term()  # returns once it has
    got: list[wire.Message] = []
    deadline = time.monotonic() + 20.0
    while not any(m.command is Command.NODEDOWN for m in got):
        received = y.recv(max(0.0, deadline - time.monotonic()))
        assert received is not None, f"no NODEDOWN for x within 20 s; got {got}"
        if received[0].command is not Command.HEARTBEAT:
            got.append(received[0])
    assert [(m.command, m.header.get("reason")) for m in got] == [
        (Command.EXIT, "shutdown"),
        (Command.NODEDOWN, protocol.NORMAL),
    ]
    y.send(Command.NODES, {})
    report, _ = y.expect(Command.NODES)
    assert report.header["downs"][-1]["why"] == "left"
    assert report.header["stats"]["unroutable"] >= 1  # the reply to x: the race did happen
    assert report.header["stats"]["malformed"] == 2
