"""The broker's sends: carrying out the state machine's instructions on the ROUTER socket, with
a backlog per peer whose queue is full, and the peers found gone while sending reported back to
the state machine one at a time (part of :class:`zimg.broker.Broker`)."""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

import zmq

from zimg._broker_backlog import Backlogs
from zimg._broker_state import BrokerState, Instruction, Log, Probe, Send, SendMany
from zimg._zsock import NOBLOCK, send_frames
from zimg.wire import Command, lead_frame

log = logging.getLogger("zimg.broker")

_EMPTY_HEARTBEAT = lead_frame(Command.HEARTBEAT, b"\x80")  # a HEARTBEAT with an empty header
_PROBE = [_EMPTY_HEARTBEAT]


class Sending:
    """What :class:`zimg.broker.Broker` sends with; it sets these attributes."""

    state: BrokerState
    _sock: zmq.Socket[bytes] | None
    _backlogs: Backlogs
    _unreachable: deque[bytes]

    def _execute(self, instructions: Sequence[Instruction]) -> None:
        """Carry out ``instructions``, then handle the peers found gone while sending (which
        make more instructions), one at a time until none is left."""
        self._run_instructions(instructions)
        while self._unreachable:
            identity = self._unreachable.popleft()
            self._run_instructions(self.state.on_unreachable(identity, time.monotonic()))

    def _run_instructions(self, instructions: Sequence[Instruction]) -> None:
        send = self._send
        for ins in instructions:
            if type(ins) is Send:
                send(ins.identity, ins.frames)
            elif type(ins) is SendMany:
                for identity in ins.identities:
                    self._send(identity, ins.frames)
            elif type(ins) is Probe:
                reachable = self._probe(ins.identity)
                self._run_instructions(
                    self.state.on_probe(ins.identity, reachable, time.monotonic())
                )
            elif type(ins) is Log:
                log.log(ins.level, "%s", ins.text)

    def _send(self, identity: bytes, frames: Sequence[Any]) -> None:
        """Send, or queue behind earlier messages if the peer's queue is full; a send to a peer
        whose connection is gone is dropped and reported (``BrokerState.on_unreachable``)."""
        waiting = self._backlogs.peers.get(identity)
        if waiting is not None:
            if not self._backlogs.queue_behind(waiting, frames):
                # Count what we drop rather than grow without bound (see _broker_backlog).
                self.state.on_backlog(dropped=True)
            return
        sock = self._sock
        try:
            if sock is None:
                raise RuntimeError("the broker socket is not open")
            send_frames(sock, [identity, *frames], NOBLOCK)
        except zmq.Again:
            started = self._backlogs.start(identity, frames)
            self.state.on_backlog(dropped=not started)
        except zmq.ZMQError as exc:
            if exc.errno != zmq.EHOSTUNREACH:
                raise
            self._unreachable.append(identity)  # handled by _execute, after what it runs now

    def _probe(self, identity: bytes) -> bool:
        """Is ``identity`` still connected? A full queue means it is; a vanished pipe, not."""
        try:
            self._send_now(identity, _PROBE)
        except zmq.Again:
            return True
        except zmq.ZMQError as exc:
            if exc.errno == zmq.EHOSTUNREACH:
                return False
            raise
        return True

    def _send_now(self, identity: bytes, frames: Sequence[Any]) -> None:
        if self._sock is None:
            raise RuntimeError("the broker socket is not open")
        send_frames(self._sock, [identity, *frames], NOBLOCK)

    def _flush_backlog(self) -> None:
        """Retry queued messages; drop those for peers that are no longer nodes."""
        unroutable, gone = self._backlogs.flush(self._send_now, self.state.nodes)
        if unroutable:
            self.state.on_backlog_unroutable(unroutable)
        if gone:
            self._unreachable.extend(gone)
        if self._unreachable:
            self._execute(())
