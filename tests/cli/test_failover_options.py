"""`zimg broker --primary/--backup` options: inconsistent ones are usage errors (exit code 2)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from zimg.cli import app

runner = CliRunner()
A, B = "tcp://127.0.0.1:47556", "tcp://127.0.0.1:47557"


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--primary", "--backup", "--peer", A, "--peer-bind", B], "not both"),
        (["--primary", "--peer", A], "--peer-bind"),
        (["--backup", "--peer-bind", B], "--peer"),
        (["--peer", A, "--peer-bind", B], "need --primary or --backup"),
        (["--failover-timeout", "2"], "need --primary or --backup"),
        (["--primary", "--peer", "10.0.0.2:5556", "--peer-bind", B], "tcp://10.0.0.2:5556"),
        # The peer link on a public address needs keys, as the node endpoint does.
        (["--primary", "--peer", A, "--peer-bind", "tcp://0.0.0.0:5556"], "--insecure"),
    ],
)
def test_inconsistent_failover_options_are_usage_errors(args: list[str], fragment: str) -> None:
    result = runner.invoke(app, ["broker", "--bind", "tcp://127.0.0.1:0", *args])
    assert result.exit_code == 2, result.output
    assert fragment in result.output


def test_broker_help_documents_the_pair() -> None:
    result = runner.invoke(app, ["broker", "--help"], env={"COLUMNS": "200"})
    for option in ("--primary", "--backup", "--peer", "--peer-bind", "--failover-timeout"):
        assert option in result.output


def test_node_commands_take_a_pair_of_endpoints() -> None:
    for command, option in (("worker", "--connect"), ("send", "--broker"), ("nodes", "--broker")):
        result = runner.invoke(app, [command, "--help"], env={"COLUMNS": "200"})
        assert "separated by a comma" in result.output, (command, option)
    bad = runner.invoke(app, ["nodes", "--broker", f"{A},localhost:5"])
    assert bad.exit_code == 2
    assert "tcp://localhost:5" in bad.output
