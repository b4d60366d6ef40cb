"""``zimg send``, ``zimg run`` and ``zimg demo``: batches of files, with a progress bar and a
summary."""

import contextlib
import dataclasses
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from zimg import protocol
from zimg._errors import ZimgError
from zimg.cli._app import app, setup_logging
from zimg.cli._options import (
    DEFAULT_HTTP,
    DEFAULT_MAX_PIXELS,
    NO_WORKER_WARNING_S,
    PROGRESS_EVERY_S,
    BrokerKeyOpt,
    BrokerUrl,
    DashboardFlag,
    Files,
    Grid,
    HttpAddr,
    HttpInsecure,
    HttpToken,
    Imports,
    JobItems,
    KeyOpt,
    LogLevel,
    MaxPixels,
    OpsOpt,
    OutDir,
    Oversubscribe,
    Payload,
    Resume,
    Window,
    check_http,
    check_payload,
    check_places,
    load_client_keys,
    name_from_key,
    pipeline,
)
from zimg.cli._output import cell, fail, is_terminal, lit, plain, plain_table, rich_console

if TYPE_CHECKING:
    from zimg.batch import BatchOptions, BatchReport
    from zimg.connection import Connection
    from zimg.distribute import JobRouter
    from zimg.security import ClientKeys


@app.command()
def send(
    files: Files,
    broker_url: BrokerUrl = protocol.DEFAULT_BROKER_URL,
    output: OutDir = Path("out"),
    op: OpsOpt = None,
    payload: Payload = "encoded",
    grid: Grid = None,
    window: Window = 16,
    job_items: JobItems = None,
    name: Annotated[
        str | None, typer.Option("--name", metavar="NAME", help="This node's name.")
    ] = None,
    imports: Imports = None,
    timeout: Annotated[
        float,
        typer.Option(
            "--timeout", metavar="SECONDS", help="Give up after this many seconds with no result."
        ),
    ] = 120.0,
    max_pixels: MaxPixels = DEFAULT_MAX_PIXELS,
    key: KeyOpt = None,
    broker_key: BrokerKeyOpt = None,
    resume: Resume = False,
    dashboard: DashboardFlag = False,
    http: HttpAddr = DEFAULT_HTTP,
    token: HttpToken = None,
    insecure: HttpInsecure = False,
    log_level: LogLevel = "warning",
) -> None:
    """Send files to the workers of a running broker; write <name>_processed<ext> files."""
    from zimg.batch import BatchOptions
    from zimg.connection import Connection

    setup_logging(log_level)
    check_payload(payload)
    check_places(output, "--output", grid)
    if dashboard:
        check_http(http, token, insecure)
    client_keys = load_client_keys(key, broker_key)
    if not any(os.path.exists(f) for f in files):  # one stat when the first exists
        shown = ", ".join(files[:3]) + (", ..." if len(files) > 3 else "")
        raise fail(f"none of the {len(files)} inputs exist ({shown}); nothing to send")
    try:
        options = BatchOptions(
            outdir=output,
            pipeline=pipeline(op, imports, strict=False),
            mode=payload,  # type: ignore[arg-type]  # checked by check_payload
            window=window,
            max_pixels=max_pixels,
            idle_timeout_s=timeout,
            job_items=job_items,
            resume=resume,
        )
        key_name = name_from_key(key)
        default_name = f"{key_name}.send-{os.getpid()}" if key_name else f"send-{os.getpid()}"
        conn = Connection(broker_url, name or default_name, keys=client_keys)
        with (
            conn.start(timeout_s=min(timeout, 10.0)),
            _warn_without_workers(conn, client_keys),
            _maybe_dashboard(dashboard, broker_url, http, token, client_keys) as on_entry,
        ):
            report = run_with_progress(conn, files, options, also=on_entry)
    except ZimgError as exc:
        raise fail(str(exc)) from None
    finish_batch(report, grid)


def _lists_a_worker(nodes: list[dict[str, Any]]) -> bool:
    return any(n.get("role") == protocol.ROLE_WORKER for n in nodes)


@contextlib.contextmanager
def _warn_without_workers(conn: "Connection", keys: "ClientKeys | None") -> Iterator[None]:
    """Warn once if, ``NO_WORKER_WARNING_S`` into the batch, the broker lists no worker (the
    bar would sit at 0 until --timeout). A timer thread asks NODES on a socket of its own:
    the job flow never waits for it."""
    import threading

    from zimg.nodes_query import query_nodes

    def check() -> None:
        try:
            # Pages only until one lists a worker: at 10,000 nodes that is 1 page of ~50.
            report = query_nodes(conn.broker_url, timeout_s=2.0, keys=keys, until=_lists_a_worker)
        except ZimgError:
            return  # the broker is busy or gone: the batch will say so
        if not _lists_a_worker(report["nodes"]):
            logging.getLogger("zimg.cli").warning(
                "no worker is connected to the broker at %s; waiting (start one with "
                "`zimg worker --name n1 --broker %s`)",
                conn.broker_url,
                conn.url,
            )

    timer = threading.Timer(NO_WORKER_WARNING_S, check)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
        timer.join(3.0)  # a check under way ends within its 2 s timeout


@app.command()
def run(
    files: Files,
    workers: Annotated[
        int, typer.Option("--workers", "-w", metavar="N", min=1, help="Worker processes.")
    ] = 2,
    capacity: Annotated[
        int,
        typer.Option(
            "--capacity",
            metavar="N",
            min=1,
            help="Jobs each worker holds (its credit; it runs one at a time).",
        ),
    ] = 2,
    pin: Annotated[
        bool | None,
        typer.Option(
            "--pin/--no-pin",
            help="Pin worker i to CPU i mod n. Default: only with --oversubscribe and more "
            "workers than CPUs, where it saves the workers' moves between CPUs.",
            show_default=False,
        ),
    ] = None,
    oversubscribe: Oversubscribe = False,
    output: OutDir = Path("out"),
    op: OpsOpt = None,
    payload: Payload = "path",
    grid: Grid = None,
    window: Window = 16,
    job_items: JobItems = None,
    imports: Imports = None,
    max_pixels: MaxPixels = DEFAULT_MAX_PIXELS,
    resume: Resume = False,
    dashboard: DashboardFlag = False,
    http: HttpAddr = DEFAULT_HTTP,
    token: HttpToken = None,
    insecure: HttpInsecure = False,
    log_level: LogLevel = "warning",
) -> None:
    """Process files on an embedded local cluster (a broker and workers started for this call)."""
    from zimg.batch import BatchOptions

    setup_logging(log_level)
    check_payload(payload)
    check_places(output, "--output", grid)
    if dashboard:
        check_http(http, token, insecure)
    try:
        options = BatchOptions(
            outdir=output,
            pipeline=pipeline(op, imports, strict=True),
            mode=payload,  # type: ignore[arg-type]  # checked by check_payload
            window=window,
            max_pixels=max_pixels,
            job_items=job_items,
            resume=resume,
        )
        report = run_local(
            [Path(f) for f in files],
            options,
            workers=workers,
            capacity=capacity,
            imports=imports,
            pin=pin,
            oversubscribe=oversubscribe,
            dashboard=(http, token) if dashboard else None,
        )
    except ZimgError as exc:
        raise fail(str(exc)) from None
    finish_batch(report, grid)


def run_local(
    files: Sequence[Path],
    options: "BatchOptions",
    *,
    workers: int,
    capacity: int,
    imports: Sequence[str] | None = None,
    pin: bool | None = None,
    oversubscribe: bool = False,
    dashboard: tuple[str, str | None] | None = None,
) -> "BatchReport":
    from zimg._affinity import usable_cpus
    from zimg._broker_state import BrokerConfig
    from zimg.cluster import local_cluster

    # No spinner while it starts: its thread would stop the workers from being forked (they
    # would start as new interpreters, ~0.5 s slower), and forking takes milliseconds.
    options = dataclasses.replace(options, workers=workers)  # guided job sizes for this many
    config = BrokerConfig(cpu_slots=not oversubscribe)
    cpus = len(usable_cpus())
    if workers > cpus and not oversubscribe:
        rich_console(stderr=True).print(
            f"note: {workers} workers on {cpus} CPUs: at most {cpus} run jobs at once, the others "
            "stand by (--oversubscribe runs them all)",
            highlight=False,
        )
    with local_cluster(
        workers, capacity=capacity, imports=imports or (), config=config, pin=pin
    ) as running:
        http, token = dashboard or (DEFAULT_HTTP, None)
        with _maybe_dashboard(dashboard is not None, running.url, http, token, None) as on_entry:
            return run_with_progress(running.jobs, files, options, also=on_entry)


@contextlib.contextmanager
def _maybe_dashboard(
    wanted: bool, url: str, http: str, token: str | None, keys: "ClientKeys | None"
) -> Iterator[Callable[[dict[str, Any]], None] | None]:
    """With ``wanted``, serve the sending side's dashboard while the block runs and yield what
    to call with each manifest entry; else yield None."""
    if not wanted:
        yield None
        return
    from zimg.dashboard._cli import sending_dashboard

    with sending_dashboard(url, http, token=token, keys=keys) as dash:
        yield dash.add_entry


def run_with_progress(
    conn: "Connection | JobRouter",
    files: Sequence[str | Path],
    options: "BatchOptions",
    also: Callable[[dict[str, Any]], None] | None = None,
) -> "BatchReport":
    """Run the batch with a progress bar on stderr when one would be seen: in a terminal, for
    more than one input. Else no bar, and rich is not imported."""
    from zimg.batch import run_batch

    if len(files) < 2 or not is_terminal(stderr=True):
        return run_batch(conn, files, options, on_entry=also)
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    progress = Progress(
        TextColumn("{task.description}", style="bold", markup=False),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[errors]} errors"),
        TimeRemainingColumn(),
        console=rich_console(stderr=True),
        transient=False,
    )
    with progress:
        task = progress.add_task("processing", total=len(files), errors=0)
        failed = done = shown = 0
        shown_at = time.monotonic()

        def on_entry(entry: dict[str, Any]) -> None:
            # The bar is told at most every PROGRESS_EVERY_S (rich redraws 10 times a second):
            # an update per image cost as much as writing its manifest line.
            nonlocal failed, done, shown, shown_at
            failed += entry["error"] is not None
            done += 1
            if also is not None:
                also(entry)
            now = time.monotonic()
            if now - shown_at >= PROGRESS_EVERY_S or done == len(files):
                progress.update(task, advance=done - shown, errors=failed)
                shown, shown_at = done, now

        def on_skipped(count: int) -> None:
            nonlocal done, shown
            progress.update(task, advance=count)
            done += count
            shown += count

        report = run_batch(conn, files, options, on_entry=on_entry, on_skipped=on_skipped)
        progress.update(task, advance=done - shown, errors=failed)
        return report


def finish_batch(report: "BatchReport", grid: Path | None) -> None:
    """Print the per-node table and the summary (on stdout) and the failures (on stderr): with
    rich in a terminal, as plain text (and without importing rich) elsewhere."""
    from zimg.grid import grid_from_files

    columns = [("node", False), ("jobs", True), ("errors", True), ("mean ms", True)]
    columns.append(("share", True))
    total = max(1, sum(s.jobs for s in report.per_node.values()))
    rows = []
    for node_name, s in sorted(report.per_node.items()):
        mean = s.total_ms / s.jobs if s.jobs else 0.0
        rows.append([node_name, str(s.jobs), str(s.errors), f"{mean:.1f}", f"{s.jobs / total:.0%}"])
    n = report.count
    rate = n / report.elapsed_s if report.elapsed_s > 0 else 0.0
    skipped = f"skipped {report.skipped} done inputs; " if report.skipped else ""
    summary = f"{n} inputs in {report.elapsed_s:.2f} s ({rate:.1f}/s), {report.failed} failed; "
    more = report.failed - len(report.failures)
    if is_terminal():
        from rich.table import Table

        table = Table(title="per node")
        for name, right in columns:
            table.add_column(name, justify="right" if right else "left")
        for node_name, *counts in rows:
            table.add_row(cell(node_name), *counts)
        rich_console().print(table)
        rich_console().print(f"{summary}{skipped}manifest: {lit(report.manifest)}", highlight=False)
    else:
        print(plain_table("per node", columns, rows))
        print(f"{summary}{skipped}manifest: {plain(report.manifest)}", flush=True)
    if is_terminal(stderr=True):
        for entry in report.failures:
            rich_console(stderr=True).print(
                f"[red]failed:[/] {lit(entry['error'])}", highlight=False
            )
        if more > 0:
            rich_console(stderr=True).print(f"[red]... and {more} more (see the manifest)")
    else:
        for entry in report.failures:
            print(f"failed: {plain(entry['error'])}", file=sys.stderr)
        if more > 0:
            print(f"... and {more} more (see the manifest)", file=sys.stderr)
    outputs = report.outputs() if grid is not None else []
    if grid is not None and outputs:
        from zimg.grid import grid_from_files

        try:
            grid_from_files(outputs, grid)
            if is_terminal():
                rich_console().print(f"grid: {lit(grid)}", highlight=False)
            else:
                print(f"grid: {plain(grid)}")
        except ZimgError as exc:
            raise fail(f"cannot write the grid: {exc}") from None
    if report.failed:
        raise typer.Exit(1)
