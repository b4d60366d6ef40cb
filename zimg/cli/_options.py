"""The options the commands share, their defaults, and the checks of their values."""

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from zimg import protocol
from zimg._errors import OpError, ZimgError
from zimg.cli._output import fail, lit, rich_console

if TYPE_CHECKING:
    from zimg import ops
    from zimg._peer_link import FailoverConfig
    from zimg.security import ClientKeys

# The CLI imports what a command needs when it runs, not before: `zimg --help` and
# `zimg nodes` load no OpenCV, NumPy or ZeroMQ. So the defaults shown in --help are written
# here; tests/cli/test_cli_defaults.py checks them against the modules they stand for.

PAYLOAD_MODES = ("encoded", "raw", "path")  # zimg.jobs.PAYLOAD_MODES


DEFAULT_MAX_PIXELS = 200_000_000  # zimg.DEFAULT_MAX_PIXELS


DEFAULT_MAX_IMAGE_MB = 512  # zimg.images.DEFAULT_MAX_IMAGE_BYTES >> 20


DEFAULT_MAX_PROCESSES = 1000  # zimg._actor.DEFAULT_ACTOR_LIMITS.max_processes


PROGRESS_EVERY_S = 0.05  # the progress bar is told at most this often


NO_WORKER_WARNING_S = 3.0  # `zimg send` warns if the broker lists no worker this long after start


BROKER_DEFAULTS: dict[str, Any] = {  # zimg.BrokerConfig()'s, as the broker's options give them
    "job_deadline_s": 300.0,
    "max_frame_mb": 256,
    "max_client_jobs_mb": 256,
    "max_jobs_mb": 1024,
    "heartbeats_per_s": 500.0,
    "stall_timeout_s": 30.0,
    "max_nodes": 100_000,
}


def endpoint_option(
    ctx: typer.Context, param: typer.CallbackParam, value: str | None
) -> str | None:
    """Check an endpoint option (``--bind``, ``--connect``, ``--broker``, the failover pair's
    ``--peer`` and ``--peer-bind``): a bad one is a usage error, one line and exit code 2,
    before anything connects. A node's option may list a failover pair's two endpoints,
    separated by a comma."""
    if ctx.resilient_parsing or value is None:  # an optional one left out (--peer)
        return value
    try:
        if param.name in ("bind", "peer_bind", "peer"):
            return protocol.check_endpoint(value, bind=param.name != "peer")
        return protocol.check_endpoints(value)
    except ValueError as exc:
        raise fail(f"{param.opts[0]}: {exc}", code=2) from None


ENDPOINT_HELP = "tcp://HOST:PORT, tcp://[IPv6]:PORT or ipc://PATH"


PAIR_HELP = "; a failover pair's two, separated by a comma (tcp://A:5555,tcp://B:5555)"


BrokerUrl = Annotated[
    str,
    typer.Option(
        "--broker",
        "-b",
        metavar="URL",
        help=f"The broker's endpoint: {ENDPOINT_HELP}{PAIR_HELP}.",
        envvar="ZIMG_BROKER",
        callback=endpoint_option,
    ),
]
# Plain strings: typer turns each Path argument into a Path through a validator of its own,
# which cost 0.25 ms a file (1 s for 4,000); run_batch takes strings as they are.


Files = Annotated[list[str], typer.Argument(help="Image files to process.", show_default=False)]


OutDir = Annotated[
    Path, typer.Option("--output", "-o", metavar="DIR", help="Directory for outputs and manifest.")
]


OpsOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--op",
        metavar="OP",
        help="An op, as NAME[:KEY=VALUE,...]; repeat for a pipeline. "
        "Default: --op threshold --op label (the notebook's).",
        show_default=False,
    ),
]


Payload = Annotated[
    str,
    typer.Option(
        "--payload",
        metavar="MODE",
        help="encoded: ship file bytes, workers decode and encode. "
        "raw: ship decoded arrays, as the notebook does. "
        "path: workers read and write the files themselves (same filesystem, workers started "
        "with --allow-paths; the default of 'zimg run').",
    ),
]


Grid = Annotated[
    Path | None,
    typer.Option("--grid", metavar="FILE", help="Also write a 4-column grid of the outputs here."),
]


Window = Annotated[
    int, typer.Option("--window", metavar="N", min=1, help="Jobs in flight at once.")
]


JobItems = Annotated[
    int | None,
    typer.Option(
        "--job-items",
        metavar="N",
        min=1,
        max=64,
        help="At most this many images in one job (default: 32, grouped up to 512 KiB; 8 up to "
        "2 MiB with path payloads; 1 with raw ones). 1 redelivers the finest, and a poison image "
        "then costs no retries of its neighbours.",
        show_default=False,
    ),
]


KeepHeap = Annotated[
    bool,
    typer.Option(
        "--keep-heap/--trim-heap",
        help="Keep up to 128 MiB of freed memory for the next images or messages (faster), or "
        "give it back to the system after each one (glibc only).",
    ),
]


Oversubscribe = Annotated[
    bool,
    typer.Option(
        "--oversubscribe",
        help="Let every worker run jobs even when its machine then runs more jobs than it has "
        "CPUs. By default a machine runs one job per CPU at once and its other workers stand by "
        "(more at once cost more CPU per job).",
    ),
]


Imports = Annotated[
    list[str] | None,
    typer.Option(
        "--import",
        metavar="MODULE",
        help="Import this module or file.py first (registers user ops and behaviours).",
        show_default=False,
    ),
]


KeyOpt = Annotated[
    Path | None,
    typer.Option(
        "--key",
        metavar="FILE",
        help="This node's secret certificate (NAME.key_secret), for a broker that uses keys.",
        envvar="ZIMG_KEY",
        show_default=False,
    ),
]


BrokerKeyOpt = Annotated[
    Path | None,
    typer.Option(
        "--broker-key",
        metavar="FILE",
        help="The broker's public certificate (broker.key); goes with --key.",
        envvar="ZIMG_BROKER_KEY",
        show_default=False,
    ),
]


LogLevel = Annotated[
    str, typer.Option("--log-level", metavar="LEVEL", help="debug, info, warning or error.")
]


MaxPixels = Annotated[int, typer.Option("--max-pixels", metavar="N", help="Refuse larger images.")]


Resume = Annotated[
    bool,
    typer.Option(
        "--resume",
        help="Skip the inputs that the manifest in -o records as done (no error, output still "
        "there) and add lines for the others. Without it a re-run does every input again and "
        "rewrites the manifest.",
    ),
]


HttpAddr = Annotated[
    str,
    typer.Option(
        "--http",
        metavar="HOST:PORT",
        help="Where to serve the dashboard; another address than loopback needs --token or "
        "--insecure.",
    ),
]


HttpToken = Annotated[
    str | None,
    typer.Option(
        "--token",
        metavar="TOKEN",
        help="Require this token on every dashboard request (?token= or Authorization: Bearer).",
        envvar="ZIMG_DASHBOARD_TOKEN",
        show_default=False,
    ),
]


HttpInsecure = Annotated[
    bool,
    typer.Option("--insecure", help="Allow a non-loopback --http without --token."),
]


DashboardFlag = Annotated[
    bool,
    typer.Option(
        "--dashboard",
        help="Serve a live page of the cluster and of this batch's results at --http "
        "(needs the 'dashboard' extra).",
    ),
]


DEFAULT_HTTP = "127.0.0.1:8080"


def check_places(folder: Path, option: str, grid: Path | None = None) -> None:
    """Refuse, before any work, a folder to write into that is a file (or lies under one), and a
    grid whose folder does not exist: found after the batch, either cost the user the batch."""
    for place in (folder, *folder.parents):
        if place.exists():
            if not place.is_dir():
                where = "is a file" if place == folder else f"is under {place}, a file"
                raise fail(f"{option} {folder} {where}: give a folder", code=2)
            break
    if grid is not None and not grid.parent.is_dir():
        raise fail(
            f"--grid {grid}: the folder {grid.parent} does not exist (create it first)", code=2
        )


def pipeline(
    op_texts: Sequence[str] | None, imports: Sequence[str] | None, *, strict: bool
) -> "list[ops.OpSpec]":
    """Parse ``--op`` options; a bad one is a usage error (exit code 2).

    With ``strict`` False (``zimg send``), ops unknown here are left for the workers, which may
    have imported them; with ``strict`` True (``zimg run``, whose workers import what we import),
    an unknown op is an error.
    """
    from zimg import ops

    try:
        for module in imports or ():
            ops.load_module(module)
        if not op_texts:
            return list(ops.DEFAULT_PIPELINE)
        specs = [ops.parse_op(text) for text in op_texts]
        ops.check_op_count(specs)  # unknown ops included: the workers would refuse them all
        known = set(ops.registered_ops())
        unknown = [s.name for s in specs if s.name not in known]
        if unknown and not strict:
            rich_console(stderr=True).print(
                f"[yellow]note:[/] ops {lit(unknown)} are not known here; "
                "the workers must know them"
            )
        ops.validate([s for s in specs if strict or s.name in known])
    except OpError as exc:
        raise fail(str(exc), code=2) from None
    return specs


def load_client_keys(key: Path | None, broker_key: Path | None) -> "ClientKeys | None":
    """Load ``--key`` and ``--broker-key`` (both or neither); a problem is a usage error."""
    if key is None and broker_key is None:
        return None
    if key is None or broker_key is None:
        raise fail("--key and --broker-key go together", code=2)
    try:
        from zimg.security import ClientKeys

        return ClientKeys.load(key, broker_key)
    except ZimgError as exc:
        raise fail(str(exc), code=2) from None


def name_from_key(key: Path | None) -> str | None:
    """The node name a certificate file is for (its file name without .key_secret)."""
    return None if key is None else key.name.removesuffix(".key_secret").removesuffix(".key")


def check_payload(mode: str) -> None:
    if mode not in PAYLOAD_MODES:
        raise typer.BadParameter(
            f"must be one of {', '.join(PAYLOAD_MODES)}", param_hint="--payload"
        )


def check_http(http: str, token: str | None, insecure: bool) -> None:
    """A usage error (code 2) for a --http that may not be served: see dashboard._cli."""
    try:
        from zimg.dashboard._cli import check_http
    except ImportError as exc:
        raise fail(NO_DASHBOARD.format(exc=exc), code=2) from None
    problem = check_http(http, token, insecure)
    if problem is not None:
        raise fail(problem, code=2)


NO_DASHBOARD = "the dashboard needs the 'dashboard' extra ({exc}): pip install 'zimg[dashboard]'"


def failover_config(
    primary: bool,
    backup: bool,
    peer: str | None,
    peer_bind: str | None,
    failover_timeout: float | None,
) -> "FailoverConfig | None":
    """The broker's place in a failover pair from its options, or None for a lone broker;
    inconsistent options are a usage error (exit code 2)."""
    if not (primary or backup):
        if peer or peer_bind or failover_timeout is not None:
            raise fail("--peer, --peer-bind and --failover-timeout need --primary or --backup", 2)
        return None
    if primary and backup:
        raise fail("a broker is either --primary or --backup, not both", code=2)
    if not (peer and peer_bind):
        raise fail("a failover pair needs --peer (the other's) and --peer-bind (its own)", 2)
    from zimg._peer_link import FailoverConfig

    role = "primary" if primary else "backup"
    return FailoverConfig(role, peer, peer_bind, failover_timeout)
