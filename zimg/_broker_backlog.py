"""What the broker queues for peers whose socket queue is full, within bounds.

A ROUTER send to a peer at its high-water mark fails at once (the broker never blocks on one
peer). The message then waits here, behind any earlier ones for that peer, in order, and the
broker loop retries them every few milliseconds. Erlang's mailboxes are unbounded; a broker
serving many nodes cannot be: past :data:`MAX_BACKLOG` messages or :data:`MAX_BACKLOG_BYTES`
for one peer, or :data:`MAX_BACKLOG_TOTAL_BYTES` for all, new messages are dropped and counted.
A peer that far behind is usually stuck, and is declared dead when it misses its heartbeats,
which frees its backlog. No sockets here: the loop passes its send function in.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Collection, Sequence
from typing import Any

import zmq

MAX_BACKLOG = 100_000  # messages
MAX_BACKLOG_BYTES = 256 << 20  # bytes of frames
MAX_BACKLOG_TOTAL_BYTES = 1 << 30  # bytes of frames queued for all peers together


class Backlogs:
    """The messages waiting for each peer whose queue is full, and their total size."""

    def __init__(
        self,
        max_messages: int = MAX_BACKLOG,
        max_bytes: int = MAX_BACKLOG_BYTES,
        max_total_bytes: int = MAX_BACKLOG_TOTAL_BYTES,
    ) -> None:
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self.max_total_bytes = max_total_bytes
        # By peer; the loop's send path looks a peer up here first (one dict lookup).
        self.peers: dict[bytes, PeerBacklog] = {}
        self.nbytes = 0

    def queue_behind(self, waiting: PeerBacklog, frames: Sequence[Any]) -> bool:
        """Queue ``frames`` behind a peer's backlog; False if dropped at the bounds."""
        if (
            len(waiting.messages) >= self.max_messages
            or waiting.nbytes >= self.max_bytes
            or self.nbytes >= self.max_total_bytes
        ):
            return False
        self.nbytes += waiting.push(frames)
        return True

    def start(self, identity: bytes, frames: Sequence[Any]) -> bool:
        """A send to ``identity`` found its queue full: start its backlog with ``frames``;
        False if dropped because all backlogs together are at their bound."""
        if self.nbytes >= self.max_total_bytes:
            return False
        backlog = self.peers[identity] = PeerBacklog()
        self.nbytes += backlog.push(frames)
        return True

    def flush(
        self, send: Callable[[bytes, Sequence[Any]], None], nodes: Collection[bytes]
    ) -> tuple[int, list[bytes]]:
        """Retry every backlog in order with ``send`` until a peer's queue is full again.

        Backlogs of peers no longer in ``nodes`` are dropped. Returns how many messages were
        dropped that way, and the peers whose connection was found gone: their backlogs are
        dropped too, counted in the first number but for the message whose send failed (the
        caller reports that one to ``BrokerState.on_unreachable``, which counts it).
        """
        unroutable = 0
        gone: list[bytes] = []
        for identity in list(self.peers):
            waiting = self.peers[identity]
            if identity not in nodes:
                unroutable += len(waiting.messages)
                self.nbytes -= waiting.nbytes
                del self.peers[identity]
                continue
            try:
                while waiting.messages:
                    send(identity, waiting.messages[0])
                    self.nbytes -= waiting.pop()
            except zmq.Again:
                continue
            except zmq.ZMQError as exc:
                if exc.errno != zmq.EHOSTUNREACH:
                    raise
                unroutable += len(waiting.messages) - 1
                self.nbytes -= waiting.nbytes
                del self.peers[identity]
                gone.append(identity)
                continue
            del self.peers[identity]
        return unroutable, gone


class PeerBacklog:
    """Messages waiting for one peer whose queue is full, in order, and their size in bytes."""

    __slots__ = ("messages", "nbytes")

    def __init__(self) -> None:
        self.messages: deque[Sequence[Any]] = deque()
        self.nbytes = 0

    def push(self, frames: Sequence[Any]) -> int:
        """Queue a message; returns its size in bytes."""
        self.messages.append(frames)
        size = sum(len(f) for f in frames)  # zmq.Frame and bytes: their byte length
        self.nbytes += size
        return size

    def pop(self) -> int:
        """Take the first message off (it was sent); returns its size in bytes."""
        size = sum(len(f) for f in self.messages.popleft())
        self.nbytes -= size
        return size
