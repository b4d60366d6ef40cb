"""Every handler takes any term in any field without raising: the broker's state machine for
every command, from a joined node and from a stranger, a node's actor handlers, and what a
worker makes of a JOB and a client of a RESULT.

A header that decodes is a header a peer can send. Whatever a handler does with a field of the
wrong type (an array compared with a str, a list used as a dict key...), it must refuse the
message, not raise: on the broker one such SPAWN stopped the loop for every node, and on a node
every such message logged a traceback. The terms are the wire's own (arrays, pids, refs,
tuples, nested lists and maps), mixed with values that get a message deep into its handler: the
names and pids of the nodes that are joined, ``"*"``, valid tickets and job ids.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, cast

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zimg import wire
from zimg._actor import ActorLimits, ActorRuntime
from zimg._broker_state import BrokerConfig, BrokerState
from zimg._errors import ZimgTimeout
from zimg._transport import Transport
from zimg.jobs import JobRequest, JobResult
from zimg.wire import Command, Message, Pid, Ref

from .test_actor_limits import FakeConnection
from .test_broker_state import hello, ident, job
from .test_wire import terms

pytestmark = pytest.mark.timeout(120)

NOW = 1000.0
# Joined by cluster(): a worker w1 (incarnation 1, as hello() says) and a client c1.
W1_PID, C1_PID = Pid("w1", 1, 3), Pid("c1", 1, 4)
DEEP = st.sampled_from(
    [
        "w1",
        "c1",
        "*",
        W1_PID,
        C1_PID,
        Ref("c1", 1, 9),
        ("inbox", "w1"),
        ("inbox", "n1"),
        Pid("n1", 111, 1),  # the node of the actor runtime below (FakeConnection's)
        1,
        7,
        "zimg.behaviours:echo",
        "normal",
        "kill",
        True,
        np.arange(3, dtype=np.uint8),  # arrays answer == with arrays, whose truth raises
        np.zeros((2, 2), np.float32),
        (np.arange(2, dtype=np.uint8), "n1"),  # a pair that is not two strs
        ("inbox", np.arange(2, dtype=np.uint8)),
    ]
)
FIELDS = (
    [
        "to", "from", "ref", "pid", "reason", "link", "monitor", "behaviour", "args",
        "kwargs", "msg", "error", "id", "ticket", "attempt", "ok", "node", "items", "name",
        "role", "capacity", "incarnation", "session", "version", "after", "deadline_s",
        "mode", "ops", "malformed", "dropped", "code", "epoch", "heartbeat_interval_s",
    ]
)  # fmt: skip
# A few fields, each a value that gets deep or any term at all; `to`, which routes actor
# commands, in most headers.
headers = st.builds(
    lambda fields, to: {**fields, **to},
    st.dictionaries(st.sampled_from(FIELDS), DEEP | terms, max_size=5),
    st.fixed_dictionaries({}, optional={"to": DEEP | DEEP | terms}),
)
SETTINGS = settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def cluster() -> BrokerState:
    state = BrokerState(BrokerConfig(), now=NOW, epoch=3)
    state.on_message(ident("w1"), hello("w1"), NOW)
    state.on_message(ident("c1"), hello("c1", role="client", capacity=0), NOW)
    state.on_message(ident("c1"), job(7), NOW)  # ticket 1, running on w1
    return state


# The field each actor command must fill with a pid of its sender, or the broker drops it as
# forged before anything else (docs/protocol.md §8.2): filled in most examples, so that the
# rest of the header reaches the routing.
OWN = {
    Command.SPAWN: "from", Command.LINK: "from", Command.UNLINK: "from",
    Command.MONITOR: "from", Command.EXIT: "from", Command.DOWN: "pid",
}  # fmt: skip
SENDERS = {"w1": W1_PID, "c1": C1_PID, "stranger": Pid("stranger", 1, 1)}


@pytest.mark.parametrize("command", list(Command), ids=lambda c: c.name)
@settings(SETTINGS, max_examples=60)
@given(
    header=headers,
    sender=st.sampled_from(list(SENDERS)),
    own=st.booleans() | st.just(True),
)
def test_the_broker_state_takes_any_header_from_anyone(
    command: Command, header: dict[str, Any], sender: str, own: bool
) -> None:
    if own and command in OWN:
        header = {**header, OWN[command]: SENDERS[sender]}
    try:
        # As they arrive off a socket: bytes (the encoder gives arrays and views).
        frames = [memoryview(f).tobytes() for f in wire.encode(command, header)]
    except wire.WireError:
        return  # beyond the limits: it cannot be sent either
    state = cluster()
    state.on_message(ident(sender), frames, NOW)  # raises only on a bug
    state.on_tick(NOW + 1000)  # and what it left behind ticks over too


@pytest.fixture(scope="module")
def runtime() -> Iterator[tuple[ActorRuntime, FakeConnection]]:
    fake = FakeConnection()
    nodes = [{"name": "n2", "incarnation": 222}]
    rt = ActorRuntime(cast(Transport, fake), lambda: {"nodes": nodes}, ActorLimits())
    rt.register(rt.main, "inbox")
    yield rt, fake
    rt.shutdown(2.0)


ACTOR_HANDLED = [c for c in Command if Command.SPAWN <= c <= Command.NODEDOWN]


@pytest.mark.parametrize("command", ACTOR_HANDLED, ids=lambda c: c.name)
@settings(SETTINGS, max_examples=60)
@given(header=headers)
def test_a_nodes_actor_handlers_take_any_header(
    runtime: tuple[ActorRuntime, FakeConnection],
    command: Command,
    header: dict[str, Any],
) -> None:
    rt, fake = runtime
    if command not in fake.handlers:
        return
    fake.handlers[command](Message(command, header))  # as the I/O thread calls it
    fake.clear()
    drain(rt)


def drain(rt: ActorRuntime) -> None:
    """Empty main's mailbox: what got through to it is fine, but it must not grow."""
    while True:
        try:
            rt.main.mailbox.receive(timeout=0)
        except ZimgTimeout:
            return


ITEM_FIELDS = ["name", "ext", "payload", "output", "ok", "ms", "error"]
items = st.lists(
    st.dictionaries(
        st.sampled_from(ITEM_FIELDS),
        st.sampled_from(["a.jpg", ".jpg", True, 1.5, np.zeros(4, np.uint8)]) | terms,
        max_size=5,
    )
    | terms,
    max_size=3,
)
JOB_FIELDS = ["id", "mode", "ops", "items", "max_pixels", "deadline_s", "ok", "node", "attempt"]
job_headers = st.dictionaries(
    st.sampled_from([*JOB_FIELDS, "error", "died", "busy"]),
    st.sampled_from(["encoded", "raw", "path", 7, True, 0.5, []]) | items | terms,
    max_size=8,
)


@settings(SETTINGS, max_examples=300)
@given(header=job_headers)
def test_a_job_or_result_header_is_read_or_refused_as_malformed(header: dict[str, Any]) -> None:
    """What a worker makes of a JOB and a client of a RESULT: the request or result, or a
    WireError saying what is wrong, for any header; never another exception."""
    for read in (JobRequest.from_header, JobResult.from_header):
        with contextlib.suppress(wire.WireError):
            read(header)
