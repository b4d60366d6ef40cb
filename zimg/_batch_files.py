"""A batch's files: the output names it plans, the temporary files workers write in ``path``
mode (checked before they are renamed or deleted), outputs written atomically, and the manifest
kept by ``--resume``."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from zimg import images
from zimg._errors import ImageError, ZimgError
from zimg.jobs import JobItem, JobRequest, JobResult


def input_paths(files: Iterable[str | os.PathLike[str]]) -> list[str]:
    """Each input as ``str(Path(f))``, the name the manifest gives it, without making a Path
    for the (usual) inputs that are written that way already: a Path costs microseconds, and
    this runs for every input."""
    paths: list[str] = []
    for f in files:
        path = f if type(f) is str else os.fspath(f)
        if not _as_pathlib_writes_it(path):
            path = str(Path(path))
        paths.append(path)
    return paths


def _as_pathlib_writes_it(path: str) -> bool:
    """Whether ``str(Path(path)) == path`` for sure (POSIX: pathlib drops empty and ``.``
    parts, so ``//``, ``./`` and a trailing ``/`` are rewritten). False when unsure."""
    return _POSIX and (
        path == "/"
        or (
            path != ""
            and "//" not in path
            and "/./" not in path
            and not path.startswith("./")
            and not path.endswith(("/", "/."))
        )
    )


_POSIX = os.name == "posix"


def stem_and_suffix(path: str) -> tuple[str, str]:
    """The last part of ``path`` (as :func:`input_paths` writes it) without its extension, and
    the extension: ``a/cat.tar.gz`` -> ``("cat.tar", ".gz")``. As ``PurePath.stem`` and
    ``.suffix`` in Python 3.11 (a leading or trailing dot is not an extension), whatever the
    Python: the output names of a batch must not change with it."""
    name = "" if path == "." else path.rpartition("/")[2] if _POSIX else Path(path).name
    dot = name.rfind(".")
    if 0 < dot < len(name) - 1:
        return name[:dot], name[dot:]
    return name, ""


def plan_outputs(
    files: Sequence[str | os.PathLike[str]], outdir: Path, *, taken: Iterable[str] = ()
) -> list[str]:
    """The output file name (in ``outdir``) of each input; inputs whose names collide (with
    each other or with a name in ``taken``) get ``-2``, ``-3``... suffixes. Names, not paths:
    one short string per input keeps a long batch's memory small (a hashed Path costs several
    times more)."""
    seen: set[str] = set(taken)
    planned: list[str] = []
    for f in files:
        stem, suffix = stem_and_suffix(f if type(f) is str else str(Path(f)))
        name = images.output_name(stem, suffix)
        n = 1
        while name in seen:
            n += 1
            name = images.output_name(f"{stem}-{n}", suffix)
        seen.add(name)
        planned.append(name)
    return planned


class Temporaries:
    """The temporary files workers write in ``path`` mode, next to their final names.

    A worker writes ``.<output name>.<batch token>.<node>-<pid>.tmp`` and reports it; the client
    renames the one it keeps (atomic), deletes duplicates, and sweeps leftovers (from workers that
    died mid-write) when the batch ends. A reported name that is not one of these is refused, so
    a worker cannot make the client rename or delete any other file.
    """

    def __init__(self, outdir: Path) -> None:
        self.outdir = outdir.resolve()
        self._dir = str(self.outdir)
        self.token = os.urandom(6).hex()  # secrets.token_hex(6), without its hmac

    def prefix(self, output_name: str) -> str:
        return os.path.join(self._dir, f".{output_name}.{self.token}")

    def _check(self, reported: str | None, output_name: str | None = None) -> str:
        # String operations, not Path: this runs for every image. A name that is not in
        # exactly the output directory, as prefix() wrote it, is refused.
        path = reported if isinstance(reported, str) else ""
        parent, name = os.path.split(path)
        stem = f".{output_name}.{self.token}." if output_name else "."
        if (
            parent != self._dir
            or not name.startswith(stem)
            or f".{self.token}." not in name
            or not name.endswith(".tmp")
        ):
            raise ImageError(f"the worker reported an unexpected output file {reported!r}")
        return path

    def keep(self, reported: str | None, output_name: str, final: str) -> None:
        os.replace(self._check(reported, output_name), final)

    def discard(self, request: JobRequest, result: JobResult, names: Sequence[str]) -> None:
        """Delete the temporary files of a duplicate answer, each checked against its item."""
        for position, item in enumerate(request.items):
            with contextlib.suppress(ZimgError, OSError):
                os.unlink(self._check(result.item(position).output, names[item.index]))

    def sweep(self) -> None:
        for leftover in self.outdir.glob(f".*.{self.token}.*.tmp"):
            with contextlib.suppress(OSError):
                leftover.unlink()


def keep_done(manifest_path: Path, paths: Sequence[str | os.PathLike[str]]) -> dict[str, str]:
    """Rewrite the manifest with only the lines of inputs in ``paths`` that are done (no
    error, output present), one per input; return ``{input: output file name}`` for them.

    A line that is not JSON (the last one, cut short by a kill) is dropped. The rewrite is
    atomic, so an interrupted resume leaves the old manifest or the new one.
    """
    wanted = {str(path) for path in paths}
    kept: dict[str, str] = {}
    lines: list[str] = []
    try:
        with open(manifest_path, encoding="utf-8") as f:
            for line in f:
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                if not isinstance(entry, dict):
                    continue
                source, output = entry.get("input"), entry.get("output")
                if (
                    entry.get("error") is None
                    and isinstance(source, str)
                    and isinstance(output, str)
                    and source in wanted
                    and source not in kept
                    and os.path.isfile(manifest_path.parent / os.path.basename(output))
                ):
                    kept[source] = os.path.basename(output)
                    lines.append(line if line.endswith("\n") else line + "\n")
    except FileNotFoundError:
        return kept
    images.write_atomic(manifest_path, "".join(lines).encode("utf-8"))
    return kept


def write_output(
    output: str,
    payload: np.ndarray[Any, Any],
    item: JobItem,
    mode: str,
    new: bool,
    *,
    dir_fd: int | None = None,
) -> None:
    if mode == "raw":
        payload = images.encode(payload, item.ext, name=item.name)
    images.write_atomic(output, payload, new=new, dir_fd=dir_fd)


# os.replace takes src_dir_fd and dst_dir_fd where os.rename does (it is not listed itself).
_DIR_FDS = {os.open, os.rename, os.unlink, os.stat} <= os.supports_dir_fd


@contextlib.contextmanager
def opened_folder(folder: Path) -> Iterator[int | None]:
    """``folder`` opened, for the block, to write into it by name (``dir_fd``); None where
    the system cannot, or the folder cannot be opened (the writes then use whole paths)."""
    fd = None
    if _DIR_FDS:
        with contextlib.suppress(OSError):
            fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0))
    try:
        yield fd
    finally:
        if fd is not None:
            os.close(fd)


def input_size(path: str) -> int:
    """The file's size, or 0 if it cannot be read (the worker reports why)."""
    try:
        return os.stat(path).st_size
    except OSError:
        return 0
