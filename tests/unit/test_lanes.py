"""A node's lanes (``zimg._lanes``) over real sockets in one process: the hold before the
switch, the checks on what a lane brings, the bounds, and the end of a lane."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator

import msgpack
import numpy as np
import pytest
import zmq

from zimg import _lane_batch as _batch
from zimg import _lane_out, _lane_path, _lane_reader, _lane_terms, _lanes, wire
from zimg._lane_reader import LaneReader
from zimg._lanes import Lanes, State
from zimg.wire import Command, Message, Pid

pytestmark = pytest.mark.timeout(30)

A_PID = Pid("a", 1, 7)
B_PID = Pid("b", 2, 9)


class Pair:
    """Node a's lanes, sending to node b's."""

    def __init__(self, ctx: zmq.Context) -> None:
        self.a = Lanes(ctx, "a", "127.0.0.1", wire.DEFAULT_LIMITS, None)
        self.b = Lanes(ctx, "b", "127.0.0.1", wire.DEFAULT_LIMITS, None)
        self.delivered: list[Message] = []
        self.to_broker: list[Message] = []  # what b sent the broker
        self.b.to_broker = lambda frames: self.to_broker.append(wire.decode(frames))
        assert self.a.ask("b") is not None
        accept = wire.decode(self.b.on_ask({"from": "a", "incarnation": 1})).header
        self.token = accept["token"]
        self.a.on_accept(
            {
                "from": "b",
                "incarnation": 2,
                "endpoint": self.b.endpoint,
                "lane_key": None,
                "token": self.token,
            }
        )
        lane = self.a.state("b")
        assert lane is not None
        assert lane.state is State.CONNECTING  # nothing goes on it before b heard a's HI
        self.lane = lane
        self.read(0, hi=True)
        [ready] = self.to_broker
        assert ready.header == {"op": "ready", "to": "a", "token": self.token}
        self.a.on_ready({"from": "b", "token": self.token})
        assert lane.state is State.READY

    def send(self, command: Command, **header) -> None:
        self.a.send(self.lane, wire.encode(command, header), lambda: False)

    def read(self, count: int, hi: bool = False) -> None:
        """Read until ``count`` more messages (or, with ``hi``, a's HI) were taken off b's lane
        socket (or 5 s)."""
        self.a.flush(force=True)  # as a's I/O thread would (a burst waits in a batch)
        b = self.b
        target = b.received + b.refused + count
        while b.received + b.refused < target or (hi and not self.to_broker):
            assert b.router.poll(5000), "nothing arrived on the lane"
            b.read(self.delivered.append)

    def switch(self) -> None:
        self.a.switch(self.lane)
        self.b.on_switch({"from": "a", "token": self.token}, self.delivered.append)


@pytest.fixture
def pair() -> Iterator[Pair]:
    ctx: zmq.Context = zmq.Context()
    made = Pair(ctx)
    yield made
    made.a.close()
    made.b.close()
    ctx.destroy(linger=0)


def test_what_comes_before_the_switch_is_held_then_delivered_in_order(pair):
    for i in range(5):
        pair.send(Command.SEND, to=B_PID, msg=i)
    pair.read(5)
    assert pair.delivered == []
    pair.switch()
    pair.send(Command.SEND, to=B_PID, msg=5)
    pair.read(1)
    assert [m.header["msg"] for m in pair.delivered] == list(range(6))


@pytest.mark.parametrize(
    ("command", "header"),
    [
        (Command.LINK, {"to": B_PID, "from": Pid("c", 1, 7)}),  # another node's pid
        (Command.LINK, {"to": B_PID, "from": Pid("a", 5, 7)}),  # another incarnation of a
        (Command.DOWN, {"to": B_PID, "pid": B_PID, "ref": None, "reason": "x"}),
        (Command.SEND, {"to": Pid("c", 1, 1), "msg": 1}),  # for another node
        (Command.SEND, {"to": ("name", "c"), "msg": 1}),
        (Command.SPAWN, {"to": "c", "from": A_PID}),
        (Command.JOB, {"id": 1}),  # not an actor command
        (Command.NODEDOWN, {"node": "x", "incarnation": 1, "reason": "noconnection"}),
    ],
)
def test_a_message_a_lane_could_not_have_carried_is_refused(pair, command, header):
    pair.switch()
    pair.send(command, **header)
    pair.send(Command.SEND, to=B_PID, msg="after")
    pair.read(2)
    assert pair.b.refused == 1
    assert [m.header.get("msg") for m in pair.delivered] == ["after"]


def test_frames_that_do_not_decode_are_refused(pair):
    pair.switch()
    pair.a.send(pair.lane, [b"ZIMG2\x12\xc1"], lambda: False)
    pair.read(1)
    assert (pair.b.refused, pair.delivered) == (1, [])


def test_a_message_without_a_known_token_is_refused(pair):
    pair.switch()
    stranger = pair.b.router.context.socket(zmq.DEALER)
    stranger.setsockopt(zmq.ROUTING_ID, b"\x01" * 16)
    stranger.connect(pair.b.endpoint)
    stranger.send_multipart(wire.encode(Command.SEND, {"to": B_PID, "msg": "forged"}))
    pair.read(1)
    stranger.close(linger=0)
    assert (pair.b.refused, pair.delivered) == (1, [])


def test_a_lane_holds_at_most_max_held_before_its_switch(pair, monkeypatch):
    monkeypatch.setattr(_lane_terms, "MAX_HELD", 3)
    for i in range(5):
        pair.send(Command.SEND, to=B_PID, msg=i)
    pair.read(5)
    pair.switch()
    assert [m.header["msg"] for m in pair.delivered] == [0, 1, 2]
    assert pair.b.refused == 2


def nodedown(name: str, incarnation: int, reason: str) -> Message:
    header = {"node": name, "incarnation": incarnation, "reason": reason}
    return wire.decode(wire.encode(Command.NODEDOWN, header))


def test_the_nodedown_of_a_peer_that_left_waits_for_its_bye(pair):
    pair.switch()
    down = nodedown("a", 1, "normal")
    assert pair.b.on_nodedown(down, now=100.0) is None  # parked
    pair.send(Command.SEND, to=B_PID, msg="last words")
    pair.a.say_bye(1.0)
    while not pair.delivered or pair.delivered[-1] is not down:
        assert pair.b.router.poll(5000)
        pair.b.read(pair.delivered.append)
    assert [m.header.get("msg") for m in pair.delivered] == ["last words", None]
    assert pair.b.inbound == {}


def test_a_parked_nodedown_goes_on_after_bye_wait_s_without_a_bye(pair):
    pair.switch()
    down = nodedown("a", 1, "normal")
    assert pair.b.on_nodedown(down, now=100.0) is None
    assert pair.b.due(100.0 + _lanes.BYE_WAIT_S / 2) == []
    assert pair.b.due(100.0 + _lanes.BYE_WAIT_S) == [down]
    assert pair.b.inbound == {}


def test_the_nodedown_of_a_crashed_peer_goes_on_at_once_and_ends_its_lane(pair):
    pair.switch()
    down = nodedown("a", 1, "noconnection")
    assert pair.b.on_nodedown(down, now=100.0) is down
    pair.send(Command.SEND, to=B_PID, msg="from the dead")
    pair.read(1)
    assert (pair.b.refused, pair.delivered) == (1, [])


def test_the_answer_to_a_refused_watch_leaves_lanes_alone(pair):
    pair.switch()
    down = nodedown("a", 1, "system_limit")
    assert pair.b.on_nodedown(down, now=1.0) is down
    assert pair.a.on_nodedown(nodedown("b", 2, "system_limit"), now=1.0) is not None
    pair.send(Command.SEND, to=B_PID, msg="still here")
    pair.read(1)
    assert [m.header["msg"] for m in pair.delivered] == ["still here"]


def test_a_peers_nodedown_closes_the_lane_to_it(pair):
    pair.switch()
    assert pair.a.on_nodedown(nodedown("b", 2, "noconnection"), now=1.0) is not None
    assert pair.a.state("b") is None
    pair.send(Command.SEND, to=B_PID, msg="too late")
    assert pair.a.lost == 1
    # a new lane to the next incarnation may be asked for
    assert pair.a.ask("b") is not None


def test_a_node_accepts_at_most_max_lanes(monkeypatch):
    monkeypatch.setattr(_lane_terms, "MAX_LANES", 2)
    ctx: zmq.Context = zmq.Context()
    b = Lanes(ctx, "b", "127.0.0.1", wire.DEFAULT_LIMITS, None)
    try:
        answers = [wire.decode(b.on_ask({"from": n, "incarnation": 1})) for n in "xyz"]
        assert [m.header["op"] for m in answers] == ["accept", "accept", "refuse"]
        # a peer that asks again replaces its own lane: it takes no second place
        assert wire.decode(b.on_ask({"from": "x", "incarnation": 2})).header["op"] == "accept"
        assert len(b.inbound) == 2
    finally:
        b.close()
        ctx.destroy(linger=0)


def test_a_lane_whose_peer_never_hears_its_hi_is_never_used():
    """A peer that accepted but cannot be reached on its lane (a firewall, a wrong address):
    the lane stays CONNECTING, so every message keeps going through the broker."""
    ctx: zmq.Context = zmq.Context()
    a = Lanes(ctx, "a", "127.0.0.1", wire.DEFAULT_LIMITS, None)
    nowhere = ctx.socket(zmq.ROUTER)
    port = nowhere.bind_to_random_port("tcp://127.0.0.1")
    nowhere.close(linger=0)  # nothing listens there any more
    try:
        assert a.ask("b") is not None
        a.on_accept(
            {
                "from": "b",
                "incarnation": 2,
                "endpoint": f"tcp://127.0.0.1:{port}",
                "lane_key": None,
                "token": b"\x01" * 16,
            }
        )
        lane = a.state("b")
        assert lane is not None
        assert lane.state is State.CONNECTING
        a.on_ready({"from": "b", "token": b"\x02" * 16})  # not its token: ignored
        assert lane.state is State.CONNECTING
    finally:
        a.close()
        ctx.destroy(linger=0)


def test_a_peer_answers_one_hi_per_lane(pair):
    pair.lane.sock.send(b"HI")
    pair.send(Command.SEND, to=B_PID, msg="after")
    pair.switch()
    pair.read(2)  # the second HI, refused, and the message
    # the first HI's READY only (and the SWITCHED that answers the switch)
    assert [m.header["op"] for m in pair.to_broker] == ["ready", "switched"]
    assert pair.b.refused == 1


def test_a_leader_woken_by_a_stale_wake_up_does_not_spin():
    """A wake-up can be written after a leader ended and its flag was cleared (another thread
    set the flag, then wrote): the next leader must read it away, not poll it for ever."""
    import os
    import threading
    import time

    from zimg._lane_reader import LaneReader

    ctx: zmq.Context = zmq.Context()
    lanes = Lanes(ctx, "b", "127.0.0.1", wire.DEFAULT_LIMITS, None)
    reader = LaneReader(lanes, threading.RLock(), lambda m: None, lambda: None)
    try:
        os.write(reader.wake.fd, (1).to_bytes(8, "little"))  # readable, flag not set
        waker = reader.begin()
        assert waker is not None
        started = time.thread_time()
        assert reader.wait(waker, 0.3) is False  # nobody woke it: it times out
        reader.end()
        assert time.thread_time() - started < 0.1  # it slept; a spin takes the whole 0.3 s
    finally:
        reader.close()
        lanes.close()
        ctx.destroy(linger=0)


# ---------------------------------------------------------------------- batches


def test_a_burst_goes_in_one_batch_that_waits_until_due(pair, monkeypatch):
    monkeypatch.setattr(_batch, "BURST_GAP_S", 60.0)  # every message after the first: a burst
    monkeypatch.setattr(_batch, "BATCH_DELAY_S", 60.0)  # not due until the test says so
    pair.switch()
    for i in range(5):
        pair.send(Command.SEND, to=B_PID, msg=i)
    assert pair.b.router.poll(5000)
    pair.b.read(pair.delivered.append, limit=1)
    assert [m.header["msg"] for m in pair.delivered] == [0]  # the first went alone, at once
    assert not pair.a.flush()  # the batch is not due yet
    assert not pair.b.router.poll(50)
    monkeypatch.setattr(_batch, "BATCH_DELAY_S", 0.0)
    pair.a.flush()  # due now: the I/O thread's flush sends it
    assert pair.b.router.poll(5000)
    pair.b.read(pair.delivered.append, limit=1)  # one ZeroMQ message: the four
    assert [m.header["msg"] for m in pair.delivered] == [0, 1, 2, 3, 4]
    assert (pair.a.sent, pair.b.received) == (5, 5)


def test_a_full_batch_goes_at_once(pair, monkeypatch):
    monkeypatch.setattr(_batch, "BURST_GAP_S", 60.0)
    monkeypatch.setattr(_batch, "BATCH_MAX", 3)
    pair.switch()
    for i in range(4):
        pair.send(Command.SEND, to=B_PID, msg=i)
    for _ in range(2):
        assert pair.b.router.poll(5000)
        pair.b.read(pair.delivered.append, limit=1)
    assert [m.header["msg"] for m in pair.delivered] == [0, 1, 2, 3]


def test_a_message_with_raw_frames_goes_after_the_open_batch(pair, monkeypatch):
    monkeypatch.setattr(_batch, "BURST_GAP_S", 60.0)
    pair.switch()
    pair.send(Command.SEND, to=B_PID, msg=0)
    pair.send(Command.SEND, to=B_PID, msg=1)
    pair.send(Command.SEND, to=B_PID, msg=np.arange(100_000, dtype=np.uint8))  # a raw frame
    pair.send(Command.SEND, to=B_PID, msg=3)
    pair.read(4)
    got = [m.header["msg"] for m in pair.delivered]
    assert got[:2] == [0, 1]
    assert got[3] == 3
    assert np.array_equal(got[2], np.arange(100_000, dtype=np.uint8))


def test_a_waiting_receive_sends_the_open_batches(pair, monkeypatch):
    monkeypatch.setattr(_batch, "BURST_GAP_S", 60.0)
    pair.switch()
    pair.send(Command.SEND, to=B_PID, msg=0)
    pair.send(Command.SEND, to=B_PID, msg=1)
    reader = LaneReader(pair.a, threading.RLock(), lambda msg: None, lambda: None)
    try:
        reader.before_wait()
    finally:
        reader.close()
    for _ in range(2):
        assert pair.b.router.poll(5000)
        pair.b.read(pair.delivered.append, limit=1)
    assert [m.header["msg"] for m in pair.delivered] == [0, 1]


def test_a_bye_comes_after_the_open_batch(pair, monkeypatch):
    monkeypatch.setattr(_batch, "BURST_GAP_S", 60.0)
    pair.switch()
    down = nodedown("a", 1, "normal")
    assert pair.b.on_nodedown(down, now=100.0) is None  # parked until a's BYE
    for i in range(3):
        pair.send(Command.SEND, to=B_PID, msg=i)
    pair.a.say_bye(1.0)
    while not pair.delivered or pair.delivered[-1] is not down:
        assert pair.b.router.poll(5000)
        pair.b.read(pair.delivered.append)
    assert [m.header.get("msg") for m in pair.delivered] == [0, 1, 2, None]


def test_a_closed_lane_counts_its_open_batch_as_lost(pair, monkeypatch):
    monkeypatch.setattr(_batch, "BURST_GAP_S", 60.0)
    pair.switch()
    for i in range(3):
        pair.send(Command.SEND, to=B_PID, msg=i)
    pair.a.close_outbound("b")
    assert (pair.a.sent, pair.a.lost) == (3, 2)
    assert pair.a.batching == set()


def raw_lane_send(pair: Pair, *frames: bytes) -> None:
    assert pair.lane.sock is not None
    pair.lane.sock.send_multipart(list(frames))


def lead(command: Command, **header) -> bytes:
    [frame] = wire.encode(command, header)
    return frame


@pytest.mark.parametrize(
    "payload",
    [
        b"\xc1",  # not msgpack
        msgpack.packb("not an array"),
        msgpack.packb([1, 2]),  # not byte strings
        msgpack.packb([lead(Command.SEND, to=B_PID, msg=1)] * (_batch.BATCH_MAX + 1)),
        msgpack.packb([]),
    ],
    ids=["not-msgpack", "not-an-array", "not-bytes", "too-many", "empty"],
)
def test_a_malformed_batch_is_refused_whole(pair, payload):
    pair.switch()
    raw_lane_send(pair, _batch.BATCH, payload)
    pair.send(Command.SEND, to=B_PID, msg="after")
    pair.read(2)
    assert pair.b.refused == 1
    assert [m.header["msg"] for m in pair.delivered] == ["after"]


def test_each_message_of_a_batch_is_checked_alone(pair):
    pair.switch()
    forged = lead(Command.LINK, to=B_PID, **{"from": Pid("c", 1, 7)})  # another node's pid
    good = [lead(Command.SEND, to=B_PID, msg=i) for i in range(2)]
    raw_lane_send(pair, _batch.BATCH, msgpack.packb([good[0], forged, b"junk", good[1]]))
    pair.read(4)
    assert pair.b.refused == 2
    assert [m.header["msg"] for m in pair.delivered] == [0, 1]


def test_a_lane_carries_at_most_switch_window_until_the_peer_has_the_switch(pair, monkeypatch):
    monkeypatch.setattr(_lane_terms, "SWITCH_WINDOW", 3)
    pair.a.switch(pair.lane)  # b has not seen the switch: what a sends there is held
    for i in range(6):
        pair.send(Command.SEND, to=B_PID, msg=i)
        pair.lane.last_send = 0.0  # each one alone
    pair.read(3)
    assert pair.b.received == 3
    assert pair.a.flush() is False  # the rest waits in a for the SWITCHED
    assert not pair.b.router.poll(50)
    pair.a.on_switched({"from": "b", "token": b"\x02" * 16})  # not the lane's token
    assert pair.a.flush() is False
    pair.b.on_switch({"from": "a", "token": pair.token}, pair.delivered.append)
    switched = pair.to_broker[-1]
    assert switched.header == {"op": "switched", "to": "a", "token": pair.token}
    pair.a.on_switched({"from": "b", "token": pair.token})
    pair.read(3)
    assert [m.header["msg"] for m in pair.delivered] == list(range(6))
    assert pair.b.refused == 0


def test_a_bye_more_than_once_is_refused(pair):
    pair.switch()
    raw_lane_send(pair, b"BYE")
    raw_lane_send(pair, b"BYE")
    pair.send(Command.SEND, to=B_PID, msg="after")
    pair.read(2)
    assert pair.b.refused == 1
    assert [m.header["msg"] for m in pair.delivered] == ["after"]


# ---------------------------------------------------------------------- a broken lane


def wait_for_connection(pair: Pair) -> None:
    """Read a's monitor of its lane until its connection came (the HI went over it)."""
    lane = pair.lane
    while not lane.connected:
        assert lane.monitor is not None
        assert lane.monitor.poll(5000), "the lane's monitor said nothing"
        pair.a.on_monitor(lane, 0.0)


def wait_for_drop(pair: Pair, now: float) -> None:
    """Read a's monitor of its lane (as a's I/O thread would) until the connection went."""
    lane = pair.lane
    while lane.dropped_at is None:
        assert lane.monitor is not None
        assert lane.monitor.poll(5000), "the lane's monitor said nothing"
        pair.a.on_monitor(lane, now)


def test_a_lane_whose_connection_goes_is_broken_after_the_grace(pair):
    pair.switch()
    wait_for_connection(pair)
    pair.b.router.close(linger=0)  # the connection goes; b itself stays joined
    wait_for_drop(pair, now=100.0)
    assert pair.a.next_drop_due() == 100.0 + _lane_terms.BREAK_GRACE_S
    assert pair.a.dropped(100.0 + _lane_terms.BREAK_GRACE_S / 2) == []
    [lane] = pair.a.dropped(100.0 + _lane_terms.BREAK_GRACE_S)
    down = pair.a.break_lane(lane)
    assert down.command is Command.NODEDOWN
    assert down.header == {"node": "b", "incarnation": 2, "reason": "noconnection"}
    assert pair.a.outbound == {}
    assert (pair.a.broken, pair.a.next_drop_due()) == (1, None)


def test_the_nodedown_of_a_peer_that_left_ends_its_dropped_lane_without_a_break(pair):
    pair.switch()
    wait_for_connection(pair)
    pair.b.router.close(linger=0)
    wait_for_drop(pair, now=100.0)
    assert pair.a.on_nodedown(nodedown("b", 2, "normal"), now=100.5) is not None
    assert pair.a.dropped(100.0 + _lane_terms.BREAK_GRACE_S) == []
    assert pair.a.broken == 0


def test_the_peer_ends_both_ways_when_told_its_lane_broke(pair):
    pair.switch()
    assert pair.b.on_broken({"from": "a", "token": b"\x03" * 16}) is None  # not its token
    assert pair.b.on_broken({"from": "c", "token": pair.token}) is None  # not its peer
    down = pair.b.on_broken({"from": "a", "token": pair.token})
    assert down is not None
    assert down.header == {"node": "a", "incarnation": 1, "reason": "noconnection"}
    assert pair.b.inbound == {}
    assert pair.b.broken == 1


def test_closing_a_watched_lane_as_its_peer_goes_leaves_the_context_working():
    """libzmq sends a socket's monitor events blocking: an event sent to a monitor already
    closed (the peer went as the lane closed) would stop the context's I/O thread, and with it
    every socket of the node. A hundred lanes close as their peers go; the context still
    works."""
    ctx: zmq.Context = zmq.Context()
    try:
        for _ in range(100):
            made = Pair(ctx)
            made.switch()
            wait_for_connection(made)
            made.b.router.close(linger=0)  # the peer goes...
            made.a.close_outbound("b")  # ...as the lane closes
            made.a.close()
            made.b.close()
        sink = ctx.socket(zmq.ROUTER)
        other = ctx.socket(zmq.DEALER)
        try:
            port = sink.bind_to_random_port("tcp://127.0.0.1")
            other.connect(f"tcp://127.0.0.1:{port}")
            other.send(b"still moving")
            assert sink.poll(3000), "the context's I/O thread stopped"
        finally:
            sink.close(linger=0)
            other.close(linger=0)
    finally:
        ctx.destroy(linger=0)


def test_a_sender_waits_once_its_lane_queues_max_backlog_messages_batches_or_not(pair, monkeypatch):
    monkeypatch.setattr(_lane_terms, "SWITCH_WINDOW", 0)  # nothing goes before SWITCHED
    monkeypatch.setattr(_lane_out, "MAX_BACKLOG", 10)
    monkeypatch.setattr(_batch, "BURST_GAP_S", 60.0)
    monkeypatch.setattr(_batch, "BATCH_MAX", 4)  # queued four messages at a time
    pair.a.switch(pair.lane)
    waited = threading.Event()

    def closed() -> bool:
        waited.set()  # the sender is waiting for room
        return False

    def send_all() -> None:
        for i in range(30):
            header = {"to": B_PID, "msg": i}
            pair.a.send(pair.lane, wire.encode(Command.SEND, header), closed)

    sender = threading.Thread(target=send_all)
    sender.start()
    try:
        assert waited.wait(5), "the sender never waited"
        assert pair.lane.queued <= 10 + 4
        assert sender.is_alive()
    finally:
        pair.b.on_switch({"from": "a", "token": pair.token}, pair.delivered.append)
        pair.a.on_switched({"from": "b", "token": pair.token})
        while sender.is_alive():  # as a's I/O thread: make room until the sender is done
            pair.a.flush(force=True)
            sender.join(0.01)
    pair.read(30 - len(pair.delivered))
    assert [m.header["msg"] for m in pair.delivered] == list(range(30))


# ---------------------------------------------------------------------- runs and readers


def test_a_batchs_checked_messages_go_to_the_run_handler_in_one_call(pair):
    pair.switch()
    leads = [
        lead(Command.SEND, to=B_PID, msg=0),
        lead(Command.LINK, to=B_PID, **{"from": Pid("c", 1, 7)}),  # another node's pid
        lead(Command.LINK, to=B_PID, **{"from": A_PID}),
        b"junk",
        lead(Command.SEND, to=B_PID, msg=1),
    ]
    raw_lane_send(pair, _batch.BATCH, msgpack.packb(leads))
    runs: list[list[Message]] = []
    assert pair.b.router.poll(5000)
    pair.b.read(pair.delivered.append, runs.append)
    assert pair.delivered == []  # nothing one at a time
    [run] = runs
    assert [m.command for m in run] == [Command.SEND, Command.LINK, Command.SEND]
    assert [run[0].header["msg"], run[2].header["msg"]] == [0, 1]
    assert (pair.b.received, pair.b.refused) == (3, 2)


def test_a_batch_before_the_switch_is_held_message_by_message(pair):
    batch = [lead(Command.SEND, to=B_PID, msg=i) for i in range(3)]
    raw_lane_send(pair, _batch.BATCH, msgpack.packb(batch))
    runs: list[list[Message]] = []
    assert pair.b.router.poll(5000)
    pair.b.read(pair.delivered.append, runs.append)
    assert runs == []  # held
    assert pair.delivered == []
    pair.switch()
    assert [m.header["msg"] for m in pair.delivered] == [0, 1, 2]


def lane_path(lanes: Lanes, delivered: list[Message]) -> _lane_path.LanePath:
    """``lanes``' side of a connection, with plain callables for the connection's parts."""
    dispatch = threading.RLock()
    return _lane_path.LanePath(
        lanes,
        limits=wire.DEFAULT_LIMITS,
        dispatch=dispatch,
        push_lock=threading.Lock(),
        push=lambda frames: None,
        forward=lambda: None,
        send_direct=lambda frames: None,
        handle=delivered.append,
        dispatching=lambda: dispatch,
        on_io_thread=lambda: True,
        to_broker=lambda frames: None,
        closed=lambda: False,
        handle_run=delivered.extend,
    )


def test_what_a_leader_leaves_unread_the_io_thread_reads_without_a_signal(pair, monkeypatch):
    """A leader stops once its own mailbox has something, and its reads took the socket's
    signal: the I/O thread, which leaves the socket alone for GLANCE_S after a leader, then
    reads at once, without waiting for a signal that will not come."""
    monkeypatch.setattr(_batch, "BURST_GAP_S", 0.0)  # each message goes alone
    pair.switch()
    delivered: list[Message] = []
    path = lane_path(pair.b, delivered)
    poller = zmq.Poller()
    try:
        for i in range(10):
            pair.send(Command.SEND, to=B_PID, msg=i)
        assert pair.b.router.poll(5000)
        while pair.b.received < 2:  # a leader's read, which took two
            waker = path.reader.begin()
            assert waker is not None
            with path.reader.lock:
                pair.b.read(delivered.append, limit=2 - pair.b.received)
            path.reader.end()
        assert path.before_poll(poller, 10.0) <= _lane_reader.GLANCE_S  # a leader just ended
        path.after_poll({}, 0.0)
        assert len(delivered) == 2  # not yet: the leader may come back
        monkeypatch.setattr(_lane_reader, "GLANCE_S", 0.0)  # ... time passes
        assert path.before_poll(poller, 10.0) == 0.0  # it reads now, no signal needed
        path.after_poll({}, 0.0)
        for _ in range(100):  # any message still on its way comes with a signal
            if len(delivered) == 10:
                break
            path.before_poll(poller, 10.0)
            path.after_poll(dict(poller.poll(100)), 0.0)
        assert [m.header["msg"] for m in delivered] == list(range(10))
    finally:
        path.reader.close()
        path.kick.close()


def test_a_batch_wakes_the_io_thread_only_if_it_would_look_too_late(pair, monkeypatch):
    monkeypatch.setattr(_batch, "BURST_GAP_S", 60.0)  # every message after the first: a burst
    pair.switch()
    woken = []
    pair.a.wake_io = lambda: woken.append(1)
    now = time.monotonic()

    def burst(looks_by: float) -> None:
        pair.a.io_looks_by = looks_by
        for i in range(3):  # the first goes alone, the others open a batch
            pair.send(Command.SEND, to=B_PID, msg=i)
        pair.a.flush(force=True)

    burst(now + 3600)  # the I/O thread sleeps long: wake it
    assert woken == [1]
    burst(now)  # it looks before the batch is due: no wake-up
    assert woken == [1]
    burst(math.inf)  # it is working out how long to wait: wake it
    assert woken == [1, 1]


def test_the_io_thread_says_when_it_will_look_at_the_batches_again(pair):
    delivered: list[Message] = []
    path = lane_path(pair.a, delivered)
    try:
        before = time.monotonic()
        wait_s = path.before_poll(zmq.Poller(), 7.0)
        assert before + wait_s <= pair.a.io_looks_by <= time.monotonic() + wait_s
    finally:
        path.reader.close()
        path.kick.close()
