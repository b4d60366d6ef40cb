"""A node of an older protocol version is told why it cannot join, in words it can read."""

from __future__ import annotations

from collections.abc import Iterator

import msgpack
import pytest
import zmq

from zimg import Connection, protocol
from zimg.broker import Broker
from zimg.testing import free_tcp_url
from zimg.wire import Command


@pytest.fixture
def broker() -> Iterator[Broker]:
    b = Broker(free_tcp_url()).start()
    try:
        yield b
    finally:
        b.stop()


def test_a_version_1_node_gets_a_version_1_reject(broker: Broker) -> None:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    try:
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(broker.url)
        header = {"name": "old", "role": "worker", "capacity": 2, "incarnation": 1, "version": 1}
        # What a zimg of protocol version 1 sends: magic, command and header as three frames.
        sock.send_multipart([b"ZIMG1", bytes([Command.HELLO]), msgpack.packb(header)])
        assert sock.poll(5000), "no answer to a version-1 HELLO"
        magic, command, body = sock.recv_multipart()
        assert (magic, command) == (b"ZIMG1", bytes([Command.REJECT]))
        reason = msgpack.unpackb(body)["reason"]
        assert f"speaks {protocol.PROTOCOL_VERSION}" in reason
    finally:
        ctx.destroy(linger=0)
    assert "old" not in broker.state.by_name
    # The broker goes on serving current nodes.
    with Connection(broker.url, "new").start() as conn:
        assert conn.name == "new"
