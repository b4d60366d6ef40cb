"""The broker's bounds on LANE asks (``zimg._broker_lanes``): one waiting ask per ordered pair,
none while that lane is open, ``max_lanes`` waiting per asker; counted ``lane_asks_refused`` and
logged once per node. Driven through the state machine with a fake clock and no sockets."""

from __future__ import annotations

import dataclasses
import logging

from tests.unit.test_broker_lanes import TOKEN, joined, lane
from tests.unit.test_broker_state import CFG, ident, join
from zimg import wire
from zimg._broker_state import Log
from zimg.wire import Command


def accept(state, clock, sender: str, to: str) -> list:
    return lane(state, clock, sender, op="accept", to=to, incarnation=1, token=TOKEN)


def test_a_repeated_ask_is_not_passed_on_until_the_first_is_answered(clock):
    state = joined(clock, "a", "b")
    [(to, _)] = lane(state, clock, "a", op="ask", to="b")
    assert to == ident("b")
    for _ in range(1000):
        assert lane(state, clock, "a", op="ask", to="b") == []
    assert state.stats["lane_asks_refused"] == 1000
    assert state.stats["lanes_refused"] == 0
    # b's one answer reaches a, once
    [(to, msg)] = accept(state, clock, "b", "a")
    assert (to, msg.header["op"]) == (ident("a"), "accept")


def test_an_ask_for_a_lane_that_is_open_is_refused_to_the_asker(clock):
    state = joined(clock, "a", "b")
    lane(state, clock, "a", op="ask", to="b")
    accept(state, clock, "b", "a")
    [(to, msg)] = lane(state, clock, "a", op="ask", to="b")
    assert (to, msg.header["op"], msg.header["from"]) == (ident("a"), "refuse", "b")
    assert "open already" in msg.header["reason"]
    assert state.stats["lane_asks_refused"] == 1


def test_the_other_direction_of_an_open_lane_may_still_be_asked_for(clock):
    state = joined(clock, "a", "b")
    lane(state, clock, "a", op="ask", to="b")
    accept(state, clock, "b", "a")  # a -> b is open
    [(to, msg)] = lane(state, clock, "b", op="ask", to="a")
    assert (to, msg.header["op"]) == (ident("a"), "ask")
    assert state.stats["lane_asks_refused"] == 0


def test_a_refused_ask_may_be_asked_again(clock):
    state = joined(clock, "a", "b")
    lane(state, clock, "a", op="ask", to="b")
    [(to, msg)] = lane(state, clock, "b", op="refuse", to="a", reason="too many lanes")
    assert (to, msg.header["op"]) == (ident("a"), "refuse")
    [(to, msg)] = lane(state, clock, "a", op="ask", to="b")
    assert (to, msg.header["op"]) == (ident("b"), "ask")
    assert state.stats["lane_asks_refused"] == 0


def test_an_accept_for_an_earlier_incarnation_leaves_the_ask_waiting(clock):
    state = joined(clock, "a", "b")
    lane(state, clock, "a", op="ask", to="b")
    assert lane(state, clock, "b", op="accept", to="a", incarnation=7, token=TOKEN) == []
    assert lane(state, clock, "a", op="ask", to="b") == []  # still waiting
    assert state.stats["lane_asks_refused"] == 1


def test_no_node_has_more_than_max_lanes_asks_waiting(clock):
    state = joined(clock, "a", "b", "c", "d", cfg=dataclasses.replace(CFG, max_lanes=2))
    for peer in ("b", "c"):
        [(to, _)] = lane(state, clock, "a", op="ask", to=peer)
        assert to == ident(peer)
    [(to, msg)] = lane(state, clock, "a", op="ask", to="d")
    assert (to, msg.header["op"], msg.header["from"]) == (ident("a"), "refuse", "d")
    assert "at most 2 asks" in msg.header["reason"]
    assert state.stats["lane_asks_refused"] == 1
    lane(state, clock, "b", op="refuse", to="a", reason="no")  # one answered: room for one
    [(to, msg)] = lane(state, clock, "a", op="ask", to="d")
    assert (to, msg.header["op"]) == (ident("d"), "ask")


def test_asks_stop_waiting_when_either_node_goes_down(clock):
    state = joined(clock, "a", "b", "c")
    lane(state, clock, "a", op="ask", to="b")
    lane(state, clock, "c", op="ask", to="a")
    b, c = state.by_name["b"], state.by_name["c"]
    state.on_message(ident("a"), wire.encode(Command.DISCONNECT, {}), clock.now)
    assert b.lane_asked_by == set()
    assert c.lane_asks == set()
    # b goes down while a's ask waits; a's ask of b's next session is passed on
    state = joined(clock, "a", "b")
    lane(state, clock, "a", op="ask", to="b")
    state.on_message(ident("b"), wire.encode(Command.DISCONNECT, {}), clock.now)
    assert state.by_name["a"].lane_asks == set()
    join(state, clock, "b", role="client", capacity=0, lane="tcp://127.0.0.1:71")
    [(to, msg)] = lane(state, clock, "a", op="ask", to="b")
    assert (to, msg.header["op"]) == (ident("b"), "ask")
    assert state.stats["lane_asks_refused"] == 0


def test_a_node_asks_again_after_its_lane_ended_without_tripping_a_bound(clock):
    """What a well-behaved node does (``zimg._lanes``): it asks once per peer, and again only
    after the peer's NODEDOWN (the lane ended) or in a new session."""
    state = joined(clock, "a", "b")
    lane(state, clock, "a", op="ask", to="b")
    accept(state, clock, "b", "a")
    # b's session ends (a hears NODEDOWN) and b joins again: a asks the new b
    state.on_message(ident("b"), wire.encode(Command.DISCONNECT, {}), clock.now)
    join(state, clock, "b", role="client", capacity=0, lane="tcp://127.0.0.1:71")
    [(to, _)] = lane(state, clock, "a", op="ask", to="b")
    assert to == ident("b")
    accept(state, clock, "b", "a")
    # a loses its session: a new HELLO session ends the old one, and a asks again
    hello = {"lane": "tcp://127.0.0.1:71", "session": 1, "role": "client", "capacity": 0}
    join(state, clock, "a", **hello)
    [(to, _)] = lane(state, clock, "a", op="ask", to="b")
    assert to == ident("b")
    assert state.stats["lane_asks_refused"] == 0


def test_bounded_asks_are_logged_once_per_node_and_shown_in_the_stats(clock):
    state = joined(clock, "a", "b")
    lane(state, clock, "a", op="ask", to="b")
    logs = []
    for _ in range(3):
        out = state.on_message(
            ident("a"), wire.encode(Command.LANE, {"op": "ask", "to": "b"}), clock.now
        )
        logs += [i for i in out if isinstance(i, Log)]
    [log] = logs
    assert log.level == logging.WARNING
    assert "LANE ask" in log.text
    assert state.nodes_report(clock.now)["stats"]["lane_asks_refused"] == 3


def test_a_broken_lane_may_be_asked_for_again_both_ways(clock):
    state = joined(clock, "a", "b")
    for asker, to in (("a", "b"), ("b", "a")):
        lane(state, clock, asker, op="ask", to=to)
        accept(state, clock, to, asker)  # both ways open
    [(to, msg)] = lane(state, clock, "a", op="broken", to="b", token=TOKEN)
    assert (to, msg.header) == (ident("b"), {"op": "broken", "from": "a", "token": TOKEN})
    for asker, to in (("a", "b"), ("b", "a")):
        [(dest, msg)] = lane(state, clock, asker, op="ask", to=to)
        assert (dest, msg.header["op"]) == (ident(to), "ask")
    assert state.stats["lane_asks_refused"] == 0
