"""The broker's state machine, driven with a fake clock and no sockets."""

from __future__ import annotations

import logging
from typing import Any

import msgpack
import numpy as np
import pytest

from zimg import protocol, wire
from zimg._broker_state import BrokerConfig, BrokerState, Log, Probe, Send, SendMany
from zimg.testing import FakeClock
from zimg.wire import Command, Pid

CFG = BrokerConfig(heartbeat_interval_s=1.0, liveness=3, max_attempts=3)


@pytest.fixture
def state(clock: FakeClock) -> BrokerState:
    return BrokerState(CFG, now=clock.now, epoch=42)


def ident(name: str) -> bytes:
    return f"{name}/1".encode()


def hello(name: str, role: str = "worker", capacity: int = 2, **extra) -> list:
    header = {
        "name": name,
        "role": role,
        "capacity": capacity,
        "incarnation": 1,
        "version": protocol.PROTOCOL_VERSION,
    }
    header.update(extra)
    return wire.encode(Command.HELLO, header)


def sends(instructions) -> list[tuple[bytes, wire.Message]]:
    out = []
    for i in instructions:
        if isinstance(i, Send):
            out.append((i.identity, wire.decode(i.frames)))
        elif isinstance(i, SendMany):
            out += [(to, wire.decode(i.frames)) for to in i.identities]
    return out


def join(state: BrokerState, clock: FakeClock, name: str, **kw) -> list:
    return state.on_message(ident(name), hello(name, **kw), clock.now)


def gone(state: BrokerState, clock: FakeClock, name: str) -> list:
    """A send to ``name`` fails, then the loop finds its socket drained: the node is down."""
    assert state.on_unreachable(ident(name), clock.now) == []
    return state.on_tick(clock.advance(0.001), drained_at=clock.now)


def job(job_id: int, **extra) -> list:
    header = {"id": job_id, "name": f"f{job_id}.jpg", "payload": np.zeros(4, np.uint8)}
    header.update(extra)
    return wire.encode(Command.JOB, header)


def ticket_of(state: BrokerState, job_id: Any, client: bytes) -> int:
    """The broker's ticket for ``client``'s job ``job_id`` (what its worker was sent)."""
    for ticket, held in state.table.jobs.items():
        if held.job_id == job_id and held.client.identity == client:
            return ticket
    raise AssertionError(f"the broker holds no job {job_id!r} of {client!r}")


def result(state: BrokerState, job_id: int, client: bytes, **extra) -> list:
    """A worker's RESULT for ``client``'s job ``job_id``: id, ticket and attempt first."""
    header = {"id": job_id, "ticket": ticket_of(state, job_id, client), "attempt": 1, "ok": True}
    header.update(extra)
    return wire.encode(Command.RESULT, header)


def test_hello_is_welcomed_with_epoch_and_timing(state, clock):
    out = sends(join(state, clock, "n1"))
    assert len(out) == 1
    to, msg = out[0]
    assert to == ident("n1")
    assert msg.command is Command.WELCOME
    assert msg.header["epoch"] == 42
    assert msg.header["heartbeat_interval_s"] == 1.0
    assert msg.header["liveness"] == 3
    assert state.by_name["n1"].capacity == 2


def test_second_live_holder_of_a_name_is_probed_then_rejected(state, clock):
    join(state, clock, "n1")
    newcomer = b"n1/2"
    out = state.on_message(newcomer, hello("n1", incarnation=2), clock.now)
    assert out == [Probe(ident("n1"))]
    out = state.on_probe(ident("n1"), True, clock.now)
    [(to, msg)] = sends(out)
    assert to == newcomer
    assert msg.command is Command.REJECT
    assert "held by a live node" in msg.header["reason"]
    assert state.by_name["n1"].identity == ident("n1")
    assert state.stats["rejected"] == 1


def test_name_of_a_dead_holder_goes_to_the_new_incarnation(state, clock):
    join(state, clock, "n1")
    newcomer = b"n1/2"
    state.on_message(newcomer, hello("n1", incarnation=2), clock.now)
    # The holder's connection is gone, but what it sent may still wait: not yet
    assert state.on_probe(ident("n1"), False, clock.now) == []
    assert state.by_name["n1"].identity == ident("n1")
    # once the loop has drained its socket, the holder is down and the newcomer welcomed
    out = state.on_tick(clock.advance(0.001), drained_at=clock.now)
    assert [(to, msg.command) for to, msg in sends(out)] == [(newcomer, Command.WELCOME)]
    assert state.by_name["n1"].identity == newcomer
    assert ident("n1") not in state.nodes
    assert state.downs[-1]["why"] == "connection closed"


def test_rehello_from_same_identity_is_welcomed_without_probe(state, clock):
    join(state, clock, "n1")
    out = join(state, clock, "n1", capacity=5)
    assert not any(isinstance(i, Probe) for i in out)
    assert [m.command for _, m in sends(out)] == [Command.WELCOME]
    assert state.by_name["n1"].capacity == 5


def test_wrong_protocol_version_is_rejected(state, clock):
    out = state.on_message(ident("n1"), hello("n1", version=7), clock.now)
    [(_, msg)] = sends(out)
    assert msg.command is Command.REJECT
    assert "version 7" in msg.header["reason"]
    assert "n1" not in state.by_name


def test_a_version_1_hello_gets_a_reject_it_can_read(state, clock):
    header = {"name": "old", "role": "worker", "capacity": 2, "incarnation": 1, "version": 1}
    v1_hello = [b"ZIMG1", bytes([Command.HELLO]), msgpack.packb(header)]
    [send] = state.on_message(ident("old"), v1_hello, clock.now)
    assert isinstance(send, Send)
    assert send.identity == ident("old")
    magic, command, body = send.frames  # version 1's layout: three frames
    assert (magic, command) == (b"ZIMG1", bytes([Command.REJECT]))
    assert "version 1 is not supported" in msgpack.unpackb(body)["reason"]
    assert "old" not in state.by_name
    assert state.stats["rejected"] == 1
    assert state.stats["malformed"] == 0
    # Anything else in version 1's layout is only malformed.
    v1_send = [b"ZIMG1", bytes([Command.SEND]), msgpack.packb({})]
    assert [type(i) for i in state.on_message(ident("old"), v1_send, clock.now)] == [Log]
    assert state.stats["malformed"] == 1


@pytest.mark.parametrize(
    "frames",
    [[b"garbage"], [b"ZIMG2\x01\xc1"], [b"ZIMG2\x99\x80"]],
    ids=["short", "bad-msgpack", "unknown-command"],
)
def test_malformed_messages_are_counted_and_logged_once(state, clock, frames):
    first = state.on_message(b"evil", frames, clock.now)
    second = state.on_message(b"evil", frames, clock.now)
    assert state.stats["malformed"] == 2
    assert [type(i) for i in first] == [Log]
    assert first[0].level == logging.WARNING
    assert second == []
    assert state.nodes == {}


@pytest.mark.parametrize(
    ("frames", "fragment"),
    [
        (hello("bad name!"), "invalid node name"),
        (hello("n1\n"), "invalid node name"),
        (hello("n1", role="emperor"), "role 'emperor'"),
        (hello("n1", capacity=-1), "capacity -1"),
        (hello("n1", capacity=5000), "capacity 5000"),
        (hello("n1", capacity=True), "not bool"),
        (wire.encode(Command.HELLO, {"name": "n1"}), "'role' is missing"),
    ],
    ids=["bad-name", "newline", "bad-role", "negative", "huge", "bool", "missing"],
)
def test_invalid_hello_is_rejected_with_the_reason(state, clock, frames, fragment):
    out = state.on_message(b"n1/1", frames, clock.now)
    [(to, msg)] = sends(out)
    assert (to, msg.command) == (b"n1/1", Command.REJECT)
    assert fragment in msg.header["reason"]
    assert state.nodes == {}
    assert state.stats["rejected"] == 1


def test_unknown_peer_is_told_to_say_hello(state, clock):
    out = state.on_message(b"stranger", wire.encode(Command.HEARTBEAT, {}), clock.now)
    [(to, msg)] = sends(out)
    assert (to, msg.command) == (b"stranger", Command.DISCONNECT)
    assert "HELLO" in msg.header["reason"]


def test_jobs_wait_for_a_worker_then_respect_its_capacity(state, clock):
    join(state, clock, "c", role="client", capacity=0)
    client = ident("c")
    for i in range(3):
        assert sends(state.on_message(client, job(i), clock.now)) == []
    out = sends(join(state, clock, "n1", capacity=2))
    jobs = [m for _, m in out if m.command is Command.JOB]
    assert [m.header["id"] for m in jobs] == [0, 1]
    assert all(m.header["attempt"] == 1 and type(m.header["ticket"]) is int for m in jobs)
    # A worker never learns the client's routing id, only the broker's ticket.
    assert not any("client" in m.header for m in jobs)
    assert all(m.header["deadline_s"] == CFG.job_deadline_s for m in jobs)
    assert np.array_equal(jobs[0].header["payload"], np.zeros(4, np.uint8))
    # a result frees one credit, which goes to the third job
    out = sends(state.on_message(ident("n1"), result(state, 0, client), clock.now))
    assert [(to, m.command) for to, m in out] == [
        (client, Command.RESULT),
        (ident("n1"), Command.JOB),
    ]
    assert out[1][1].header["id"] == 2


def test_result_frames_are_forwarded_untouched(state, clock):
    join(state, clock, "c", role="client", capacity=0)
    join(state, clock, "n1")
    state.on_message(ident("c"), job(0), clock.now)
    frames = result(state, 0, ident("c"), payload=np.arange(6, dtype=np.uint8))
    out = state.on_message(ident("n1"), frames, clock.now)
    forwarded = [i for i in out if isinstance(i, Send) and i.identity == ident("c")]
    assert len(forwarded) == 1
    assert forwarded[0].frames is frames


def test_jobs_spread_over_workers_least_loaded_first(state, clock):
    join(state, clock, "c", role="client", capacity=0)
    join(state, clock, "n1", capacity=2)
    join(state, clock, "n2", capacity=2)
    targets = []
    for i in range(4):
        out = sends(state.on_message(ident("c"), job(i), clock.now))
        targets += [to for to, m in out if m.command is Command.JOB]
    assert targets == [ident("n1"), ident("n2"), ident("n1"), ident("n2")]


def test_duplicate_job_id_is_ignored(state, clock):
    join(state, clock, "c", role="client", capacity=0)
    state.on_message(ident("c"), job(7), clock.now)
    state.on_message(ident("c"), job(7), clock.now)
    assert state.stats["jobs_received"] == 1
    assert state.queue_length == 1


def test_heartbeats_go_to_every_node_once_per_interval_spread_over_it(state, clock):
    for i in range(10):
        join(state, clock, f"n{i}")
    beats: list[bytes] = []
    for tick in range(10):  # one interval, in ticks of 0.1 s
        out = sends(state.on_tick(clock.advance(0.1)))
        got = [to for to, m in out if m.command is Command.HEARTBEAT]
        assert len(got) == 1, tick  # spread: one node per tick, not all at once
        beats += got
    assert sorted(beats) == sorted(ident(f"n{i}") for i in range(10))


def test_the_heartbeat_interval_doubles_as_the_cluster_outgrows_it(clock):
    state = BrokerState(BrokerConfig(heartbeats_per_s=4.0), now=clock.now, epoch=1)
    for i in range(4):
        join(state, clock, f"n{i}")
    assert state.interval_s == 1.0
    out = sends(join(state, clock, "n4"))  # 5 nodes > 4 per second: every 2 s
    assert state.interval_s == 2.0
    welcomes = {to: m.header for to, m in out if m.command is Command.WELCOME}
    assert sorted(welcomes) == sorted(ident(f"n{i}") for i in range(5))
    assert {h["heartbeat_interval_s"] for h in welcomes.values()} == {2.0}
    assert state.expiry_s == 6.0
    # A node silent for 5 s (more than the old 3 s bound) is still alive.
    clock.advance(5.0)
    for i in range(4):
        state.heard(ident(f"n{i}"), clock.now)
    state.on_tick(clock.now)
    assert "n4" in state.by_name


def test_silent_worker_is_declared_dead_and_its_jobs_move(state, clock):
    join(state, clock, "c", role="client", capacity=0)
    join(state, clock, "n1", capacity=1)
    state.on_message(ident("c"), job(0), clock.now)
    join(state, clock, "n2", capacity=1)
    # n2 and the client keep talking; n1 goes silent
    for _ in range(3):
        clock.advance(1.0)
        for who in ("n2", "c"):
            state.on_message(ident(who), wire.encode(Command.HEARTBEAT, {}), clock.now)
        assert "n1" in state.by_name
    clock.advance(0.5)
    for who in ("n2", "c"):
        state.on_message(ident(who), wire.encode(Command.HEARTBEAT, {}), clock.now)
    out = sends(state.on_tick(clock.now))
    assert "n1" not in state.by_name
    jobs = [(to, m) for to, m in out if m.command is Command.JOB]
    assert [(to, m.header["id"], m.header["attempt"]) for to, m in jobs] == [(ident("n2"), 0, 2)]
    assert state.stats["jobs_requeued"] == 1


def test_deadline_tracks_the_next_heartbeat_and_expiry(state, clock):
    join(state, clock, "n1")
    assert state.next_deadline() == pytest.approx(clock.now + 1.0)
    join(state, clock, "n2")  # two nodes: one beat every half interval
    assert state.next_deadline() == pytest.approx(clock.now + 0.5)
    state.on_tick(clock.advance(0.5))
    assert state.next_deadline() <= clock.now + 0.5


def test_job_fails_after_max_attempts(state, clock):
    join(state, clock, "c", role="client", capacity=0)
    state.on_message(ident("c"), job(0), clock.now)
    last = []
    for n in range(CFG.max_attempts):
        join(state, clock, f"w{n}")
        last = gone(state, clock, f"w{n}")
    [(to, msg)] = [(to, m) for to, m in sends(last) if m.command is Command.RESULT]
    assert to == ident("c")
    assert msg.header["ok"] is False
    assert msg.header["id"] == 0
    assert "died 3 times" in msg.header["error"]
    assert msg.header["died"] is True
    assert msg.header["attempt"] == 3
    assert "w0, w1, w2" in msg.header["error"]
    assert state.table.jobs == {}
    assert state.stats["jobs_failed"] == 1


def test_graceful_leave_requeues_without_spending_an_attempt(state, clock):
    join(state, clock, "c", role="client", capacity=0)
    join(state, clock, "n1", capacity=1)
    state.on_message(ident("c"), job(0), clock.now)
    state.on_message(ident("n1"), wire.encode(Command.DISCONNECT, {"reason": "normal"}), clock.now)
    out = sends(join(state, clock, "n2", capacity=1))
    [msg] = [m for _, m in out if m.command is Command.JOB]
    assert msg.header["attempt"] == 1


def test_late_result_after_requeue_is_forwarded_and_cancels_the_retry(state, clock):
    join(state, clock, "c", role="client", capacity=0)
    join(state, clock, "n1", capacity=1)
    state.on_message(ident("c"), job(0), clock.now)
    # n1 is declared dead while the job is queued again (no other worker)
    gone(state, clock, "n1")
    assert state.table.jobs[ticket_of(state, 0, ident("c"))].worker is None
    # n1 comes back as a new incarnation and its old reply arrives
    state.on_message(b"n1/9", hello("n1", incarnation=9, capacity=0), clock.now)
    late = result(state, 0, ident("c"))
    out = state.on_message(b"n1/9", late, clock.now)
    assert [(i.identity, i.frames) for i in out if isinstance(i, Send)] == [(ident("c"), late)]
    assert state.table.jobs == {}
    assert state.stats["late_results"] == 1
    # a worker joining later is not given the finished job
    out = sends(join(state, clock, "n2"))
    assert [m.command for _, m in out] == [Command.WELCOME]


def test_dead_client_jobs_are_dropped(state, clock):
    join(state, clock, "c", role="client", capacity=0)
    for i in range(3):
        state.on_message(ident("c"), job(i), clock.now)
    gone(state, clock, "c")
    assert state.table.jobs == {}
    out = sends(join(state, clock, "n1"))
    assert [m.command for _, m in out] == [Command.WELCOME]


def test_nodes_report(state, clock):
    join(state, clock, "n1", capacity=3)
    join(state, clock, "c", role="client", capacity=0)
    state.on_message(ident("c"), job(0), clock.now)
    clock.advance(0.25)
    out = sends(state.on_message(b"anyone", wire.encode(Command.NODES, {}), clock.now))
    [(to, msg)] = out
    assert to == b"anyone"
    nodes = {n["name"]: n for n in msg.header["nodes"]}
    assert nodes["n1"]["role"] == "worker"
    assert nodes["n1"]["capacity"] == 3
    assert nodes["n1"]["active"] == 1
    assert nodes["n1"]["last_seen_s"] == pytest.approx(0.25)
    assert nodes["c"]["role"] == "client"
    assert msg.header["stats"]["jobs_received"] == 1


def test_nodes_reports_the_nodes_gone_lately_with_why_on_its_first_page(state, clock):
    join(state, clock, "n1")
    join(state, clock, "n2")
    state.on_message(ident("n2"), wire.encode(Command.DISCONNECT, {"reason": "normal"}), clock.now)
    for _ in range(40):  # n1 falls silent; the ring keeps the last RECENT_DOWNS only
        clock.advance(5.0)
        state.on_tick(clock.now)
    clock.advance(1.0)
    [(_, msg)] = sends(state.on_message(b"anyone", wire.encode(Command.NODES, {}), clock.now))
    downs = msg.header["downs"]
    assert [(d["name"], d["reason"], d["why"]) for d in downs] == [
        ("n2", "normal", "left"),
        ("n1", "noconnection", "missed heartbeats"),
    ]
    assert downs[1]["role"] == "worker"
    assert downs[1]["ago_s"] > 1.0
    later = wire.encode(Command.NODES, {"after": "n0"})
    [(_, page)] = sends(state.on_message(b"anyone", later, clock.now))
    assert page.header["downs"] == []


def test_the_recent_downs_are_bounded(state, clock):
    from zimg._broker_state import RECENT_DOWNS

    for i in range(RECENT_DOWNS + 5):
        join(state, clock, f"w{i}")
        bye = wire.encode(Command.DISCONNECT, {"reason": "normal"})
        state.on_message(ident(f"w{i}"), bye, clock.now)
    downs = state.nodes_report(clock.now)["downs"]
    assert len(downs) == RECENT_DOWNS
    assert downs[-1]["name"] == f"w{RECENT_DOWNS + 4}"


def test_actor_messages_route_by_pid_node(state, clock):
    join(state, clock, "n1")
    join(state, clock, "n2")
    frames = wire.encode(Command.SEND, {"to": Pid("n2", 1, 5), "msg": "hi"})
    out = state.on_message(ident("n1"), frames, clock.now)
    assert [(i.identity, i.frames) for i in out if isinstance(i, Send)] == [(ident("n2"), frames)]
    frames = wire.encode(Command.SEND, {"to": Pid("gone", 1, 5), "msg": "hi"})
    assert state.on_message(ident("n1"), frames, clock.now) == []
    assert state.stats["unroutable"] == 1


def test_job_too_big_to_forward_fails_instead_of_sticking(clock):
    limits = wire.Limits(max_header_bytes=300)
    state = BrokerState(BrokerConfig(limits=limits), now=clock.now, epoch=1)
    join(state, clock, "c", role="client", capacity=0)
    join(state, clock, "n1")
    # fits the limit as sent, but not once the broker adds the client id and the attempt
    frames = wire.encode(Command.JOB, {"id": 0, "pad": "x" * 285}, limits)
    out = sends(state.on_message(ident("c"), frames, clock.now))
    [(to, msg)] = out
    assert (to, msg.command) == (ident("c"), Command.RESULT)
    assert msg.header["ok"] is False
    assert "cannot forward" in msg.header["error"]
    assert msg.header["died"] is False
    assert state.by_name["n1"].active == set()
    assert state.table.jobs == {}


def test_result_from_a_node_not_given_the_job_is_dropped(state, clock):
    join(state, clock, "c", role="client", capacity=0)
    join(state, clock, "n1", capacity=1)
    join(state, clock, "n2", capacity=0)
    state.on_message(ident("c"), job(0), clock.now)
    out = state.on_message(ident("n2"), result(state, 0, ident("c")), clock.now)
    assert sends(out) == []
    assert state.table.jobs[ticket_of(state, 0, ident("c"))].worker is state.by_name["n1"]
    assert state.stats["late_results"] == 1


def actor_msg(command, **header):
    return wire.encode(command, header)


def test_monitor_of_a_missing_node_answers_down_noconnection(state, clock):
    join(state, clock, "n1")
    me, ref, far = Pid("n1", 1, 3), wire.Ref("n1", 1, 9), Pid("gone", 1, 2)
    out = sends(
        state.on_message(
            ident("n1"), actor_msg(Command.MONITOR, to=far, ref=ref, **{"from": me}), clock.now
        )
    )
    [(to, msg)] = out
    assert (to, msg.command) == (ident("n1"), Command.DOWN)
    assert msg.header == {"to": me, "ref": ref, "pid": far, "reason": "noconnection"}


def test_link_to_an_old_incarnation_answers_exit_noproc(state, clock):
    join(state, clock, "n1")
    join(state, clock, "n2")  # incarnation 1
    me, old = Pid("n1", 1, 3), Pid("n2", 0, 2)
    out = sends(
        state.on_message(ident("n1"), actor_msg(Command.LINK, to=old, **{"from": me}), clock.now)
    )
    [(to, msg)] = out
    assert (to, msg.command) == (ident("n1"), Command.EXIT)
    assert msg.header == {"to": me, "from": old, "reason": "noproc", "link": True}


def test_spawn_on_a_missing_node_or_with_no_worker_is_refused(state, clock):
    join(state, clock, "c", role="client", capacity=0)
    me, ref = Pid("c", 1, 0), wire.Ref("c", 1, 1)
    for target, text in (
        ("n9", "node 'n9' is not connected"),
        ("*", "no worker node is connected"),
    ):
        frames = actor_msg(
            Command.SPAWN, to=target, ref=ref, behaviour="x", args=[], **{"from": me}
        )
        [(to, msg)] = sends(state.on_message(ident("c"), frames, clock.now))
        assert (to, msg.command) == (ident("c"), Command.SPAWNED)
        assert msg.header["error"] == text
        assert msg.header["pid"] is None


def test_spawn_any_goes_round_the_workers(state, clock):
    join(state, clock, "c", role="client", capacity=0)
    join(state, clock, "n1")
    join(state, clock, "n2")
    me = Pid("c", 1, 0)
    targets = []
    for i in range(4):
        frames = actor_msg(
            Command.SPAWN, to="*", ref=wire.Ref("c", 1, i), behaviour="x", args=[], **{"from": me}
        )
        targets += [
            i.identity
            for i in state.on_message(ident("c"), frames, clock.now)
            if isinstance(i, Send)
        ]
    assert targets == [ident("n1"), ident("n2"), ident("n1"), ident("n2")]


def watch(state: BrokerState, clock: FakeClock, who: str, name: str, incarnation=None) -> list:
    header = {"node": name, "incarnation": incarnation}
    return sends(state.on_message(ident(who), wire.encode(Command.WATCH, header), clock.now))


def test_node_down_goes_to_its_watchers_only(state, clock):
    join(state, clock, "n1")
    join(state, clock, "n2")
    join(state, clock, "c", role="client", capacity=0)
    join(state, clock, "bystander", role="client", capacity=0)
    assert watch(state, clock, "n1", "n2", 1) == []  # n2 of incarnation 1 is up: no answer
    assert watch(state, clock, "c", "n2") == []
    out = sends(gone(state, clock, "n2"))
    notices = sorted(
        (to, m.header["node"], m.header["incarnation"])
        for to, m in out
        if m.command is Command.NODEDOWN
    )
    assert notices == [(ident("c"), "n2", 1), (ident("n1"), "n2", 1)]
    # The watches of a node that went down are gone with it.
    assert state.actors.watch_total == 2
    gone(state, clock, "c")
    assert state.actors.watch_total == 1


def test_a_watch_of_a_node_that_is_not_up_is_answered_at_once(state, clock):
    join(state, clock, "n1")
    [(to, msg)] = watch(state, clock, "n1", "ghost", 7)
    assert (to, msg.command) == (ident("n1"), Command.NODEDOWN)
    assert (msg.header["node"], msg.header["incarnation"]) == ("ghost", 7)
    assert msg.header["reason"] == protocol.NOCONNECTION
    join(state, clock, "n2")  # incarnation 1: a watch of incarnation 7 is answered too
    [(_, msg)] = watch(state, clock, "n1", "n2", 7)
    assert (msg.command, msg.header["incarnation"]) == (Command.NODEDOWN, 7)
    # It stays registered, by name: the next n2 going down is reported.
    out = sends(gone(state, clock, "n2"))
    assert [(to, m.header["incarnation"]) for to, m in out if m.command is Command.NODEDOWN] == [
        (ident("n1"), 1)
    ]


def test_unwatch_stops_the_notices(state, clock):
    join(state, clock, "n1")
    join(state, clock, "n2")
    watch(state, clock, "n1", "n2")
    state.on_message(ident("n1"), wire.encode(Command.UNWATCH, {"node": "n2"}), clock.now)
    out = sends(gone(state, clock, "n2"))
    assert [m for _, m in out if m.command is Command.NODEDOWN] == []


def test_watches_beyond_the_limit_are_refused_with_system_limit(clock):
    state = BrokerState(BrokerConfig(max_watches=2), now=clock.now, epoch=1)
    join(state, clock, "n1")
    for name in ("a", "b"):
        watch(state, clock, "n1", name)
    [(_, msg)] = watch(state, clock, "n1", "c")
    assert (msg.command, msg.header["reason"]) == (Command.NODEDOWN, "system_limit")
    assert state.stats["watch_refused"] == 1
    assert state.actors.watch_total == 2


def test_send_to_a_name_node_pair_routes_by_node(state, clock):
    join(state, clock, "n1")
    join(state, clock, "n2")
    frames = actor_msg(Command.SEND, to=("printer", "n2"), msg="hi")
    out = state.on_message(ident("n1"), frames, clock.now)
    assert [(i.identity, i.frames) for i in out if isinstance(i, Send)] == [(ident("n2"), frames)]


def test_a_repeated_hello_in_the_same_session_changes_nothing(state, clock):
    join(state, clock, "c", role="client", capacity=0)
    join(state, clock, "n1", capacity=1)
    state.on_message(ident("c"), job(0), clock.now)
    out = sends(join(state, clock, "n1", capacity=1))
    assert [m.command for _, m in out] == [Command.WELCOME]
    assert state.by_name["n1"].active == {ticket_of(state, 0, ident("c"))}
    assert state.stats["nodes_down"] == 0


def test_a_hello_with_a_new_session_ends_the_old_one_without_spending_attempts(state, clock):
    join(state, clock, "c", role="client", capacity=0)
    join(state, clock, "n2", capacity=0)
    join(state, clock, "n1", capacity=1)
    watch(state, clock, "n2", "n1")
    state.on_message(ident("c"), job(0), clock.now)
    out = sends(join(state, clock, "n1", capacity=1, session=1))
    commands = [(to, m.command) for to, m in out]
    assert (ident("n2"), Command.NODEDOWN) in commands
    assert (ident("n1"), Command.WELCOME) in commands
    [(_, redo)] = [(to, m) for to, m in out if m.command is Command.JOB]
    assert redo.header["attempt"] == 1  # the node did not die: no attempt spent
    assert state.by_name["n1"].session == 1


def test_a_connection_cannot_change_its_name(state, clock):
    join(state, clock, "n1")
    out = sends(state.on_message(ident("n1"), hello("n7"), clock.now))
    [(_, msg)] = out
    assert msg.command is Command.REJECT
    assert "cannot become 'n7'" in msg.header["reason"]
    assert state.by_name["n1"].identity == ident("n1")


def test_another_key_on_a_node_routing_id_is_refused(state, clock):
    state.on_message(ident("n1"), hello("n1"), clock.now, user_id="n1")
    frames = wire.encode(Command.NODES, {})
    assert sends(state.on_message(ident("n1"), frames, clock.now, user_id="n1"))
    assert state.on_message(ident("n1"), frames, clock.now, user_id="n2") == [
        Log(logging.WARNING, "from b'n1/1': key 'n2' may not speak for n1")
    ]
    assert state.stats["rejected"] == 1


def header_of(frames: list[Any]) -> bytes:
    """The packed header in a message's lead frame (after the magic and the command byte)."""
    return bytes(frames[0][len(wire.MAGIC) + 1 :])


def send_with_body(to: Pid, body: bytes) -> list[bytes]:
    """A SEND whose header starts with a valid ``to`` and continues with ``body`` (raw bytes)."""
    first = header_of(wire.encode(Command.SEND, {"to": to}))  # 0x81, "to", the pid
    return [wire.lead_frame(Command.SEND, b"\x82" + first[1:] + body)]


def test_a_message_to_a_live_pid_is_forwarded_without_reading_its_body(state, clock):
    join(state, clock, "n1")
    join(state, clock, "n2")
    garbage = send_with_body(Pid("n2", 1, 5), b"\xa3msg\xc1")  # 0xc1: a reserved byte
    with pytest.raises(wire.WireError):
        wire.decode(garbage)
    clock.advance(0.5)
    out = state.on_message(ident("n1"), garbage, clock.now)
    assert out == [Send(ident("n2"), garbage)]  # the very frames: the node n2 judges them
    assert state.stats["malformed"] == 0
    assert state.nodes[ident("n1")].last_seen == clock.now


def test_forward_target_counts_only_what_it_forwards(state, clock):
    # The broker's loop calls forward_target, then on_unforwarded when it gives None: every
    # message must be counted exactly once either way.
    join(state, clock, "n1")
    join(state, clock, "n2")
    body = b"\xa3msg\xc0"
    before = state.stats["messages"]
    forwarded = send_with_body(Pid("n2", 1, 5), body)
    assert state.forward_target(ident("n1"), forwarded, clock.now) == ident("n2")
    assert state.stats["messages"] == before + 1
    unknown = send_with_body(Pid("n9", 1, 5), body)
    assert state.forward_target(ident("n1"), unknown, clock.now) is None
    assert state.forward_target(ident("stranger"), forwarded, clock.now) is None
    assert state.stats["messages"] == before + 1
    state.on_unforwarded(ident("n1"), unknown, clock.now)
    assert state.stats["messages"] == before + 2


def test_a_message_that_cannot_be_forwarded_unread_is_decoded_and_counted(state, clock):
    join(state, clock, "n1")
    join(state, clock, "n2")
    body = b"\xa3msg\xc1"
    for frames in (
        send_with_body(Pid("n2", 2, 5), body),  # another incarnation: decoded, so refused
        send_with_body(Pid("n9", 1, 5), body),  # no such node
        [b"ZIMG1" + send_with_body(Pid("n2", 1, 5), body)[0][5:]],  # wrong magic
    ):
        out = state.on_message(ident("n1"), frames, clock.now)
        assert not any(isinstance(i, Send) for i in out)
    assert state.stats["malformed"] == 3
    # From a peer that never said HELLO, even a good `to` is not forwarded.
    out = state.on_message(b"stranger", send_with_body(Pid("n2", 1, 5), body), clock.now)
    assert not any(isinstance(i, Send) and i.identity == ident("n2") for i in out)
    assert state.stats["malformed"] == 4


def test_a_forwarded_message_still_needs_the_senders_key(state, clock):
    state.on_message(ident("n1"), hello("n1"), clock.now, user_id="n1")
    state.on_message(ident("n2"), hello("n2"), clock.now, user_id="n2")
    frames = wire.encode(Command.SEND, {"to": Pid("n2", 1, 5), "msg": "hi"})
    assert state.on_message(ident("n1"), frames, clock.now, user_id="n1") == [
        Send(ident("n2"), frames)
    ]
    out = state.on_message(ident("n1"), frames, clock.now, user_id="n2")
    assert not any(isinstance(i, Send) for i in out)
    assert state.stats["rejected"] == 1


def test_nodes_report_what_they_dropped_with_their_heartbeats(state, clock):
    join(state, clock, "n1")

    def reported() -> int:
        report = sends(state.on_message(b"q", wire.encode(Command.NODES, {}), clock.now))
        [(_, msg)] = report
        [node] = msg.header["nodes"]
        return int(node["malformed"])

    assert reported() == 0
    state.on_message(ident("n1"), wire.encode(Command.HEARTBEAT, {"malformed": 7}), clock.now)
    assert reported() == 7
    for bad in (True, -1, "9", 2.0):  # ignored: the last good report stands
        beat = wire.encode(Command.HEARTBEAT, {"malformed": bad})
        state.on_message(ident("n1"), beat, clock.now)
        assert reported() == 7
    state.on_message(ident("n1"), wire.encode(Command.HEARTBEAT, {}), clock.now)
    assert reported() == 7


def test_a_result_is_settled_on_its_first_entries_and_forwarded_unread(state, clock):
    join(state, clock, "n1")
    join(state, clock, "c", role="client", capacity=0)
    [(to, _)] = sends(state.on_message(ident("c"), job(0), clock.now))
    assert to == ident("n1")
    ticket = ticket_of(state, 0, ident("c"))
    first = header_of(wire.encode(Command.RESULT, {"id": 0, "ticket": ticket, "attempt": 1}))
    garbage = [wire.lead_frame(Command.RESULT, b"\x84" + first[1:] + b"\xa5items\xc1")]
    with pytest.raises(wire.WireError):
        wire.decode(garbage)
    out = state.on_message(ident("n1"), garbage, clock.now)
    assert out == [Send(ident("c"), garbage)]  # the client judges the rest
    assert state.stats["jobs_done"] == 1
    assert state.stats["malformed"] == 0
    assert state.nodes[ident("n1")].active == set()


def test_a_result_whose_first_entries_are_not_plain_is_decoded_in_full(state, clock):
    join(state, clock, "n1")
    join(state, clock, "c", role="client", capacity=0)
    state.on_message(ident("c"), job(0), clock.now)
    # "items" first: the broker decodes the whole message, and it is malformed.
    bad = [wire.MAGIC, bytes([Command.RESULT]), b"\x83\xa5items\x90\xa2id\x00\xa6ticket\xc1"]
    assert not any(isinstance(i, Send) for i in state.on_message(ident("n1"), bad, clock.now))
    assert state.stats["malformed"] == 1
    # The same fields in another order still settle the job, through the full decode.
    ticket = ticket_of(state, 0, ident("c"))
    header = {"ok": True, "id": 0, "ticket": ticket, "attempt": 1, "items": []}
    frames = wire.encode(Command.RESULT, header)
    assert state.on_message(ident("n1"), frames, clock.now) == [Send(ident("c"), frames)]
    assert state.stats["jobs_done"] == 1


def test_a_result_settled_on_its_first_entries_still_needs_the_senders_key(state, clock):
    state.on_message(ident("n1"), hello("n1"), clock.now, user_id="n1")
    state.on_message(ident("c"), hello("c", role="client", capacity=0), clock.now, user_id="c")
    state.on_message(ident("c"), job(0), clock.now, user_id="c")
    frames = result(state, 0, ident("c"))
    out = state.on_message(ident("n1"), frames, clock.now, user_id="n2")  # another key
    assert not any(isinstance(i, Send) for i in out)
    assert state.stats["rejected"] == 1
    assert state.stats["jobs_done"] == 0
    assert state.on_message(ident("n1"), frames, clock.now, user_id="n1")[0] == Send(
        ident("c"), frames
    )
    assert state.stats["jobs_done"] == 1


# ------------------------------------------------------------------ CPU slots


def placed(cpus: list[int], host: str = "boot:a", threads: int = 1) -> dict[str, Any]:
    return {"host": host, "cpus": cpus, "threads": threads}


def dispatch(state: BrokerState, clock: FakeClock, first: int, count: int) -> list[bytes]:
    """Submit jobs ``first`` .. ``first + count - 1``; the workers each was handed to."""
    targets = []
    for i in range(first, first + count):
        out = sends(state.on_message(ident("c"), job(i), clock.now))
        targets += [to for to, m in out if m.command is Command.JOB]
    return targets


def finish(state: BrokerState, clock: FakeClock, worker: str, job_id: int) -> list[bytes]:
    """``worker`` returns job ``job_id``; the workers handed a job in exchange."""
    out = sends(state.on_message(ident(worker), result(state, job_id, ident("c")), clock.now))
    return [to for to, m in out if m.command is Command.JOB]


def test_a_host_runs_one_job_per_cpu_and_its_other_workers_stand_by(state, clock):
    join(state, clock, "c", role="client", capacity=0)
    for n in ("n1", "n2", "n3", "n4"):
        join(state, clock, n, **placed([0, 1]))
    # Two CPUs: two workers start a job each, then each gets the next in line (credit 2).
    assert dispatch(state, clock, 0, 6) == [ident("n1"), ident("n2"), ident("n1"), ident("n2")]
    assert state.queue_length == 2
    # A result frees credit on a worker that is still running: it takes the next job.
    assert finish(state, clock, "n1", 0) == [ident("n1")]
    assert state.nodes[ident("n3")].active == state.nodes[ident("n4")].active == set()
    assert finish(state, clock, "n2", 1) == [ident("n2")]
    # n2 runs dry: its CPU is free, and the next job goes to the worker that waited longest.
    assert finish(state, clock, "n2", 3) == finish(state, clock, "n2", 5) == []
    assert dispatch(state, clock, 6, 2) == [ident("n3"), ident("n3")]


def test_a_worker_that_leaves_hands_its_cpu_to_one_standing_by(state, clock):
    join(state, clock, "c", role="client", capacity=0)
    for n in ("n1", "n2"):
        join(state, clock, n, **placed([0]))
    assert dispatch(state, clock, 0, 3) == [ident("n1"), ident("n1")]
    out = sends(gone(state, clock, "n1"))
    jobs = [(to, m.header["id"]) for to, m in out if m.command is Command.JOB]
    assert sorted(jobs) == [(ident("n2"), 0), (ident("n2"), 1)]


def test_cpu_slots_are_counted_per_host(state, clock):
    join(state, clock, "c", role="client", capacity=0)
    join(state, clock, "a1", **placed([0], host="boot:a"))
    join(state, clock, "a2", **placed([0], host="boot:a"))
    join(state, clock, "b1", **placed([0], host="boot:b"))
    targets = dispatch(state, clock, 0, 4)
    assert sorted(targets) == sorted([ident("a1"), ident("b1")] * 2)


def jobs_sent(out) -> list[tuple[bytes, Any, int]]:
    """(worker, job id, its ``queued``: the worker's jobs running, 0 if absent) for each JOB."""
    return [
        (to, m.header["id"], m.header.get("queued", 0))
        for to, m in sends(out)
        if m.command is Command.JOB
    ]


def test_on_a_full_host_the_next_job_waits_behind_a_running_one(state, clock):
    join(state, clock, "c", role="client", capacity=0)
    for n in ("n1", "n2"):  # two threads each: they could run four jobs on the two CPUs
        join(state, clock, n, capacity=2, **placed([0, 1], threads=2))
    out = [i for k in range(5) for i in state.on_message(ident("c"), job(k), clock.now)]
    assert jobs_sent(out) == [
        (ident("n1"), 0, 0),
        (ident("n2"), 1, 0),
        (ident("n1"), 2, 1),  # wait while you run 1 job
        (ident("n2"), 3, 1),
    ]
    # Job 0 ends, job 2 starts on n1: the host still runs two, so job 4 waits behind job 2.
    out = state.on_message(ident("n1"), result(state, 0, ident("c")), clock.now)
    assert jobs_sent(out) == [(ident("n1"), 4, 1)]
    # n2 leaves: its CPU is free, and n1 starts the next job at once on its second thread.
    state.on_message(ident("n2"), wire.encode(Command.DISCONNECT, {}), clock.now)
    out = state.on_message(ident("n1"), result(state, 2, ident("c")), clock.now)
    [(to, job_id, queued)] = jobs_sent(out)
    assert (to, job_id in (1, 3), queued) == (ident("n1"), True, 0)


def test_a_prefetched_job_is_sent_queued(state, clock):
    join(state, clock, "c", role="client", capacity=0)
    join(state, clock, "n1", **placed([0, 1]))
    out = [i for k in range(2) for i in state.on_message(ident("c"), job(k), clock.now)]
    assert jobs_sent(out) == [(ident("n1"), 0, 0), (ident("n1"), 1, 1)]


def test_a_queued_job_says_how_many_jobs_it_waits_behind(state, clock):
    join(state, clock, "c", role="client", capacity=0)
    join(state, clock, "n1", capacity=4, **placed([0, 1], threads=2))
    out = [i for k in range(5) for i in state.on_message(ident("c"), job(k), clock.now)]
    assert jobs_sent(out) == [
        (ident("n1"), 0, 0),
        (ident("n1"), 1, 0),
        (ident("n1"), 2, 2),
        (ident("n1"), 3, 2),
    ]
    # Job 0 ends: job 2 takes its thread, job 1 still runs; job 4 waits behind those two.
    out = state.on_message(ident("n1"), result(state, 0, ident("c")), clock.now)
    assert jobs_sent(out) == [(ident("n1"), 4, 2)]


def test_a_worker_with_threads_uses_as_many_cpus(state, clock):
    join(state, clock, "c", role="client", capacity=0)
    join(state, clock, "big", capacity=2, **placed([0, 1], threads=2))
    assert dispatch(state, clock, 0, 2) == [ident("big"), ident("big")]  # both run
    assert sends(join(state, clock, "spare", **placed([0, 1]))) != []  # welcomed
    assert dispatch(state, clock, 2, 1) == []  # no CPU free for it
    assert finish(state, clock, "big", 0) == [ident("spare")]


def test_pinned_workers_start_on_a_cpu_where_nothing_runs(state, clock):
    join(state, clock, "c", role="client", capacity=0)
    # Round-robin pinning: n1 and n3 on CPU 0, n2 and n4 on CPU 1. n3 joined first, so plain
    # least-recently-used order would start n1 and n3, both on CPU 0.
    for n, cpu in (("n3", 0), ("n1", 0), ("n2", 1), ("n4", 1)):
        join(state, clock, n, **placed([cpu]))
    targets = dispatch(state, clock, 0, 2)
    cpus = {state.nodes[t].placement.cpus for t in targets}  # type: ignore[union-attr]
    assert cpus == {frozenset({0}), frozenset({1})}


def test_oversubscribe_gives_every_worker_jobs(clock):
    state = BrokerState(BrokerConfig(cpu_slots=False), now=clock.now, epoch=1)
    join(state, clock, "c", role="client", capacity=0)
    for n in ("n1", "n2", "n3"):
        join(state, clock, n, **placed([0]))
    assert dispatch(state, clock, 0, 3) == [ident("n1"), ident("n2"), ident("n3")]


def test_workers_that_say_nothing_of_their_cpus_are_not_held_back(state, clock):
    join(state, clock, "c", role="client", capacity=0)
    join(state, clock, "n1", **placed([0]))
    join(state, clock, "n2", **placed([0]))
    join(state, clock, "old")  # an older worker: no placement in its HELLO
    targets = dispatch(state, clock, 0, 2)
    assert sorted(targets) == [ident("n1"), ident("old")]


def test_a_malformed_placement_is_rejected(state, clock):
    out = sends(join(state, clock, "n1", **placed([-1])))
    [(_, msg)] = out
    assert msg.command is Command.REJECT
    assert "CPU numbers" in msg.header["reason"]


def test_the_nodes_report_shows_where_workers_run(state, clock):
    join(state, clock, "n1", **placed([0, 1], threads=1))
    join(state, clock, "c", role="client", capacity=0)
    out = sends(state.on_message(b"anyone", wire.encode(Command.NODES, {}), clock.now))
    nodes = {n["name"]: n for n in out[0][1].header["nodes"]}
    assert (nodes["n1"]["host"], nodes["n1"]["cpus"], nodes["n1"]["threads"]) == (
        "boot:a",
        [0, 1],
        1,
    )
    assert "cpus" not in nodes["c"]


def test_every_counter_is_reported_from_the_start_and_only_the_state_writes_them(
    state: BrokerState, clock: FakeClock
) -> None:
    import inspect

    import zimg._broker_sending
    import zimg.broker
    from zimg._broker_state import STATS

    assert state.nodes_page(clock.now)["stats"] == dict.fromkeys(STATS, 0)
    state.on_backlog(dropped=False)
    state.on_backlog(dropped=True)
    state.on_backlog(dropped=True)
    state.on_backlog_unroutable(3)
    stats = state.nodes_page(clock.now)["stats"]
    assert (stats["backlogged"], stats["dropped"], stats["unroutable"]) == (1, 2, 3)
    # The loop reports what it did through the state's methods; it keeps no counters of its own
    # in the state's dict (a key it invented would be missing from the first reports).
    loop = inspect.getsource(zimg.broker) + inspect.getsource(zimg._broker_sending)
    assert "stats[" not in loop
    assert "stats.get(" not in loop
