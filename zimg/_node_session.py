"""Pure node session logic: events in, instructions out. No sockets, no clock of its own.

The node's I/O thread (``zimg.connection.Connection``) feeds this state machine with what
happened and carries out the instructions it returns:

- ``start(now)``: the I/O thread started (open a DEALER, say HELLO);
- ``on_message(msg, now)``: a decoded message arrived from the broker;
- ``on_malformed(error, now)``: frames arrived that do not decode (counted, the first logged);
- ``on_tick(now)``: time passed (the broker went silent, a heartbeat or a HELLO is due);
- ``leave()``: the node is closing.

Instructions are :class:`Send`, :class:`NewDealer`, :class:`Log`, :class:`Welcomed`,
:class:`RunSessionHooks`, :class:`RunTickHooks`, :class:`Deliver`, :class:`Stop` and
:class:`Leave`. Every method takes ``now`` in seconds, so tests drive it with a fake clock.
``wake_at`` says when ``on_tick`` is next due. The session lifecycle is ``docs/protocol.md`` §6.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from zimg import protocol, wire
from zimg._errors import RejectedError, WireError
from zimg.wire import Command

__all__ = [
    "SESSION_COMMANDS",
    "Deliver",
    "Instruction",
    "Leave",
    "Log",
    "NewDealer",
    "NodeSession",
    "RunSessionHooks",
    "RunTickHooks",
    "Send",
    "Stop",
    "Welcomed",
    "silence_hint",
]


# ---------------------------------------------------------------------------- instructions


@dataclass(frozen=True, slots=True)
class Send:
    """Send ``frames`` to the broker (or queue them behind what the DEALER could not take)."""

    frames: list[Any]


@dataclass(frozen=True, slots=True)
class NewDealer:
    """Close the DEALER (discarding what it and the backlog hold, stale now) and open a new one
    with the same routing id, connected to ``url``. Also the first instruction of ``start``."""

    url: str


@dataclass(frozen=True, slots=True)
class Log:
    """Log ``text`` at ``level``."""

    level: int
    text: str


@dataclass(frozen=True, slots=True)
class Welcomed:
    """The broker welcomed the node (``Connection.start`` may return)."""


@dataclass(frozen=True, slots=True)
class RunSessionHooks:
    """A new session began: call every session hook with ``broker_restarted``."""

    broker_restarted: bool


@dataclass(frozen=True, slots=True)
class RunTickHooks:
    """A heartbeat interval passed while ready: call every tick hook."""


@dataclass(frozen=True, slots=True)
class Deliver:
    """Hand ``message`` (not a session command) to the handler registered for its command."""

    message: wire.Message


@dataclass(frozen=True, slots=True)
class Stop:
    """The node's place at the broker is lost for good: stop the I/O thread with ``error``."""

    error: BaseException


@dataclass(frozen=True, slots=True)
class Leave:
    """Close the DEALER. With ``farewell``, first forward what other threads queued, then send
    ``farewell`` (the DISCONNECT) last, and wait a while for all of it to go out."""

    farewell: list[Any] | None


Instruction = (
    Send | NewDealer | Log | Welcomed | RunSessionHooks | RunTickHooks | Deliver | Stop | Leave
)

_NOTHING: tuple[Instruction, ...] = ()

SESSION_COMMANDS = frozenset(
    {Command.HEARTBEAT, Command.WELCOME, Command.REJECT, Command.DISCONNECT}
)
"""The commands the session acts on. Any other only refreshes liveness and is delivered:
:meth:`NodeSession.on_message` answers it with :class:`Deliver`, and a host may instead call
:meth:`NodeSession.heard` and deliver it itself, with no instruction built per message."""


def silence_hint(secure: bool) -> str:
    """The likely causes of a broker that never answers (``secure``: the node uses keys, and a
    refused key is silence too)."""
    hint = "is `zimg broker` running there?"
    return hint + " with keys: check --key and --broker-key" if secure else hint


# ---------------------------------------------------------------------------- the session


class NodeSession:
    """One node's session with the broker, as a pure state machine.

    Args:
        name: the node's name.
        url: the broker's endpoint, or several separated by commas (a failover pair): the
            node starts with the first, and moves to the next whenever the one it uses goes
            silent for the liveness bound or says it is passive (``docs/reliability.md``).
        role: ``"worker"`` or ``"client"``.
        capacity: the job credit the HELLO asks for.
        incarnation: the node's random incarnation (in every HELLO).
        placement: a worker's placement fields for its HELLO (``Placement.to_hello()``).
        counters: counts reported in every heartbeat when not zero (read at each beat).
        secure: the node uses keys (a refused key is silence too: the hint says so).
    """

    def __init__(
        self,
        name: str,
        *,
        url: str,
        role: str,
        capacity: int,
        incarnation: int,
        placement: Mapping[str, Any] | None = None,
        counters: Mapping[str, Callable[[], int]] | None = None,
        secure: bool = False,
    ) -> None:
        self.name = name
        self.urls = protocol.split_endpoints(url)
        self.endpoint = 0  # the index in ``urls`` of the broker this node talks to
        self.passive_at: float | None = None  # when a passive broker last refused us
        self.role = role
        self.capacity = capacity
        self.incarnation = incarnation
        self.placement = dict(placement or {})
        self.counters = counters if counters is not None else {}
        self.secure = secure
        self.heartbeat_interval_s = protocol.DEFAULT_HEARTBEAT_INTERVAL_S
        self.liveness = protocol.DEFAULT_LIVENESS
        self.epoch: int | None = None
        self.sessions = 0  # sessions begun (WELCOMEs after being un-ready, and the first)
        self.session_id = 0  # sent in HELLO; a new value tells the broker we lost our session
        self.ready = False
        self.retrying = False  # a re-join was refused for now, and is being asked again
        self.stopped = False
        self.waiting_told = False  # said (once) that the first WELCOME is long in coming
        self.malformed = 0
        self.last_heard = 0.0
        self.next_beat = 0.0

    @property
    def url(self) -> str:
        """The endpoint of the broker this node talks to now."""
        return self.urls[self.endpoint]

    @property
    def expiry_s(self) -> float:
        """How long the broker may stay silent before the node counts it lost."""
        return self.heartbeat_interval_s * self.liveness

    @property
    def wake_at(self) -> float:
        """When ``on_tick`` is next due: the next beat (or HELLO), or the broker's expiry."""
        return min(self.next_beat, self.last_heard + self.expiry_s)

    # ------------------------------------------------------------------ events

    def start(self, now: float) -> list[Instruction]:
        """The I/O thread started: open a DEALER and say HELLO."""
        self.last_heard = now
        self.next_beat = now + self.heartbeat_interval_s
        return [NewDealer(self.url), self._hello()]

    def on_message(self, msg: wire.Message, now: float) -> Sequence[Instruction]:
        """A message from the broker arrived at ``now``."""
        self.last_heard = now
        command = msg.command
        if command is Command.HEARTBEAT:
            return _NOTHING
        if command is Command.WELCOME:
            return self._welcome(msg, now)
        if command is Command.REJECT:
            return self._refused(msg, now)
        if command is Command.DISCONNECT:
            # The broker restarted or dropped us: join again. While not ready, a HELLO is
            # already on its way (and is retried every interval): a second one would only draw
            # a second answer.
            if not self.ready:
                return _NOTHING
            self.session_id += 1
            self.ready = False
            text = f"node {self.name}: the broker does not know us; rejoining"
            return [Log(logging.INFO, text), self._hello()]
        return (Deliver(msg),)

    def heard(self, now: float) -> None:
        """A message whose command is not in :data:`SESSION_COMMANDS` arrived at ``now``: all
        :meth:`on_message` would do, but for the :class:`Deliver` it returns."""
        self.last_heard = now

    def on_malformed(self, error: WireError, now: float) -> list[Instruction]:
        """Frames that do not decode arrived at ``now``: the broker is alive, the message is
        dropped and counted."""
        self.last_heard = now
        self.malformed += 1
        # The first is a warning; the rest would let a peer flood the log.
        level = logging.WARNING if self.malformed == 1 else logging.DEBUG
        return [Log(level, f"node {self.name}: dropped a malformed message: {error}")]

    def on_tick(self, now: float) -> list[Instruction]:
        """Time passed: reconnect if the broker went silent, else beat (or HELLO) when due.

        Call it after reading what arrived (a broker that spoke while the node was frozen is
        not lost) and before sending anything (a DEALER about to be replaced would drop it).
        """
        if now - self.last_heard > self.expiry_s:
            # The broker went silent: start over with a fresh socket, dropping stale messages.
            if self.ready:
                self.session_id += 1
            self.ready = False
            self.last_heard = now
            self.next_beat = now + self.heartbeat_interval_s
            lost = self.url
            self._next_endpoint()
            retry: list[Instruction] = [NewDealer(self.url), self._hello()]
            if self.sessions == 0:  # never welcomed: nothing was lost
                if self.waiting_told:
                    return retry
                self.waiting_told = True
                return [Log(logging.WARNING, self.waiting_text()), *retry]
            where = "reconnecting" if self.url == lost else f"trying {self.url}"
            text = f"node {self.name}: lost the broker at {lost}; {where}"
            return [Log(logging.WARNING, text), *retry]
        if now < self.next_beat:
            return []
        self.next_beat = now + self.heartbeat_interval_s
        if not self.ready:
            return [self._hello()]
        beat = {k: n for k, count in self.counters.items() if (n := count())}
        return [Send(wire.encode(Command.HEARTBEAT, beat)), RunTickHooks()]

    def leave(self) -> list[Instruction]:
        """The node is closing: a ready node says DISCONNECT, any node closes its DEALER."""
        farewell = None
        if self.ready:
            farewell = wire.encode(Command.DISCONNECT, {"reason": protocol.NORMAL})
        self.ready = False
        self.stopped = True
        return [Leave(farewell)]

    # ------------------------------------------------------------------ helpers

    def waiting_text(self) -> str:
        """What a node that was never welcomed is waiting for, and the likely causes."""
        where = " or ".join(self.urls)
        return f"node {self.name}: waiting for the broker at {where} ({silence_hint(self.secure)})"

    def _next_endpoint(self) -> None:
        self.endpoint = (self.endpoint + 1) % len(self.urls)

    def _hello(self) -> Send:
        header = {
            "name": self.name,
            "role": self.role,
            "capacity": self.capacity,
            "incarnation": self.incarnation,
            "session": self.session_id,
            "version": protocol.PROTOCOL_VERSION,
            **self.placement,
        }
        return Send(wire.encode(Command.HELLO, header))

    def _welcome(self, msg: wire.Message, now: float) -> list[Instruction]:
        rejoined = not self.ready and self.sessions > 0
        interval = msg.header.get("heartbeat_interval_s")
        liveness = msg.header.get("liveness")
        if isinstance(interval, int | float) and not isinstance(interval, bool) and interval > 0:
            self.heartbeat_interval_s = float(interval)
        if isinstance(liveness, int) and not isinstance(liveness, bool) and liveness > 0:
            self.liveness = liveness
        self.retrying = False
        previous, self.epoch = self.epoch, msg.header.get("epoch")
        if self.sessions == 0 or rejoined:
            self.sessions += 1
        self.ready = True
        # The broker's interval may be shorter than the one we started with.
        self.next_beat = min(self.next_beat, now + self.heartbeat_interval_s)
        out: list[Instruction] = []
        if rejoined:
            at = f" at {self.url}" if len(self.urls) > 1 else ""
            text = f"node {self.name}: rejoined the broker{at} (session {self.sessions})"
            out += [Log(logging.INFO, text), RunSessionHooks(previous != self.epoch)]
        out.append(Welcomed())
        return out

    def _passive(self, reason: object, now: float) -> list[Instruction]:
        """A passive broker of a failover pair refused us: its peer serves. Move to the next
        endpoint at once, but say HELLO there at most once per heartbeat interval (two
        passive brokers must not make the node bounce between them as fast as they answer)."""
        if self.ready:
            self.session_id += 1
        self.ready = False
        refused_at = self.url
        self._next_endpoint()
        self.last_heard = now
        again = self.passive_at is None or now - self.passive_at >= self.heartbeat_interval_s
        self.passive_at = now
        text = f"node {self.name}: the broker at {refused_at} is passive ({reason}); "
        text += f"trying {self.url}"
        out: list[Instruction] = [Log(logging.INFO, text), NewDealer(self.url)]
        if again:
            out.append(self._hello())
        self.next_beat = now + self.heartbeat_interval_s
        return out

    def _refused(self, msg: wire.Message, now: float) -> list[Instruction]:
        """A REJECT arrived. A node that was welcomed before keeps asking after a refusal that
        time can lift (its name is held by a node that is about to be declared dead; the
        broker is full), saying why once; any other refusal, and every refusal of a first
        join, is final."""
        reason = msg.header.get("reason", "no reason given")
        code = msg.header.get("code")
        if code == protocol.REJECT_PASSIVE:
            return self._passive(reason, now)
        if self.sessions > 0 and code in protocol.RETRYABLE_REJECTS:
            out: list[Instruction] = []
            if self.ready or not self.retrying:
                text = (
                    f"node {self.name}: the broker refused to take us back ({reason}); "
                    f"asking again every {self.heartbeat_interval_s:g} s"
                )
                out.append(Log(logging.WARNING, text))
            self.retrying = True
            if self.ready:
                self.session_id += 1
            self.ready = False
            return out
        error = RejectedError(f"the broker refused node {self.name}: {reason}")
        self.ready = False
        self.stopped = True
        return [Log(logging.ERROR, str(error)), Stop(error)]
