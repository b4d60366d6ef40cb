"""Names and texts that come from outside (files, workers, the broker) are printed literally.

rich reads '[...]' as markup: a file named 'a[/b].png' used to crash the summary with a
MarkupError (and no grid was written), and '[bold]x[/bold]' or a worker's error text could
restyle or hide what the terminal shows. A closing tag holds a '/', so the paths below that carry
one go through a directory whose name ends with '['.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tests.reference import manifest
from zimg.batch import BatchReport, NodeSummary
from zimg.cli import _output, app, batches

runner = CliRunner()

HOSTILE_ERROR = "[/red]boom [link=http://evil.test]click[/link] :skull: \x1b[2J\u202eend"


def invoke(*args: str) -> Any:
    return runner.invoke(app, list(args), catch_exceptions=False)


@pytest.mark.timeout(120)
def test_run_with_a_missing_bracketed_file_finishes_and_writes_the_grid(
    tmp_path: Path, samples: Path
) -> None:
    ok = tmp_path / "ok.jpg"
    shutil.copyfile(samples / "chelsea.jpg", ok)
    missing = tmp_path / "a[/b].png"  # a missing file "b].png" in a missing directory "a["
    (tmp_path / "g[").mkdir()
    grid = tmp_path / "g[/b].png"
    out = tmp_path / "out[/i]"
    result = invoke("run", str(ok), str(missing), "-o", str(out), "--grid", str(grid))
    assert result.exit_code == 1, result.output  # one input failed
    assert "MarkupError" not in result.output
    assert str(missing) in result.output  # in the failure line, literally
    assert f"manifest: {out / 'manifest.jsonl'}" in result.output
    assert f"grid: {grid}" in result.output
    assert grid.exists()
    entries = {e["input"]: e for e in manifest(out)}
    assert entries[str(ok)]["error"] is None
    assert entries[str(missing)]["error"] is not None


@pytest.mark.timeout(120)
def test_markup_in_a_file_name_is_not_interpreted(tmp_path: Path) -> None:
    (tmp_path / "[bold]x[").mkdir()
    bad = tmp_path / "[bold]x[/bold].png"
    bad.write_bytes(b"<html>not an image</html>")  # the worker's error text names it
    result = invoke("run", str(bad), "-o", str(tmp_path / "out"))
    assert result.exit_code == 1, result.output
    assert "[bold]x[/bold].png" in result.output


def _fake_report(tmp_path: Path) -> BatchReport:
    nodes = {
        "[bold]n1[/bold]": NodeSummary(jobs=1, errors=1, total_ms=5.0),
        "n2[/]": NodeSummary(jobs=1, errors=0, total_ms=5.0),
    }
    return BatchReport(
        manifest=tmp_path / "manifest.jsonl",
        count=2,
        failed=1,
        failures=[{"error": HOSTILE_ERROR, "node": "[bold]n1[/bold]", "output": None}],
        per_node=nodes,
        elapsed_s=0.1,
    )


def _assert_hostile_error_shown_literally(output: str) -> None:
    assert "[/red]boom [link=http://evil.test]click[/link] :skull: " in output
    assert "\x1b" not in output  # the escape sequence is shown, not sent to the terminal
    assert "\\x1b[2J" in output
    assert "\u202e" not in output  # nor a right-to-left override that reorders the line
    assert "\\u202eend" in output


def test_node_names_and_worker_errors_are_shown_literally(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As a rogue worker (or broker) could report them.
    monkeypatch.setattr(batches, "run_local", lambda *args, **kwargs: _fake_report(tmp_path))
    result = invoke("run", str(tmp_path / "any.png"), "-o", str(tmp_path))
    assert result.exit_code == 1, result.output
    assert "[bold]n1[/bold]" in result.output
    assert "n2[/]" in result.output
    _assert_hostile_error_shown_literally(result.output)


def test_nodes_shows_what_the_broker_reports_literally(monkeypatch: pytest.MonkeyPatch) -> None:
    from zimg import nodes_query

    report = {
        "nodes": [
            {
                "name": "[bold]w1[/bold]",
                "role": "[/]worker",
                "capacity": "[red]2",
                "active": 0,
                "done": 3,
                "last_seen_s": 0.5,
            }
        ],
        "queued": "[blink]7[/blink]",
    }
    monkeypatch.setattr(nodes_query, "query_nodes", lambda *args, **kwargs: report)
    monkeypatch.setattr(_output.rich_console(), "_width", 200)  # room for every column, unwrapped
    result = invoke("nodes", "--broker", "tcp://127.0.0.1:1")
    assert result.exit_code == 0, result.output
    for text in ("[bold]w1[/bold]", "[/]worker", "[red]2", "queued jobs: [blink]7[/blink]"):
        assert text in result.output


def test_error_messages_are_shown_literally(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from zimg._errors import ZimgError

    def fail(*args: object, **kwargs: object) -> None:
        raise ZimgError(HOSTILE_ERROR)

    monkeypatch.setattr(batches, "run_local", fail)
    result = invoke("run", str(tmp_path / "any.png"), "-o", str(tmp_path))
    assert result.exit_code == 1, result.output
    assert "error: [/red]boom" in result.output
    _assert_hostile_error_shown_literally(result.output)


def test_paths_printed_by_grid_are_literal(tmp_path: Path, samples: Path) -> None:
    (tmp_path / "[red]g[").mkdir()
    target = tmp_path / "[red]g[/red]:skull:.png"  # and no emoji either
    result = invoke("grid", str(samples / "coins.png"), "-o", str(target))
    assert result.exit_code == 0, result.output
    assert f"grid: {target}" in result.output
