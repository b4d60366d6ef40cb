"""An actor's mailbox: FIFO arrival, selective receive with timeouts, an interrupt for exits, and
bounds on what it holds.

Every mailbox holds at most ``max_messages`` messages and ``max_bytes`` bytes, and all the
mailboxes of a node share a :class:`ByteBudget`. A message over a bound is dropped (the newest
one: what is queued stays) and counted. Bytes are counted for messages that came off the network,
as :func:`term_size` estimates them; a local message is passed by reference and counts as one
message of no bytes. *System* messages (``EXIT`` from a link, ``DOWN``, ``nodedown``) are never
dropped for the message bound: there is at most one per link or monitor, and links and monitors
are bounded per process (see ``zimg._actor``).
"""

from __future__ import annotations

import contextlib
import threading
import time
from _thread import LockType, allocate_lock
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from zimg._errors import ZimgTimeout
from zimg.wire import Pid, Ref

Match = Callable[[Any], bool]


class Waiter(Protocol):
    """What a waiting receive leaves in its mailbox: ``put`` and ``interrupt`` release it."""

    def release(self) -> None: ...


class Leader(Protocol):
    """A way to wait that reads the node's sockets meanwhile (``zimg._lane_reader``): ``begin``
    gives a waiter (or None: wait as usual), ``wait`` returns True once it is released, False
    after ``timeout``, and ``end`` is called after every ``wait``. ``before_wait`` is called
    before every wait, led or not (the node sends what it held back: it may be what the waiting
    process waits on)."""

    def before_wait(self) -> None: ...

    def begin(self) -> Any: ...

    def wait(self, waiter: Any, timeout: float | None) -> bool: ...

    def end(self) -> None: ...


DEFAULT_MAX_MESSAGES = 100_000
DEFAULT_MAX_BYTES = 64 << 20
DEFAULT_NODE_MAX_BYTES = 512 << 20

_OBJECT_BYTES = 64  # about what one decoded object costs: its header, its slot in a container
_CHUNK_BYTES = 16 << 10  # most of its node's budget a mailbox reserves and does not use
_PLAIN = frozenset({int, float, bool, type(None), Pid, Ref})  # fixed-size terms


def term_size(term: Any) -> int:
    """About how many bytes of memory a decoded wire term holds.

    Strings, byte strings and arrays count their length; every other object, and every slot of
    a container, a small fixed cost. The walk is as deep as the term, which the wire limits
    bound (header size and nesting depth): it costs less than the decode that built the term.
    """
    kind = type(term)
    if kind is tuple or kind is list:
        total = _OBJECT_BYTES + (_OBJECT_BYTES + 8) * len(term)
        for item in term:
            item_kind = type(item)
            if item_kind is str or item_kind is bytes:
                total += len(item)
            elif item_kind not in _PLAIN:
                total += term_size(item) - _OBJECT_BYTES
        return total
    if kind in _PLAIN:
        return _OBJECT_BYTES
    if kind is str or kind is bytes:
        return _OBJECT_BYTES + len(term)
    if kind is dict:
        total = _OBJECT_BYTES + 32 * len(term)
        for key, value in term.items():
            total += term_size(key) + term_size(value)
        return total
    if kind is np.ndarray:
        return _OBJECT_BYTES + int(term.nbytes)
    return _OBJECT_BYTES


class ByteBudget:
    """The bytes held by all the mailboxes of one node, against a bound.

    A mailbox reserves bytes a few KiB at a time (``chunk``) and keeps what it has not used
    yet, so most messages cost no lock here; ``held`` counts what is reserved, which is what
    the bound bounds.

    Args:
        max_bytes: the most bytes all mailboxes together may hold.
    """

    __slots__ = ("_lock", "chunk", "held", "max_bytes")

    def __init__(self, max_bytes: int = DEFAULT_NODE_MAX_BYTES) -> None:
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be at least 1, got {max_bytes}")
        self.max_bytes = max_bytes
        self.chunk = min(_CHUNK_BYTES, max_bytes >> 6)
        self.held = 0
        self._lock = threading.Lock()

    def take(self, nbytes: int) -> bool:
        """Reserve ``nbytes`` if they fit; False (and nothing reserved) if not."""
        with self._lock:
            if self.held + nbytes > self.max_bytes:
                return False
            self.held += nbytes
            return True

    def give(self, nbytes: int) -> None:
        """Release bytes reserved with :meth:`take`."""
        with self._lock:
            self.held -= nbytes


class Mailbox:
    """Messages in arrival order; :meth:`receive` takes the first one a predicate accepts.

    Unmatched messages stay where they are, in order. A receive that is waiting can be
    interrupted (an exit signal): :meth:`interrupt` wakes it and makes it call ``check``.

    Args:
        max_messages: the most messages it holds (system messages may go beyond it).
        max_bytes: the most bytes of network messages it holds. One message larger than that
            is still taken while the mailbox holds no bytes, so a single large image always
            gets through to a process that keeps up.
        budget: the node-wide byte bound shared by all of a node's mailboxes (None: a private
            one of ``DEFAULT_NODE_MAX_BYTES``).
    """

    def __init__(
        self,
        max_messages: int = DEFAULT_MAX_MESSAGES,
        max_bytes: int = DEFAULT_MAX_BYTES,
        budget: ByteBudget | None = None,
    ) -> None:
        if max_messages < 1 or max_bytes < 1:
            raise ValueError("a mailbox must hold at least 1 message and 1 byte")
        self._items: deque[Any] = deque()
        self._sizes: deque[int] = deque()  # bytes counted for each item, in step with _items
        self._lock = threading.Lock()
        # One locked lock per waiting receive; releasing it wakes that receive. A Condition
        # does the same in more Python code: this costs a wake-up about 6 us less CPU.
        self._waiters: deque[LockType | Waiter] = deque()
        # A leader for this mailbox's waits (set by a node with lanes), else None.
        self.lead: Leader | None = None
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self.budget = budget if budget is not None else ByteBudget()
        self.nbytes = 0  # bytes counted for the messages held now
        self._credit = 0  # bytes reserved from the budget and not used yet
        self.dropped = 0  # messages refused because a bound was reached
        self._closed = False

    def put(self, message: Any, nbytes: int = 0, *, system: bool = False) -> bool:
        """Append a message that holds ``nbytes`` counted bytes; wakes a waiting receive.

        An ordinary message over the message bound, or whose bytes fit neither this mailbox nor
        the node's budget, is dropped (the newest one goes, what is queued stays) and counted in
        :attr:`dropped`. A ``system`` message ignores the message bound; only its bytes can be
        refused. A closed mailbox (its process has ended) takes nothing and drops nothing, as a
        dead process does.

        Returns:
            False if the message was dropped because a bound was reached; True otherwise.
        """
        with self._lock:
            if self._closed:
                return True
            if not self._admit(nbytes, system):
                self.dropped += 1
                return False
            self._items.append(message)
            self._sizes.append(nbytes)
            if self._waiters:  # wake the receive that has waited longest
                self._waiters.popleft().release()
        return True

    def put_many(self, messages: list[Any], sizes: list[int]) -> int:
        """:meth:`put` each of ``messages`` (ordinary ones; ``sizes[i]`` counted bytes for
        ``messages[i]``), in order, under one lock: as many puts would, for less work per
        message (a run of messages that came together off the network).

        Returns:
            How many were dropped because a bound was reached.
        """
        dropped = 0
        with self._lock:
            if self._closed:
                return 0
            items, held = self._items, self._sizes
            for message, nbytes in zip(messages, sizes, strict=True):
                if self._admit(nbytes, False):
                    items.append(message)
                    held.append(nbytes)
                else:
                    dropped += 1
            self.dropped += dropped
            waiters = self._waiters
            for _ in range(min(len(waiters), len(messages) - dropped)):
                waiters.popleft().release()  # one receive woken per message taken
        return dropped

    def _admit(self, nbytes: int, system: bool) -> bool:
        """May one more message of ``nbytes`` counted bytes go in? If so, its bytes are now
        counted (reserved from the node's budget as needed). The lock is held."""
        if nbytes:
            if (not system and len(self._items) >= self.max_messages) or (
                self.nbytes and self.nbytes + nbytes > self.max_bytes
            ):
                return False
            credit = self._credit
            if nbytes > credit:
                budget, want = self.budget, nbytes - credit
                if budget.take(want + budget.chunk):
                    credit += want + budget.chunk
                elif budget.take(want):
                    credit += want
                else:
                    return False
            self._credit = credit - nbytes
            self.nbytes += nbytes
            return True
        return system or len(self._items) < self.max_messages

    def close(self) -> None:
        """Drop every message and take no more (the process ended); returns their bytes."""
        with self._lock:
            self._closed = True
            self._items.clear()
            self._sizes.clear()
            if self.nbytes or self._credit:
                self.budget.give(self.nbytes + self._credit)
                self.nbytes = self._credit = 0
            self._wake_all()

    def interrupt(self) -> None:
        """Wake a waiting receive so that it runs its ``check`` again."""
        with self._lock:
            self._wake_all()

    def _wake_all(self) -> None:
        waiters = self._waiters
        while waiters:
            waiters.popleft().release()

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def receive(
        self,
        match: Match | None = None,
        timeout: float | None = None,
        check: Callable[[], None] | None = None,
    ) -> Any:
        """Remove and return the first message ``match`` accepts (any message if None).

        Args:
            match: a predicate; exceptions it raises count as "no match".
            timeout: seconds to wait; 0 polls; None waits forever.
            check: called before every scan and after every wake-up; it may raise (an exit).

        Raises:
            ZimgTimeout: nothing matched within ``timeout``.
        """
        deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
        scanned = 0  # messages already looked at and refused; only newer ones need a look
        lock = self._lock
        with lock:
            while True:
                if check is not None:
                    check()
                items = self._items
                if match is None:  # the first message, if any
                    if items:
                        nbytes = self._sizes.popleft()
                        if nbytes:
                            self._release(nbytes)
                        return items.popleft()
                else:
                    for index in range(scanned, len(items)):
                        message = items[index]
                        if _accepts(match, message):
                            del items[index]
                            sizes = self._sizes
                            nbytes = sizes[index]
                            del sizes[index]
                            if nbytes:
                                self._release(nbytes)
                            return message
                    scanned = len(items)
                if deadline is None:
                    left = None
                else:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise ZimgTimeout(f"no matching message within {timeout} s")
                self._wait(left)

    def _release(self, nbytes: int) -> None:
        """A message of ``nbytes`` counted bytes left (the lock is held): uncount them, and give
        the node's budget back what this mailbox keeps beyond a chunk."""
        self.nbytes -= nbytes
        credit = self._credit + nbytes
        chunk = self.budget.chunk
        if credit > 2 * chunk:  # keep one chunk, give the rest back
            self.budget.give(credit - chunk)
            credit = chunk
        self._credit = credit

    def _wait(self, timeout: float | None) -> None:
        """Release the lock (held), wait until woken or ``timeout``, take the lock again."""
        lead = self.lead
        if lead is not None:
            lead.before_wait()
            leading = lead.begin()
            if leading is not None:
                self._waiters.append(leading)
                self._lock.release()
                woken = False
                try:
                    woken = lead.wait(leading, timeout)
                finally:
                    lead.end()
                    self._lock.acquire()
                    if not woken:
                        with contextlib.suppress(ValueError):
                            self._waiters.remove(leading)
                return
        waiter = allocate_lock()
        waiter.acquire()
        self._waiters.append(waiter)
        woken = False
        self._lock.release()
        try:
            woken = waiter.acquire(True, -1 if timeout is None else timeout)
        finally:
            self._lock.acquire()
            if not woken:
                with contextlib.suppress(ValueError):  # gone: a put woke it as it timed out
                    self._waiters.remove(waiter)


def _accepts(match: Match, message: Any) -> bool:
    try:
        return bool(match(message))
    except Exception:  # a pattern that does not fit the message's shape: not a match
        return False
