"""A batch's names for its inputs and outputs, made without a Path per input, are the ones
pathlib gives; outputs written by name in an open folder are atomic as with whole paths."""

from __future__ import annotations

import os
from pathlib import Path, PurePath
from typing import Any

import numpy as np
import pytest

from zimg._batch_files import input_paths, opened_folder, plan_outputs, stem_and_suffix
from zimg.images import write_atomic

TRICKY = [
    "a.jpg",
    "dir/a.jpg",
    "./a.jpg",
    "a//b.jpg",
    "/abs/x.png",
    "x/",
    "x/.",
    "x/./y.jpg",
    ".",
    "",
    "/",
    "..",
    "../a.b.c",
    ".hidden",
    "dir/.hidden.png",
    "a/..",
    "//net/a.jpg",
    "///a",
    "a b.jpg",
    "é.jpg",
    "a\\b.jpg",
    "a..b",
    "noext",
]


@pytest.mark.parametrize("given", TRICKY)
def test_input_paths_are_what_pathlib_writes(given: str) -> None:
    assert input_paths([given]) == [str(Path(given))]
    assert input_paths([Path(given)]) == [str(Path(given))]


@pytest.mark.parametrize("given", [p for p in TRICKY if p not in ("a.", ".a.", "...")])
def test_stem_and_suffix_are_pathlibs(given: str) -> None:
    path = input_paths([given])[0]
    assert stem_and_suffix(path) == (PurePath(path).stem, PurePath(path).suffix)


def test_a_trailing_dot_is_not_an_extension() -> None:
    # As Python 3.11's pathlib (3.14's calls "." a suffix): output names do not change with it.
    assert stem_and_suffix("a.") == ("a.", "")
    assert stem_and_suffix("d/.a.") == (".a.", "")
    assert stem_and_suffix("...") == ("...", "")


def test_plan_outputs_takes_strings_and_paths() -> None:
    assert plan_outputs(["x/a.png", Path("y/a.png"), "b"], Path("out")) == [
        "a_processed.png",
        "a-2_processed.png",
        "b_processed",
    ]


def test_write_atomic_by_name_in_an_open_folder(tmp_path: Path) -> None:
    (tmp_path / "old.jpg").write_bytes(b"old")
    os.chmod(tmp_path / "old.jpg", 0o600)
    with opened_folder(tmp_path) as fd:
        assert fd is not None
        write_atomic("new.jpg", np.frombuffer(b"new", dtype=np.uint8), new=True, dir_fd=fd)
        write_atomic("old.jpg", b"replaced", dir_fd=fd)
    assert (tmp_path / "new.jpg").read_bytes() == b"new"
    assert (tmp_path / "old.jpg").read_bytes() == b"replaced"
    assert (tmp_path / "old.jpg").stat().st_mode & 0o777 == 0o600  # the old mode stays
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new.jpg", "old.jpg"]


def test_write_atomic_by_name_cleans_up_on_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(*args: Any, **kwargs: Any) -> None:
        raise OSError("disk on fire")

    monkeypatch.setattr(os, "replace", fail)
    with opened_folder(tmp_path) as fd, pytest.raises(OSError, match="disk on fire"):
        write_atomic("out.jpg", b"data", dir_fd=fd)
    assert list(tmp_path.iterdir()) == []


def test_a_large_array_is_written_whole(tmp_path: Path) -> None:
    data = np.arange(3 << 20, dtype=np.uint32).view(np.uint8).reshape(-1, 4)[:, :2]  # strided
    with opened_folder(tmp_path) as fd:
        assert fd is not None
        write_atomic("a.bin", np.ascontiguousarray(data).reshape(-1), dir_fd=fd)
        write_atomic("b.bin", data, dir_fd=fd)
    assert (tmp_path / "a.bin").read_bytes() == data.tobytes()
    assert (tmp_path / "b.bin").read_bytes() == data.tobytes()
