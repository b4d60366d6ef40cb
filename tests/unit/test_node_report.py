"""Node.report() reads every page of the broker's NODES answer (protocol 3), with no broker:
the node's connection is never started, and its send answers at once."""

from __future__ import annotations

from typing import Any

import pytest

import zimg
from zimg.wire import Command, Message

pytestmark = pytest.mark.timeout(10)


def test_report_reads_every_page():
    node = zimg.Node("inproc://nobody", "main")
    names = [f"n{i:03}" for i in range(25)]
    asked: list[dict[str, Any]] = []

    def broker(command: Command, header: dict[str, Any]) -> None:
        assert command is Command.NODES
        asked.append(dict(header))
        after = header.get("after", "")
        page = [{"name": n, "incarnation": 1} for n in names if n > after][:10]
        more = page[-1]["name"] != names[-1]
        node._replies.put(Message(Command.NODES, {"nodes": page, "more": more, "count": 25}))

    node.connection.send = broker  # type: ignore[method-assign]
    try:
        report = node.report()
        assert [n["name"] for n in report["nodes"]] == names
        assert asked == [{}, {"after": "n009"}, {"after": "n019"}]
        assert node.nodes() == names
    finally:
        node.connection.close()
