"""An actor's mailbox: FIFO arrival, selective receive with timeouts, and an interrupt for exits."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from zimg._errors import ZimgTimeout

Match = Callable[[Any], bool]


class Mailbox:
    """Messages in arrival order; :meth:`receive` takes the first one a predicate accepts.

    Unmatched messages stay where they are, in order. A receive that is waiting can be
    interrupted (an exit signal): :meth:`interrupt` wakes it and makes it call ``check``.
    """

    def __init__(self) -> None:
        self._items: deque[Any] = deque()
        self._cond = threading.Condition(threading.Lock())

    def put(self, message: Any) -> None:
        """Append a message; wakes a waiting receive."""
        with self._cond:
            self._items.append(message)
            self._cond.notify()

    def interrupt(self) -> None:
        """Wake a waiting receive so that it runs its ``check`` again."""
        with self._cond:
            self._cond.notify_all()

    def __len__(self) -> int:
        with self._cond:
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
        with self._cond:
            while True:
                if check is not None:
                    check()
                items = self._items
                for index in range(scanned, len(items)):
                    message = items[index]
                    if match is None or _accepts(match, message):
                        del items[index]
                        return message
                scanned = len(items)
                if deadline is None:
                    self._cond.wait()
                    continue
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ZimgTimeout(f"no matching message within {timeout} s")
                self._cond.wait(left)


def _accepts(match: Match, message: Any) -> bool:
    try:
        return bool(match(message))
    except Exception:  # a pattern that does not fit the message's shape: not a match
        return False
