"""Who gets a RESULT: a command has one handler, and a connection's RESULTs one JobRouter, owned by
whoever owns the connection (a Node: ``node.jobs``), shared by every JobClient on it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from zimg.connection import Connection
from zimg.wire import Command

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def idle() -> Iterator[Connection]:
    """A connection that is never started: registering handlers needs no broker."""
    conn = Connection("tcp://127.0.0.1:9", "idle")
    yield conn
    conn.close()


def test_a_second_handler_for_a_command_is_refused_naming_the_command_and_both(idle):
    def first(msg: Any) -> None: ...

    def second(msg: Any) -> None: ...

    idle.on(Command.NODES, first)
    with pytest.raises(ValueError, match="NODES already has a handler") as info:
        idle.on(Command.NODES, second)
    assert "first" in str(info.value)
    assert "second" in str(info.value)
    with pytest.raises(ValueError, match="NODES"):
        idle.on(Command.NODES, first)  # once is once, even for the same handler
    idle.on(Command.NODEDOWN, second)  # another command is free
