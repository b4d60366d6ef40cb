"""The broker's state machine against hostile or broken peers: forged senders, jobs that never
come back, floods of jobs and NODES requests, names that belong to other keys. A fake clock,
no sockets (the attacks against a real broker process are in tests/integration)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from zimg import protocol, wire
from zimg._broker_state import BrokerConfig, BrokerState, Send
from zimg.nodes_query import collect_pages
from zimg.testing import FakeClock
from zimg.wire import Command, Pid, Ref

from .test_broker_state import hello, ident, job, sends, ticket_of


def make_state(clock: FakeClock, **config: Any) -> BrokerState:
    return BrokerState(BrokerConfig(**config), now=clock.now, epoch=7)


def join(state: BrokerState, clock: FakeClock, name: str, **kw: Any) -> list[Any]:
    return state.on_message(ident(name), hello(name, **kw), clock.now)


def jobs_to(out: list[Any]) -> list[tuple[bytes, Any]]:
    return [(to, m.header["id"]) for to, m in sends(out) if m.command is Command.JOB]


# ------------------------------------------------------------------ forged actor messages

PID = Pid("n1", 1, 5)  # a pid of n1 (incarnation 1, as hello() says)


@pytest.mark.parametrize(
    ("command", "header"),
    [
        (Command.EXIT, {"to": Pid("n2", 1, 0), "from": Pid("n3", 1, 0), "reason": "kill"}),
        (Command.LINK, {"to": Pid("n2", 1, 0), "from": Pid("n3", 1, 0)}),
        (Command.UNLINK, {"to": Pid("n2", 1, 0), "from": Pid("n3", 1, 0)}),
        (Command.MONITOR, {"to": Pid("n2", 1, 0), "from": Pid("n3", 1, 0), "ref": Ref("n3", 1, 1)}),
        (Command.DEMONITOR, {"to": Pid("n2", 1, 0), "ref": Ref("n3", 1, 1)}),
        (Command.DOWN, {"to": Pid("n2", 1, 0), "ref": Ref("n2", 1, 1), "pid": Pid("n3", 1, 0)}),
        (Command.SPAWNED, {"to": Pid("n2", 1, 0), "ref": Ref("n2", 1, 1), "pid": Pid("n3", 1, 9)}),
        (
            Command.SPAWN,
            {
                "to": "n2",
                "from": Pid("n3", 1, 0),
                "ref": Ref("n3", 1, 1),
                "behaviour": "x",
                "args": [],
            },
        ),
        # The right node, another incarnation (an earlier life of n1): forged too.
        (Command.EXIT, {"to": Pid("n2", 1, 0), "from": Pid("n1", 2, 0), "reason": "kill"}),
        # No sender at all where one is required.
        (Command.LINK, {"to": Pid("n2", 1, 0)}),
    ],
)
def test_an_actor_message_naming_another_nodes_pid_is_dropped_and_counted(
    clock: FakeClock, command: Command, header: dict[str, Any]
) -> None:
    state = make_state(clock)
    for name in ("n1", "n2", "n3"):
        join(state, clock, name)
    out = state.on_message(ident("n1"), wire.encode(command, header), clock.now)
    assert not any(isinstance(i, Send) for i in out)
    assert state.stats["forged"] == 1


def test_actor_messages_naming_the_senders_own_pids_are_routed(clock: FakeClock) -> None:
    state = make_state(clock)
    for name in ("n1", "n2"):
        join(state, clock, name)
    to = Pid("n2", 1, 0)
    for command, header in [
        (Command.EXIT, {"to": to, "from": PID, "reason": "kill", "link": False}),
        (Command.LINK, {"to": to, "from": PID}),
        (Command.MONITOR, {"to": to, "from": PID, "ref": Ref("n1", 1, 3)}),
        (Command.DEMONITOR, {"to": to, "ref": Ref("n1", 1, 3)}),
        (Command.DOWN, {"to": to, "ref": Ref("n2", 1, 3), "pid": PID, "reason": "normal"}),
        (Command.SPAWNED, {"to": to, "ref": Ref("n2", 1, 4), "pid": None, "error": "no"}),
        (Command.SEND, {"to": to, "msg": "anyone may send"}),
    ]:
        frames = wire.encode(command, header)
        assert state.on_message(ident("n1"), frames, clock.now) == [Send(ident("n2"), frames)]
    assert state.stats["forged"] == 0


def test_a_peer_that_has_not_joined_routes_nothing(clock: FakeClock) -> None:
    state = make_state(clock)
    join(state, clock, "n2")
    for command, header in [
        (Command.SEND, {"to": Pid("n2", 1, 0), "msg": "forged reply"}),
        (Command.EXIT, {"to": Pid("n2", 1, 0), "from": Pid("n2", 1, 0), "reason": "kill"}),
    ]:
        [(to, msg)] = sends(state.on_message(b"stranger", wire.encode(command, header), clock.now))
        assert (to, msg.command) == (b"stranger", Command.DISCONNECT)
    assert state.stats["unknown_peer"] == 2


# ------------------------------------------------------------------ jobs: tickets and ids


def test_a_result_for_another_job_of_the_client_under_its_ticket_is_forged(
    clock: FakeClock,
) -> None:
    state = make_state(clock)
    join(state, clock, "c", role="client", capacity=0)
    join(state, clock, "n1", capacity=1)
    join(state, clock, "n2", capacity=1)
    for i in range(2):
        state.on_message(ident("c"), job(i), clock.now)
    ticket = ticket_of(state, 0, ident("c"))
    assert state.table.jobs[ticket].worker is state.by_name["n1"]
    # n1 answers its ticket, but under the id of job 1 (which n2 runs): refused.
    header = {"id": 1, "ticket": ticket, "attempt": 1, "ok": True}
    out = state.on_message(ident("n1"), wire.encode(Command.RESULT, header), clock.now)
    assert not any(isinstance(i, Send) for i in out)
    assert state.stats["forged"] == 1
    assert len(state.table.jobs) == 2


def test_nobody_learns_another_peers_routing_id(clock: FakeClock) -> None:
    state = make_state(clock)
    join(state, clock, "c", role="client", capacity=0)
    join(state, clock, "n1")
    out = sends(state.on_message(ident("c"), job(0), clock.now))
    [(_, dispatched)] = out
    report = state.nodes_report(clock.now)
    for text in (repr(dispatched.header), repr(report)):
        assert repr(ident("c"))[2:-1] not in text
        assert repr(ident("n1"))[2:-1] not in text


# ------------------------------------------------------------------ job deadlines


def test_a_job_past_its_deadline_is_retried_elsewhere_and_its_worker_is_hung(
    clock: FakeClock,
) -> None:
    state = make_state(clock, job_deadline_s=10.0)
    join(state, clock, "c", role="client", capacity=0)
    join(state, clock, "n1", capacity=2)
    state.on_message(ident("c"), job(0), clock.now)
    assert state.by_name["n1"].active  # n1 runs it, and never answers
    join(state, clock, "n2", capacity=1)
    grace = state.config.job_grace_s(10.0)
    for who in ("c", "n1", "n2"):  # everyone stays alive
        state.on_message(ident(who), wire.encode(Command.HEARTBEAT, {}), clock.advance(1.0))
    assert jobs_to(state.on_tick(clock.now)) == []
    clock.advance(10.0 + grace)
    for who in ("c", "n1", "n2"):
        state.on_message(ident(who), wire.encode(Command.HEARTBEAT, {}), clock.now)
    out = state.on_tick(clock.now)
    assert jobs_to(out) == [(ident("n2"), 0)]
    assert state.stats["jobs_expired"] == 1
    n1 = state.by_name["n1"]
    assert (n1.hung, n1.active) == (True, set())
    # A hung worker gets nothing, even with credit left...
    state.on_message(ident("c"), job(1), clock.now)
    assert state.queue_length == 1
    # ...until it answers (here: its late answer to job 0, which completes it).
    header = {"id": 0, "ticket": ticket_of(state, 0, ident("c")), "attempt": 1, "ok": True}
    out = state.on_message(ident("n1"), wire.encode(Command.RESULT, header), clock.now)
    assert (ident("c"), Command.RESULT) in [(to, m.command) for to, m in sends(out)]
    assert jobs_to(out) == [(ident("n1"), 1)]
    assert state.stats["late_results"] == 1
    # The retry on n2 still runs: its credit stays taken until it answers, and its answer
    # goes to the client too (which keeps the first), without counting the job done twice.
    assert state.by_name["n2"].active
    header["attempt"] = 2
    out = state.on_message(ident("n2"), wire.encode(Command.RESULT, header), clock.now)
    assert (ident("c"), Command.RESULT) in [(to, m.command) for to, m in sends(out)]
    assert not state.by_name["n2"].active
    assert state.stats["jobs_done"] == 1
    assert [job.job_id for job in state.table.jobs.values()] == [1]  # job 0 is gone


def test_a_job_that_keeps_timing_out_fails_after_max_attempts(clock: FakeClock) -> None:
    state = make_state(clock, job_deadline_s=5.0, max_attempts=2)
    join(state, clock, "c", role="client", capacity=0)
    for name in ("n1", "n2"):
        join(state, clock, name, capacity=1)
    state.on_message(ident("c"), job(0), clock.now)
    results = []
    for _ in range(3):
        clock.advance(5.0 + state.config.job_grace_s(5.0) + 0.1)
        for who in ("c", "n1", "n2"):
            state.on_message(ident(who), wire.encode(Command.HEARTBEAT, {}), clock.now)
        results += [m for _, m in sends(state.on_tick(clock.now)) if m.command is Command.RESULT]
    [failure] = results
    assert failure.header["ok"] is False
    assert "deadline of 5 s 2 times" in failure.header["error"]
    assert state.table.jobs == {}


def test_a_client_may_ask_for_a_shorter_deadline_never_a_longer_one(clock: FakeClock) -> None:
    state = make_state(clock, job_deadline_s=60.0)
    join(state, clock, "c", role="client", capacity=0)
    join(state, clock, "n1", capacity=4)
    deadlines = []
    for i, asked in enumerate((5.0, 3600.0, -1, True)):
        out = sends(state.on_message(ident("c"), job(i, deadline_s=asked), clock.now))
        deadlines += [m.header["deadline_s"] for _, m in out if m.command is Command.JOB]
    assert deadlines == [5.0, 60.0, 60.0, 60.0]


def test_a_client_that_leaves_does_not_strand_its_workers_credit(clock: FakeClock) -> None:
    state = make_state(clock, job_deadline_s=5.0)
    join(state, clock, "c", role="client", capacity=0)
    join(state, clock, "n1", capacity=1)
    state.on_message(ident("c"), job(0), clock.now)
    state.on_message(ident("c"), wire.encode(Command.DISCONNECT, {}), clock.now)
    # n1 never answers the orphaned job: its credit still comes back at the deadline.
    clock.advance(5.0 + state.config.job_grace_s(5.0) + 0.1)
    state.on_message(ident("n1"), wire.encode(Command.HEARTBEAT, {}), clock.now)
    state.on_tick(clock.now)
    assert state.by_name["n1"].active == set()
    assert state.table.jobs == {}
    assert state.table.nbytes == 0


# ------------------------------------------------------------------ bounded queues


def test_jobs_beyond_a_clients_byte_cap_are_answered_busy_and_held_nowhere(
    clock: FakeClock,
) -> None:
    state = make_state(clock, max_client_job_bytes=10_000)
    join(state, clock, "c", role="client", capacity=0)  # no worker: everything queues
    payload = np.zeros(4000, np.uint8)
    replies = []
    for i in range(4):
        out = sends(state.on_message(ident("c"), job(i, payload=payload), clock.now))
        replies += [m.header for _, m in out if m.command is Command.RESULT]
    assert state.queue_length == 2  # two fit under 10,000 bytes
    assert [(r["id"], r["ok"], r.get("busy")) for r in replies] == [
        (2, False, True),
        (3, False, True),
    ]
    assert state.stats["jobs_refused"] == 2
    # One job that can never fit is refused for good, not "busy".
    out = sends(state.on_message(ident("c"), job(9, payload=np.zeros(20_000, np.uint8)), clock.now))
    [(_, refused)] = out
    assert "busy" not in refused.header
    assert "at most 10000 bytes" in refused.header["error"]


def test_the_broker_wide_byte_cap_holds_across_clients(clock: FakeClock) -> None:
    state = make_state(clock, max_job_bytes=20_000, max_client_job_bytes=15_000)
    payload = np.zeros(6000, np.uint8)
    for name in ("a", "b", "c"):
        join(state, clock, name, role="client", capacity=0)
        for i in range(2):
            state.on_message(ident(name), job(i, payload=payload), clock.now)
    assert state.table.nbytes <= 20_000
    assert state.stats["jobs_refused"] == 6 - state.queue_length


# ------------------------------------------------------------------ liveness from arrival


def test_a_node_is_not_declared_dead_while_its_messages_wait_unread(clock: FakeClock) -> None:
    state = make_state(clock)
    join(state, clock, "n1")
    drained = clock.now
    # The broker is stuck for 10 s (far past the 3 s bound); nothing it reads is late.
    clock.advance(10.0)
    state.on_tick(clock.now, drained_at=drained)
    assert "n1" in state.by_name
    # Once it has read everything that waited (n1's heartbeats among it), n1 is alive.
    state.on_message(ident("n1"), wire.encode(Command.HEARTBEAT, {}), clock.now)
    state.on_tick(clock.now, drained_at=clock.now)
    assert "n1" in state.by_name
    # A node that really sent nothing is declared dead once the broker has caught up.
    clock.advance(3.5)
    state.on_tick(clock.now, drained_at=clock.now)
    assert "n1" not in state.by_name


# ------------------------------------------------------------------ NODES


def test_the_nodes_report_comes_in_pages_that_stay_small(clock: FakeClock) -> None:
    state = make_state(clock, nodes_page_bytes=4096, nodes_bytes_per_s=1e9)
    for i in range(300):
        name = f"w{i:03d}"
        join(state, clock, name, host="h" * 256, cpus=list(range(4096)), threads=4096)
    seen: list[str] = []
    after = None
    while True:
        request = {} if after is None else {"after": after}
        frames = wire.encode(Command.NODES, request)
        [(_, reply)] = sends(state.on_message(b"asker", frames, clock.now))
        assert len(frames[0]) < wire.DEFAULT_LIMITS.max_header_bytes
        page = reply.header["nodes"]
        seen += [n["name"] for n in page]
        assert reply.header["count"] == 300
        if not reply.header["more"]:
            break
        after = page[-1]["name"]
    assert seen == sorted(state.by_name)


def test_collect_pages_reads_every_page_or_stops_when_told(clock: FakeClock) -> None:
    """``collect_pages`` gathers every page; with ``until`` it asks no page beyond the first
    after which the condition holds (the send warning stops at the first worker it sees)."""
    state = make_state(clock, nodes_page_bytes=2000, nodes_bytes_per_s=1e9)
    for i in range(100):
        join(state, clock, f"c{i:03d}", role=protocol.ROLE_CLIENT)
    join(state, clock, "w000")
    asked: list[dict[str, Any]] = []

    def ask(request: dict[str, Any]) -> dict[str, Any]:
        asked.append(request)
        [(_, reply)] = sends(
            state.on_message(b"asker", wire.encode(Command.NODES, request), clock.now)
        )
        return reply.header

    everything = collect_pages(ask)
    assert [n["name"] for n in everything["nodes"]] == sorted(state.by_name)
    pages = len(asked)
    assert pages > 3
    assert not everything["more"]

    asked.clear()
    first = collect_pages(ask, until=lambda nodes: True)
    assert len(asked) == 1
    assert first["nodes"] == everything["nodes"][: len(first["nodes"])]

    asked.clear()
    worker = collect_pages(ask, until=lambda nodes: any(n["role"] == "worker" for n in nodes))
    assert len(asked) == pages  # the worker sorts last: every page was needed
    assert worker["nodes"][-1]["name"] == "w000"


def test_nodes_requests_beyond_the_rate_are_dropped_and_counted(clock: FakeClock) -> None:
    # A budget of 20 kB/s, and pages of about 2 kB (256 nodes' entries cost ~270 B each, but a
    # page holds at most nodes_page_bytes of them).
    state = make_state(clock, nodes_bytes_per_s=20_000.0, nodes_page_bytes=2000)
    for i in range(256):
        join(state, clock, f"w{i:03d}")
    answered = 0
    for _ in range(50):  # 50 at once from peers that have not joined: about ten answered
        answered += len(sends(state.on_message(b"x", wire.encode(Command.NODES, {}), clock.now)))
    assert 5 <= answered <= 11
    assert state.stats["throttled"] == 50 - answered
    # A node has a budget of its own: the anonymous flood does not starve it.
    frames = wire.encode(Command.NODES, {})
    assert sends(state.on_message(ident("w000"), frames, clock.now)) != []
    clock.advance(1.0)  # the budget refills
    assert sends(state.on_message(b"x", wire.encode(Command.NODES, {}), clock.now)) != []


# ------------------------------------------------------------------ names and limits


def test_a_key_cannot_take_a_name_that_belongs_to_a_longer_key(clock: FakeClock) -> None:
    state = BrokerState(BrokerConfig(), now=clock.now, epoch=1, key_names={"n1", "n1.gpu"})
    for name, allowed in (("n1.gpu", False), ("n1.gpu.x", False), ("n1.cpu", True)):
        out = sends(state.on_message(ident(name), hello(name), clock.now, user_id="n1"))
        assert (out[0][1].command is Command.WELCOME) is allowed, name
        if not allowed:
            assert out[0][1].header["code"] == protocol.REJECT_KEY
    out = sends(state.on_message(ident("n1.gpu"), hello("n1.gpu"), clock.now, user_id="n1.gpu"))
    assert out[0][1].command is Command.WELCOME


def test_nodes_beyond_the_limit_are_refused_with_the_fix(clock: FakeClock) -> None:
    state = make_state(clock)
    state.node_limit, state.node_limit_fix = 3, "raise ulimit -n"
    for i in range(3):
        join(state, clock, f"n{i}")
    [(_, msg)] = sends(join(state, clock, "n9"))
    assert (msg.command, msg.header["code"]) == (Command.REJECT, protocol.REJECT_LIMIT)
    assert "limit of 3 nodes" in msg.header["reason"]
    assert "raise ulimit -n" in msg.header["reason"]
    # A node already in can still say HELLO again.
    assert sends(join(state, clock, "n1"))[0][1].command is Command.WELCOME


def test_the_broker_warns_as_nodes_approach_the_limit(clock: FakeClock) -> None:
    state = make_state(clock)
    state.node_limit = 20
    warnings = []
    for i in range(20):
        warnings += [
            i.text
            for i in join(state, clock, f"n{i}")
            if type(i).__name__ == "Log" and i.level >= 30
        ]
    assert len(warnings) == 2
    assert "near this broker's limit of 20" in warnings[0]


def test_reject_says_why_in_a_code(clock: FakeClock) -> None:
    state = make_state(clock)
    join(state, clock, "n1")
    cases = [
        (hello("n1", version=2), protocol.REJECT_VERSION),
        (hello("bad name!"), protocol.REJECT_INVALID),
    ]
    for frames, code in cases:
        [(_, msg)] = sends(state.on_message(b"other", frames, clock.now))
        assert (msg.command, msg.header["code"]) == (Command.REJECT, code)
    # The name held by a live node: a probe first, then the refusal.
    [probe] = state.on_message(b"other", hello("n1"), clock.now)
    [(_, msg), *_] = sends(state.on_probe(probe.identity, True, clock.now))
    assert msg.header["code"] == protocol.REJECT_NAME_TAKEN


def test_a_job_id_too_long_to_repeat_in_a_result_is_malformed(clock: FakeClock) -> None:
    state = make_state(clock)
    join(state, clock, "c", role="client", capacity=0)
    out = state.on_message(ident("c"), job("x" * 129), clock.now)  # type: ignore[arg-type]
    assert sends(out) == []
    assert state.stats["malformed"] == 1
    assert state.queue_length == 0


def test_fields_the_broker_owns_cannot_be_set_by_a_client(clock: FakeClock) -> None:
    """A client that writes ``ticket``, ``client``, ``attempt``, ``deadline_s`` or ``queued``
    into its JOB (to answer for another job, or to look like a retry) gets the broker's own."""
    state = make_state(clock, job_deadline_s=30.0)
    join(state, clock, "c", role="client", capacity=0)
    join(state, clock, "n1")
    spoof = {"ticket": 999, "client": b"n1/1", "attempt": 7, "deadline_s": 1e9, "queued": 5}
    [(_, dispatched)] = sends(state.on_message(ident("c"), job(0, **spoof), clock.now))
    header = dispatched.header
    assert header["ticket"] == ticket_of(state, 0, ident("c")) != 999
    assert (header["attempt"], header["deadline_s"]) == (1, 30.0)
    assert "client" not in header
    assert "queued" not in header
    # Without any such field the header bytes are reused and the broker's appended.
    [(_, plain)] = sends(state.on_message(ident("c"), job(1), clock.now))
    assert list(plain.header)[-3:] == ["ticket", "attempt", "deadline_s"]
