"""The broker's backlogs for peers whose queue is full: order, bounds and flushing, without
sockets (the send function is a fake that can say "full" or "gone")."""

from __future__ import annotations

import errno
from collections.abc import Sequence
from typing import Any

import pytest
import zmq

from zimg._broker_backlog import Backlogs

A, B, C = b"a/1", b"b/1", b"c/1"


def msg(i: int, size: int = 10) -> list[bytes]:
    return [i.to_bytes(4, "big"), b"x" * (size - 4)]


class FakeSocket:
    """Takes ``room[peer]`` messages per peer, then says the queue is full; a peer in ``gone``
    has no connection."""

    def __init__(self, room: dict[bytes, int], gone: Sequence[bytes] = ()) -> None:
        self.room = dict(room)
        self.gone = set(gone)
        self.sent: list[tuple[bytes, int]] = []

    def send(self, identity: bytes, frames: Sequence[Any]) -> None:
        if identity in self.gone:
            raise zmq.ZMQError(errno.EHOSTUNREACH)
        if self.room.get(identity, 0) <= 0:
            raise zmq.Again()
        self.room[identity] -= 1
        self.sent.append((identity, int.from_bytes(frames[0], "big")))


def test_each_peer_is_capped_in_messages_and_bytes_and_all_together_in_bytes() -> None:
    backlogs = Backlogs(max_messages=3, max_bytes=1000, max_total_bytes=75)
    assert backlogs.start(A, msg(0))
    assert all(backlogs.queue_behind(backlogs.peers[A], msg(i)) for i in (1, 2))
    assert not backlogs.queue_behind(backlogs.peers[A], msg(3))  # A's 3 messages
    assert backlogs.start(B, msg(0, size=40))
    # A cap is reached by the message that crosses it (the bound is one message soft).
    assert backlogs.queue_behind(backlogs.peers[B], msg(1))  # 70 bytes held: below 75
    assert not backlogs.queue_behind(backlogs.peers[B], msg(2))  # 80 held: all full
    assert not backlogs.start(C, msg(0))  # and no new peer's first message either
    assert backlogs.nbytes == 80
    assert C not in backlogs.peers

    per_peer = Backlogs(max_messages=100, max_bytes=25, max_total_bytes=10_000)
    per_peer.start(A, msg(0))
    per_peer.queue_behind(per_peer.peers[A], msg(1))
    per_peer.queue_behind(per_peer.peers[A], msg(2))  # 20 bytes held, below the cap: taken
    assert not per_peer.queue_behind(per_peer.peers[A], msg(3))  # 30 held: at the cap
    assert len(per_peer.peers[A].messages) == 3


def test_flush_sends_in_order_until_a_queue_is_full_and_frees_what_it_sent() -> None:
    backlogs = Backlogs()
    backlogs.start(A, msg(0))
    for i in range(1, 5):
        backlogs.queue_behind(backlogs.peers[A], msg(i))
    backlogs.start(B, msg(0))
    sock = FakeSocket({A: 3, B: 5})
    assert backlogs.flush(sock.send, {A, B}) == (0, [])
    assert sock.sent == [(A, 0), (A, 1), (A, 2), (B, 0)]
    assert list(backlogs.peers) == [A]  # B's backlog emptied: gone; A waits for room
    assert backlogs.nbytes == 20
    sock.room[A] = 10
    backlogs.flush(sock.send, {A, B})
    assert sock.sent[-2:] == [(A, 3), (A, 4)]
    assert backlogs.peers == {}
    assert backlogs.nbytes == 0


def test_flush_drops_the_backlogs_of_peers_gone_or_no_longer_nodes() -> None:
    backlogs = Backlogs()
    for peer, count in ((A, 3), (B, 2), (C, 2)):
        backlogs.start(peer, msg(0))
        for i in range(1, count):
            backlogs.queue_behind(backlogs.peers[peer], msg(i))
    sock = FakeSocket({A: 10, B: 10, C: 10}, gone=[C])
    # A is no longer a node: its 3 messages are counted as unroutable. C's connection is gone:
    # its second message is counted here, its first (whose send failed) by on_unreachable.
    assert backlogs.flush(sock.send, {B, C}) == (3 + 1, [C])
    assert sock.sent == [(B, 0), (B, 1)]
    assert backlogs.peers == {}
    assert backlogs.nbytes == 0


def test_flush_lets_other_errors_through() -> None:
    backlogs = Backlogs()
    backlogs.start(A, msg(0))

    def broken(identity: bytes, frames: Sequence[Any]) -> None:
        raise zmq.ZMQError(errno.ENOTSOCK)

    with pytest.raises(zmq.ZMQError):
        backlogs.flush(broken, {A})
