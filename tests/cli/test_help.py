"""How the help reads at 80 columns, `-h` and `--version` (issue 15 §2 item 9)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from tests.cli.heavy import heavy_modules_after
from zimg.cli import app

COMMANDS = [
    [],
    ["broker"],
    ["worker"],
    ["send"],
    ["run"],
    ["nodes"],
    ["dashboard"],
    ["fetch"],
    ["grid"],
    ["demo"],
    ["keys"],
    ["keys", "new"],
    ["keys", "authorize"],
]


def help_at_80(*args: str) -> str:
    result = CliRunner().invoke(
        app, [*args, "--help"], env={"COLUMNS": "80"}, catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_help_shows_no_python_types(command: list[str]) -> None:
    text = help_at_80(*command)
    assert "<bool>" not in text
    assert "<list[" not in text
    # options name what they take (URL, N, FILE...), not typer's <str> or <int range>
    assert not re.search(r"<(str|int|float|path|int range|float range)>", text), text
    assert max(map(len, text.splitlines())) <= 80


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_dash_h_is_help(command: list[str]) -> None:
    result = CliRunner().invoke(app, [*command, "-h"], env={"COLUMNS": "80"})
    assert result.exit_code == 0
    assert result.output == help_at_80(*command)


@pytest.mark.parametrize("command", ["worker", "send", "nodes", "broker"])
def test_default_endpoint_is_shown_whole(command: str) -> None:
    text = help_at_80(command)
    assert "tcp://127.0.0.1:5555]" in text


@pytest.mark.parametrize("flag", ["--version", "-V"])
def test_version(flag: str) -> None:
    from importlib.metadata import version

    result = CliRunner().invoke(app, [flag])
    assert result.exit_code == 0
    assert result.output == f"zimg {version('zimg')}\n"


def test_version_without_metadata(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.metadata

    def missing(name: str) -> str:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", missing)
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.startswith("zimg unknown")


def test_version_imports_nothing_heavy() -> None:
    assert heavy_modules_after("--version") == []


def test_every_just_recipe_has_a_doc_comment() -> None:
    """`just --list` shows the comment right above a recipe; `default` had none."""
    from pathlib import Path

    lines = (Path(__file__).parents[2] / "Justfile").read_text().splitlines()
    recipes = [i for i, line in enumerate(lines) if re.match(r"^[a-z][\w-]*( [^:]*)?:", line)]
    assert recipes
    for i in recipes:
        assert lines[i - 1].startswith("# "), lines[i]


def _run_zimg_in(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``script``, then ``zimg.cli.run()`` (the console script's entry point) with ``args``."""
    code = f"import sys\nfrom zimg.cli import run\n{script}\n"
    code += f"sys.argv = ['zimg', *{list(args)!r}]\nrun()\n"
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )


def test_the_entry_point_leaves_without_tearing_the_interpreter_down() -> None:
    script = (
        "import atexit\n"
        "atexit.register(lambda: print('exit functions ran'))\n"
        "class Noisy:\n"
        "    def __del__(self):\n"
        "        print('torn down')\n"
        "kept = Noisy()\n"
    )
    done = _run_zimg_in(script, "--version")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("zimg ")
    assert "exit functions ran" in done.stdout  # flushed before leaving
    assert "torn down" not in done.stdout  # module globals are not freed one by one


def test_the_entry_point_keeps_exit_codes_and_messages() -> None:
    done = _run_zimg_in("", "send", "/nonexistent/a.jpg")
    assert done.returncode == 1
    assert "none of the 1 inputs exist" in done.stderr
    assert _run_zimg_in("", "send", "--no-such-option").returncode == 2


def test_the_entry_point_waits_for_a_thread_that_is_not_a_daemon() -> None:
    script = (
        "import threading\n"
        "go = threading.Event()\n"
        "threading.Thread(target=lambda: (go.wait(30), print('thread done'))).start()\n"
        "threading.Timer(0.2, go.set).start()\n"
    )
    done = _run_zimg_in(script, "--version")
    assert done.returncode == 0, done.stderr
    assert "thread done" in done.stdout
