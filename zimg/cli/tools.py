"""``zimg nodes``, ``zimg dashboard``, ``zimg fetch`` and ``zimg grid``."""

import shutil
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from zimg import protocol
from zimg._errors import ZimgError
from zimg.cli._app import app, setup_logging
from zimg.cli._options import (
    DEFAULT_HTTP,
    DEFAULT_MAX_PIXELS,
    BrokerKeyOpt,
    BrokerUrl,
    Files,
    HttpAddr,
    HttpInsecure,
    HttpToken,
    KeyOpt,
    LogLevel,
    MaxPixels,
    check_http,
    check_places,
    load_client_keys,
)
from zimg.cli._output import cell, fail, lit, plain, rich_console
from zimg.cli.batches import finish_batch, run_local

if TYPE_CHECKING:
    from zimg.security import ClientKeys


@app.command()
def nodes(
    broker_url: BrokerUrl = protocol.DEFAULT_BROKER_URL,
    as_json: Annotated[bool, typer.Option("--json", help="Print the raw report as JSON.")] = False,
    timeout: Annotated[
        float, typer.Option("--timeout", metavar="SECONDS", help="Seconds to wait.")
    ] = 5.0,
    key: KeyOpt = None,
    broker_key: BrokerKeyOpt = None,
) -> None:
    """List the nodes connected to a broker (of a failover pair: each broker's role and state,
    and the nodes of the active one)."""
    import json

    from zimg._affinity import format_cpus

    keys = load_client_keys(key, broker_key)
    endpoints = protocol.split_endpoints(broker_url)
    if len(endpoints) > 1:
        answers = _ask_pair(endpoints, timeout, keys)
        if as_json:
            rich_console().print_json(json.dumps({"brokers": answers}))
            return
        for answer in answers:
            rich_console().print(_pair_line(answer), highlight=False)
        shown = [a for a in answers if a["report"] is not None]
        if not shown:
            raise fail(f"no broker of {broker_url} answered")
        active = [a for a in shown if a["report"].get("failover", {}).get("state") == "active"]
        broker_url, report = (active or shown)[0]["url"], (active or shown)[0]["report"]
    else:
        from zimg.nodes_query import query_nodes

        try:
            report = query_nodes(broker_url, timeout_s=timeout, keys=keys)
        except ZimgError as exc:
            raise fail(str(exc)) from None
        if as_json:
            rich_console().print_json(json.dumps(report))
            return
    from rich.table import Table
    from rich.text import Text

    pair = report.get("failover")
    where = f" ({pair['role']}, {pair['state']})" if isinstance(pair, dict) else ""
    table = Table(title=Text(f"nodes at {plain(broker_url)}{plain(where)}"))
    columns = ("name", "role", "cpus", "capacity", "active", "done", "malformed", "dropped")
    lanes = any("lanes" in n for n in report["nodes"])  # a column only where nodes have lanes
    for col in (*columns, *(("lanes sent/received",) if lanes else ()), "seen (s ago)"):
        left = col in ("name", "role")
        table.add_column(col, justify="left" if left else "right", no_wrap=col == "name")
    for n in report["nodes"]:
        cells = (
            n["name"],
            n["role"],
            format_cpus(n["cpus"]) if "cpus" in n else "",
            n["capacity"],
            f"{n['active']} (hung)" if n.get("hung") else n["active"],
            n["done"],
            n.get("malformed", 0),
            n.get("dropped", 0),
            *((_lane_cell(n.get("lanes")),) if lanes else ()),
            f"{n['last_seen_s']:.1f}",
        )
        table.add_row(*map(cell, cells))
    # Not a terminal (a pipe, a file): rich would squeeze the table into 80 columns.
    console = rich_console()
    if not console.is_terminal:
        from rich.console import Console

        console = Console(width=160, emoji=False)
    console.print(table)
    rich_console().print(f"queued jobs: {lit(report['queued'])}", highlight=False)


def _lane_cell(lanes: Any) -> str:
    """What a node's lanes carried, as ``zimg nodes`` shows it."""
    if not isinstance(lanes, dict):
        return ""
    text = f"{lanes.get('sent', 0)}/{lanes.get('received', 0)}"
    for key in ("refused", "lost", "broken"):
        if lanes.get(key):
            text += f", {lanes[key]} {key}"
    return text


@app.command("dashboard")
def dashboard_command(
    broker_url: BrokerUrl = protocol.DEFAULT_BROKER_URL,
    http: HttpAddr = DEFAULT_HTTP,
    token: HttpToken = None,
    insecure: HttpInsecure = False,
    interval: Annotated[
        float,
        typer.Option("--interval", metavar="SECONDS", min=0.1, help="Seconds between polls."),
    ] = 1.0,
    front_door: Annotated[
        bool,
        typer.Option(
            "--front-door/--no-front-door",
            help="Serve POST /v1/process (joins the broker as a client to send the jobs).",
        ),
    ] = True,
    name: Annotated[
        str | None,
        typer.Option("--name", metavar="NAME", help="The front door's node name."),
    ] = None,
    max_body_mb: Annotated[
        int, typer.Option("--max-body-mb", metavar="MB", min=1, help="Largest image accepted.")
    ] = 32,
    max_pending: Annotated[
        int,
        typer.Option(
            "--max-pending", metavar="N", min=1, help="Front-door requests waiting at once."
        ),
    ] = 32,
    deadline: Annotated[
        float,
        typer.Option(
            "--deadline", metavar="SECONDS", help="How long a worker may take on a request."
        ),
    ] = 60.0,
    max_pixels: MaxPixels = DEFAULT_MAX_PIXELS,
    key: KeyOpt = None,
    broker_key: BrokerKeyOpt = None,
    log_level: LogLevel = "warning",
) -> None:
    """Serve a live page of the cluster in the browser, and an HTTP front door to it."""
    setup_logging(log_level)
    check_http(http, token, insecure)
    from zimg.dashboard._cli import run_dashboard

    try:
        run_dashboard(
            broker_url,
            http,
            token=token,
            interval_s=interval,
            keys=load_client_keys(key, broker_key),
            front_door=front_door,
            name=name,
            max_body_bytes=max_body_mb << 20,
            max_pending=max_pending,
            deadline_s=deadline,
            max_pixels=max_pixels,
        )
    except ValueError as exc:  # a bad --name
        raise fail(str(exc), code=2) from None


def _ask_pair(
    endpoints: list[str], timeout: float, keys: "ClientKeys | None"
) -> list[dict[str, Any]]:
    """Ask every broker of a failover pair for its report: ``url``, ``report`` (None when it did
    not answer) and ``error``."""
    from zimg.nodes_query import query_nodes

    answers: list[dict[str, Any]] = []
    for url in endpoints:
        try:
            answers.append({"url": url, "report": query_nodes(url, timeout, keys=keys)})
        except ZimgError as exc:
            answers.append({"url": url, "report": None, "error": str(exc)})
    return answers


def _pair_line(answer: dict[str, Any]) -> str:
    """One broker of a pair, for ``zimg nodes``: its role and state, or why it did not answer."""
    url = plain(answer["url"])
    report = answer["report"]
    if report is None:
        return f"broker {url}: no answer"
    pair = report.get("failover")
    if not isinstance(pair, dict):
        return f"broker {url}: a single broker (not in a failover pair), {report['count']} nodes"
    silent = pair.get("peer_silent_s")
    peer = "never heard"
    if isinstance(silent, int | float):
        peer = f"{plain(pair.get('peer_state'))}, heard {silent:.1f} s ago"
    role, state = plain(pair.get("role")), plain(pair.get("state"))
    return f"broker {url}: {role}, {state} (peer: {peer})"


@app.command()
def fetch(
    url: Annotated[str, typer.Argument(help="http(s) URL of an image.")],
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", metavar="PATH", help="File or directory to write."),
    ] = None,
    timeout: Annotated[
        float,
        typer.Option(
            "--timeout",
            metavar="SECONDS",
            help="Seconds for the whole download, redirects included.",
        ),
    ] = 10.0,
    max_bytes: Annotated[
        int, typer.Option("--max-bytes", metavar="BYTES", min=0, help="Largest body.")
    ] = 50 << 20,
    force: Annotated[
        bool, typer.Option("--force", "-f", help="Replace the file if it exists.")
    ] = False,
    allow_private: Annotated[
        bool,
        typer.Option(
            "--allow-private",
            help="Also fetch from (or be redirected to) loopback, private, link-local and other "
            "non-public addresses, refused by default.",
        ),
    ] = False,
) -> None:
    """Download an image: one deadline, a size cap, public addresses only, image bytes only."""
    from zimg.fetch import fetch as do_fetch

    if not timeout > 0:
        raise typer.BadParameter("must be positive", param_hint="--timeout")
    try:
        path = do_fetch(
            url,
            output,
            timeout_s=timeout,
            max_bytes=max_bytes,
            overwrite=force,
            allow_private=allow_private,
        )
    except ZimgError as exc:
        raise fail(str(exc)) from None
    rich_console().print(f"saved {lit(path)}", highlight=False)


@app.command()
def grid(
    files: Files,
    output: Annotated[
        Path, typer.Option("--output", "-o", metavar="FILE", help="Where to write the grid.")
    ] = Path("grid.png"),
    columns: Annotated[
        int, typer.Option("--columns", metavar="N", min=1, help="Images per row.")
    ] = 4,
) -> None:
    """Lay images out in a grid (the notebook's 4-column view), as one image file."""
    from zimg.grid import grid_from_files

    try:
        grid_from_files([Path(f) for f in files], output, columns=columns)
    except ZimgError as exc:
        raise fail(str(exc)) from None
    rich_console().print(f"grid: {lit(output)}", highlight=False)


@app.command()
def demo(
    directory: Annotated[
        Path,
        typer.Option(
            "--dir", "-d", metavar="DIR", help="Where to put the demo's inputs and outputs."
        ),
    ] = Path("zimg-demo"),
    workers: Annotated[
        int, typer.Option("--workers", "-w", metavar="N", min=1, help="Worker processes.")
    ] = 2,
    copies: Annotated[
        int, typer.Option("--copies", metavar="N", min=1, help="Input images to make.")
    ] = 32,
) -> None:
    """Run the notebook's demo: 32 images on a local cluster of 2 workers, then a grid."""
    from zimg.batch import BatchOptions

    setup_logging("warning")
    check_places(directory, "--dir")
    inputs = prepare_demo_inputs(directory / "images", copies)
    options = BatchOptions(outdir=directory / "out", mode="path")  # as `zimg run` does
    try:
        report = run_local(inputs, options, workers=workers, capacity=2)
    except ZimgError as exc:
        raise fail(str(exc)) from None
    grid_path = directory / "grid.png"
    finish_batch(report, grid_path)
    rich_console().print(
        f"inputs:  {lit(directory / 'images')}\noutputs: {lit(options.outdir)}", highlight=False
    )


def prepare_demo_inputs(target: Path, copies: int) -> list[Path]:
    """Copy the bundled samples (and their README) to ``target`` and make ``copies`` inputs."""
    target.mkdir(parents=True, exist_ok=True)
    samples = resources.files("zimg") / "samples"
    originals = sorted(p.name for p in samples.iterdir() if p.name != "README.md")
    shutil.copyfile(str(samples / "README.md"), target / "README.md")
    inputs = []
    for i in range(copies):
        name = originals[i % len(originals)]
        dest = target / f"{i + 1:02d}_{name}"
        shutil.copyfile(str(samples / name), dest)
        inputs.append(dest)
    return inputs
