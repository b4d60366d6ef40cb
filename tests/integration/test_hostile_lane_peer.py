"""A hostile node with a lane to a REAL worker process: each test mounts one attack on the lane
and checks that the worker refuses it, counts it (its heartbeat's ``lane_refused``, shown by
NODES), delivers none of it, and goes on answering.

The attacker is the test process, speaking the protocol by hand with raw sockets, as an
attacker's script would: it joins a real broker as the node "evil" (saying it has a lane), asks
for a lane to the real worker "n1", takes the token of n1's accept, connects a DEALER with that
token to n1's lane ROUTER, says HI, and switches to the lane. n1 runs an echo process; a real
node "main" (without lanes: everything it sends goes through the broker) checks that n1 still
answers, and that nothing forged reached either of them.

Every count is exact: after each attack the attacker sends a good message on its lane and
waits for its answer; a heartbeat of n1 that counts that message received (``received`` is
read before ``refused``) counts every refusal before it too.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack
import pytest
import zmq

import zimg
from tests.integration.test_hostile_peers import BEHAVIOURS, Raw
from zimg import _lane_batch, _lane_terms, wire
from zimg._errors import ZimgTimeout
from zimg._wire_terms import _PREFIX
from zimg.nodes_query import query_nodes
from zimg.testing import Processes
from zimg.wire import Command, Message, Pid, Ref

pytestmark = pytest.mark.timeout(60)
HEARTBEAT_S = 0.25
WAIT_S = 10.0
FLOOD = 100_000
RSS_GROWTH_KB = 32 * 1024  # what n1's memory may grow by while it refuses a flood


def lead(command: Command, header: dict[str, Any]) -> bytes:
    [frame] = wire.encode(command, header)
    return bytes(frame)


class Hostile:
    """The node "evil", joined to the broker by hand, with (after :meth:`open_lane`) a lane to
    a real node. Only the test's thread uses its sockets."""

    def __init__(self, url: str, name: str = "evil", incarnation: int = 1) -> None:
        self.raw = Raw(url)
        # It says it has a lane (the broker asks no proof); nothing listens there.
        self.raw.hello(name, lane="tcp://127.0.0.1:9", incarnation=incarnation)
        self.raw.expect(Command.WELCOME)
        self.pid = Pid(name, incarnation, 1)  # a pid of its own
        self.inbox: list[Message] = []  # everything the broker sent it
        self.good = 0  # messages sent on the lane that the peer must accept
        self.lane: zmq.Socket[bytes] | None = None
        self._next_beat = 0.0

    def pump(self, until: Callable[[Message], bool], what: str) -> Message:
        """Read what the broker sends until a message ``until`` accepts; meanwhile send
        HEARTBEATs, and refuse a peer's asks for a lane to this node."""
        deadline = time.monotonic() + WAIT_S
        while (now := time.monotonic()) < deadline:
            if now >= self._next_beat:
                self.raw.send(Command.HEARTBEAT, {})
                self._next_beat = now + HEARTBEAT_S
            got = self.raw.recv(min(deadline - now, HEARTBEAT_S))
            if got is None:
                continue
            msg = got[0]
            self.inbox.append(msg)
            if msg.command is Command.LANE and msg.header.get("op") == "ask":
                peer = msg.header["from"]
                self.raw.send(Command.LANE, {"op": "refuse", "to": peer, "reason": "no"})
            if until(msg):
                return msg
        raise AssertionError(f"evil: no {what} within {WAIT_S} s")

    def lane_op(self, op: str) -> Message:
        return self.pump(
            lambda m: m.command is Command.LANE and m.header.get("op") == op, f"LANE {op}"
        )

    def open_lane(self, peer: str, *, switch: bool = True) -> None:
        """Ask for a lane to ``peer``, connect to it with the token, say HI, and (``switch``)
        switch to it, as a well-behaved node does."""
        self.raw.send(Command.LANE, {"op": "ask", "to": peer})
        accept = self.lane_op("accept").header
        assert accept["from"] == peer
        self.token = accept["token"]
        lane = self.raw.ctx.socket(zmq.DEALER)
        lane.setsockopt(zmq.LINGER, 0)
        lane.setsockopt(zmq.ROUTING_ID, self.token)
        lane.connect(accept["endpoint"])
        self.lane = lane
        self.send_frames([_lane_terms.HI])
        assert self.lane_op("ready").header == {"op": "ready", "from": peer, "token": self.token}
        if switch:
            self.raw.send(Command.LANE, {"op": "switch", "to": peer, "token": self.token})
            self.lane_op("switched")

    def send_frames(self, frames: list[Any]) -> None:
        assert self.lane is not None
        self.lane.send_multipart(frames)

    def send_batch(self, payload: bytes) -> None:
        self.send_frames([_lane_batch.BATCH, payload])

    def good_lead(self, echo: Pid, reply_to: Pid, tag: Any) -> bytes:
        """An echo request on the lane that n1 must take (counted in ``good``)."""
        self.good += 1
        return lead(Command.SEND, {"to": echo, "msg": ("echo", reply_to, tag)})

    def round_trip(self, echo: Pid, tag: str) -> None:
        """A good echo request on the lane, and its answer (through the broker): n1 read
        everything that came on the lane before it."""
        self.send_frames([self.good_lead(echo, self.pid, tag)])
        self.pump(lambda m: m.command is Command.SEND and m.header["msg"] == ("echo", tag), tag)

    def close(self) -> None:
        self.raw.close()  # its context, with the lane socket


@dataclass
class Cluster:
    url: str
    worker: Any  # the n1 process (subprocess.Popen)
    main: zimg.Node
    echo: Pid  # an echo process on n1
    evil: Hostile

    def lane_counts(self, ready: Callable[[dict[str, int]], bool]) -> dict[str, int]:
        """n1's lane counts, from the first of its heartbeats (through NODES) that ``ready``
        accepts."""
        deadline = time.monotonic() + WAIT_S
        while True:
            nodes = query_nodes(self.url)["nodes"]
            lanes = next(n for n in nodes if n["name"] == "n1").get("lanes", {})
            if ready(lanes):
                return dict(lanes)
            assert time.monotonic() < deadline, f"n1 never counted the lane's messages: {lanes}"
            time.sleep(HEARTBEAT_S / 5)  # polling a count that only heartbeats carry

    def refused(self) -> int:
        """How many lane messages n1 refused, once it read all the attacker sent (its last
        message must have been a :meth:`Hostile.round_trip`): the first heartbeat of n1 that
        counts all its good messages received counts every refusal before them too."""
        good = self.evil.good
        counts = self.lane_counts(lambda c: c.get("received", 0) >= good)
        assert counts["received"] == self.evil.good, counts
        return counts["refused"]

    def assert_alive(self) -> None:
        """n1 runs, and its echo answers main (through the broker); main got nothing else."""
        assert self.worker.poll() is None
        me = self.main.self()
        self.main.send(self.echo, ("echo", me, "still there"))
        assert self.main.receive(timeout=WAIT_S) == ("echo", "still there")
        with pytest.raises(ZimgTimeout):
            self.main.receive(timeout=0.2)  # nothing more: no forged message reached main


@pytest.fixture
def cluster(procs: Processes, ipc_url: str) -> Iterator[Cluster]:
    # A long liveness: the attacker heartbeats only while it reads, not while it floods.
    procs.broker(ipc_url, "--heartbeat", str(HEARTBEAT_S), "--liveness", "100")
    worker = procs.worker(ipc_url, "n1", "--lanes", "--import", BEHAVIOURS)
    with zimg.connect(ipc_url, name="main") as main:
        echo = main.spawn("n1", "zimg.behaviours:echo")
        evil = Hostile(ipc_url)
        try:
            evil.open_lane("n1")
            evil.round_trip(echo, "hello")
            made = Cluster(ipc_url, worker, main, echo, evil)
            assert made.refused() == 0
            yield made
        finally:
            evil.close()


def test_a_second_hi_and_a_second_bye_are_refused_and_the_lane_goes_on(cluster: Cluster) -> None:
    evil = cluster.evil
    for _ in range(3):
        evil.send_frames([_lane_terms.HI])  # n1 answered the lane's first HI already
    evil.round_trip(cluster.echo, "after the HIs")
    for _ in range(3):
        evil.send_frames([_lane_terms.BYE])  # one BYE is the lane's last word; more are not
    evil.round_trip(cluster.echo, "after the BYEs")
    assert cluster.refused() == 3 + 2
    readies = [m for m in evil.inbox if m.command is Command.LANE and m.header["op"] == "ready"]
    assert len(readies) == 1  # one READY per lane, whatever the HIs
    cluster.assert_alive()


def test_empty_and_malformed_batches_are_refused_whole(cluster: Cluster) -> None:
    """Each bad batch is one refusal, and none of its messages is delivered (the good ones in
    a batch of too many would make the echo answer main)."""
    evil, echo = cluster.evil, cluster.echo
    me = cluster.main.self()
    over_main = lead(Command.SEND, {"to": echo, "msg": ("echo", me, "in a bad batch")})
    limit = wire.DEFAULT_LIMITS.max_header_bytes + _PREFIX  # the largest lead frame
    payloads = [
        msgpack.packb([]),  # empty
        b"\xc1\x00\xff",  # not msgpack
        msgpack.packb({"not": "an array"}),
        msgpack.packb("not an array"),
        msgpack.packb([1, 2]),  # not byte strings
        msgpack.packb([over_main] * (_lane_batch.BATCH_MAX + 1)),  # too many
        msgpack.packb([over_main, b"x" * (limit + 1)]),  # an item over the lead frame limit
        msgpack.packb([over_main, over_main])[:-5],  # cut short
    ]
    for payload in payloads:
        evil.send_batch(payload)
    evil.send_frames([_lane_batch.BATCH])  # BATCH alone: a message that does not decode
    evil.send_frames([_lane_batch.BATCH, msgpack.packb([over_main] * 2), b"more"])  # 3 frames
    # A good batch still works after them.
    good = [evil.good_lead(echo, evil.pid, "good 1"), evil.good_lead(echo, evil.pid, "good 2")]
    evil.send_batch(msgpack.packb(good))
    evil.pump(lambda m: m.command is Command.SEND and m.header["msg"] == ("echo", "good 2"), "2")
    evil.round_trip(echo, "after the batches")
    assert cluster.refused() == len(payloads) + 2
    cluster.assert_alive()  # and main never got "in a bad batch"


def test_forged_and_misaddressed_messages_are_refused_and_never_delivered(
    cluster: Cluster,
) -> None:
    """In an otherwise good batch, and alone: signals that name main's pid (or another
    incarnation of evil) as their sender, messages for main, and commands no lane may carry.
    Had n1 taken the forged EXIT kill, its echo would be dead; had it taken a message for main,
    main would have it."""
    evil, echo = cluster.evil, cluster.echo
    main = cluster.main.self()
    evil_again = Pid(evil.pid.node, evil.pid.incarnation + 1, 1)  # not the lane's incarnation
    forged = [
        lead(Command.EXIT, {"to": echo, "from": main, "reason": "kill", "link": False}),
        lead(Command.EXIT, {"to": echo, "from": evil_again, "reason": "kill", "link": False}),
        lead(Command.LINK, {"to": echo, "from": main}),
        lead(Command.MONITOR, {"to": echo, "from": main, "ref": Ref("main", 1, 99)}),
        lead(Command.DOWN, {"to": echo, "pid": main, "ref": Ref("n1", 1, 5), "reason": "x"}),
        lead(Command.SEND, {"to": main, "msg": ("forged", "for main")}),  # another node's
        lead(Command.SEND, {"to": ("main", "main"), "msg": ("forged", "by name")}),
        lead(Command.SPAWN, {"to": "main", "from": evil.pid, "behaviour": "zimg.behaviours:echo"}),
        lead(Command.NODEDOWN, {"node": "main", "incarnation": main.incarnation, "reason": "x"}),
        lead(Command.HEARTBEAT, {}),
        lead(Command.LANE, {"op": "close", "to": "n1", "token": evil.token}),
        b"junk",
    ]
    good = [evil.good_lead(echo, evil.pid, f"good {i}") for i in range(2)]
    evil.send_batch(msgpack.packb([good[0], *forged, good[1]]))
    for frame in forged:
        evil.send_frames([frame])
    evil.round_trip(echo, "after the forgeries")
    tags = [m.header["msg"][1] for m in evil.inbox if m.command is Command.SEND]
    assert tags == ["hello", "good 0", "good 1", "after the forgeries"]
    assert cluster.refused() == 2 * len(forged)
    cluster.assert_alive()  # the echo lives; main got none of the forgeries


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def test_a_flood_of_forged_messages_is_refused_in_bounded_memory(cluster: Cluster) -> None:
    """FLOOD forged messages as fast as the lane takes them: half alone, half in full batches.
    n1 refuses and counts every one, delivers none, its memory stays bounded, and it goes idle
    once it has read them."""
    evil, echo = cluster.evil, cluster.echo
    main = cluster.main.self()
    pid = cluster.worker.pid
    rss_before = _rss_kb(pid)
    kill = lead(Command.EXIT, {"to": echo, "from": main, "reason": "kill", "link": False})
    for_main = lead(Command.SEND, {"to": main, "msg": ("forged", "flood")})
    single = [[kill], [for_main]]
    batch = msgpack.packb([kill, for_main] * (_lane_batch.BATCH_MAX // 2))
    batches = FLOOD // 2 // _lane_batch.BATCH_MAX
    alone = FLOOD - batches * _lane_batch.BATCH_MAX
    started = time.monotonic()
    for i in range(alone):
        evil.send_frames(single[i % 2])
    for _ in range(batches):
        evil.send_batch(batch)
    evil.round_trip(echo, "after the flood")
    took_s = time.monotonic() - started
    assert cluster.refused() == FLOOD
    rss_after = _rss_kb(pid)
    assert rss_after - rss_before < RSS_GROWTH_KB, (rss_before, rss_after)
    cpu = _cpu_s(pid)
    idle = time.monotonic()
    cluster.assert_alive()
    time.sleep(0.5)  # a measurement window, not a synchronisation
    busy = (_cpu_s(pid) - cpu) / (time.monotonic() - idle)
    assert busy < 0.5, f"n1 is still busy after the flood: {busy:.0%} of a CPU"
    print(f"flood of {FLOOD} refused in {took_s:.2f} s; n1 RSS {rss_before} -> {rss_after} kB")


def test_a_lane_never_switched_holds_at_most_max_held(cluster: Cluster) -> None:
    """A second attacker opens a lane but never switches to it, and floods it with good
    messages for main. n1 holds MAX_HELD of them (for a switch that never comes), refuses the
    rest, and delivers none."""
    evil2 = Hostile(cluster.url, "evil2")
    try:
        evil2.open_lane("n1", switch=False)
        rss_before = _rss_kb(cluster.worker.pid)
        me = cluster.main.self()
        message = lead(Command.SEND, {"to": cluster.echo, "msg": ("echo", me, "unswitched")})
        n = 2 * _lane_terms.MAX_HELD
        batch = msgpack.packb([message] * _lane_batch.BATCH_MAX)
        batches, rest = divmod(n, _lane_batch.BATCH_MAX)
        for _ in range(batches):
            evil2.send_batch(batch)
        for _ in range(rest):
            evil2.send_frames([message])
        cluster.evil.round_trip(cluster.echo, "after the other flood")
        held, over = _lane_terms.MAX_HELD, n - _lane_terms.MAX_HELD
        good = cluster.evil.good
        # n1 read both lanes once it counted each of their messages, one way or the other.
        counts = cluster.lane_counts(
            lambda c: c.get("refused", 0) + c.get("received", 0) >= good + n
        )
        assert (counts["received"], counts["refused"]) == (good + held, over), counts
        rss_after = _rss_kb(cluster.worker.pid)
        print(f"n1 RSS {rss_before} -> {rss_after} kB holding {held} messages")
        assert rss_after - rss_before < RSS_GROWTH_KB, (rss_before, rss_after)
        cluster.assert_alive()  # main got none of the held messages
    finally:
        evil2.close()


def test_a_peer_back_before_its_bye_never_loses_its_nodedown(cluster: Cluster) -> None:
    """A process on n1 monitors a process of evil. evil leaves without its BYE: n1 holds
    evil's NODEDOWN for the BYE (at most BYE_WAIT_S). evil joins again at once, in a new
    incarnation, and asks n1 for a new lane, which replaces the old one. The old lane's
    NODEDOWN must still reach n1's processes (it was lost: the monitor never fired)."""
    evil, main = cluster.evil, cluster.main
    main.spawn("n1", "zt.watcher", main.self(), evil.pid)
    _, ref = main.receive(lambda m: m[0] == "watching", timeout=WAIT_S)
    evil.pump(lambda m: m.command is Command.MONITOR, "n1's MONITOR")
    evil.raw.send(Command.DISCONNECT, {"reason": "normal"})  # and no BYE on its lane
    back = Hostile(cluster.url, evil.pid.node, incarnation=evil.pid.incarnation + 1)
    try:
        back.open_lane("n1")
        back.round_trip(cluster.echo, "back")
    finally:
        back.close()
    _, down = main.receive(lambda m: m[0] == "seen", timeout=WAIT_S)
    assert down == ("DOWN", ref, evil.pid, "noconnection")
    cluster.assert_alive()
