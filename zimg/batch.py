"""A batch of image files through the job path: outputs, ``manifest.jsonl`` and a per-node summary.

This is what ``zimg send``, ``zimg run`` and ``zimg demo`` share. Files that cannot be read are
recorded as errors without being sent; every input gets exactly one manifest line. A resumed batch
(``BatchOptions.resume``) skips the inputs the manifest records as done.
"""

from __future__ import annotations

import bisect
import json
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from zimg import images, ops
from zimg._batch_files import (
    Temporaries,
    input_paths,
    input_size,
    keep_done,
    opened_folder,
    plan_outputs,
    stem_and_suffix,
    write_output,
)
from zimg._errors import ImageError, ZimgError
from zimg._manifest import line as manifest_line
from zimg._progress import progress_bar
from zimg.distribute import DEFAULT_WINDOW, Completed, JobClient, JobTarget
from zimg.jobs import MAX_ITEMS, JobItem, JobRequest, PayloadMode

MANIFEST_NAME = "manifest.jsonl"
# A path job's input bytes stand for its work. Every job costs the sending process (which hosts
# an embedded cluster's broker) several thread wake-ups; at 2 MiB instead of 512 KiB, set A's
# 1080p jobs hold 5 images instead of 2, and that process's CPU per image fell by a quarter
# (docs/performance-notes.md). Guided sizes still end a batch with one-image jobs.
PATH_JOB_BYTES = 2 << 20
# An encoded job carries its files' bytes: 32 small images, or a few larger ones.
ENCODED_JOB_BYTES = 512 << 10


@dataclass(slots=True)
class BatchOptions:
    """How to run a batch.

    Attributes:
        outdir: where outputs and the manifest go (created if needed).
        pipeline: the ops to apply.
        mode: ``encoded`` (ship file bytes; workers decode and encode), ``raw`` (ship arrays),
            or ``path`` (workers read and write the files: same filesystem, ``--allow-paths``).
        window: jobs in flight at once.
        max_pixels: larger images are refused.
        idle_timeout_s: fail the rest of the batch if no result comes for this long.
        job_bytes: small files are grouped into one job until their input bytes reach this
            (measured: per-message costs are then paid once for several images). None: 512 KiB,
            or 2 MiB in ``path`` mode, where the bytes stay on disk and only stand for the
            work (decoding time grows with them): about five 1080p JPEGs, 80 ms of work.
        job_items: the most images in one job; None: 8 in ``path`` mode, 32 in ``encoded``
            mode (small images share a job until ``job_bytes``: the fixed cost of a message is
            paid once for all of them; 32 of 16 KB, where 16 left a fifth of the sender's CPU
            per image in per-job costs), 1 in ``raw`` mode (an array is large already).
            The default is also *guided* (see :func:`group_items`): a job takes at most a
            fraction of the images still to come, so the last jobs hold one image each; a
            ``job_items`` set here is used as given.
            A job whose workers kept dying is split, and each image tried again on its own, so
            one poison image cannot take its neighbours down.
        workers: how many workers will run the batch, when the caller knows (an embedded
            cluster does). Guided jobs then take at most 1/(2 x workers) of the images still
            to come (the classic "factoring" rule); None: 1/8.
        resume: skip the inputs that ``outdir``'s manifest records as done (no error, and the
            output it names is there), keep their lines, and append the others' (see
            :func:`run_batch`). False: every input is done again and the manifest rewritten.
    """

    outdir: Path
    pipeline: Sequence[ops.OpSpec] = ops.DEFAULT_PIPELINE
    mode: PayloadMode = "encoded"
    window: int = DEFAULT_WINDOW
    max_pixels: int = images.DEFAULT_MAX_PIXELS
    idle_timeout_s: float | None = None
    job_bytes: int | None = None
    job_items: int | None = None
    workers: int | None = None
    resume: bool = False

    def bytes_per_job(self) -> int:
        """Input bytes after which a job is closed, for this mode."""
        if self.job_bytes is not None:
            return self.job_bytes
        return PATH_JOB_BYTES if self.mode == "path" else ENCODED_JOB_BYTES

    def guided_spread(self) -> int | None:
        """A job takes at most 1/this of the images still to come; None: not guided."""
        if self.job_items is not None:
            return None
        return 2 * self.workers if self.workers else GUIDED_SPREAD

    def items_per_job(self) -> int:
        """The most images in one job, for this mode."""
        if self.job_items is not None:
            return max(1, min(self.job_items, MAX_ITEMS))
        return _ITEMS_PER_JOB[self.mode]


@dataclass(slots=True)
class NodeSummary:
    """What one node did in a batch."""

    jobs: int = 0
    errors: int = 0
    total_ms: float = 0.0


# Images per job when ``job_items`` is not set. In encoded mode only images under 16 KiB reach
# 32 before ENCODED_JOB_BYTES; for the 4,000 small JPEGs of python -m zimg.bench.throughput
# (about 16 KB each), 16 instead of 8 halved the jobs (277, not 521) and cut the sender's CPU
# per image by 14%, and 32 within 512 KiB instead of 16 within 256 KiB made 157 jobs, not 277,
# and cut it by 12-23% (docs/decisions.md, "Jobs").
_ITEMS_PER_JOB: dict[str, int] = {"path": 8, "encoded": 32, "raw": 1}
MAX_KEPT_FAILURES = 1000
# The manifest is flushed at least this often, and at the end (a flush per line was a system
# call per image).
MANIFEST_FLUSH_S = 0.25
# A job takes at most this fraction (1/8) of the images still to come: jobs shrink to one image
# over the last 8, so that no worker runs a large last job while the others idle. When the
# number of workers is known, 2 x workers instead: with 2 workers, 1/4 still ends with one-image
# jobs, needs 21 jobs for set A instead of 29, and took 0.5-1.3% less time (performance-notes).
GUIDED_SPREAD = 8


@dataclass(slots=True)
class BatchReport:
    """The outcome of a batch. Its size does not grow with the batch: entries are in the
    manifest, and only the first ``MAX_KEPT_FAILURES`` failures are kept here.

    Attributes:
        manifest: the manifest file, one JSON line per input.
        count: inputs done.
        failed: inputs that ended with an error.
        failures: the first failed entries.
        per_node: what each node did.
        elapsed_s: wall time of the batch.
        duplicates: answers that came twice (ignored).
        skipped: inputs not done again because the manifest recorded them as done (resume);
            their lines are kept in the manifest and not counted in ``count``.
    """

    manifest: Path
    count: int = 0
    failed: int = 0
    failures: list[dict[str, Any]] = field(default_factory=list)
    per_node: dict[str, NodeSummary] = field(default_factory=dict)
    elapsed_s: float = 0.0
    duplicates: int = 0
    skipped: int = 0

    def entries(self) -> list[dict[str, Any]]:
        """Every manifest entry, read back from the manifest file."""
        with open(self.manifest, encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]

    def outputs(self) -> list[Path]:
        """The output files written, in the order of the inputs (read from the manifest)."""
        done = sorted((e["index"], e["output"]) for e in self.entries() if e["output"])
        return [Path(output) for _, output in done]


def run_batch(
    connection: JobTarget,
    files: Sequence[str | os.PathLike[str]],
    options: BatchOptions,
    *,
    on_entry: Callable[[dict[str, Any]], None] | None = None,
    on_skipped: Callable[[int], None] | None = None,
    progress: bool = False,
) -> BatchReport:
    """Process ``files`` through the broker that ``connection`` is joined to.

    Args:
        connection: a started node (:class:`~zimg.node.Node`, a local cluster) or its
            :class:`~zimg.distribute.JobRouter`; a bare :class:`~zimg.connection.Connection`
            gets a new router, so it can be given to one batch only.
        files: image paths.
        options: see :class:`BatchOptions`.
        on_entry: called with each manifest entry as it is written (for progress display).
        on_skipped: with ``options.resume``, called once before any job with the number of
            inputs skipped as done.
        progress: show a rich progress bar as inputs finish: in place in a terminal, and in
            Jupyter as a widget (with ``ipywidgets``, from the ``notebook`` extra).

    With ``options.resume``, an input is skipped when a line of ``outdir``'s manifest has its
    path (as given, ``str(path)``), no error, and an output file that is still there. Those
    lines are kept (a last line cut short by a kill is dropped); the lines of every other input
    are dropped and written anew, so the manifest still has exactly one line per input.

    Returns:
        The report; ``report.failed`` counts inputs that ended with an error.
    """
    if progress:
        return _run_batch_with_bar(connection, files, options, on_entry, on_skipped)
    paths = input_paths(files)  # str(Path(f)) for each, as the manifest names it
    outdir = options.outdir
    outdir.mkdir(parents=True, exist_ok=True)
    # An empty output folder (the usual case): no output replaces a file, so none needs the
    # old file's mode looked up (a system call per image).
    with os.scandir(outdir) as entries:
        fresh = next(entries, None) is None
    manifest_path = outdir / MANIFEST_NAME
    todo: list[int] | None = None  # None: every input, in order
    if options.resume:
        kept = keep_done(manifest_path, paths)
        todo = [i for i, path in enumerate(paths) if path not in kept]
        names = [""] * len(paths)  # skipped inputs write nothing
        planned = plan_outputs([paths[i] for i in todo], outdir, taken=kept.values())
        for i, name in zip(todo, planned, strict=True):
            names[i] = name
        if on_skipped is not None:
            on_skipped(len(paths) - len(todo))
    else:
        names = plan_outputs(paths, outdir)
    wire_ops = [spec.to_wire() for spec in options.pipeline]
    temporaries = Temporaries(outdir) if options.mode == "path" else None
    out_prefix = "" if str(outdir) == "." else str(outdir)  # as `outdir / name` would write
    client = JobClient(
        connection,
        window=options.window,
        on_duplicate=(
            (lambda request, result: temporaries.discard(request, result, names))
            if temporaries is not None
            else None
        ),
    )
    report = BatchReport(manifest=manifest_path)
    report.skipped = 0 if todo is None else len(paths) - len(todo)
    per_node = report.per_node
    started = time.perf_counter()
    with (
        # Outputs are written by their names in the folder: the kernel looks it up once.
        opened_folder(outdir) as out_fd,
        open(manifest_path, "a" if options.resume else "w", encoding="utf-8") as manifest,
    ):
        flushed_at = time.monotonic()
        write_line = manifest.write

        def record(entry: dict[str, Any]) -> None:
            """One manifest line, and the report's counts."""
            nonlocal flushed_at
            write_line(manifest_line(entry))
            now = time.monotonic()
            if now - flushed_at > MANIFEST_FLUSH_S:
                manifest.flush()
                flushed_at = now
            report.count += 1
            error, node = entry["error"], entry["node"]
            if error is not None:
                report.failed += 1
                if len(report.failures) < MAX_KEPT_FAILURES:
                    report.failures.append(entry)
            if node is not None:
                summary = per_node.get(node)
                if summary is None:
                    summary = per_node[node] = NodeSummary()
                summary.jobs += 1
                summary.errors += error is not None
                summary.total_ms += entry["ms"] or 0.0
            if on_entry is not None:
                on_entry(entry)

        def items() -> Iterator[tuple[JobItem, int]]:
            """Each readable input as a job item, with its size in bytes."""
            for index in range(len(paths)) if todo is None else todo:
                path = paths[index]
                suffix = stem_and_suffix(path)[1]
                if temporaries is not None:  # the worker reads and writes: nothing to load
                    output = temporaries.prefix(names[index])
                    item = JobItem(index, os.path.abspath(path), suffix, output=output)
                    yield item, input_size(path)
                    continue
                try:
                    payload = _load_payload(path, options)
                except ZimgError as exc:
                    record(_entry(index, path, None, None, 0, None, str(exc)))
                    continue
                yield JobItem(index, path, suffix, payload=payload), payload.nbytes

        per_job = options.items_per_job()

        def requests() -> Iterator[JobRequest]:
            groups = group_items(
                items(),
                len(paths),
                per_job=per_job,
                job_bytes=options.bytes_per_job(),
                spread=options.guided_spread(),
                order=todo,
            )
            return (job(group) for group in groups)

        def job(group: list[JobItem]) -> JobRequest:
            return JobRequest(group[0].index, options.mode, wire_ops, group, options.max_pixels)

        def finish(done: Completed) -> None:
            """Write (or rename) each item's output, then record it. On this thread: handing
            the writes to a pool of threads cost more CPU in GIL hand-overs than it saved
            (measured: docs/decisions.md)."""
            result, latency = done.result, round(done.latency_s * 1000, 3)
            node, attempt, mode = result.node, result.attempt, options.mode
            for position, item in enumerate(done.request.items):
                outcome = result.item(position)
                index = item.index
                name = names[index]
                output = os.path.join(out_prefix, name)  # no Path per item
                error = outcome.error
                try:
                    if not outcome.ok:
                        error = error or f"{item.name}: failed"
                    elif temporaries is not None:
                        temporaries.keep(outcome.output, name, output)
                    elif outcome.payload is not None:
                        target = output if out_fd is None else name
                        write_output(target, outcome.payload, item, mode, fresh, dir_fd=out_fd)
                    else:
                        error = f"{item.name}: the worker returned no output"
                except (ZimgError, OSError) as exc:
                    error = f"{item.name}: cannot write {output}: {exc}"
                record(
                    {  # _entry's keys, in its order, built inline: this runs for every image
                        "index": index,
                        "input": paths[index],
                        "output": None if error else output,
                        "node": node,
                        "attempts": attempt,
                        "ms": outcome.ms,
                        "latency_ms": latency,
                        "error": error,
                    }
                )

        try:
            for done in client.run(requests(), idle_timeout_s=options.idle_timeout_s):
                result = done.result
                if result.died and len(done.request.items) > 1:
                    for item in done.request.items:  # isolate the image that keeps failing
                        client.resubmit(job([item]))
                    continue
                finish(done)
        finally:
            if temporaries is not None:
                temporaries.sweep()
    report.duplicates = client.duplicates
    report.elapsed_s = time.perf_counter() - started
    return report


def _run_batch_with_bar(
    connection: JobTarget,
    files: Sequence[str | os.PathLike[str]],
    options: BatchOptions,
    on_entry: Callable[[dict[str, Any]], None] | None,
    on_skipped: Callable[[int], None] | None,
) -> BatchReport:
    """:func:`run_batch` with a rich progress bar, advanced by each input that ends (or is
    skipped as done)."""
    with progress_bar(len(files), "run_batch") as advance:

        def entry(done: dict[str, Any]) -> None:
            advance(1)
            if on_entry is not None:
                on_entry(done)

        def skipped(count: int) -> None:
            advance(count)
            if on_skipped is not None:
                on_skipped(count)

        return run_batch(connection, files, options, on_entry=entry, on_skipped=skipped)


def group_items(
    items: Iterable[tuple[JobItem, int]],
    total: int,
    *,
    per_job: int,
    job_bytes: int,
    spread: int | None,
    order: Sequence[int] | None = None,
) -> Iterator[list[JobItem]]:
    """Group consecutive ``(item, input bytes)`` into jobs of at most ``per_job`` items or about
    ``job_bytes`` bytes, whichever comes first.

    With ``spread``, sizes are *guided*: a job takes at most ``1/spread`` of the items still to
    come, so jobs shrink to one item towards the end of the batch, and no worker is left running
    a large last job while the others idle. ``item.index`` counts from 0 to ``total - 1``;
    with ``order`` (the indices that will come, ascending: a resumed batch skips some), the
    items still to come are counted in it.
    """
    group: list[JobItem] = []
    size = 0
    for item, nbytes in items:
        group.append(item)
        size += nbytes
        target = per_job
        if spread is not None:
            if order is None:
                remaining = total - item.index - 1
            else:
                remaining = len(order) - bisect.bisect_right(order, item.index)
            target = min(per_job, max(1, remaining // spread))
        if size >= job_bytes or len(group) >= target:
            yield group
            group, size = [], 0
    if group:
        yield group


def _load_payload(path: str, options: BatchOptions) -> np.ndarray[Any, Any]:
    if options.mode == "raw":
        return images.load(path, max_pixels=options.max_pixels)
    data = images.read_file(path)
    size = images.sniff_size(data)
    if size is not None and size[0] * size[1] > options.max_pixels:
        raise ImageError(
            f"{path}: {size[0]}x{size[1]} pixels exceeds the limit of {options.max_pixels}"
        )
    return np.frombuffer(data, dtype=np.uint8)


def _entry(
    index: int,
    path: str,
    output: str | None,
    node: str | None,
    attempts: int,
    ms: float | None,
    error: str | None,
    *,
    latency_ms: float | None = None,
) -> dict[str, Any]:
    return {
        "index": index,
        "input": path,
        "output": output,
        "node": node,
        "attempts": attempts,
        "ms": ms,
        "latency_ms": latency_ms,
        "error": error,
    }
