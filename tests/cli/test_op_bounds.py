"""``zimg send`` refuses a pipeline a worker would refuse, up front (exit code 2), before it
connects to any broker (issue 12: bounded op params and op counts)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from zimg.cli import app

runner = CliRunner()
NO_BROKER = "tcp://127.0.0.1:9"  # nothing listens: a usage error must come first


@pytest.mark.parametrize(
    ("ops", "fragment"),
    [
        (["label:color=" + "/".join(["1"] * 17)], "has 17 entries, over the limit of 16"),
        (["label:text=" + "t" * 300], "a string of 300 characters, over the limit of 256"),
        (["threshold:" + ",".join(f"k{i}=1" for i in range(17))], "17 params"),
        (["threshold"] * 33, "a pipeline has at most 32 ops, got 33"),
    ],
    ids=["long-list", "long-text", "many-params", "many-ops"],
)
def test_send_refuses_an_out_of_bounds_pipeline_with_exit_code_2(tmp_path, samples, ops, fragment):
    args = ["send", "--broker", NO_BROKER, "-o", str(tmp_path), str(samples / "coins.png")]
    for text in ops:
        args += ["--op", text]
    result = runner.invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 2, result.output
    assert fragment in " ".join(result.output.split())


def _never_connect(*args: object, **kwargs: object) -> None:
    raise AssertionError("a usage error must come before any connection")


BAD_VALUES = pytest.mark.parametrize(
    ("text", "words"),
    [
        ("threshold:thresh=abc", ["threshold", "thresh", "finite number", "'abc'"]),
        ("blur:ksize=4", ["blur", "ksize", "odd", "[1, 255]", "got 4"]),
        ("resize", ["resize", "width, height or scale"]),
        ("label:scale=-2", ["label", "scale", "[0, 1000]", "got -2"]),
    ],
    ids=["threshold", "blur", "resize", "label"],
)


@BAD_VALUES
def test_send_refuses_a_bad_op_value_before_connecting(tmp_path, samples, monkeypatch, text, words):
    monkeypatch.setattr("zimg.connection.Connection", _never_connect)
    args = ["send", "--broker", NO_BROKER, "-o", str(tmp_path), str(samples / "coins.png")]
    result = runner.invoke(app, [*args, "--op", text], catch_exceptions=False)
    assert result.exit_code == 2, result.output
    line = " ".join(result.output.split())
    assert all(word in line for word in words), line
    assert "Traceback" not in result.output
    assert not list(tmp_path.iterdir())


@BAD_VALUES
def test_run_refuses_a_bad_op_value_before_starting_a_cluster(
    tmp_path, samples, monkeypatch, text, words
):
    monkeypatch.setattr("zimg.cli.batches.run_local", _never_connect)
    args = ["run", "-o", str(tmp_path), str(samples / "coins.png"), "--op", text]
    result = runner.invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 2, result.output
    assert all(word in " ".join(result.output.split()) for word in words)
