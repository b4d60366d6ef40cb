"""A waiting receive reads its node's lane socket itself: no thread hand-off per message.

Handing each arriving message from the I/O thread to the actor thread that waits for it costs a
thread wake-up, which on a busy machine is most of a small message's latency. So the first
process of a node to wait in ``receive`` with nothing to take becomes the *leader*: it reads the
lane socket itself, delivering what it reads (to itself, or to any other mailbox) exactly as the
I/O thread would, until a message reaches its own mailbox or its wait ends. Other waiting
processes wait on their mailboxes as before.

Who reads, and when:

- Reading the lane socket, and calling the connection's handlers, are done under the
  connection's *dispatch lock*, whoever does them: messages keep their order, and handlers run
  one at a time, as the transport promises.
- The I/O thread reads the lane socket once there has been no leader for ``GLANCE_S``. While
  there is one, or was one a moment ago, it leaves the socket alone. A receive that ends soon
  after it began does not wake the I/O thread: most such receives are followed by another one
  at once (a request and its reply; the next message of a stream), and a wake-up per message
  would cost as much as the hand-off it saves. Instead, the I/O thread looks again every
  ``GLANCE_S`` while a leader is new; a leader that ends after ``LONG_WAIT_S`` wakes it
  (``kick``). A message that arrives between leaders so waits at most about ``GLANCE_S``.
- A leader reads ``LEADER_READ`` lane messages at a time (a batch is one), and stops as soon as
  its own mailbox has something: the process takes what came, and reads on at its next
  receive. A stream to one process so goes from socket to mailbox to ``receive`` on one
  thread, with no I/O thread filling that mailbox (and taking the GIL) meanwhile.
- Both wait on the socket's file descriptor (``ZMQ_FD``), never on the socket: only the lock
  holder touches the socket, and it reads until ZeroMQ says there is nothing more, so a message
  that arrives later makes the descriptor readable again.
"""

from __future__ import annotations

import contextlib
import os
import select
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import zmq

from zimg._lanes import Lanes
from zimg.wire import Message

GLANCE_S = 0.002
LONG_WAIT_S = 0.05
# A leader reads this many lane messages (a batch is one) at a time, and stops once its own
# mailbox has something: the rest wait for its next receive, a moment later.
LEADER_READ = 4


class WakeFd:
    """A file descriptor one thread waits on and any thread can make readable."""

    def __init__(self) -> None:
        self.is_set = False
        if hasattr(os, "eventfd"):
            self.fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
            self._write_fd = self.fd
        else:  # pragma: no cover (not Linux)
            self.fd, self._write_fd = os.pipe()
            os.set_blocking(self.fd, False)
            os.set_blocking(self._write_fd, False)

    def set(self) -> None:
        self.is_set = True
        with contextlib.suppress(BlockingIOError):  # readable already
            os.write(self._write_fd, b"\x01\0\0\0\0\0\0\0")

    def clear(self) -> None:
        """Make it unreadable, if it was set (the flag saves a failed read, which raises)."""
        if self.is_set:
            self.drain()

    def drain(self) -> None:
        """Make it unreadable (a poll said it is readable: read whatever the flag says)."""
        self.is_set = False
        with contextlib.suppress(BlockingIOError):
            os.read(self.fd, 4096)

    def close(self) -> None:
        os.close(self.fd)
        if self._write_fd != self.fd:
            os.close(self._write_fd)


class Waker:
    """What a leading receive leaves in its mailbox's waiters: ``release`` wakes it."""

    __slots__ = ("_owner", "_wake", "fired")

    def __init__(self, wake: WakeFd) -> None:
        self.fired = False
        self._owner = threading.get_ident()
        self._wake = wake

    def release(self) -> None:
        self.fired = True
        if threading.get_ident() != self._owner:  # the leader itself needs no wake-up
            self._wake.set()


class LaneReader:
    """The leader role for one node's lane socket (see the module docstring).

    Args:
        lanes: the node's lanes.
        lock: the connection's dispatch lock.
        deliver: what the I/O thread does with a message read off a lane.
        kick: wakes the I/O thread (it watches the lane socket again).
        deliver_run: what it does with the messages of a lane's batch (None: ``deliver`` each).
    """

    def __init__(
        self,
        lanes: Lanes,
        lock: AbstractContextManager[Any],
        deliver: Callable[[Message], None],
        kick: Callable[[], None],
        deliver_run: Callable[[list[Message]], None] | None = None,
    ) -> None:
        self.lanes = lanes
        self.lock = lock
        self.deliver = deliver
        self.deliver_run = deliver_run
        self.kick = kick
        self.leader = threading.Lock()
        self.wake = WakeFd()
        fd = lanes.router.get(zmq.FD)
        assert isinstance(fd, int)
        self.fd = fd
        self.closed = False
        self.io_watching = True  # the I/O thread polls the lane socket (set by it alone)
        self.began = 0.0  # when the leader took the role
        self.ended = 0.0  # when the last leader gave it up
        self._poller = select.poll()  # the leader's (one at a time)
        self._poller.register(self.fd, select.POLLIN)
        self._poller.register(self.wake.fd, select.POLLIN)

    def before_wait(self) -> None:
        """A receive is about to wait: send the node's open lane batches now (the waiting
        process may wait for the answer to one of their messages)."""
        if self.lanes.batching:
            self.lanes.flush_batches()

    def begin(self) -> Waker | None:
        """Take the leader role; None if another receive has it (or the node closed)."""
        if self.closed or not self.leader.acquire(False):
            return None
        self.began = time.monotonic()
        self.wake.clear()
        return Waker(self.wake)

    def wait(self, waker: Waker, timeout: float | None) -> bool:
        """Read the lane socket until ``waker`` fires (True) or ``timeout`` passes (False).
        A node that closes under it ends the role for good (False: its mailbox waits as
        without lanes)."""
        try:
            return self._wait(waker, timeout)
        except zmq.ZMQError:  # the socket closed with the node
            self.closed = True
            return waker.fired

    def _wait(self, waker: Waker, timeout: float | None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        poller, wake_fd = self._poller, self.wake.fd
        lanes, deliver, deliver_run = self.lanes, self.deliver, self.deliver_run
        while True:
            more = True
            while more and not waker.fired:
                with self.lock:
                    more = lanes.read(deliver, deliver_run, LEADER_READ)
            if waker.fired:
                return True
            if deadline is None:
                events = poller.poll()
            else:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                events = poller.poll(max(1, int(left * 1000 + 0.999)))
            # Whatever made the descriptor readable (a wake-up for this leader, or one meant
            # for an earlier one), read it, or this leader would never block again.
            for fd, _ in events:
                if fd == wake_fd:
                    self.wake.drain()

    def end(self) -> None:
        """Give the role up; after a long wait, wake the I/O thread if it stopped watching."""
        self.ended = now = time.monotonic()
        long_wait = now - self.began >= LONG_WAIT_S
        self.leader.release()
        if long_wait and not self.io_watching:
            self.kick()

    def io_should_watch(self) -> tuple[bool, float | None]:
        """The I/O thread, before each poll: watch the lane socket (only once there has been
        no leader for ``GLANCE_S``), and the longest it may then wait before it looks again
        (None: no bound from lanes)."""
        self.io_watching = False
        now = time.monotonic()
        if not self.leader.locked():
            idle = now - self.ended
            if idle >= GLANCE_S:
                self.io_watching = True
                return True, None
            return False, GLANCE_S - idle  # a process that just led may lead again
        # A new leader may end without a kick: look again soon. An old one kicks.
        return False, GLANCE_S if now - self.began < LONG_WAIT_S else None

    def close(self) -> None:
        """The node closed: no more leaders (one still waiting ends when its read fails)."""
        self.closed = True
        self.wake.close()
