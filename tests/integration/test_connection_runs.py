"""A lane's batch reaches the connection's handlers as runs (``Connection._handle_lane_run``):
a run of one command goes to its run handler in one call, anything else to its handler, all in
the order the batch holds."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from zimg.connection import Connection
from zimg.wire import Command, Message, Pid

pytestmark = pytest.mark.timeout(30)
TO = Pid("idle", 1, 1)


@pytest.fixture
def idle() -> Iterator[Connection]:
    """A connection that is never started: its handlers are called directly."""
    conn = Connection("tcp://127.0.0.1:9", "idle")
    yield conn
    conn.close()


def send(i: int) -> Message:
    return Message(Command.SEND, {"to": TO, "msg": i})


def link(i: int) -> Message:
    return Message(Command.LINK, {"to": TO, "from": Pid("n2", 2, i)})


def test_runs_of_a_command_with_a_run_handler_go_together_in_order(idle):
    calls: list[tuple[str, Any]] = []
    idle.on(Command.SEND, lambda m: calls.append(("send", m.header["msg"])))
    idle.on(Command.LINK, lambda m: calls.append(("link", m.header["from"].serial)))
    idle.on_run(Command.SEND, lambda ms: calls.append(("sends", [m.header["msg"] for m in ms])))
    idle._handle_lane_run([send(0), send(1), link(2), link(3), send(4)])
    assert calls == [("sends", [0, 1]), ("link", 2), ("link", 3), ("sends", [4])]


def test_a_run_handler_that_raises_is_counted_and_the_rest_go_on(idle):
    calls: list[Any] = []

    def broken(msgs: list[Message]) -> None:
        raise RuntimeError("a bug")

    idle.on(Command.LINK, lambda m: calls.append(m.header["from"].serial))
    idle.on_run(Command.SEND, broken)
    idle._handle_lane_run([send(0), link(1), send(2), link(3)])
    assert calls == [1, 3]
    assert idle.handler_errors == 2


def test_a_second_run_handler_for_a_command_is_refused(idle):
    def first(msgs: list[Message]) -> None: ...

    idle.on_run(Command.SEND, first)
    with pytest.raises(ValueError, match="SEND already has a run handler"):
        idle.on_run(Command.SEND, first)
