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
