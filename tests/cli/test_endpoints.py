"""Endpoint options (--bind, --connect, --broker): bad forms are one-line usage errors, and a
broker bound to an IPv6 address takes nodes over IPv6 (issue 15 §2)."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from zimg import protocol
from zimg.cli import app
from zimg.testing import free_tcp_url

runner = CliRunner()

COMMANDS = {
    "broker": ["broker", "--bind"],
    "worker": ["worker", "--name", "w1", "--broker"],
    "send": ["send", "x.png", "--broker"],
    "nodes": ["nodes", "--broker"],
}

BAD = [
    ("localhost:5555", "did you mean tcp://localhost:5555?"),
    ("127.0.0.1:5604", "did you mean tcp://127.0.0.1:5604?"),
    ("tcp://::1:5604", "did you mean tcp://[::1]:5604?"),
    ("tcp://localhost", "give a port"),
    ("tcp://localhost:http", "give a port"),
    ("tcp://[::1:5604", "close the bracket"),
    ("tcp://[::g]:5604", "not an IPv6 address"),
    ("http://localhost:5555", "tcp://HOST:PORT"),
    ("ipc://", "needs a name"),
    ("broker", "tcp://HOST:PORT"),
]


@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize(("url", "fix"), BAD)
def test_a_bad_endpoint_is_one_line_and_exit_2(command, url, fix):
    result = runner.invoke(app, [*COMMANDS[command], url], catch_exceptions=False)
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    assert result.output.count("\n") == 1, result.output
    assert repr(url) in result.output
    assert fix in result.output
    assert COMMANDS[command][-1] in result.output  # names the option


def test_a_worker_with_a_bad_endpoint_prints_one_line_and_no_traceback():
    proc = subprocess.run(
        [sys.executable, "-m", "zimg", "worker", "-n", "w1", "-c", "localhost:5555"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.splitlines() == [
        "error: --broker: 'localhost:5555' is not an endpoint: did you mean tcp://localhost:5555?"
    ]


@pytest.mark.parametrize(
    "url",
    [
        "tcp://127.0.0.1:5555",
        "tcp://localhost:5555",
        "tcp://broker.example:1",
        "tcp://[::1]:5555",
        "tcp://[fe80::1%eth0]:5555",
        "ipc:///tmp/zimg/broker",
        "inproc://zimg",
    ],
)
def test_check_endpoint_accepts(url):
    assert protocol.check_endpoint(url) == url
    assert protocol.check_endpoint(url, bind=True) == url


@pytest.mark.parametrize("url", ["tcp://*:5555", "tcp://127.0.0.1:*", "tcp://[::1]:*"])
def test_wildcards_are_for_binding_only(url):
    assert protocol.check_endpoint(url, bind=True) == url
    with pytest.raises(ValueError, match="not an endpoint"):
        protocol.check_endpoint(url)


def test_the_help_names_the_accepted_forms():
    for args in (["broker"], ["worker"], ["send"], ["nodes"]):
        result = runner.invoke(app, [*args, "--help"], terminal_width=200)
        assert "tcp://[IPv6]:PORT" in result.output


def _has_ipv6_loopback() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _has_ipv6_loopback(), reason="no IPv6 loopback here")
def test_a_broker_bound_to_ipv6_takes_a_worker_over_ipv6(procs):
    url = free_tcp_url("::1")
    assert url.startswith("tcp://[::1]:")
    procs.broker(url)  # waits until it answers NODES over IPv6
    procs.worker(url, "w1")  # waits until the broker lists it
    result = runner.invoke(app, ["nodes", "--broker", url, "--json"], catch_exceptions=False)
    assert result.exit_code == 0
    assert '"w1"' in result.output


def test_a_failover_pair_is_two_endpoints_separated_by_a_comma() -> None:
    from zimg import protocol

    pair = "tcp://10.0.0.1:5555,tcp://10.0.0.2:5555"
    assert protocol.check_endpoints(pair) == pair
    assert protocol.split_endpoints(pair + ",") == ["tcp://10.0.0.1:5555", "tcp://10.0.0.2:5555"]
    with pytest.raises(ValueError, match=r"10\.0\.0\.2"):
        protocol.check_endpoints("tcp://10.0.0.1:5555,10.0.0.2:5555")


@pytest.mark.parametrize(
    ("url", "host", "loopback"),
    [
        ("tcp://127.0.0.1:5555", "127.0.0.1", True),
        ("tcp://127.8.9.10:5555", "127.8.9.10", True),
        ("tcp://localhost:5555", "localhost", True),
        ("tcp://[::1]:5555", "::1", True),
        ("ipc:///tmp/zimg.sock", None, True),
        ("inproc://zimg", None, True),
        ("tcp://*:5555", "*", False),
        ("tcp://0.0.0.0:5555", "0.0.0.0", False),
        ("tcp://[::]:5555", "::", False),
        ("tcp://198.18.0.1:5555", "198.18.0.1", False),
        ("tcp://broker.example:5555", "broker.example", False),
        ("tcp://127.example:5555", "127.example", False),  # a name, not 127.0.0.0/8
    ],
)
def test_an_endpoints_host_and_whether_only_this_machine_reaches_it(url, host, loopback):
    # zimg broker asks this of each --bind (keys or --insecure beyond loopback); the dashboard
    # asks is_loopback_host of its --http host.
    assert protocol.endpoint_host(url) == host
    assert protocol.is_loopback_endpoint(url) is loopback
