"""CURVE "ironhouse" over real sockets: who gets in, who does not, and name binding."""

from __future__ import annotations

import ast
import stat
from pathlib import Path

import pytest
import zmq.auth

import zimg
from zimg.broker import Broker
from zimg.connection import Connection
from zimg.security import BrokerKeys, ClientKeys, create_keys
from zimg.testing import free_tcp_url

pytestmark = pytest.mark.timeout(60)
REFUSED_WITHIN = 1.5  # seconds a refused node waits for a WELCOME that never comes


@pytest.fixture
def keyring(tmp_path):
    """Broker keys in tmp/broker (n1, n2 and main authorised); an unauthorised 'stranger'."""
    broker_dir = tmp_path / "broker"
    create_keys("broker", broker_dir)
    for name in ("n1", "n2", "main"):
        public, _ = create_keys(name, tmp_path / "nodes")
        (broker_dir / "authorized").mkdir(exist_ok=True)
        (broker_dir / "authorized" / public.name).write_bytes(public.read_bytes())
    create_keys("stranger", tmp_path / "nodes")
    return tmp_path


def client_keys(keyring: Path, name: str, server: str = "broker") -> ClientKeys:
    return ClientKeys.load(
        keyring / "nodes" / f"{name}.key_secret", keyring / "broker" / f"{server}.key"
    )


@pytest.fixture
def secure_broker(keyring):
    broker = Broker(free_tcp_url(), keys=BrokerKeys(keyring / "broker")).start()
    yield broker
    broker.stop()


def test_keys_new_writes_a_zcert_pair_with_a_private_secret(tmp_path):
    public, secret = create_keys("n7", tmp_path)
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    pub_key, no_secret = zmq.auth.load_certificate(public)
    pub_again, sec_key = zmq.auth.load_certificate(secret)
    assert no_secret is None
    assert pub_key == pub_again
    assert len(pub_key) == len(sec_key) == 40
    with pytest.raises(zimg.ZimgError, match="already exists"):
        create_keys("n7", tmp_path)


def test_an_authorised_node_joins(secure_broker, keyring):
    with Connection(secure_broker.endpoint, "n1", keys=client_keys(keyring, "n1")) as conn:
        assert conn.welcomed
        assert "n1" in secure_broker.state.by_name  # added before the WELCOME was sent


def test_a_client_without_keys_gets_nothing_through(secure_broker):
    with pytest.raises(zimg.ZimgTimeout):
        Connection(secure_broker.endpoint, "n1").start(REFUSED_WITHIN)
    assert secure_broker.state.stats["messages"] == 0


def test_a_valid_but_unauthorised_key_is_refused(secure_broker, keyring):
    with pytest.raises(zimg.ZimgTimeout, match="--broker-key"):
        Connection(secure_broker.endpoint, "stranger", keys=client_keys(keyring, "stranger")).start(
            REFUSED_WITHIN
        )
    assert secure_broker.state.stats["messages"] == 0


def test_a_wrong_server_key_fails(secure_broker, keyring):
    create_keys("impostor", keyring / "broker")
    keys = client_keys(keyring, "n1", server="impostor")
    with pytest.raises(zimg.ZimgTimeout):
        Connection(secure_broker.endpoint, "n1", keys=keys).start(REFUSED_WITHIN)
    assert secure_broker.state.stats["messages"] == 0


def test_a_stolen_name_is_refused(secure_broker, keyring):
    with pytest.raises(zimg.RejectedError, match="registered as 'n2'; it cannot join as 'n1'"):
        Connection(secure_broker.endpoint, "n1", keys=client_keys(keyring, "n2")).start(5)
    assert "n1" not in secure_broker.state.by_name


def test_a_key_may_use_its_name_with_a_suffix(secure_broker, keyring):
    conn = Connection(secure_broker.endpoint, "main.send-1", keys=client_keys(keyring, "main"))
    with conn:
        assert "main.send-1" in secure_broker.state.by_name


def test_an_authorised_cluster_runs_correctly(procs, keyring, tmp_path, samples):
    from tests.reference import check_output, manifest

    url = free_tcp_url()
    broker_keys = keyring / "broker"
    keys = client_keys(keyring, "main")
    procs.broker(url, "--keys", str(broker_keys), keys=keys)
    node_args = ["--broker-key", str(broker_keys / "broker.key")]
    procs.worker(
        url, "n1", "--key", str(keyring / "nodes" / "n1.key_secret"), *node_args, keys=keys
    )
    files = [samples / "chelsea.jpg", samples / "coins.png"]
    with zimg.Node(url, "main", keys=keys) as node:
        report = zimg.run_batch(node, files, zimg.BatchOptions(outdir=tmp_path / "out"))
    assert report.failed == 0
    for entry in manifest(tmp_path / "out"):
        assert entry["node"] == "n1"
        check_output(entry)


def test_lanes_between_curve_nodes_are_curve_and_carry_messages(secure_broker, keyring):
    """Two nodes with keys and lanes: the lane DEALER is a CURVE client (of the peer's key,
    which the broker passed on from the peer's HELLO: else no handshake), and messages go on
    it."""
    url = secure_broker.endpoint
    with (
        zimg.Node(url, "n1", keys=client_keys(keyring, "n1"), lanes=True) as n1,
        zimg.Node(url, "n2", keys=client_keys(keyring, "n2"), lanes=True) as n2,
    ):
        echo = n1.spawn("n2", "zimg.behaviours:echo")
        for i in range(50):
            n1.send(echo, ("echo", n1.self(), i))
            assert n1.receive(timeout=10) == ("echo", i)
        lanes = n1.connection.lanes
        assert lanes is not None
        lane = lanes.state("n2")
        assert lane is not None
        assert lane.sock is not None
        assert lane.sock.get(zmq.MECHANISM) == zmq.CURVE
        assert lanes.sent > 0
        assert n2.connection.lanes.received > 0
        assert n2.connection.lanes.router.curve_server


FORBIDDEN_MODULES = {"pickle", "marshal", "shelve", "dill", "cloudpickle"}
FORBIDDEN_NAMES = {"eval", "exec", "recv_pyobj", "send_pyobj", "loads_pyobj", "__import__"}


def test_no_pickle_marshal_eval_exec_or_recv_pyobj_in_the_package():
    package = Path(zimg.__file__).parent
    found = []
    for path in sorted(package.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [a.name for a in node.names]
                module = getattr(node, "module", None) or ""
                roots = {n.split(".")[0] for n in [*names, module] if n}
                found += [
                    f"{path.name}:{node.lineno} imports {r}" for r in roots & FORBIDDEN_MODULES
                ]
            elif isinstance(node, ast.Name) and node.id in FORBIDDEN_NAMES:
                found.append(f"{path.name}:{node.lineno} uses {node.id}")
            elif isinstance(node, ast.Attribute) and node.attr in FORBIDDEN_NAMES:
                found.append(f"{path.name}:{node.lineno} uses .{node.attr}")
    assert found == []
