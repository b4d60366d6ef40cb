"""The broker's part in lanes (``zimg._broker_lanes``): introductions, stamps and bounds, driven
through the broker's state machine with a fake clock and no sockets."""

from __future__ import annotations

import dataclasses

import pytest

from tests.unit.test_broker_state import CFG, ident, join, sends
from zimg import protocol, wire
from zimg._broker_state import BrokerState
from zimg.testing import FakeClock
from zimg.wire import Command

TOKEN = b"\x01" * 16
KEY = b"k" * 40


def lane(state: BrokerState, clock: FakeClock, sender: str, **header) -> list:
    return sends(state.on_message(ident(sender), wire.encode(Command.LANE, header), clock.now))


def joined(clock: FakeClock, *names: str, cfg=CFG) -> BrokerState:
    state = BrokerState(cfg, now=clock.now, epoch=1)
    for name in names:
        join(state, clock, name, role="client", capacity=0, lane=f"tcp://127.0.0.1:7{len(name)}")
    return state


def test_an_ask_goes_to_the_peer_stamped_with_the_askers_name_and_incarnation(clock):
    state = joined(clock, "a", "b")
    [(to, msg)] = lane(state, clock, "a", op="ask", to="b")
    assert to == ident("b")
    assert msg.command is Command.LANE
    assert msg.header == {"op": "ask", "from": "a", "incarnation": 1}


def test_an_accept_goes_back_with_the_accepting_nodes_endpoint_and_key(clock):
    state = BrokerState(CFG, now=clock.now, epoch=1)
    join(state, clock, "a", role="client", capacity=0, lane="tcp://10.0.0.1:1", lane_key=KEY)
    join(state, clock, "b", role="client", capacity=0, lane="tcp://10.0.0.2:2", lane_key=KEY)
    # whatever endpoint b claims in its accept, the broker says the one of its HELLO
    [(to, msg)] = lane(
        state, clock, "b", op="accept", to="a", incarnation=1, token=TOKEN, endpoint="tcp://x:1"
    )
    assert to == ident("a")
    assert msg.header == {
        "op": "accept",
        "from": "b",
        "incarnation": 1,
        "endpoint": "tcp://10.0.0.2:2",
        "lane_key": KEY,
        "token": TOKEN,
    }
    assert state.stats["lanes_opened"] == 1
    assert state.by_name["a"].lane_peers == {state.by_name["b"]}


def test_an_accept_for_another_incarnation_is_dropped(clock):
    state = joined(clock, "a", "b")
    assert lane(state, clock, "b", op="accept", to="a", incarnation=2, token=TOKEN) == []
    assert state.stats["lanes_opened"] == 0


@pytest.mark.parametrize(
    ("asker_lane", "to", "why"),
    [
        (False, "b", "this node said no lane"),
        (True, "zz", "not connected"),
        (True, "a", "that node has no lane"),
        (True, "c", "that node has no lane"),
    ],
)
def test_an_ask_that_cannot_be_met_is_refused_to_the_asker(clock, asker_lane, to, why):
    state = BrokerState(CFG, now=clock.now, epoch=1)
    extra = {"lane": "tcp://127.0.0.1:1"} if asker_lane else {}
    join(state, clock, "a", role="client", capacity=0, **extra)
    join(state, clock, "b", role="client", capacity=0, lane="tcp://127.0.0.1:2")
    join(state, clock, "c", role="client", capacity=0)
    [(dest, msg)] = lane(state, clock, "a", op="ask", to=to)
    assert dest == ident("a")
    assert msg.header["op"] == "refuse"
    assert msg.header["from"] == to
    assert why in msg.header["reason"]
    assert state.stats["lanes_refused"] == 1


def test_no_node_holds_more_than_max_lanes(clock):
    cfg = dataclasses.replace(CFG, max_lanes=2)
    state = joined(clock, "a", "b", "c", "d", cfg=cfg)
    for peer in ("b", "c"):
        lane(state, clock, peer, op="accept", to="a", incarnation=1, token=TOKEN)
    [(to, msg)] = lane(state, clock, "a", op="ask", to="d")
    assert (to, msg.header["op"]) == (ident("a"), "refuse")
    # an accept that would pass the bound (asked before it was reached) is refused too
    [(to, msg)] = lane(state, clock, "d", op="accept", to="a", incarnation=1, token=TOKEN)
    assert (to, msg.header["op"]) == (ident("a"), "refuse")
    assert len(state.by_name["a"].lane_peers) == 2


def test_ready_switch_switched_and_close_pass_only_between_lane_peers(clock):
    state = joined(clock, "a", "b", "c")
    lane(state, clock, "b", op="accept", to="a", incarnation=1, token=TOKEN)
    [(to, msg)] = lane(state, clock, "a", op="switch", to="b", token=TOKEN)
    assert to == ident("b")
    assert msg.header == {"op": "switch", "from": "a", "token": TOKEN}
    assert lane(state, clock, "a", op="switch", to="c", token=TOKEN) == []
    assert lane(state, clock, "c", op="close", to="b", token=TOKEN) == []
    [(to, msg)] = lane(state, clock, "b", op="ready", to="a", token=TOKEN)
    assert to == ident("a")
    assert msg.header == {"op": "ready", "from": "b", "token": TOKEN}
    assert lane(state, clock, "c", op="ready", to="a", token=TOKEN) == []
    [(to, msg)] = lane(state, clock, "b", op="switched", to="a", token=TOKEN)
    assert to == ident("a")
    assert msg.header == {"op": "switched", "from": "b", "token": TOKEN}
    assert lane(state, clock, "c", op="switched", to="a", token=TOKEN) == []


def test_a_nodes_lane_peers_hear_its_nodedown_once_even_if_they_also_watch_it(clock):
    state = joined(clock, "a", "b", "c")
    lane(state, clock, "b", op="accept", to="a", incarnation=1, token=TOKEN)
    watch = wire.encode(Command.WATCH, {"node": "a"})
    state.on_message(ident("c"), watch, clock.now)
    state.on_message(ident("b"), watch, clock.now)
    out = sends(state.on_message(ident("a"), wire.encode(Command.DISCONNECT, {}), clock.now))
    downs = sorted(to for to, msg in out if msg.command is Command.NODEDOWN)
    assert downs == sorted([ident("b"), ident("c")])
    assert state.by_name["b"].lane_peers == set()


@pytest.mark.parametrize(
    "header",
    [
        {"op": "ask"},
        {"op": "ask", "to": 3},
        {"op": "dance", "to": "b"},
        {"op": "switch", "to": "b"},
        {"op": "switch", "to": "b", "token": b"short"},
        {"op": "accept", "to": "b", "incarnation": 1, "token": 7},
    ],
)
def test_a_malformed_lane_is_counted_and_dropped(clock, header):
    state = joined(clock, "a", "b")
    lane(state, clock, "b", op="accept", to="a", incarnation=1, token=TOKEN)
    before = state.stats["malformed"]
    assert lane(state, clock, "a", **header) == []
    assert state.stats["malformed"] == before + 1


@pytest.mark.parametrize(
    "extra",
    [{"lane": "ipc:///tmp/x"}, {"lane": 5}, {"lane": "tcp://" + "x" * 300}, {"lane_key": b"k"}],
)
def test_a_hello_with_a_bad_lane_is_rejected(clock, extra):
    state = BrokerState(CFG, now=clock.now, epoch=1)
    [(_, msg)] = sends(join(state, clock, "a", role="client", capacity=0, **extra))
    assert msg.command is Command.REJECT
    assert msg.header["code"] == protocol.REJECT_INVALID
