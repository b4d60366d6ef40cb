"""Shared fixtures: short ipc paths, reaped subprocesses, sample inputs."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from zimg.testing import Processes, free_tcp_url

SAMPLES = Path(__file__).resolve().parent.parent / "zimg" / "samples"


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A short temporary directory: ipc:// paths must stay under ~100 characters."""
    path = Path(tempfile.mkdtemp(prefix="zt-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def ipc_url(short_tmp: Path) -> str:
    return f"ipc://{short_tmp}/broker"


@pytest.fixture
def tcp_url() -> str:
    return free_tcp_url()


@pytest.fixture
def procs(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Processes]:
    """Start zimg subprocesses; all are reaped at teardown, and their logs shown on failure."""
    group = Processes(tmp_path / "logs")
    yield group
    group.stop_all()
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        print(group.output())


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    rep = yield
    setattr(item, f"rep_{rep.when}", rep)
    return rep


@pytest.fixture
def samples() -> Path:
    return SAMPLES
