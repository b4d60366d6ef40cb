"""What the actor runtime needs of its link to the broker: the :class:`Transport` protocol.

``zimg.connection.Connection`` is the real one (a DEALER on an I/O thread); it satisfies the
protocol structurally, and mypy checks that where ``Node`` hands it to the runtime.
``zimg.testing.MemoryTransport`` is an in-memory one, for tests without sockets. This module
imports neither, nor zmq.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

from zimg.wire import Command, Message

Handler = Callable[[Message], None]
RunHandler = Callable[[list[Message]], None]
SessionHook = Callable[[bool], None]
TickHook = Callable[[], None]


class Transport(Protocol):
    """A node's link to the broker, as ``zimg._actor.ActorRuntime`` uses it.

    Handlers and hooks are called one at a time, must not block, and see each sender's messages
    in the order it sent them. They run on the transport's I/O thread, or, with lanes, on a
    process thread that reads the node's lanes while it waits in ``receive``
    (``zimg._lane_reader``): never two at once.
    """

    @property
    def name(self) -> str:
        """This node's name."""

    @property
    def incarnation(self) -> int:
        """This node's incarnation: its pids and refs carry it."""

    @property
    def heartbeat_interval_s(self) -> float:
        """The heartbeat interval (the broker's, once joined)."""

    @property
    def liveness(self) -> int:
        """How many silent intervals make a peer lost (the broker's, once joined)."""

    @property
    def counters(self) -> dict[str, Callable[[], int]]:
        """Counts reported to the broker with every heartbeat; the runtime adds ``dropped``."""

    def send(self, command: Command, header: Mapping[str, Any]) -> None:
        """Encode and send a message to the broker; safe from any thread.

        Raises:
            WireError: the message cannot be encoded or exceeds the limits.
            ZimgError: the transport is closed, or broken for good (``ClosedError``,
                ``BrokenError``).
        """

    def on(self, command: Command, handler: Handler) -> None:
        """Call ``handler(message)`` whenever ``command`` arrives."""

    def on_run(self, command: Command, handler: RunHandler) -> None:
        """Also take ``handler(messages)``: several ``command`` messages that arrived together,
        in order, which the transport may hand over at once instead of calling ``on``'s
        handler for each. It must do what that handler would do for each, in turn."""

    def on_session(self, hook: SessionHook) -> None:
        """Call ``hook(broker_restarted)`` whenever the node joins the broker again."""

    def on_tick(self, hook: TickHook) -> None:
        """Call ``hook()`` once per heartbeat interval, for housekeeping."""
