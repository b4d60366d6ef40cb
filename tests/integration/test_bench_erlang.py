"""The Erlang/OTP peer of the actor benchmark runs, where ``erl`` is installed, and leaves nothing.

Debian/Ubuntu: ``apt-get install erlang-base``. CI does not install it, so this skips there.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from zimg.bench import actor_figures, actors, erlang
from zimg.bench._common import Timings

pytestmark = [
    pytest.mark.skipif(erlang.missing() is not None, reason="erl/erlc not installed"),
    pytest.mark.timeout(60),
]


def _beams_under(where: Path) -> list[str]:
    """Command lines of live processes that name ``where`` (our nodes' code path)."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if str(where) in cmdline:
                found.append(cmdline)
    return found


def test_the_peer_measures_both_figures_and_stops_both_nodes(tmp_path: Path) -> None:
    assert shutil.which("erl") is not None
    cfg = actor_figures.make_config(quick=True, rounds=50, messages=500, spawns=1)
    erl = actors.run_erlang(cfg, str(tmp_path), Timings())
    assert isinstance(erl, actor_figures.ErlangResults), erl
    assert erl.rtt.rounds == 50
    assert erl.rtt.p50_us > 0
    assert erl.one_way.messages == 500
    assert erl.one_way.per_s > 0
    assert _beams_under(tmp_path) == []
    assert not list(tmp_path.rglob("erl_crash.dump"))
