"""The dashboard's parts in one process: the NODES poller (an in-process broker with tiny
pages), the status JSON, the --http rules."""

from __future__ import annotations

import pytest

from tests.fault.helpers import wait_for
from zimg._broker_state import BrokerConfig
from zimg.broker import Broker
from zimg.connection import Connection
from zimg.dashboard._poller import Poller
from zimg.testing import free_tcp_url


@pytest.mark.timeout(60)
def test_a_poll_is_capped_in_pages_and_keeps_the_first_page_downs():
    url = free_tcp_url()
    # Each entry costs about 260 bytes: a page of 600 bytes holds two nodes.
    with Broker(url, BrokerConfig(nodes_page_bytes=600)):
        conns = [Connection(url, f"c{i}").start(5.0) for i in range(7)]
        conns.pop().close()  # c6 leaves: the broker reports it on the first page
        try:
            poller = Poller(url, lambda *_: None, lambda *_: None, max_pages=2)
            # The DISCONNECT and the NODES come on two sockets: ask until the broker saw both.
            report = wait_for(
                lambda: (r := poller.poll_once())["downs"] and r, 10, "c6 reported down"
            )
        finally:
            for conn in conns:
                conn.close()
            poller.stop()
    assert [n["name"] for n in report["nodes"]] == ["c0", "c1", "c2", "c3"]
    assert report["more"] is True
    assert report["count"] == 6
    assert [(d["name"], d["why"]) for d in report["downs"]] == [("c6", "left")]


@pytest.mark.timeout(60)
def test_given_a_failover_pair_the_poller_shows_the_active_brokers_report_and_both_states():
    from zimg._peer_link import FailoverConfig
    from zimg.dashboard._status import StatusModel

    config = BrokerConfig(heartbeat_interval_s=0.2, liveness=3)
    a_peer, b_peer = free_tcp_url(), free_tcp_url()
    primary = Broker(free_tcp_url(), config, failover=FailoverConfig("primary", b_peer, a_peer))
    backup = Broker(free_tcp_url(), config, failover=FailoverConfig("backup", a_peer, b_peer))
    with primary, backup:
        # The backup is listed first: the report shown must still be the active primary's.
        poller = Poller(f"{backup.url},{primary.url}", lambda *_: None, lambda *_: None)
        conn = Connection(primary.url, "c1").start(5.0)
        try:
            states = [(backup.url, "backup", "passive"), (primary.url, "primary", "active")]

            def both_known():
                report = poller.poll_once()
                pair = [(b["url"], b.get("role"), b.get("state")) for b in report["pair"]]
                return pair == states and report

            report = wait_for(both_known, 10, "the pair's states")
        finally:
            conn.close()
            poller.stop()
    assert [n["name"] for n in report["nodes"]] == ["c1"]
    assert report["failover"]["role"] == "primary"
    model = StatusModel()
    model.update(report, 1.0)
    shown = model.snapshot()["broker"]
    assert shown["failover"] == {"role": "primary", "state": "active"}
    assert shown["pair"] == [{"url": u, "role": r, "state": s} for u, r, s in states]


def test_values_json_lacks_are_sent_as_text():
    from zimg.dashboard._app import Hub
    from zimg.dashboard._status import StatusModel

    node = {"name": "n1", "role": "worker", "done": 0, "incarnation": 1, "host": b"\x00<b>"}
    model = StatusModel()
    model.update({"nodes": [node], "stats": {}}, 1.0)
    _, text = Hub(model).status_json()
    assert "<b>" in text  # as JSON text; the page puts it in with textContent


@pytest.mark.parametrize(
    ("http", "token", "insecure", "refused"),
    [
        ("127.0.0.1:8080", None, False, False),
        ("[::1]:8080", None, False, False),
        ("localhost:8080", None, False, False),
        ("0.0.0.0:8080", None, False, True),
        ("192.0.2.7:8080", None, False, True),
        ("0.0.0.0:8080", "t", False, False),
        ("0.0.0.0:8080", None, True, False),
        ("8080", None, False, True),
        ("host:port", None, False, True),
    ],
)
def test_http_binds_follow_the_broker_rules(http, token, insecure, refused):
    from zimg.dashboard._cli import check_http

    assert (check_http(http, token, insecure) is not None) is refused
