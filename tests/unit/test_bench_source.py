"""The benchmark records which commit it measured."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

import zimg
from zimg.bench._common import source_revision

ROOT = Path(zimg.__file__).resolve().parents[1]


def git(*args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=True, timeout=10
    ).stdout.strip()


@pytest.mark.skipif(not (ROOT / ".git").exists(), reason="not a git checkout")
def test_source_revision_is_the_checked_out_commit_and_says_if_the_tree_differs():
    head = git("rev-parse", "--short", "HEAD")
    changed = bool(git("status", "--porcelain", "--untracked-files=no"))
    assert source_revision() == (f"{head}+changes" if changed else head)
