"""A broker's side of a failover pair, on the broker's thread: the Binary Star state machine
(``zimg._failover``), the peer link's sockets (``zimg._peer_link``), and the gate that lets
node messages reach the broker's state only while this broker is active."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

import zmq

from zimg import _failover, protocol, wire
from zimg._broker_state import BrokerState, Instruction, Send
from zimg._peer_link import FailoverConfig, PeerLink
from zimg._zsock import readable
from zimg.security import BrokerKeys
from zimg.wire import Command

__all__ = ["PairHost"]

log = logging.getLogger("zimg.broker")


class PairHost:
    """Hosts one broker's place in a failover pair.

    Args:
        config: the pair's settings (role, peer link endpoints, failover timeout).
        state: the broker's state machine, which the gate feeds while active.
        heartbeat_interval_s: how often the state is published.
        liveness: with the interval, the default failover timeout (the nodes' liveness bound).
        stop: set when this broker must give way to its peer (both were active).
    """

    def __init__(
        self,
        config: FailoverConfig,
        state: BrokerState,
        *,
        heartbeat_interval_s: float,
        liveness: int,
        stop: threading.Event,
    ) -> None:
        self.config = config
        self.state = state
        self.failover = _failover.Failover(
            _failover.Role(config.role),
            now=time.monotonic(),
            heartbeat_interval_s=heartbeat_interval_s,
            failover_timeout_s=config.failover_timeout_s or heartbeat_interval_s * liveness,
        )
        state.failover_report = self.failover.report
        self.link: PeerLink | None = None
        self.yielded: str | None = None
        self._stop = stop

    def open(self, context: zmq.Context[zmq.Socket[bytes]], keys: BrokerKeys | None) -> None:
        """Bind and connect the peer link.

        Raises:
            OSError: ``peer_bind`` cannot be bound.
        """
        self.link = PeerLink(context, self.config, keys)
        log.info(
            "failover: %s broker; state published on %s, peer at %s; failover timeout %g s",
            self.failover.role.value,
            self.link.endpoint,
            self.config.peer,
            self.failover.failover_timeout_s,
        )

    def close(self) -> None:
        if self.link is not None:
            self.link.close()
            self.link = None

    @property
    def sub(self) -> zmq.Socket[bytes] | None:
        """The socket to poll for the peer's state (it changes when the link is reopened)."""
        return None if self.link is None else self.link.sub

    @property
    def next_deadline(self) -> float:
        return self.failover.next_deadline

    def gate(
        self, identity: bytes, frames: Sequence[Any], now: float, user_id: str | None
    ) -> Sequence[Instruction]:
        """``BrokerState.on_unforwarded`` while active. Otherwise NODES is answered (with this
        broker's state), a HELLO is put to the vote, and the rest is dropped."""
        failover = self.failover
        if failover.active:
            return self.state.on_unforwarded(identity, frames, now, user_id)
        command = wire.command_of(frames)
        if command is Command.NODES:
            return self.state.on_unforwarded(identity, frames, now, user_id)
        if command is not Command.HELLO:
            failover.dropped += 1
            return ()
        vote, said = failover.on_node_request(now)
        self._do(said)
        if vote is _failover.ACCEPT:
            return self.state.on_unforwarded(identity, frames, now, user_id)
        if vote is _failover.REFUSE:
            role, peer = failover.role.value, failover.role.other.value
            reason = f"this is the {role} broker of a pair, passive: the {peer} serves"
            header = {"reason": reason, "code": protocol.REJECT_PASSIVE}
            return (Send(identity, wire.encode(Command.REJECT, header)),)
        return ()  # IGNORE: the node asks again next interval, when its vote may count

    def tick(self, now: float) -> None:
        """Publish when due; reopen a silent link."""
        self._do(self.failover.on_tick(now))

    def hear(self) -> None:
        """Feed what the peer published to the state machine."""
        link = self.link
        if link is None or not readable(link.sub):
            return
        for item in link.receive():
            if isinstance(item, str):
                self._do(self.failover.on_peer_malformed(item))
            else:
                self._do(self.failover.on_peer(item, time.monotonic()))

    def _do(self, instructions: Sequence[_failover.Instruction]) -> None:
        for ins in instructions:
            if isinstance(ins, _failover.Publish):
                if self.link is not None:
                    self.link.publish(ins.header)
            elif isinstance(ins, _failover.Log):
                log.log(ins.level, "%s", ins.text)
            elif isinstance(ins, _failover.Reconnect):
                if self.link is not None:
                    self.link.reconnect()
            elif isinstance(ins, _failover.Yield):
                self.yielded = ins.reason
                self._stop.set()
