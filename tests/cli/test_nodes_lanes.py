"""`zimg nodes` shows what each node's lanes carried, and only when some node has lanes."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from zimg.cli import _output, app


def nodes_output(monkeypatch: pytest.MonkeyPatch, nodes: list[dict]) -> str:
    from zimg import nodes_query

    report = {"nodes": nodes, "queued": 0}
    monkeypatch.setattr(nodes_query, "query_nodes", lambda *args, **kwargs: report)
    monkeypatch.setattr(_output.rich_console(), "_width", 200)
    result = CliRunner().invoke(app, ["nodes", "--broker", "tcp://127.0.0.1:1"])
    assert result.exit_code == 0, result.output
    return result.output


def node(name: str, **extra: object) -> dict:
    return {"name": name, "role": "worker", "capacity": 2, "active": 0, "done": 0,
            "last_seen_s": 0.1, **extra}  # fmt: skip


def test_lane_counts_get_a_column(monkeypatch: pytest.MonkeyPatch) -> None:
    lanes = {"endpoint": "tcp://10.0.0.2:4000", "peers": 1, "sent": 12, "received": 30,
             "refused": 3, "lost": 0, "broken": 1}  # fmt: skip
    out = nodes_output(monkeypatch, [node("w1", lanes=lanes), node("w2")])
    assert "lanes sent/received" in out
    assert "12/30, 3 refused, 1 broken" in out


def test_no_lane_column_without_lanes(monkeypatch: pytest.MonkeyPatch) -> None:
    assert "lanes" not in nodes_output(monkeypatch, [node("w1"), node("w2")])
