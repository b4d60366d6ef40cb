"""The node's session state machine, driven with a fake clock and no sockets."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import pytest

from zimg import protocol, wire
from zimg._errors import RejectedError, WireError
from zimg._node_session import (
    Deliver,
    Instruction,
    Leave,
    Log,
    NewDealer,
    NodeSession,
    RunSessionHooks,
    RunTickHooks,
    Send,
    Stop,
    Welcomed,
)
from zimg.testing import FakeClock
from zimg.wire import Command

INTERVAL, LIVENESS = 0.5, 4  # the broker's, unlike the defaults (1.0 s, 3)


@pytest.fixture
def session(clock: FakeClock) -> NodeSession:
    s = NodeSession(
        "n1",
        url="tcp://broker:5555",
        role=protocol.ROLE_WORKER,
        capacity=2,
        incarnation=7,
        counters={"malformed": lambda: 3, "dropped": lambda: 0},
    )
    assert [type(i) for i in s.start(clock.now)] == [NewDealer, Send]
    return s


def msg(command: Command, **header: Any) -> wire.Message:
    return wire.decode(wire.encode(command, header))


def welcome(epoch: int = 42, **header: Any) -> wire.Message:
    header = {"heartbeat_interval_s": INTERVAL, "liveness": LIVENESS, **header}
    return msg(Command.WELCOME, name="n1", epoch=epoch, version=protocol.PROTOCOL_VERSION, **header)


def reject(code: str) -> wire.Message:
    return msg(Command.REJECT, reason=f"no ({code})", code=code)


def sent(instructions: Sequence[Instruction]) -> list[wire.Message]:
    return [wire.decode(i.frames) for i in instructions if isinstance(i, Send)]


def commands(instructions: Sequence[Instruction]) -> list[Command]:
    return [m.command for m in sent(instructions)]


def logs(instructions: Sequence[Instruction]) -> list[tuple[int, str]]:
    return [(i.level, i.text) for i in instructions if isinstance(i, Log)]


def joined(session: NodeSession, clock: FakeClock, epoch: int = 42) -> list[Instruction]:
    return list(session.on_message(welcome(epoch), clock.now))


def lose_broker(session: NodeSession, clock: FakeClock) -> list[Instruction]:
    """Stay silent past the broker's expiry, ticking every interval as the host would."""
    out: list[Instruction] = []
    silent_since = clock.now
    while clock.now - silent_since <= INTERVAL * LIVENESS:
        out += session.on_tick(clock.advance(INTERVAL))
    return out


# ------------------------------------------------------------------ joining


def test_start_says_hello_with_the_nodes_fields(clock: FakeClock) -> None:
    s = NodeSession("n1", url="u", role="client", capacity=0, incarnation=9)
    [new, hello] = s.start(clock.now)
    assert isinstance(new, NewDealer)
    [m] = sent([hello])
    assert m.command is Command.HELLO
    assert m.header == {
        "name": "n1",
        "role": "client",
        "capacity": 0,
        "incarnation": 9,
        "session": 0,
        "version": protocol.PROTOCOL_VERSION,
    }
    assert not s.ready


def test_welcome_makes_the_node_ready_and_adopts_interval_and_liveness(
    session: NodeSession, clock: FakeClock
) -> None:
    assert (session.heartbeat_interval_s, session.liveness) == (1.0, 3)
    out = joined(session, clock)
    assert out == [Welcomed()]  # a first join runs no session hooks
    assert session.ready
    assert (session.heartbeat_interval_s, session.liveness) == (INTERVAL, LIVENESS)
    assert (session.epoch, session.sessions) == (42, 1)
    assert session.expiry_s == INTERVAL * LIVENESS


@pytest.mark.parametrize(
    ("interval", "liveness"), [(0, 0), (-1.0, -2), (True, True), ("1", 2.5), (None, None)]
)
def test_a_welcome_with_bad_timings_keeps_the_old_ones(
    session: NodeSession, clock: FakeClock, interval: Any, liveness: Any
) -> None:
    session.on_message(welcome(heartbeat_interval_s=interval, liveness=liveness), clock.now)
    assert session.ready
    assert (session.heartbeat_interval_s, session.liveness) == (1.0, 3)


def test_a_shorter_interval_from_the_welcome_brings_the_next_beat_forward(
    session: NodeSession, clock: FakeClock
) -> None:
    joined(session, clock)
    assert session.wake_at == clock.now + INTERVAL  # not the 1.0 s the node started with


# ------------------------------------------------------------------ heartbeats and HELLOs


def test_beats_are_due_every_interval_only_when_ready(
    session: NodeSession, clock: FakeClock
) -> None:
    joined(session, clock)
    assert session.on_tick(clock.advance(INTERVAL * 0.9)) == []
    out = session.on_tick(clock.advance(INTERVAL * 0.1))
    [beat] = sent(out)
    assert beat.command is Command.HEARTBEAT
    assert beat.header == {"malformed": 3}  # counters that are not zero
    assert out[-1] == RunTickHooks()
    assert session.on_tick(clock.advance(INTERVAL / 2)) == []
    assert commands(session.on_tick(clock.advance(INTERVAL / 2))) == [Command.HEARTBEAT]


def test_hello_is_retried_every_interval_until_welcome(
    session: NodeSession, clock: FakeClock
) -> None:
    assert session.on_tick(clock.advance(0.9)) == []
    for _ in range(2):  # the broker stays silent (not past the expiry: 3 x 1.0 s)
        out = session.on_tick(clock.advance(1.0))
        assert commands(out) == [Command.HELLO]
        assert RunTickHooks() not in out
    assert session.on_tick(clock.advance(0.05)) == []


def test_messages_from_the_broker_go_to_the_handlers_and_keep_it_alive(
    session: NodeSession, clock: FakeClock
) -> None:
    joined(session, clock)
    job = msg(Command.NODES)
    for _ in range(10):
        assert session.on_message(job, clock.advance(INTERVAL)) == (Deliver(job),)
        assert session.on_message(msg(Command.HEARTBEAT), clock.now) == ()
        session.on_tick(clock.now)
    assert session.ready
    assert session.sessions == 1


# ------------------------------------------------------------------ losing the broker


def test_the_broker_is_lost_after_interval_times_liveness_of_silence(
    session: NodeSession, clock: FakeClock
) -> None:
    joined(session, clock)
    expiry = INTERVAL * LIVENESS
    session.on_message(msg(Command.HEARTBEAT), clock.now)
    # Not more than the expiry: still alive.
    assert NewDealer("tcp://broker:5555") not in session.on_tick(clock.advance(expiry))
    out = session.on_tick(clock.advance(0.01))
    assert out[:2] == [
        Log(logging.WARNING, "node n1: lost the broker at tcp://broker:5555; reconnecting"),
        NewDealer("tcp://broker:5555"),
    ]
    [hello] = sent(out)
    assert hello.command is Command.HELLO
    assert hello.header["session"] == 1  # a new session id: the old session is gone
    assert not session.ready
    # The new DEALER gets a full expiry before it counts as lost too.
    assert session.wake_at == clock.now + INTERVAL


def test_a_node_lost_before_its_first_welcome_keeps_its_session_id(
    session: NodeSession, clock: FakeClock
) -> None:
    out = session.on_tick(clock.advance(3.01))
    assert NewDealer("tcp://broker:5555") in out
    assert [m.header["session"] for m in sent(out)] == [0]


def test_a_node_never_welcomed_says_once_what_it_waits_for_and_never_lost(
    session: NodeSession, clock: FakeClock
) -> None:
    out = session.on_tick(clock.advance(3.01))  # the first expiry (3 x 1.0 s) without WELCOME
    assert logs(out) == [
        (
            logging.WARNING,
            "node n1: waiting for the broker at tcp://broker:5555 "
            "(is `zimg broker` running there?)",
        )
    ]
    assert out[1:2] == [NewDealer("tcp://broker:5555")]  # it still retries with a fresh socket
    for _ in range(10):  # silent on: it keeps retrying, and says nothing more
        out = session.on_tick(clock.advance(1.0))
        assert logs(out) == []
    assert not any("lost" in text for _, text in logs(out))


def test_the_waiting_hint_names_the_keys_when_the_node_uses_them(clock: FakeClock) -> None:
    s = NodeSession("n1", url="u", role="client", capacity=0, incarnation=9, secure=True)
    s.start(clock.now)
    [(_, text)] = logs(s.on_tick(clock.advance(3.01)))
    assert text.endswith(
        "(is `zimg broker` running there? with keys: check --key and --broker-key)"
    )


def test_a_node_welcomed_once_says_lost_not_waiting(session: NodeSession, clock: FakeClock) -> None:
    session.on_tick(clock.advance(3.01))  # waited before the first WELCOME
    joined(session, clock)
    [(_, text)] = logs(lose_broker(session, clock))
    assert text == "node n1: lost the broker at tcp://broker:5555; reconnecting"
    [(_, text)] = logs(session.on_tick(clock.advance(INTERVAL * LIVENESS + 0.01)))
    assert "lost the broker" in text  # while it stays away, as before


def test_a_malformed_message_counts_as_hearing_from_the_broker(
    session: NodeSession, clock: FakeClock
) -> None:
    joined(session, clock)
    clock.advance(INTERVAL * LIVENESS)
    first = session.on_malformed(WireError("bad magic"), clock.now)
    second = session.on_malformed(WireError("bad magic"), clock.now)
    assert logs(first) == [(logging.WARNING, "node n1: dropped a malformed message: bad magic")]
    assert [level for level, _ in logs(second)] == [logging.DEBUG]  # no flood in the log
    assert session.malformed == 2
    assert NewDealer("tcp://broker:5555") not in session.on_tick(clock.advance(INTERVAL))


def test_a_rejoin_after_a_lost_broker_fires_the_hooks_with_the_epoch_change(
    session: NodeSession, clock: FakeClock
) -> None:
    joined(session, clock, epoch=42)
    lose_broker(session, clock)
    out = joined(session, clock, epoch=43)  # a restarted broker
    assert RunSessionHooks(broker_restarted=True) in out
    assert logs(out) == [(logging.INFO, "node n1: rejoined the broker (session 2)")]
    assert out[-1] == Welcomed()
    assert (session.sessions, session.epoch) == (2, 43)


def test_a_rejoin_with_the_same_epoch_fires_the_hooks_with_false(
    session: NodeSession, clock: FakeClock
) -> None:
    joined(session, clock, epoch=42)
    lose_broker(session, clock)
    assert RunSessionHooks(broker_restarted=False) in joined(session, clock, epoch=42)


def test_extra_welcomes_while_ready_start_no_session(
    session: NodeSession, clock: FakeClock
) -> None:
    joined(session, clock)
    out = list(session.on_message(welcome(heartbeat_interval_s=2.0, liveness=5), clock.now))
    assert out == [Welcomed()]
    assert (session.sessions, session.heartbeat_interval_s, session.liveness) == (1, 2.0, 5)


# ------------------------------------------------------------------ DISCONNECT from the broker


def test_disconnect_while_ready_rejoins_with_a_new_session_id(
    session: NodeSession, clock: FakeClock
) -> None:
    joined(session, clock)
    out = session.on_message(msg(Command.DISCONNECT, reason="unknown node"), clock.now)
    assert logs(out) == [(logging.INFO, "node n1: the broker does not know us; rejoining")]
    [hello] = sent(out)
    assert (hello.command, hello.header["session"]) == (Command.HELLO, 1)
    assert NewDealer("tcp://broker:5555") not in out  # same DEALER, same routing id
    assert not session.ready
    out = joined(session, clock)
    assert RunSessionHooks(broker_restarted=False) in out
    assert session.sessions == 2


def test_disconnect_while_not_ready_sends_no_second_hello(
    session: NodeSession, clock: FakeClock
) -> None:
    assert session.on_message(msg(Command.DISCONNECT, reason="unknown node"), clock.now) == ()
    assert session.session_id == 0


# ------------------------------------------------------------------ REJECT


@pytest.mark.parametrize("code", [protocol.REJECT_NAME_TAKEN, protocol.REJECT_LIMIT, "key"])
def test_a_refused_first_join_is_final(session: NodeSession, clock: FakeClock, code: str) -> None:
    out = session.on_message(reject(code), clock.now)
    [stop] = [i for i in out if isinstance(i, Stop)]
    assert isinstance(stop.error, RejectedError)
    assert str(stop.error) == f"the broker refused node n1: no ({code})"
    assert logs(out) == [(logging.ERROR, str(stop.error))]
    assert session.stopped
    assert not session.ready


@pytest.mark.parametrize("code", sorted(protocol.RETRYABLE_REJECTS))
def test_a_rejoin_refused_for_now_keeps_asking_with_one_warning(
    session: NodeSession, clock: FakeClock, code: str
) -> None:
    joined(session, clock)
    session.on_message(msg(Command.DISCONNECT, reason="unknown node"), clock.now)
    warnings: list[tuple[int, str]] = []
    for _ in range(5):
        out = session.on_message(reject(code), clock.now)
        assert not any(isinstance(i, Stop) for i in out)
        warnings += logs(out)
        assert commands(session.on_tick(clock.advance(INTERVAL))) == [Command.HELLO]
    assert warnings == [
        (
            logging.WARNING,
            f"node n1: the broker refused to take us back (no ({code})); asking again every 0.5 s",
        )
    ]
    assert not session.stopped
    assert session.retrying
    assert RunSessionHooks(broker_restarted=False) in joined(session, clock)
    assert not session.retrying


def test_a_rejoin_refused_for_good_is_final(session: NodeSession, clock: FakeClock) -> None:
    joined(session, clock)
    session.on_message(msg(Command.DISCONNECT, reason="unknown node"), clock.now)
    out = session.on_message(reject(protocol.REJECT_KEY), clock.now)
    assert any(isinstance(i, Stop) for i in out)


def test_a_retryable_reject_while_ready_ends_the_session(
    session: NodeSession, clock: FakeClock
) -> None:
    joined(session, clock)
    out = session.on_message(reject(protocol.REJECT_NAME_TAKEN), clock.now)
    assert [level for level, _ in logs(out)] == [logging.WARNING]
    assert not session.ready
    assert session.session_id == 1
    [hello] = sent(session.on_tick(clock.advance(INTERVAL)))
    assert (hello.command, hello.header["session"]) == (Command.HELLO, 1)


# ------------------------------------------------------------------ leaving


def test_leaving_a_ready_session_says_disconnect(session: NodeSession, clock: FakeClock) -> None:
    joined(session, clock)
    [leave] = session.leave()
    assert isinstance(leave, Leave)
    assert leave.farewell is not None
    farewell = wire.decode(leave.farewell)
    assert (farewell.command, farewell.header) == (Command.DISCONNECT, {"reason": "normal"})
    assert session.stopped


def test_leaving_before_a_welcome_says_nothing(session: NodeSession) -> None:
    assert session.leave() == [Leave(None)]


def test_leaving_after_losing_the_broker_says_nothing(
    session: NodeSession, clock: FakeClock
) -> None:
    joined(session, clock)
    lose_broker(session, clock)
    assert session.leave() == [Leave(None)]


# ------------------------------------------------------------------ a failover pair (issue 17)

PAIR = "tcp://a:5555,tcp://b:5555"


def pair_session(clock: FakeClock) -> NodeSession:
    s = NodeSession("n1", url=PAIR, role=protocol.ROLE_CLIENT, capacity=0, incarnation=9)
    assert s.start(clock.now)[0] == NewDealer("tcp://a:5555")
    return s


def test_a_node_of_a_pair_moves_to_the_next_broker_when_its_broker_goes_silent(
    clock: FakeClock,
) -> None:
    s = pair_session(clock)
    joined(s, clock, epoch=1)
    out = lose_broker(s, clock)
    assert NewDealer("tcp://b:5555") in out
    assert (logging.WARNING, "node n1: lost the broker at tcp://a:5555; trying tcp://b:5555") in (
        logs(out)
    )
    assert commands(out)[-1] is Command.HELLO
    # The backup welcomes it: a new session, with a new epoch (the client resends, actors resync).
    out = joined(s, clock, epoch=2)
    assert RunSessionHooks(broker_restarted=True) in out
    assert s.url == "tcp://b:5555"
    # And back to the first when that one goes silent too.
    assert NewDealer("tcp://a:5555") in lose_broker(s, clock)


def test_a_passive_broker_sends_the_node_to_the_next_at_once_even_on_its_first_join(
    clock: FakeClock,
) -> None:
    s = pair_session(clock)
    out = s.on_message(reject(protocol.REJECT_PASSIVE), clock.now)
    assert not any(isinstance(i, Stop) for i in out)  # not final, unlike other first refusals
    assert NewDealer("tcp://b:5555") in out
    assert commands(out) == [Command.HELLO]
    # A second passive answer within the interval: move on, but say HELLO at the next beat,
    # so two passive brokers cannot make the node bounce as fast as they answer.
    out = s.on_message(reject(protocol.REJECT_PASSIVE), clock.advance(0.01))
    assert NewDealer("tcp://a:5555") in out
    assert commands(out) == []
    assert commands(s.on_tick(clock.advance(1.0))) == [Command.HELLO]
    assert not s.stopped


def test_a_single_endpoint_is_a_list_of_one(clock: FakeClock) -> None:
    s = NodeSession("n1", url="tcp://a:5555", role="client", capacity=0, incarnation=9)
    s.start(clock.now)
    joined(s, clock)
    assert NewDealer("tcp://a:5555") in lose_broker(s, clock)


@pytest.mark.parametrize("urls", ["", ",", " , "])
def test_an_empty_endpoint_list_is_refused(urls: str) -> None:
    with pytest.raises(ValueError, match="names no endpoint"):
        NodeSession("n1", url=urls, role="client", capacity=0, incarnation=9)
