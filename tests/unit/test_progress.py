"""Unit tests for zimg._progress: the bar behind distribute(progress=True)."""

from __future__ import annotations

from zimg._progress import with_progress


def test_with_progress_yields_the_items_unchanged_and_draws_a_finished_bar(capsys):
    assert list(with_progress(iter(["a", "b", "c"]), 3, "distribute")) == ["a", "b", "c"]

    out = capsys.readouterr().out
    assert "distribute" in out
    assert "100%" in out


def test_with_progress_ends_the_bar_when_the_caller_stops_early(capsys):
    items = with_progress(iter(range(10)), None, "distribute")
    assert next(items) == 0
    items.close()  # the bar's context exits: no live display is left running

    assert "distribute" in capsys.readouterr().out
