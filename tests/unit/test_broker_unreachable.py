"""A node whose connection closed while what it sent is still unread (the close race).

A send to a node whose connection just closed fails (``on_unreachable``), but its last messages
(exit signals, DOWNs, its DISCONNECT) may still wait in the broker's socket. The broker marks
it and declares it down only once the loop has drained the socket after the mark (``on_tick``'s
``drained_at``); those messages are handled first, and a DISCONNECT among them makes it leave
with its own reason. Driven with a fake clock, in the order the loop would see events.
"""

from __future__ import annotations

import pytest

from tests.unit.test_broker_state import (
    CFG,
    hello,
    ident,
    job,
    join,
    sends,
)
from zimg import protocol, wire
from zimg._broker_state import BrokerState, Send
from zimg.testing import FakeClock
from zimg.wire import Command, Pid


@pytest.fixture
def state(clock: FakeClock) -> BrokerState:
    return BrokerState(CFG, now=clock.now, epoch=42)


def watched(state: BrokerState, clock: FakeClock, name: str, by: str) -> None:
    watch = wire.encode(Command.WATCH, {"node": name, "incarnation": 1})
    assert state.on_message(ident(by), watch, clock.now) == []


def nodedowns(out: list) -> list[tuple[bytes, str]]:
    return [(to, m.header["reason"]) for to, m in sends(out) if m.command is Command.NODEDOWN]


def test_a_disconnect_read_after_the_mark_lets_the_node_leave_with_its_own_reason(state, clock):
    join(state, clock, "n1")
    join(state, clock, "n2")
    watched(state, clock, "n1", by="n2")
    # A send to n1 fails: its connection is gone. Its last messages are still queued.
    assert state.on_unreachable(ident("n1"), clock.now) == []
    assert "n1" in state.by_name
    # A tick before the loop drained the socket declares nothing.
    assert nodedowns(state.on_tick(clock.advance(0.001), drained_at=clock.now - 0.002)) == []
    # Its queued exit signal goes on to n2, then its DISCONNECT: it left.
    exit_signal = wire.encode(
        Command.EXIT, {"to": Pid("n2", 1, 4), "from": Pid("n1", 1, 3), "reason": "shutdown"}
    )
    out = state.on_message(ident("n1"), exit_signal, clock.advance(0.001))
    assert [(i.identity, i.frames) for i in out if isinstance(i, Send)] == [
        (ident("n2"), exit_signal)
    ]
    disconnect = wire.encode(Command.DISCONNECT, {"reason": protocol.NORMAL})
    out = state.on_message(ident("n1"), disconnect, clock.advance(0.001))
    assert nodedowns(out) == [(ident("n2"), protocol.NORMAL)]
    assert state.downs[-1]["why"] == "left"
    # The drain that follows declares nothing more.
    assert nodedowns(state.on_tick(clock.advance(0.001), drained_at=clock.now)) == []
    assert state.stats["nodes_down"] == 1


def test_a_node_marked_unreachable_is_declared_down_once_the_loop_has_drained(state, clock):
    join(state, clock, "n1")
    join(state, clock, "n2")
    watched(state, clock, "n1", by="n2")
    marked_at = clock.now
    state.on_unreachable(ident("n1"), marked_at)
    assert state.next_deadline() <= marked_at  # the loop ticks again at once
    # drained before the mark, or at that very moment: what n1 sent may still be unread
    assert nodedowns(state.on_tick(clock.advance(0.5), drained_at=marked_at)) == []
    out = state.on_tick(clock.advance(0.001), drained_at=marked_at + 0.001)
    assert nodedowns(out) == [(ident("n2"), protocol.NOCONNECTION)]
    assert state.downs[-1]["why"] == "connection closed"
    assert "n1" not in state.by_name
    assert nodedowns(state.on_tick(clock.advance(0.001), drained_at=clock.now)) == []


def test_sends_to_a_marked_node_are_dropped_and_counted_and_it_gets_no_new_job(state, clock):
    join(state, clock, "c", role="client", capacity=0)
    join(state, clock, "w1", capacity=1)
    for _ in range(3):  # three messages to it fail: each is counted, the node marked once
        assert state.on_unreachable(ident("w1"), clock.now) == []
    assert state.stats["unroutable"] == 3
    # a job waits for a worker rather than go to one whose connection is gone
    out = sends(state.on_message(ident("c"), job(0), clock.now))
    assert [m.command for _, m in out if m.command is Command.JOB] == []
    out = sends(join(state, clock, "w2", capacity=1))
    assert [to for to, m in out if m.command is Command.JOB] == [ident("w2")]


def test_a_hello_of_the_same_session_clears_the_mark(state, clock):
    join(state, clock, "n1")
    state.on_unreachable(ident("n1"), clock.now)
    # n1 reconnected with the same routing id: it is welcomed, and stays
    out = sends(join(state, clock, "n1"))
    assert [(to, m.command) for to, m in out] == [(ident("n1"), Command.WELCOME)]
    assert nodedowns(state.on_tick(clock.advance(0.001), drained_at=clock.now)) == []
    assert "n1" in state.by_name
    # a HELLO of a new session ends the old one, as always; the new one is not marked
    state.on_unreachable(ident("n1"), clock.now)
    out = sends(state.on_message(ident("n1"), hello("n1", session=1), clock.advance(0.001)))
    assert [m.command for _, m in out] == [Command.WELCOME]
    assert state.downs[-1]["why"] == "rejoined"
    assert nodedowns(state.on_tick(clock.advance(0.001), drained_at=clock.now)) == []
    assert state.by_name["n1"].unreachable_at is None


def test_a_newcomer_waits_for_an_unreachable_holder_of_its_name_to_leave(state, clock):
    join(state, clock, "n1")
    join(state, clock, "n2")
    watched(state, clock, "n1", by="n2")
    newcomer = b"n1/2"
    state.on_message(newcomer, hello("n1", incarnation=2), clock.now)
    # the probe finds the holder's connection gone; its DISCONNECT is still queued
    assert state.on_probe(ident("n1"), False, clock.now) == []
    disconnect = wire.encode(Command.DISCONNECT, {"reason": protocol.NORMAL})
    out = state.on_message(ident("n1"), disconnect, clock.advance(0.001))
    assert nodedowns(out) == [(ident("n2"), protocol.NORMAL)]
    assert (newcomer, Command.WELCOME) in [(to, m.command) for to, m in sends(out)]
    assert state.by_name["n1"].identity == newcomer


def test_a_holder_that_rejoins_keeps_its_name_from_a_newcomer_waiting_for_it(state, clock):
    join(state, clock, "n1")
    newcomer = b"n1/2"
    state.on_message(newcomer, hello("n1", incarnation=2), clock.now)
    assert state.on_probe(ident("n1"), False, clock.now) == []
    # the holder's HELLO of a new session (it reconnected): it is welcomed, the newcomer not
    out = sends(state.on_message(ident("n1"), hello("n1", session=1), clock.advance(0.001)))
    assert [(to, m.command) for to, m in out] == [(ident("n1"), Command.WELCOME)]
    assert state.by_name["n1"].identity == ident("n1")
    assert newcomer not in state.nodes
    assert len(state.nodes) == 1
