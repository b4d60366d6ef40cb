"""Certificate files and their directories get fixed modes, whatever the umask.

With a umask of 000, ``NAME.key`` used to be created 0666 (anyone could swap the public key a
broker admits, or the broker's key its nodes trust) and directories 0777.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from zimg.cli import app
from zimg.security import create_keys, load_keypair, load_public_key

runner = CliRunner()


@pytest.fixture(params=[0o000, 0o022, 0o077], ids=["umask000", "umask022", "umask077"])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


@pytest.fixture
def umask000() -> Iterator[None]:
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_public_key_is_0644_and_secret_0600_whatever_the_umask(tmp_path: Path, umask: int) -> None:
    public, secret = create_keys("n1", tmp_path)
    assert _mode(public) == 0o644
    assert _mode(secret) == 0o600
    assert load_keypair(secret)[0] == load_public_key(public)


def test_directories_made_for_keys_are_not_writable_by_others(
    tmp_path: Path, umask000: None
) -> None:
    create_keys("n1", tmp_path / "a" / "b")
    for folder in (tmp_path / "a", tmp_path / "a" / "b"):
        assert _mode(folder) == 0o755, folder


def test_an_authorized_key_is_0644_in_a_0755_directory(tmp_path: Path, umask000: None) -> None:
    public, _ = create_keys("n1", tmp_path / "nodes")
    result = runner.invoke(
        app, ["keys", "authorize", str(public), "--dir", str(tmp_path / "broker")]
    )
    assert result.exit_code == 0, result.output
    target = tmp_path / "broker" / "authorized" / "n1.key"
    assert target.read_bytes() == public.read_bytes()
    assert _mode(target) == 0o644
    assert _mode(target.parent) == 0o755
    assert _mode(tmp_path / "broker") == 0o755
    assert sorted(p.name for p in target.parent.iterdir()) == ["n1.key"]  # no temporary left


def test_a_secret_certificate_under_a_public_name_is_not_authorized(tmp_path: Path) -> None:
    _, secret = create_keys("n1", tmp_path / "nodes")
    disguised = tmp_path / "n1.key"
    disguised.write_bytes(secret.read_bytes())
    result = runner.invoke(
        app, ["keys", "authorize", str(disguised), "--dir", str(tmp_path / "broker")]
    )
    assert result.exit_code == 2
    assert "secret key" in result.output
    assert not (tmp_path / "broker" / "authorized" / "n1.key").exists()


def test_an_existing_certificate_is_never_overwritten(tmp_path: Path) -> None:
    public, secret = create_keys("n1", tmp_path)
    before = (public.read_bytes(), secret.read_bytes())
    result = runner.invoke(app, ["keys", "new", "n1", "--dir", str(tmp_path)])
    assert result.exit_code == 2
    assert (public.read_bytes(), secret.read_bytes()) == before
