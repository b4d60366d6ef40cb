"""A node that floods LANE asks, against a REAL broker process: a bounded, counted refusal.

Without the bound, each of a node's asks for a lane to B went on to B, which had to answer each
one: one node could make the broker send B as many as it liked.
"""

from __future__ import annotations

import time

import pytest

from tests.integration.test_hostile_peers import Raw
from zimg import wire
from zimg.testing import Processes
from zimg.wire import Command

pytestmark = pytest.mark.timeout(60)
ASKS = 100_000


def test_a_flood_of_lane_asks_reaches_the_target_once_and_is_counted(
    procs: Processes, any_url: str, raws: list[Raw]
) -> None:
    url = any_url
    procs.broker(url, "--heartbeat", "0.5")
    a, b, c = Raw(url), Raw(url), Raw(url)
    raws += [a, b, c]
    for raw, name in ((a, "a"), (b, "b")):
        raw.hello(name, lane=f"tcp://127.0.0.1:{7000 + len(name)}")
        raw.expect(Command.WELCOME)
    b.keep_alive(0.1)  # b reads (and counts) whatever comes, and stays alive
    ask = wire.encode(Command.LANE, {"op": "ask", "to": "b"})
    started = time.monotonic()
    for _ in range(ASKS):
        a.sock.send_multipart(ask)  # blocks while the broker is behind (a's high-water mark)
    # The broker reads a's messages in order: its answer to this NODES comes after the asks.
    a.send(Command.NODES, {})
    reply, _ = a.expect(Command.NODES, timeout_s=30.0)
    counts = reply.header["stats"]
    a.keep_alive(0.1)
    flooded_s = time.monotonic() - started
    assert b.received.count(Command.LANE) <= 1, f"b got {b.received.count(Command.LANE)} asks"
    assert counts.get("lane_asks_refused") == ASKS - 1
    assert counts["nodes_down"] == 0
    # The broker is not behind: a newcomer is welcomed at once.
    asked = time.monotonic()
    c.hello("c")
    c.expect(Command.WELCOME, timeout_s=2.0)
    welcome_s = time.monotonic() - asked
    assert welcome_s < 1.0, (welcome_s, flooded_s)
    assert b.received.count(Command.LANE) <= 1
