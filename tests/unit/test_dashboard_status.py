"""The dashboard's view model: NODES reports diffed into nodes, events and throughput."""

from __future__ import annotations

from typing import Any

from zimg.dashboard._status import Limits, StatusModel


def node(name: str, done: int = 0, incarnation: int = 1, **extra: Any) -> dict[str, Any]:
    return {"name": name, "role": "worker", "done": done, "incarnation": incarnation, **extra}


def report(*nodes: dict[str, Any], downs=(), **stats: int) -> dict[str, Any]:
    return {"nodes": list(nodes), "downs": list(downs), "stats": stats, "epoch": 7, "queued": 0}


def kinds(model: StatusModel) -> list[tuple[str, str]]:
    return [(e["kind"], e["text"]) for e in model.events]


def test_nodes_and_throughput_per_worker():
    model = StatusModel("tcp://b")
    model.update(report(node("n1", 0, cpus=[0, 1], host="h")), 10.0)
    model.update(report(node("n1", 10)), 12.0)
    snap = model.snapshot()
    [n1] = snap["nodes"]
    assert n1["rate"] == 5.0
    assert n1["incarnation"] == "1"
    assert snap["history"] == {"t": [12.0], "series": {"n1": [5.0]}}
    assert kinds(model) == [("up", "n1 joined (worker)")]


def test_a_node_that_goes_down_stays_listed_with_the_reason_the_broker_gave():
    model = StatusModel()
    model.update(report(node("n1"), node("n2")), 1.0)
    down = {"name": "n2", "role": "worker", "incarnation": 1, "reason": "noconnection"}
    model.update(report(node("n1"), downs=[{**down, "why": "missed heartbeats"}]), 2.0)
    model.update(report(node("n1"), downs=[{**down, "why": "missed heartbeats"}]), 3.0)
    gone = [n for n in model.snapshot()["nodes"] if n["name"] == "n2"]
    assert gone == [
        {
            "name": "n2",
            "role": "worker",
            "state": "down",
            "reason": "missed heartbeats (noconnection)",
            "failed": 0,
        }
    ]
    downs = [text for kind, text in kinds(model) if kind == "down"]
    assert downs == ["n2 is down: missed heartbeats (noconnection)"]  # once, not per poll


def test_a_node_that_vanishes_without_a_down_entry_is_down_for_an_unknown_reason():
    model = StatusModel()
    model.update(report(node("n1")), 1.0)
    model.update(report(), 2.0)
    assert kinds(model)[-1] == ("down", "n1 left the node list (reason unknown)")
    model.update(report(node("n1", incarnation=2)), 3.0)
    assert [n["state"] for n in model.snapshot()["nodes"]] == ["up"]
    model.update(report(node("n1", incarnation=3)), 4.0)
    assert kinds(model)[-1] == ("up", "n1 restarted (new incarnation)")


def test_broker_counters_that_rise_are_events():
    model = StatusModel()
    model.update(report(malformed=3, rejected=1), 1.0)
    model.update(report(malformed=5, rejected=1, dropped=2), 2.0)
    assert kinds(model) == [
        ("counter", "broker malformed +2 (now 5)"),
        ("counter", "broker dropped +2 (now 2)"),
    ]


def test_poll_failures_are_told_once_until_the_broker_answers():
    model = StatusModel()
    model.poll_failed("timeout", 1.0)
    model.poll_failed("timeout", 2.0)
    model.update(report(), 3.0)
    assert [k for k, _ in kinds(model)] == ["broker", "broker"]
    assert model.snapshot()["broker"]["reachable"] is True


def test_results_and_thumbnails_are_rings():
    model = StatusModel(limits=Limits(results=3, events=2))
    for i in range(5):
        model.add_result(
            name=f"f{i}.png",
            node="n1",
            error="bad" if i else None,
            ms=1,
            now=i,
            thumb=(b"x", "image/png"),
        )
    snap = model.snapshot()
    assert [r["name"] for r in snap["results"]] == ["f2.png", "f3.png", "f4.png"]
    assert sorted(model.thumbs) == [r["id"] for r in snap["results"]]
    assert len(snap["events"]) == 2
    assert snap["totals"] == {"results": 5, "failed": 4}


def test_failed_results_count_per_node_and_long_texts_are_cut():
    model = StatusModel()
    model.update(report(node("n1")), 1.0)
    model.add_result(name="<b>x</b>.png", node="n1", error="e" * 5000, ms=None, now=2.0)
    snap = model.snapshot()
    assert snap["nodes"][0]["failed"] == 1
    text = snap["events"][-1]["text"]
    assert text.startswith("<b>x</b>.png on n1: eee")  # kept as text; the page escapes it
    assert len(text) <= 1000


def test_node_list_is_capped_and_counted():
    model = StatusModel(limits=Limits(nodes=2))
    model.update(report(node("a"), node("b"), node("c")), 1.0)
    snap = model.snapshot()
    assert [n["name"] for n in snap["nodes"]] == ["a", "b"]
    assert snap["nodes_total"] == 3


def test_front_door_failures_are_events():
    model = StatusModel()
    model.request_failed(415, "not an image", 1.0)
    assert kinds(model) == [("failed", "front door 415: not an image")]


def test_a_report_cut_short_does_not_make_the_unlisted_nodes_gone():
    model = StatusModel()
    model.update(report(node("a"), node("b"), node("c")), 1.0)
    model.update({**report(node("a"), node("b")), "more": True, "count": 3}, 2.0)
    assert [k for k, _ in kinds(model)] == ["up", "up", "up"]
    model.update(report(node("a"), node("b")), 3.0)
    assert kinds(model)[-1] == ("down", "c left the node list (reason unknown)")


def test_the_chart_keeps_the_busiest_workers():
    model = StatusModel(limits=Limits(series=2))
    model.update(report(node("a"), node("b"), node("c")), 1.0)
    model.update(report(node("a", 1), node("b", 9), node("c", 5)), 2.0)
    assert sorted(model.snapshot()["history"]["series"]) == ["b", "c"]
