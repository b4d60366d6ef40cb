"""``zimg send`` draws its progress bar, and imports rich, only when the bar is seen: in a
terminal, for more than one input. Without a terminal it prints the same summary as plain text."""

from __future__ import annotations

import io
import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.cli.heavy import heavy_modules_after
from tests.reference import copies, manifest
from zimg.cli._output import plain_table

pytestmark = pytest.mark.timeout(120)

COLUMNS = [("node", False), ("jobs", True), ("errors", True), ("mean ms", True), ("share", True)]


def test_the_plain_table_is_the_one_rich_draws_into_a_file() -> None:
    from rich.console import Console
    from rich.table import Table

    rows = [["w0", "1", "0", "0.0", "100%"], ["a-long-name", "1234567", "12", "10.5", "50%"]]
    table = Table(title="per node")
    for name, right in COLUMNS:
        table.add_column(name, justify="right" if right else "left")
    for row in rows:
        table.add_row(*row)
    out = io.StringIO()
    Console(file=out, soft_wrap=True, emoji=False).print(table)
    assert plain_table("per node", COLUMNS, rows) + "\n" == out.getvalue()


def test_the_plain_table_shows_control_characters_as_escapes() -> None:
    drawn = plain_table("per node", COLUMNS, [["n\x1b[2J", "1", "0", "0.0", "100%"]])
    assert "\x1b" not in drawn
    assert "n\\x1b[2J" in drawn


def test_an_empty_table_has_its_headings() -> None:
    assert "┃ node ┃ jobs ┃ errors ┃ mean ms ┃ share ┃" in plain_table("per node", COLUMNS, [])


def test_send_without_a_terminal_prints_plain_text_and_imports_no_rich(
    procs, ipc_url, tmp_path: Path, samples: Path
) -> None:
    procs.broker(ipc_url)
    procs.worker(ipc_url, "n1")
    files = copies(samples / "chelsea.jpg", tmp_path / "in", 3)
    for inputs in (files[:1], files):
        out = tmp_path / f"out{len(inputs)}"
        loaded = heavy_modules_after(
            "send", "--broker", ipc_url, "-o", str(out), "--timeout", "60", *map(str, inputs)
        )
        assert "rich" not in loaded
        assert "zmq" in loaded  # it did send
        assert sorted(e["input"] for e in manifest(out)) == sorted(map(str, inputs))


def _in_a_terminal(cmd: list[str], timeout_s: float) -> tuple[int, str]:
    """Run ``cmd`` with its stdout and stderr on a pseudo-terminal; its exit code and output."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=follower, stderr=follower)
    os.close(follower)
    chunks = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], deadline - time.monotonic())
            if not ready:
                break
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: every copy of the follower is closed, the process ended
                break
            if not chunk:
                break
            chunks.append(chunk)
        code = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        os.close(leader)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return code, b"".join(chunks).decode(errors="replace")


def test_send_in_a_terminal_draws_the_bar_and_the_rich_table(
    procs, ipc_url, tmp_path: Path, samples: Path
) -> None:
    procs.broker(ipc_url)
    procs.worker(ipc_url, "n1")
    files = copies(samples / "chelsea.jpg", tmp_path / "in", 3)
    code = (
        "import sys\n"
        "from zimg.cli import main\n"
        f"sys.argv = ['zimg', 'send', '--broker', {ipc_url!r}, '-o', {str(tmp_path / 'out')!r},"
        f" '--timeout', '60', *{list(map(str, files))!r}]\n"
        "try:\n"
        "    main()\n"
        "finally:\n"
        "    print('rich loaded:', 'rich.progress' in sys.modules)\n"
    )
    exit_code, output = _in_a_terminal([sys.executable, "-c", code], timeout_s=90)
    assert exit_code == 0, output
    assert "processing" in output  # the bar's description
    assert "rich loaded: True" in output
    assert "per node" in output
    assert len(manifest(tmp_path / "out")) == 3
