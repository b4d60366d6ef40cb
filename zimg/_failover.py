"""Pure Binary Star logic for a pair of brokers (primary and backup): events in, decisions out.

One broker of the pair is *active* (it serves nodes), the other *passive* (it refuses them).
The brokers publish their state to each other every heartbeat interval on the peer link. The
passive one takes over only when **both** hold: its peer has been silent for the failover
timeout, **and** a node came to it (a HELLO, the "client vote"). A peer link that breaks while
the nodes still reach the active broker therefore makes nobody active twice. Failing back is
manual. The rules are the ZeroMQ guide's Binary Star (chapter 4); ``docs/reliability.md`` has
the failure table.

The broker's loop (``zimg.broker.Broker``) hosts a :class:`Failover` and feeds it:

- ``on_peer(header, now)``: a state message arrived from the peer (checked here: a peer that
  claims our own role, an unknown state or a missing field is malformed, counted and logged);
- ``on_node_request(now)``: a node said HELLO; the answer is :data:`ACCEPT`, :data:`REFUSE`
  (REJECT it with code ``passive``: the peer is alive and active, go there) or :data:`IGNORE`
  (say nothing: the peer may be dying, so the node keeps asking here until the vote counts);
- ``on_tick(now)``: time passed; publish our state when due.

Every call takes ``now`` in seconds and returns :class:`Instruction` s, so tests drive it with a
fake clock. ``next_deadline`` says when ``on_tick`` is next due.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "ACCEPT",
    "IGNORE",
    "REFUSE",
    "Failover",
    "Instruction",
    "Log",
    "Publish",
    "Reconnect",
    "Role",
    "State",
    "Vote",
    "Yield",
]


class Role(enum.StrEnum):
    """Which broker of the pair this is (fixed for the life of the process)."""

    PRIMARY = "primary"
    BACKUP = "backup"

    @property
    def other(self) -> Role:
        return Role.BACKUP if self is Role.PRIMARY else Role.PRIMARY


class State(enum.StrEnum):
    """Where a broker of the pair stands."""

    STARTING = "starting"  # not yet in touch with its peer (the guide's PRIMARY / BACKUP)
    ACTIVE = "active"  # serves nodes
    PASSIVE = "passive"  # refuses nodes; takes over when the peer is silent and a node votes


class Vote(enum.Enum):
    """What to do with a node's HELLO."""

    ACCEPT = "accept"
    REFUSE = "refuse"
    IGNORE = "ignore"


ACCEPT, REFUSE, IGNORE = Vote.ACCEPT, Vote.REFUSE, Vote.IGNORE
_STATES = frozenset(s.value for s in State)

# A peer heard from within this many heartbeat intervals is plainly alive: a node that comes to
# the passive broker is refused at once (and tries the next address) rather than kept waiting.
_FRESH_BEATS = 1.5


@dataclass(frozen=True, slots=True)
class Publish:
    """Send our state to the peer: ``header`` is the state message's header."""

    header: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Log:
    """Log ``text`` at ``level``."""

    level: int
    text: str


@dataclass(frozen=True, slots=True)
class Yield:
    """Both brokers are active (the peer link healed after a split): the backup must stop
    serving. The broker process exits with ``reason``; restarted, it comes back passive."""

    reason: str


@dataclass(frozen=True, slots=True)
class Reconnect:
    """The peer has been silent a failover timeout: open the peer link's receiving socket
    afresh (libzmq gives up on a connection after a protocol error, such as an oversize
    message, so a link could otherwise stay cut after the network heals)."""


Instruction = Publish | Log | Yield | Reconnect


class Failover:
    """One broker's side of the Binary Star pair, as a pure state machine.

    Args:
        role: ``Role.PRIMARY`` or ``Role.BACKUP``.
        now: the current time (seconds, any origin).
        heartbeat_interval_s: how often the state is published to the peer.
        failover_timeout_s: how long the peer must be silent before a node's vote counts (the
            guide uses two heartbeats; zimg's default is the nodes' own liveness bound).
    """

    def __init__(
        self,
        role: Role,
        *,
        now: float,
        heartbeat_interval_s: float,
        failover_timeout_s: float,
    ) -> None:
        if heartbeat_interval_s <= 0 or failover_timeout_s <= 0:
            raise ValueError("heartbeat_interval_s and failover_timeout_s must be > 0")
        self.role = role
        self.state = State.STARTING
        self.heartbeat_interval_s = heartbeat_interval_s
        self.failover_timeout_s = failover_timeout_s
        self.peer_state: State | None = None
        # A primary started alone may serve once it has waited a failover timeout for a peer
        # that may be active (after a failover, the backup is): the guide's "peer expiry".
        self.peer_expiry = now + failover_timeout_s
        self.peer_heard_at: float | None = None
        self.peer_lost_told = False
        self.next_beat = now
        self.reconnected_at = now
        self.malformed = 0
        self.refused = 0
        self.ignored = 0
        self.dropped = 0  # other node messages that reached this broker while not active
        self.became_active_at: float | None = None

    @property
    def active(self) -> bool:
        """Does this broker serve nodes now?"""
        return self.state is State.ACTIVE

    @property
    def next_deadline(self) -> float:
        """When ``on_tick`` is next due."""
        if self.peer_lost_told:
            return min(self.next_beat, self.reconnected_at + self.failover_timeout_s)
        return min(self.next_beat, self.peer_expiry)

    # ------------------------------------------------------------------ events

    def on_peer(self, header: Mapping[str, Any], now: float) -> list[Instruction]:
        """A state message from the peer arrived at ``now``."""
        role, state = header.get("role"), header.get("state")
        if role != self.role.other or not isinstance(state, str) or state not in _STATES:
            return self.on_peer_malformed(
                f"{dict(header)!r}: expected role {self.role.other.value!r} and a state in "
                f"{sorted(_STATES)}"
            )
        peer = State(state)
        out: list[Instruction] = []
        if self.peer_heard_at is None or self.peer_lost_told:
            out.append(Log(logging.INFO, f"failover: in touch with the {role} ({peer.value})"))
        self.peer_heard_at = now
        self.peer_expiry = now + self.failover_timeout_s
        self.peer_lost_told = False
        self.peer_state = peer
        return [*out, *self._peer_event(peer, now)]

    def on_peer_malformed(self, text: str) -> list[Instruction]:
        """Something that is not a valid state message came on the peer link: count it, log
        the first at WARNING (the rest at DEBUG: a peer must not flood the log), ignore it."""
        self.malformed += 1
        level = logging.WARNING if self.malformed == 1 else logging.DEBUG
        return [Log(level, f"failover: dropped a peer message ({self.malformed} so far): {text}")]

    def on_node_request(self, now: float) -> tuple[Vote, list[Instruction]]:
        """A node said HELLO at ``now``: accept it, refuse it, or ignore it (module docstring)."""
        if self.state is State.ACTIVE:
            return ACCEPT, []
        may_take_over = self.state is State.PASSIVE or self.role is Role.PRIMARY
        if may_take_over and now >= self.peer_expiry:
            why = "a node came and the peer has been silent for the failover timeout"
            return ACCEPT, self._become(State.ACTIVE, now, why)
        if self.state is State.STARTING and self.role is Role.BACKUP:
            # The guide's backup never serves before it has seen its primary: it cannot tell a
            # dead primary from one it cannot reach.
            self.refused += 1
            return REFUSE, []
        fresh = self.peer_heard_at is not None and (
            now - self.peer_heard_at < _FRESH_BEATS * self.heartbeat_interval_s
        )
        if fresh:
            self.refused += 1
            return REFUSE, []
        self.ignored += 1
        return IGNORE, []

    def on_tick(self, now: float) -> list[Instruction]:
        """Time passed: publish our state when due; say once that the peer went silent."""
        out: list[Instruction] = []
        if now >= self.peer_expiry and not self.peer_lost_told:
            self.peer_lost_told = True
            if self.peer_heard_at is not None:
                silent = now - self.peer_heard_at
                what = "still serving" if self.active else "will take over when a node comes"
                text = f"failover: the peer has been silent for {silent:.2f} s; {what}"
                out.append(Log(logging.WARNING, text))
        if now >= self.peer_expiry and now - self.reconnected_at >= self.failover_timeout_s:
            self.reconnected_at = now
            out.append(Reconnect())
        if now >= self.next_beat:
            self.next_beat = now + self.heartbeat_interval_s
            out.append(Publish({"role": self.role.value, "state": self.state.value}))
        return out

    def report(self, now: float) -> dict[str, Any]:
        """The pair's state for the NODES report: role, state, the peer's, and its silence."""
        silent = None if self.peer_heard_at is None else round(now - self.peer_heard_at, 3)
        return {
            "role": self.role.value,
            "state": self.state.value,
            "peer_state": None if self.peer_state is None else self.peer_state.value,
            "peer_silent_s": silent,
            "peer_malformed": self.malformed,
            "refused": self.refused,
            "ignored": self.ignored,
            "dropped": self.dropped,
        }

    # ------------------------------------------------------------------ helpers

    def _peer_event(self, peer: State, now: float) -> list[Instruction]:
        state = self.state
        if state is State.STARTING:
            if peer is State.ACTIVE:
                return self._become(State.PASSIVE, now, f"the {self.role.other} is active")
            if self.role is Role.PRIMARY:  # the backup is starting or passive: we serve
                return self._become(State.ACTIVE, now, f"the backup is {peer.value}")
            return []  # a starting backup waits for its primary to go active
        if state is State.PASSIVE:
            if peer is State.STARTING:  # the peer restarted: it knows nothing, we serve
                return self._become(State.ACTIVE, now, f"the {self.role.other} restarted")
            if peer is State.PASSIVE and self.role is Role.PRIMARY:
                return self._become(State.ACTIVE, now, "both were passive; the primary serves")
            return []
        # ACTIVE
        if peer is State.ACTIVE:
            if self.role is Role.BACKUP:
                reason = "both brokers are active (the peer link came back after a split)"
                return [
                    Log(logging.ERROR, f"failover: {reason}; the backup yields"),
                    Yield(reason),
                ]
            text = "failover: both brokers are active; the primary stays, the backup yields"
            return [Log(logging.ERROR, text)]
        return []

    def _become(self, state: State, now: float, why: str) -> list[Instruction]:
        self.state = state
        if state is State.ACTIVE:
            self.became_active_at = now
        self.next_beat = now  # tell the peer at once
        text = f"failover: {self.role.value} broker is now {state.value} ({why})"
        return [Log(logging.WARNING if state is State.ACTIVE else logging.INFO, text)]
