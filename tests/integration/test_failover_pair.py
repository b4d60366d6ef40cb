"""A failover pair of brokers on threads of this process (issue 17): CURVE on both brokers and on
the peer link, a node moving to the backup, and a peer link that only its configured peer can
speak on."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from zimg import wire
from zimg._broker_state import BrokerConfig
from zimg._failover import State
from zimg._peer_link import FailoverConfig
from zimg.broker import Broker
from zimg.connection import Connection
from zimg.nodes_query import query_nodes
from zimg.security import BrokerKeys, ClientKeys, create_keys, load_keypair
from zimg.testing import free_tcp_url
from zimg.wire import Command

pytestmark = pytest.mark.timeout(60)
CONFIG = BrokerConfig(heartbeat_interval_s=0.2, liveness=3)


def wait_until(condition: Callable[[], Any], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.01)


@pytest.fixture
def keyring(tmp_path: Path) -> Path:
    """One broker certificate for the pair (tmp/broker), n1 authorised, a 'stranger' not."""
    create_keys("broker", tmp_path / "broker")
    public, _ = create_keys("n1", tmp_path / "nodes")
    (tmp_path / "broker" / "authorized").mkdir()
    (tmp_path / "broker" / "authorized" / public.name).write_bytes(public.read_bytes())
    create_keys("stranger", tmp_path / "nodes")
    return tmp_path


class Started:
    """Brokers started by a test, stopped at its end."""

    def __init__(self) -> None:
        self.brokers: list[Broker] = []

    def broker(self, role: str, peer: str, peer_bind: str, keys: Path | None = None) -> Broker:
        failover = FailoverConfig(role, peer, peer_bind)
        broker_keys = BrokerKeys(keys) if keys is not None else None
        broker = Broker(free_tcp_url(), CONFIG, keys=broker_keys, failover=failover).start()
        self.brokers.append(broker)
        return broker


@pytest.fixture
def started() -> Iterator[Started]:
    group = Started()
    yield group
    for broker in group.brokers:
        broker.stop()


def state_of(broker: Broker) -> State:
    assert broker.failover is not None
    return broker.failover.state


def test_a_curve_pair_serves_a_keyed_node_and_hands_it_over(
    started: Started, keyring: Path
) -> None:
    a_peer, b_peer = free_tcp_url(), free_tcp_url()
    primary = started.broker("primary", b_peer, a_peer, keyring / "broker")
    backup = started.broker("backup", a_peer, b_peer, keyring / "broker")
    wait_until(
        lambda: state_of(primary) is State.ACTIVE and state_of(backup) is State.PASSIVE,
        10,
        "the keyed pair to settle (its peer link is CURVE)",
    )
    keys = ClientKeys.load(keyring / "nodes" / "n1.key_secret", keyring / "broker" / "broker.key")
    urls = f"{backup.endpoint},{primary.endpoint}"  # the passive one first: it sends n1 on
    with Connection(urls, "n1", keys=keys).start(10) as conn:
        assert conn.broker_url == primary.endpoint
        primary.stop()
        wait_until(lambda: conn.broker_url == backup.endpoint and conn.sessions == 2, 10, "n1")
        assert state_of(backup) is State.ACTIVE
        assert "n1" in backup.state.by_name


def test_the_peer_link_admits_only_the_pairs_key(started: Started, keyring: Path) -> None:
    primary = started.broker("primary", free_tcp_url(), free_tcp_url(), keyring / "broker")
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    try:
        heard: dict[str, zmq.Socket[bytes]] = {}
        server_public = load_keypair(keyring / "broker" / "broker.key_secret")[0]
        for name, key_file in (
            ("broker", keyring / "broker" / "broker.key_secret"),
            ("stranger", keyring / "nodes" / "stranger.key_secret"),
        ):
            sub = ctx.socket(zmq.SUB)
            sub.setsockopt(zmq.LINGER, 0)
            sub.setsockopt(zmq.SUBSCRIBE, b"")
            public, secret = load_keypair(key_file)
            ClientKeys(public, secret, server_public).apply(sub)
            assert primary.peer_link is not None
            sub.connect(primary.peer_link.endpoint)
            heard[name] = sub
        # The pair's key hears the primary's state (the control); a stranger's, nothing.
        assert heard["broker"].poll(5000), "the pair's own key heard nothing"
        state = wire.decode(heard["broker"].recv_multipart())
        assert state.command is Command.PEER
        assert state.header["role"] == "primary"
        assert not heard["stranger"].poll(1000)
    finally:
        ctx.destroy(linger=0)


def test_a_peer_that_is_not_the_pairs_key_is_never_heard(started: Started, keyring: Path) -> None:
    """A PUB at the backup's --peer address that holds another key: the backup's SUB refuses the
    server, so a forged "primary active" never reaches the state machine."""
    fake_at = free_tcp_url()
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    try:
        pub = ctx.socket(zmq.PUB)
        pub.setsockopt(zmq.LINGER, 0)
        pub.setsockopt(zmq.CURVE_SERVER, 1)
        public, secret = load_keypair(keyring / "nodes" / "stranger.key_secret")
        pub.setsockopt(zmq.CURVE_PUBLICKEY, public)
        pub.setsockopt(zmq.CURVE_SECRETKEY, secret)
        pub.bind(fake_at)
        backup = started.broker("backup", fake_at, free_tcp_url(), keyring / "broker")
        forged = wire.encode(Command.PEER, {"role": "primary", "state": "active"})
        for _ in range(50):  # 1 s of forged states, 5 heartbeats' worth
            pub.send_multipart(forged)
            time.sleep(0.02)
        assert backup.failover is not None
        assert backup.failover.peer_heard_at is None
        assert state_of(backup) is State.STARTING
    finally:
        ctx.destroy(linger=0)


def test_malformed_peer_messages_are_counted_and_change_nothing(started: Started) -> None:
    fake_at = free_tcp_url()
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    try:
        pub = ctx.socket(zmq.PUB)
        pub.setsockopt(zmq.LINGER, 0)
        pub.bind(fake_at)
        backup = started.broker("backup", fake_at, free_tcp_url())
        assert backup.failover is not None
        bad = [
            [b"garbage"],
            [b"ZIMG2\x30\xc1"],  # not msgpack
            wire.encode(Command.HELLO, {"name": "x"}),  # a node's command
            wire.encode(Command.PEER, {"role": "backup", "state": "active"}),  # our own role
            wire.encode(Command.PEER, {"role": "primary", "state": "boss"}),
            [wire.encode(Command.PEER, {"role": "primary", "state": "active"})[0], b"extra"],
        ]
        failover = backup.failover

        def counted() -> bool:
            for frames in bad:
                pub.send_multipart(frames)
            return failover.malformed >= 2 * len(bad)

        wait_until(counted, 10, "the malformed peer messages to be counted")
        # An oversize one: libzmq drops the connection (MAXMSGSIZE) before anything is read.
        pub.send_multipart(wire.encode(Command.PEER, {"role": "primary", "pad": "x" * 4000}))
        assert state_of(backup) is State.STARTING
        assert failover.peer_heard_at is None
        # The control: a well-formed state from the same place is heard (the SUB reconnects).
        good = wire.encode(Command.PEER, {"role": "primary", "state": "active"})
        wait_until(
            lambda: pub.send_multipart(good) or state_of(backup) is State.PASSIVE, 10, "passive"
        )
    finally:
        ctx.destroy(linger=0)


def test_query_nodes_on_a_pair_returns_the_active_brokers_report(started: Started) -> None:
    a_peer, b_peer = free_tcp_url(), free_tcp_url()
    primary = started.broker("primary", b_peer, a_peer)
    backup = started.broker("backup", a_peer, b_peer)
    wait_until(lambda: state_of(backup) is State.PASSIVE, 10, "the pair to settle")
    urls = f"{backup.endpoint},{primary.endpoint}"
    with Connection(urls, "n1").start(10):
        report = query_nodes(urls, timeout_s=4)
        assert report["failover"]["state"] == "active"
        assert [n["name"] for n in report["nodes"]] == ["n1"]
        passive = query_nodes(backup.endpoint, timeout_s=2)
        assert passive["failover"]["role"] == "backup"
        assert passive["failover"]["state"] == "passive"
        assert passive["nodes"] == []
        assert passive["failover"]["refused"] >= 1  # n1 came here first, and was sent on


def test_a_split_with_a_vote_on_each_side_ends_with_the_backup_yielding(started: Started) -> None:
    """The known limit of Binary Star: the peer link breaks and a node reaches only the backup,
    whose vote makes it active too. When the link heals, the backup gives way (and exits)."""
    from tests.fault.proxy import TcpProxy

    a_peer, b_peer = free_tcp_url(), free_tcp_url()
    to_a, to_b = TcpProxy(int(a_peer.rsplit(":", 1)[1])), TcpProxy(int(b_peer.rsplit(":", 1)[1]))
    try:
        primary = started.broker("primary", to_b.url, a_peer)
        backup = started.broker("backup", to_a.url, b_peer)
        wait_until(lambda: state_of(backup) is State.PASSIVE, 10, "the pair to settle")
        to_a.cut()
        to_b.cut()
        with Connection(backup.endpoint, "lonely").start(10):  # its HELLOs are the vote
            assert state_of(backup) is State.ACTIVE
            assert state_of(primary) is State.ACTIVE  # two actives while the link is down
            to_a = TcpProxy(to_a.target_port, port=to_a.port)
            to_b = TcpProxy(to_b.target_port, port=to_b.port)
            wait_until(lambda: backup.yielded is not None, 10, "the backup to give way")
        assert "both brokers are active" in (backup.yielded or "")
        assert state_of(primary) is State.ACTIVE
    finally:
        to_a.cut()
        to_b.cut()


def test_zimg_nodes_on_a_pair_shows_each_brokers_state_and_the_active_ones_nodes(
    started: Started,
) -> None:
    from typer.testing import CliRunner

    from zimg.cli import app

    a_peer, b_peer = free_tcp_url(), free_tcp_url()
    primary = started.broker("primary", b_peer, a_peer)
    backup = started.broker("backup", a_peer, b_peer)
    assert primary.failover is not None

    def settled() -> bool:  # each has heard the other's final state
        return state_of(backup) is State.PASSIVE and primary.failover.peer_state is State.PASSIVE

    wait_until(settled, 10, "the pair to settle")
    urls = f"{primary.endpoint},{backup.endpoint}"
    with Connection(urls, "n1").start(10):
        result = CliRunner().invoke(app, ["nodes", "--broker", urls], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert f"broker {primary.endpoint}: primary, active (peer: passive" in result.output
    assert f"broker {backup.endpoint}: backup, passive (peer: active" in result.output
    assert f"nodes at {primary.endpoint} (primary, active)" in result.output
    assert "n1" in result.output
