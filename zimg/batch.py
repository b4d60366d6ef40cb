"""A batch of image files through the job path: outputs, ``manifest.jsonl`` and a per-node summary.

This is what ``zimg send``, ``zimg run`` and ``zimg demo`` share. Files that cannot be read are
recorded as errors without being sent; every input gets exactly one manifest line.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from zimg import images, ops
from zimg._errors import ImageError, ZimgError
from zimg.connection import Connection
from zimg.distribute import DEFAULT_WINDOW, JobClient
from zimg.jobs import JobRequest, PayloadMode

MANIFEST_NAME = "manifest.jsonl"


@dataclass(slots=True)
class BatchOptions:
    """How to run a batch.

    Attributes:
        outdir: where outputs and the manifest go (created if needed).
        pipeline: the ops to apply.
        mode: ``encoded`` (ship file bytes; workers decode and encode) or ``raw`` (ship arrays).
        window: jobs in flight at once.
        max_pixels: larger images are refused.
        idle_timeout_s: fail the rest of the batch if no result comes for this long.
    """

    outdir: Path
    pipeline: Sequence[ops.OpSpec] = ops.DEFAULT_PIPELINE
    mode: PayloadMode = "encoded"
    window: int = DEFAULT_WINDOW
    max_pixels: int = images.DEFAULT_MAX_PIXELS
    idle_timeout_s: float | None = None


@dataclass(slots=True)
class NodeSummary:
    """What one node did in a batch."""

    jobs: int = 0
    errors: int = 0
    total_ms: float = 0.0


MAX_KEPT_FAILURES = 1000


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
    """

    manifest: Path
    count: int = 0
    failed: int = 0
    failures: list[dict[str, Any]] = field(default_factory=list)
    per_node: dict[str, NodeSummary] = field(default_factory=dict)
    elapsed_s: float = 0.0
    duplicates: int = 0

    def entries(self) -> list[dict[str, Any]]:
        """Every manifest entry, read back from the manifest file."""
        with open(self.manifest, encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]

    def outputs(self) -> list[Path]:
        """The output files written, in the order of the inputs (read from the manifest)."""
        done = sorted((e["index"], e["output"]) for e in self.entries() if e["output"])
        return [Path(output) for _, output in done]


def plan_outputs(files: Sequence[Path], outdir: Path) -> list[str]:
    """The output file name (in ``outdir``) of each input; inputs whose names collide get
    ``-2``, ``-3``... suffixes. Names, not paths: one short string per input keeps a long
    batch's memory small (a hashed Path costs several times more)."""
    seen: set[str] = set()
    planned: list[str] = []
    for f in files:
        name = images.output_path(f, outdir).name
        n = 1
        while name in seen:
            n += 1
            name = images.output_path(f.with_name(f"{f.stem}-{n}{f.suffix}"), outdir).name
        seen.add(name)
        planned.append(name)
    return planned


def run_batch(
    connection: Connection,
    files: Sequence[str | os.PathLike[str]],
    options: BatchOptions,
    *,
    on_entry: Callable[[dict[str, Any]], None] | None = None,
) -> BatchReport:
    """Process ``files`` through the broker that ``connection`` is joined to.

    Args:
        connection: a started node connection.
        files: image paths.
        options: see :class:`BatchOptions`.
        on_entry: called with each manifest entry as it is written (for progress display).

    Returns:
        The report; ``report.failed`` counts inputs that ended with an error.
    """
    paths = [f if isinstance(f, Path) else Path(f) for f in files]  # no copies: memory
    outdir = options.outdir
    outdir.mkdir(parents=True, exist_ok=True)
    outputs = plan_outputs(paths, outdir)
    wire_ops = [spec.to_wire() for spec in options.pipeline]
    client = JobClient(connection, window=options.window)
    manifest_path = outdir / MANIFEST_NAME
    report = BatchReport(manifest=manifest_path)
    started = time.perf_counter()

    with open(manifest_path, "w", encoding="utf-8") as manifest:

        def record(entry: dict[str, Any]) -> None:
            _write_entry(manifest, entry)
            report.count += 1
            if entry["error"] is not None:
                report.failed += 1
                if len(report.failures) < MAX_KEPT_FAILURES:
                    report.failures.append(entry)
            if entry["node"] is not None:
                summary = report.per_node.setdefault(entry["node"], NodeSummary())
                summary.jobs += 1
                summary.errors += entry["error"] is not None
                summary.total_ms += entry["ms"] or 0.0
            if on_entry is not None:
                on_entry(entry)

        def requests() -> Iterator[JobRequest]:
            for job_id, path in enumerate(paths):
                try:
                    payload = _load_payload(path, options)
                except ZimgError as exc:
                    record(_entry(job_id, path, None, None, 0, None, str(exc)))
                    continue
                yield JobRequest(job_id, str(path), options.mode, path.suffix, wire_ops, payload)

        for done in client.run(requests(), idle_timeout_s=options.idle_timeout_s):
            request, result = done.request, done.result
            output = outdir / outputs[request.id]
            error = result.error
            if result.ok and result.payload is not None:
                try:
                    _write_output(output, result.payload, request)
                except (ZimgError, OSError) as exc:
                    error = f"{request.name}: cannot write {output}: {exc}"
            elif error is None:
                error = f"{request.name}: the worker returned no output"
            record(
                _entry(
                    request.id,
                    Path(request.name),
                    None if error else output,
                    result.node,
                    result.attempt,
                    result.ms,
                    error,
                    latency_ms=round(done.latency_s * 1000, 3),
                )
            )
    report.duplicates = client.duplicates
    report.elapsed_s = time.perf_counter() - started
    return report


def _load_payload(path: Path, options: BatchOptions) -> np.ndarray[Any, Any]:
    if options.mode == "raw":
        return images.load(path, max_pixels=options.max_pixels)
    data = images.read_file(path)
    size = images.sniff_size(data)
    if size is not None and size[0] * size[1] > options.max_pixels:
        raise ImageError(
            f"{path}: {size[0]}x{size[1]} pixels exceeds the limit of {options.max_pixels}"
        )
    return np.frombuffer(data, dtype=np.uint8)


def _write_output(output: Path, payload: np.ndarray[Any, Any], request: JobRequest) -> None:
    if request.mode == "raw":
        payload = images.encode(payload, request.ext, name=request.name)
    images.write_atomic(output, payload)


def _entry(
    index: int,
    path: Path,
    output: Path | None,
    node: str | None,
    attempts: int,
    ms: float | None,
    error: str | None,
    *,
    latency_ms: float | None = None,
) -> dict[str, Any]:
    return {
        "index": index,
        "input": str(path),
        "output": None if output is None else str(output),
        "node": node,
        "attempts": attempts,
        "ms": ms,
        "latency_ms": latency_ms,
        "error": error,
    }


def _write_entry(manifest: IO[str], entry: dict[str, Any]) -> None:
    manifest.write(json.dumps(entry) + "\n")
    manifest.flush()
