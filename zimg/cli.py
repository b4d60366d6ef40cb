"""The ``zimg`` command line: thin typer commands over the library."""

import contextlib
import dataclasses
import functools
import logging
import os
import shutil
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from zimg import protocol
from zimg._errors import OpError, ZimgError

if TYPE_CHECKING:
    from rich.console import Console
    from rich.text import Text

    from zimg import ops
    from zimg._peer_link import FailoverConfig
    from zimg.batch import BatchOptions, BatchReport
    from zimg.connection import Connection
    from zimg.distribute import JobRouter
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

app = typer.Typer(
    help="Distributed image processing over ZeroMQ, with Erlang-style nodes.\n\n"
    "Quick start: 'zimg run images/*.jpg' processes files on a local cluster it starts itself. "
    "For several machines: 'zimg broker', then 'zimg worker --name n1' on each worker, "
    "then 'zimg send images/*.jpg'.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Plain help: rich's help formatting imports a Markdown parser, which was two thirds of
    # `zimg --help`'s imports.
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version() -> str:
    """The installed package's version, or the source tree's if zimg is not installed."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("zimg")
    except PackageNotFoundError:
        return "unknown (not installed)"


def _show_version(value: bool) -> None:
    if value:
        print(f"zimg {_version()}")
        raise typer.Exit()


@app.callback()
def _main(
    _version_flag: Annotated[
        bool,
        typer.Option(
            "--version",
            "-V",
            help="Print zimg's version and exit.",
            callback=_show_version,
            is_eager=True,
        ),
    ] = False,
) -> None:
    """Distributed image processing over ZeroMQ, with Erlang-style nodes."""


@functools.cache
def _console(stderr: bool = False) -> "Console":
    """The console for stdout (or stderr), made when first used: rich is not imported for
    ``--help``. No :emoji: codes: a file named ':skull:.png' is printed as it is."""
    from rich.console import Console

    return Console(stderr=stderr, soft_wrap=True, emoji=False)


def _endpoint(ctx: typer.Context, param: typer.CallbackParam, value: str | None) -> str | None:
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
        raise _fail(f"{param.opts[0]}: {exc}", code=2) from None


_ENDPOINT_HELP = "tcp://HOST:PORT, tcp://[IPv6]:PORT or ipc://PATH"
_PAIR_HELP = "; a failover pair's two, separated by a comma (tcp://A:5555,tcp://B:5555)"
BrokerUrl = Annotated[
    str,
    typer.Option(
        "--broker",
        "-b",
        metavar="URL",
        help=f"The broker's endpoint: {_ENDPOINT_HELP}{_PAIR_HELP}.",
        envvar="ZIMG_BROKER",
        callback=_endpoint,
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
        help="At most this many images in one job (default: 8, grouped up to 256 KiB, 2 MiB "
        "with path payloads; 1 with raw ones). 1 redelivers the finest, and a poison image "
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


def main() -> None:
    """Entry point of the ``zimg`` console script."""
    # NumPy's OpenBLAS starts a thread per CPU at import, and each spins for about 0.1 s
    # before it sleeps: 0.12 s of CPU per command on this page's 2-CPU machine, and no zimg
    # command does linear algebra. A worker runs one job per CPU (CPU slots), so a behaviour
    # that does gets no more from BLAS threads either. The environment still has the last word.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    app()


def _setup_logging(level: str) -> None:
    numeric = getattr(logging, level.upper(), None)
    if not isinstance(numeric, int):
        raise typer.BadParameter(f"unknown log level {level!r}", param_hint="--log-level")
    logging.basicConfig(
        level=numeric, format="%(asctime)s %(name)s %(levelname)s %(message)s", stream=sys.stderr
    )


def _plain(value: object) -> str:
    """``str(value)`` with control and other invisible characters shown as escapes (``\\x1b``).

    A name or an error text must not move the cursor, colour the terminal or reorder the line.
    """
    text = str(value)
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


def _lit(value: object) -> str:
    """``value`` as markup that rich shows literally.

    For every string that did not come from this code (file names, paths, URLs, node names,
    error texts from workers, servers or the system) before it goes into a rich markup string.
    """
    from rich.markup import escape

    return escape(_plain(value))


def _cell(value: object) -> "Text":
    """A table cell shown literally (rich would read a plain str as markup)."""
    from rich.text import Text

    return Text(_plain(value))


def _fail(message: str, code: int = 1) -> typer.Exit:
    """Print ``message`` (literally) as an error; return the Exit to raise."""
    _console(stderr=True).print(f"[bold red]error:[/] {_lit(message)}", highlight=False)
    return typer.Exit(code)


def _check_places(folder: Path, option: str, grid: Path | None = None) -> None:
    """Refuse, before any work, a folder to write into that is a file (or lies under one), and a
    grid whose folder does not exist: found after the batch, either cost the user the batch."""
    for place in (folder, *folder.parents):
        if place.exists():
            if not place.is_dir():
                where = "is a file" if place == folder else f"is under {place}, a file"
                raise _fail(f"{option} {folder} {where}: give a folder", code=2)
            break
    if grid is not None and not grid.parent.is_dir():
        raise _fail(
            f"--grid {grid}: the folder {grid.parent} does not exist (create it first)", code=2
        )


def _pipeline(
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
            _console(stderr=True).print(
                f"[yellow]note:[/] ops {_lit(unknown)} are not known here; "
                "the workers must know them"
            )
        ops.validate([s for s in specs if strict or s.name in known])
    except OpError as exc:
        raise _fail(str(exc), code=2) from None
    return specs


def _client_keys(key: Path | None, broker_key: Path | None) -> "ClientKeys | None":
    """Load ``--key`` and ``--broker-key`` (both or neither); a problem is a usage error."""
    if key is None and broker_key is None:
        return None
    if key is None or broker_key is None:
        raise _fail("--key and --broker-key go together", code=2)
    try:
        from zimg.security import ClientKeys

        return ClientKeys.load(key, broker_key)
    except ZimgError as exc:
        raise _fail(str(exc), code=2) from None


def _key_name(key: Path | None) -> str | None:
    """The node name a certificate file is for (its file name without .key_secret)."""
    return None if key is None else key.name.removesuffix(".key_secret").removesuffix(".key")


def _check_payload(mode: str) -> None:
    if mode not in PAYLOAD_MODES:
        raise typer.BadParameter(
            f"must be one of {', '.join(PAYLOAD_MODES)}", param_hint="--payload"
        )


# ---------------------------------------------------------------------- servers


@app.command()
def broker(
    bind: Annotated[
        str,
        typer.Option(
            "--bind",
            metavar="URL",
            help=f"Endpoint to bind: {_ENDPOINT_HELP} (HOST or PORT * for any).",
            envvar="ZIMG_BIND",
            callback=_endpoint,
        ),
    ] = protocol.DEFAULT_BROKER_URL,
    heartbeat: Annotated[
        float, typer.Option("--heartbeat", metavar="SECONDS", help="Heartbeat interval in seconds.")
    ] = protocol.DEFAULT_HEARTBEAT_INTERVAL_S,
    liveness: Annotated[
        int,
        typer.Option(
            "--liveness", metavar="N", min=1, help="Missed heartbeats before a node is dead."
        ),
    ] = protocol.DEFAULT_LIVENESS,
    max_attempts: Annotated[
        int,
        typer.Option(
            "--max-attempts", metavar="N", min=1, help="Deliveries of a job before it fails."
        ),
    ] = protocol.DEFAULT_MAX_ATTEMPTS,
    keys: Annotated[
        Path | None,
        typer.Option(
            "--keys",
            metavar="DIR",
            help="Enable CURVE: DIR holds broker.key_secret and authorized/NAME.key per node "
            "(see 'zimg keys new').",
            envvar="ZIMG_BROKER_KEYS",
            show_default=False,
        ),
    ] = None,
    insecure: Annotated[
        bool, typer.Option("--insecure", help="Allow a non-loopback bind without keys.")
    ] = False,
    oversubscribe: Oversubscribe = False,
    job_deadline: Annotated[
        float,
        typer.Option(
            "--job-deadline",
            metavar="SECONDS",
            min=0.1,
            help="Seconds a worker may work on a job. Past it the job is retried elsewhere and "
            "the worker gets no new job until it answers.",
        ),
    ] = BROKER_DEFAULTS["job_deadline_s"],
    max_frame_mb: Annotated[
        int,
        typer.Option(
            "--max-frame-mb",
            metavar="MIB",
            min=1,
            help="Largest frame (one array or blob) a peer may send, in MiB; a peer that sends "
            "more is disconnected.",
        ),
    ] = BROKER_DEFAULTS["max_frame_mb"],
    max_client_jobs_mb: Annotated[
        int,
        typer.Option(
            "--max-client-jobs-mb",
            metavar="MIB",
            min=1,
            help="MiB of jobs one client may have in the broker at once (beyond: it is told to "
            "wait).",
        ),
    ] = BROKER_DEFAULTS["max_client_jobs_mb"],
    max_jobs_mb: Annotated[
        int,
        typer.Option(
            "--max-jobs-mb",
            metavar="MIB",
            min=1,
            help="MiB of jobs the broker holds at once, in all.",
        ),
    ] = BROKER_DEFAULTS["max_jobs_mb"],
    heartbeats_per_s: Annotated[
        float,
        typer.Option(
            "--heartbeats-per-s",
            metavar="RATE",
            min=1.0,
            help="Heartbeats a second, each way, for all nodes together: the heartbeat "
            "interval doubles as nodes join to stay within it (more: dead nodes are found "
            "sooner; fewer: less idle CPU).",
        ),
    ] = BROKER_DEFAULTS["heartbeats_per_s"],
    stall_timeout: Annotated[
        float,
        typer.Option(
            "--stall-timeout",
            metavar="SECONDS",
            min=0.1,
            help="Close a connection that sends nothing at all for this many seconds (a peer "
            "stalled in the middle of a frame, a vanished host).",
        ),
    ] = BROKER_DEFAULTS["stall_timeout_s"],
    max_nodes: Annotated[
        int,
        typer.Option(
            "--max-nodes",
            metavar="N",
            min=1,
            help="Nodes admitted at once (also bounded by the open-file limit).",
        ),
    ] = BROKER_DEFAULTS["max_nodes"],
    primary: Annotated[
        bool,
        typer.Option(
            "--primary",
            help="Run as the primary of a failover pair (with --peer and --peer-bind): it serves "
            "when both start; the backup takes over if it dies.",
        ),
    ] = False,
    backup: Annotated[
        bool,
        typer.Option(
            "--backup",
            help="Run as the backup of a failover pair (with --peer and --peer-bind): passive "
            "until the primary has been silent for --failover-timeout and a node comes to it.",
        ),
    ] = False,
    peer: Annotated[
        str | None,
        typer.Option(
            "--peer",
            metavar="URL",
            help="The other broker's --peer-bind endpoint (a failover pair's state link).",
            callback=_endpoint,
            show_default=False,
        ),
    ] = None,
    peer_bind: Annotated[
        str | None,
        typer.Option(
            "--peer-bind",
            metavar="URL",
            help="Where this broker publishes its state to its peer (a failover pair), e.g. "
            "tcp://A:5556.",
            callback=_endpoint,
            show_default=False,
        ),
    ] = None,
    failover_timeout: Annotated[
        float | None,
        typer.Option(
            "--failover-timeout",
            metavar="SECONDS",
            min=0.1,
            help="Seconds of peer silence before a node's HELLO makes the passive broker active "
            "(default: --liveness x --heartbeat, the nodes' own bound).",
            show_default=False,
        ),
    ] = None,
    keep_heap: KeepHeap = True,
    log_level: LogLevel = "info",
) -> None:
    """Run the broker: one ROUTER socket that every node connects to (or one of a failover
    pair: --primary or --backup, with --peer and --peer-bind)."""
    from zimg._heap import keep_freed_memory
    from zimg.broker import Broker
    from zimg.security import BrokerKeys

    _setup_logging(log_level)
    failover = _failover_config(primary, backup, peer, peer_bind, failover_timeout)
    binds = [bind] if failover is None else [bind, failover.peer_bind]
    for exposed in [url for url in binds if not _is_local_endpoint(url)] if keys is None else []:
        if not insecure:
            raise _fail(
                f"{exposed} is reachable from other machines, and without --keys this broker "
                "would admit anyone. Use --keys DIR (see 'zimg keys new'), bind a loopback "
                "address, or pass --insecure on a network you trust.",
                code=2,
            )
        logging.getLogger("zimg.broker").warning(
            "--insecure: %s is reachable by anyone on the network, without keys: any of them can "
            "join under a free node name, run jobs, and read the images that pass through",
            exposed,
        )
    try:
        broker_keys = BrokerKeys(keys) if keys is not None else None
    except ZimgError as exc:
        raise _fail(str(exc), code=2) from None
    from zimg._broker_state import BrokerConfig
    from zimg.wire import DEFAULT_LIMITS

    limits = DEFAULT_LIMITS
    config = BrokerConfig(
        heartbeat_interval_s=heartbeat,
        liveness=liveness,
        max_attempts=max_attempts,
        cpu_slots=not oversubscribe,
        job_deadline_s=job_deadline,
        limits=dataclasses.replace(limits, max_frame_bytes=max_frame_mb << 20),
        max_client_job_bytes=max_client_jobs_mb << 20,
        max_job_bytes=max_jobs_mb << 20,
        max_nodes=max_nodes,
        stall_timeout_s=stall_timeout,
        heartbeats_per_s=heartbeats_per_s,
    )
    # A 6 MB frame is a fresh block for ZeroMQ's I/O thread each time; glibc's default trims it
    # away after each message and faults it in again (docs/decisions.md).
    if keep_heap and not keep_freed_memory():
        logging.getLogger("zimg.broker").debug("no glibc mallopt: the heap keeps its own habits")
    server = Broker(bind, config, keys=broker_keys, failover=failover)
    signal.signal(signal.SIGTERM, lambda *_: server.stop_soon())
    try:
        with contextlib.suppress(KeyboardInterrupt):
            server.run()
    except OSError as exc:
        raise _fail(str(exc)) from None
    if server.yielded is not None:
        raise _fail(f"gave way to the peer: {server.yielded}; restart it to rejoin as passive", 3)


def _failover_config(
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
            raise _fail("--peer, --peer-bind and --failover-timeout need --primary or --backup", 2)
        return None
    if primary and backup:
        raise _fail("a broker is either --primary or --backup, not both", code=2)
    if not (peer and peer_bind):
        raise _fail("a failover pair needs --peer (the other's) and --peer-bind (its own)", 2)
    from zimg._peer_link import FailoverConfig

    role = "primary" if primary else "backup"
    return FailoverConfig(role, peer, peer_bind, failover_timeout)


def _is_local_endpoint(url: str) -> bool:
    if url.startswith(("ipc://", "inproc://")):
        return True
    host = url.split("://", 1)[-1].rsplit(":", 1)[0].strip("[]")
    return host in ("127.0.0.1", "localhost", "::1") or host.startswith("127.")


@app.command()
def worker(
    name: Annotated[
        str, typer.Option("--name", "-n", metavar="NAME", help="This node's unique name.")
    ],
    connect: Annotated[
        str,
        typer.Option(
            "--broker",
            "-b",
            "--connect",
            "-c",
            metavar="URL",
            help=f"The broker's endpoint: {_ENDPOINT_HELP}{_PAIR_HELP}. --connect is the same "
            "option.",
            envvar="ZIMG_BROKER",
            callback=_endpoint,
        ),
    ] = protocol.DEFAULT_BROKER_URL,
    capacity: Annotated[
        int,
        typer.Option(
            "--capacity", metavar="N", min=1, help="Jobs held at once (the broker's credit)."
        ),
    ] = 2,
    threads: Annotated[
        int | None,
        typer.Option(
            "--threads", metavar="N", min=1, help="Jobs run at once (default: --capacity)."
        ),
    ] = None,
    allow_paths: Annotated[
        bool,
        typer.Option(
            "--allow-paths",
            help="Accept 'path' jobs, which read and write files the client names. Only if "
            "every client of the broker may use this machine's files.",
        ),
    ] = False,
    imports: Imports = None,
    cv_threads: Annotated[
        int,
        typer.Option(
            "--cv-threads", metavar="N", min=0, help="OpenCV's own threads (0: its default)."
        ),
    ] = 1,
    keep_heap: KeepHeap = True,
    cpus: Annotated[
        str | None,
        typer.Option(
            "--cpus",
            metavar="LIST",
            help="Run only on these CPUs, e.g. 0 or 0,2 or 0-3 (as taskset -c). Default: any.",
        ),
    ] = None,
    max_pixels: MaxPixels = DEFAULT_MAX_PIXELS,
    max_image_mb: Annotated[
        int,
        typer.Option(
            "--max-image-mb",
            metavar="MIB",
            min=1,
            help="Refuse images whose decoded size (width x height x channels x bytes per "
            "sample, read from the file's header) is larger, in MiB.",
        ),
    ] = DEFAULT_MAX_IMAGE_MB,
    max_processes: Annotated[
        int,
        typer.Option(
            "--max-processes",
            metavar="N",
            min=1,
            help="Actor processes (threads) this worker runs at once; spawns beyond are refused.",
        ),
    ] = DEFAULT_MAX_PROCESSES,
    death_timeout: Annotated[
        float | None,
        typer.Option(
            "--death-timeout",
            min=0.0,
            metavar="SECONDS",
            help="Exit (code 1) if no broker has welcomed this worker within SECONDS of its "
            "start. Default: wait for the broker as long as it takes.",
        ),
    ] = None,
    key: KeyOpt = None,
    broker_key: BrokerKeyOpt = None,
    log_level: LogLevel = "info",
) -> None:
    """Run a worker node that processes jobs.

    It may start before the broker: it waits for it (saying so once), and reconnects by itself
    if the broker restarts.
    """
    from zimg import ops
    from zimg._actor import DEFAULT_ACTOR_LIMITS
    from zimg._affinity import check_usable, parse_cpus
    from zimg.worker import serve

    _setup_logging(log_level)
    try:
        cpu_set = parse_cpus(cpus) if cpus is not None else None
        if cpu_set is not None:
            check_usable(cpu_set)  # before pinning: never a bare "[Errno 22] Invalid argument"
        protocol.check_name(name)
        for module in imports or ():
            ops.load_module(module)
    except (ValueError, ZimgError) as exc:
        raise _fail(str(exc), code=2) from None
    client_keys = _client_keys(key, broker_key)
    try:
        serve(
            connect,
            name,
            capacity=capacity,
            threads=threads,
            cv_threads=cv_threads,
            max_pixels=max_pixels,
            max_image_bytes=max_image_mb << 20,
            keys=client_keys,
            allow_paths=allow_paths,
            keep_heap=keep_heap,
            cpus=cpu_set,
            actor_limits=dataclasses.replace(DEFAULT_ACTOR_LIMITS, max_processes=max_processes),
            death_timeout_s=death_timeout,
        )
    except ZimgError as exc:
        raise _fail(str(exc)) from None


# ---------------------------------------------------------------------- batches


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

    _setup_logging(log_level)
    _check_payload(payload)
    _check_places(output, "--output", grid)
    if dashboard:
        _check_http(http, token, insecure)
    client_keys = _client_keys(key, broker_key)
    if not any(os.path.exists(f) for f in files):  # one stat when the first exists
        shown = ", ".join(files[:3]) + (", ..." if len(files) > 3 else "")
        raise _fail(f"none of the {len(files)} inputs exist ({shown}); nothing to send")
    try:
        options = BatchOptions(
            outdir=output,
            pipeline=_pipeline(op, imports, strict=False),
            mode=payload,  # type: ignore[arg-type]  # checked by _check_payload
            window=window,
            max_pixels=max_pixels,
            idle_timeout_s=timeout,
            job_items=job_items,
            resume=resume,
        )
        key_name = _key_name(key)
        default_name = f"{key_name}.send-{os.getpid()}" if key_name else f"send-{os.getpid()}"
        conn = Connection(broker_url, name or default_name, keys=client_keys)
        with (
            conn.start(timeout_s=min(timeout, 10.0)),
            _warn_without_workers(conn, client_keys),
            _maybe_dashboard(dashboard, broker_url, http, token, client_keys) as on_entry,
        ):
            report = _run_with_progress(conn, files, options, also=on_entry)
    except ZimgError as exc:
        raise _fail(str(exc)) from None
    _finish(report, grid)


def _lists_a_worker(nodes: list[dict[str, Any]]) -> bool:
    return any(n.get("role") == protocol.ROLE_WORKER for n in nodes)


@contextlib.contextmanager
def _warn_without_workers(conn: "Connection", keys: "ClientKeys | None") -> Iterator[None]:
    """Warn once if, ``NO_WORKER_WARNING_S`` into the batch, the broker lists no worker (the
    bar would sit at 0 until --timeout). A timer thread asks NODES on a socket of its own:
    the job flow never waits for it."""
    import threading

    from zimg.connection import query_nodes

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

    _setup_logging(log_level)
    _check_payload(payload)
    _check_places(output, "--output", grid)
    if dashboard:
        _check_http(http, token, insecure)
    try:
        options = BatchOptions(
            outdir=output,
            pipeline=_pipeline(op, imports, strict=True),
            mode=payload,  # type: ignore[arg-type]  # checked by _check_payload
            window=window,
            max_pixels=max_pixels,
            job_items=job_items,
            resume=resume,
        )
        report = _run_local(
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
        raise _fail(str(exc)) from None
    _finish(report, grid)


def _run_local(
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
        _console(stderr=True).print(
            f"note: {workers} workers on {cpus} CPUs: at most {cpus} run jobs at once, the others "
            "stand by (--oversubscribe runs them all)",
            highlight=False,
        )
    with local_cluster(
        workers, capacity=capacity, imports=imports or (), config=config, pin=pin
    ) as running:
        http, token = dashboard or (DEFAULT_HTTP, None)
        with _maybe_dashboard(dashboard is not None, running.url, http, token, None) as on_entry:
            return _run_with_progress(running.jobs, files, options, also=on_entry)


def _check_http(http: str, token: str | None, insecure: bool) -> None:
    """A usage error (code 2) for a --http that may not be served: see dashboard._cli."""
    try:
        from zimg.dashboard._cli import check_http
    except ImportError as exc:
        raise _fail(_NO_DASHBOARD.format(exc=exc), code=2) from None
    problem = check_http(http, token, insecure)
    if problem is not None:
        raise _fail(problem, code=2)


_NO_DASHBOARD = "the dashboard needs the 'dashboard' extra ({exc}): pip install 'zimg[dashboard]'"


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


def _run_with_progress(
    conn: "Connection | JobRouter",
    files: Sequence[str | Path],
    options: "BatchOptions",
    also: Callable[[dict[str, Any]], None] | None = None,
) -> "BatchReport":
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
        console=_console(stderr=True),
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

        from zimg.batch import run_batch

        report = run_batch(conn, files, options, on_entry=on_entry, on_skipped=on_skipped)
        progress.update(task, advance=done - shown, errors=failed)
        return report


def _finish(report: "BatchReport", grid: Path | None) -> None:
    from rich.table import Table

    from zimg.grid import grid_from_files

    table = Table(title="per node")
    for col in ("node", "jobs", "errors", "mean ms", "share"):
        table.add_column(col, justify="left" if col == "node" else "right")
    total = max(1, sum(s.jobs for s in report.per_node.values()))
    for node_name, s in sorted(report.per_node.items()):
        mean = s.total_ms / s.jobs if s.jobs else 0.0
        table.add_row(
            _cell(node_name), str(s.jobs), str(s.errors), f"{mean:.1f}", f"{s.jobs / total:.0%}"
        )
    _console().print(table)
    n = report.count
    rate = n / report.elapsed_s if report.elapsed_s > 0 else 0.0
    skipped = f"skipped {report.skipped} done inputs; " if report.skipped else ""
    _console().print(
        f"{n} inputs in {report.elapsed_s:.2f} s ({rate:.1f}/s), {report.failed} failed; "
        f"{skipped}manifest: {_lit(report.manifest)}",
        highlight=False,
    )
    for entry in report.failures:
        _console(stderr=True).print(f"[red]failed:[/] {_lit(entry['error'])}", highlight=False)
    if report.failed > len(report.failures):
        _console(stderr=True).print(
            f"[red]... and {report.failed - len(report.failures)} more (see the manifest)"
        )
    outputs = report.outputs() if grid is not None else []
    if grid is not None and outputs:
        try:
            grid_from_files(outputs, grid)
            _console().print(f"grid: {_lit(grid)}", highlight=False)
        except ZimgError as exc:
            raise _fail(f"cannot write the grid: {exc}") from None
    if report.failed:
        raise typer.Exit(1)


# ---------------------------------------------------------------------- tools


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

    keys = _client_keys(key, broker_key)
    endpoints = protocol.split_endpoints(broker_url)
    if len(endpoints) > 1:
        answers = _ask_pair(endpoints, timeout, keys)
        if as_json:
            _console().print_json(json.dumps({"brokers": answers}))
            return
        for answer in answers:
            _console().print(_pair_line(answer), highlight=False)
        shown = [a for a in answers if a["report"] is not None]
        if not shown:
            raise _fail(f"no broker of {broker_url} answered")
        active = [a for a in shown if a["report"].get("failover", {}).get("state") == "active"]
        broker_url, report = (active or shown)[0]["url"], (active or shown)[0]["report"]
    else:
        from zimg.connection import query_nodes

        try:
            report = query_nodes(broker_url, timeout_s=timeout, keys=keys)
        except ZimgError as exc:
            raise _fail(str(exc)) from None
        if as_json:
            _console().print_json(json.dumps(report))
            return
    from rich.table import Table
    from rich.text import Text

    pair = report.get("failover")
    where = f" ({pair['role']}, {pair['state']})" if isinstance(pair, dict) else ""
    table = Table(title=Text(f"nodes at {_plain(broker_url)}{_plain(where)}"))
    columns = ("name", "role", "cpus", "capacity", "active", "done", "malformed", "dropped")
    for col in (*columns, "seen (s ago)"):
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
            f"{n['last_seen_s']:.1f}",
        )
        table.add_row(*map(_cell, cells))
    # Not a terminal (a pipe, a file): rich would squeeze the table into 80 columns.
    console = _console()
    if not console.is_terminal:
        from rich.console import Console

        console = Console(width=160, emoji=False)
    console.print(table)
    _console().print(f"queued jobs: {_lit(report['queued'])}", highlight=False)


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
    _setup_logging(log_level)
    _check_http(http, token, insecure)
    from zimg.dashboard._cli import run_dashboard

    try:
        run_dashboard(
            broker_url,
            http,
            token=token,
            interval_s=interval,
            keys=_client_keys(key, broker_key),
            front_door=front_door,
            name=name,
            max_body_bytes=max_body_mb << 20,
            max_pending=max_pending,
            deadline_s=deadline,
            max_pixels=max_pixels,
        )
    except ValueError as exc:  # a bad --name
        raise _fail(str(exc), code=2) from None


def _ask_pair(
    endpoints: list[str], timeout: float, keys: "ClientKeys | None"
) -> list[dict[str, Any]]:
    """Ask every broker of a failover pair for its report: ``url``, ``report`` (None when it did
    not answer) and ``error``."""
    from zimg.connection import query_nodes

    answers: list[dict[str, Any]] = []
    for url in endpoints:
        try:
            answers.append({"url": url, "report": query_nodes(url, timeout, keys=keys)})
        except ZimgError as exc:
            answers.append({"url": url, "report": None, "error": str(exc)})
    return answers


def _pair_line(answer: dict[str, Any]) -> str:
    """One broker of a pair, for ``zimg nodes``: its role and state, or why it did not answer."""
    url = _plain(answer["url"])
    report = answer["report"]
    if report is None:
        return f"broker {url}: no answer"
    pair = report.get("failover")
    if not isinstance(pair, dict):
        return f"broker {url}: a single broker (not in a failover pair), {report['count']} nodes"
    silent = pair.get("peer_silent_s")
    peer = "never heard"
    if isinstance(silent, int | float):
        peer = f"{_plain(pair.get('peer_state'))}, heard {silent:.1f} s ago"
    role, state = _plain(pair.get("role")), _plain(pair.get("state"))
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
        raise _fail(str(exc)) from None
    _console().print(f"saved {_lit(path)}", highlight=False)


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
        raise _fail(str(exc)) from None
    _console().print(f"grid: {_lit(output)}", highlight=False)


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

    _setup_logging("warning")
    _check_places(directory, "--dir")
    inputs = prepare_demo_inputs(directory / "images", copies)
    options = BatchOptions(outdir=directory / "out", mode="path")  # as `zimg run` does
    try:
        report = _run_local(inputs, options, workers=workers, capacity=2)
    except ZimgError as exc:
        raise _fail(str(exc)) from None
    grid_path = directory / "grid.png"
    _finish(report, grid_path)
    _console().print(
        f"inputs:  {_lit(directory / 'images')}\noutputs: {_lit(options.outdir)}", highlight=False
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


# ---------------------------------------------------------------------- keys

keys_app = typer.Typer(
    help="CURVE certificates: the broker admits only nodes whose public key it holds.",
    no_args_is_help=True,
)
app.add_typer(keys_app, name="keys")


@keys_app.command("new")
def keys_new(
    name: Annotated[str, typer.Argument(help="The node name the key is for ('broker' for it).")],
    directory: Annotated[
        Path, typer.Option("--dir", "-d", metavar="DIR", help="Where to write.")
    ] = Path("."),
) -> None:
    """Write NAME.key (public) and NAME.key_secret (secret, mode 0600)."""
    from zimg.security import create_keys

    try:
        public, secret = create_keys(name, directory)
    except (ValueError, ZimgError) as exc:
        raise _fail(str(exc), code=2) from None
    _console().print(
        f"public: {_lit(public)}\nsecret: {_lit(secret)}  (keep it private)", highlight=False
    )


@keys_app.command("authorize")
def keys_authorize(
    public_key: Annotated[Path, typer.Argument(help="A node's NAME.key (public) file.")],
    directory: Annotated[
        Path, typer.Option("--dir", "-d", metavar="DIR", help="The broker's keys directory.")
    ] = Path("."),
) -> None:
    """Let the node of PUBLIC_KEY join the broker whose keys are in DIR (restart the broker)."""
    from zimg.security import authorize_key

    if public_key.name.endswith(".key_secret"):
        raise _fail("give the public NAME.key file, never the secret one", code=2)
    try:
        target = authorize_key(public_key, directory)
    except ZimgError as exc:
        raise _fail(str(exc), code=2) from None
    except OSError as exc:
        raise _fail(f"cannot authorize {public_key}: {exc}") from None
    _console().print(f"authorized: {_lit(target)}", highlight=False)
