"""``zimg broker`` and ``zimg worker``: the long-running processes of a cluster."""

import contextlib
import dataclasses
import logging
import signal
from pathlib import Path
from typing import Annotated

import typer

from zimg import protocol
from zimg._errors import ZimgError
from zimg.cli._app import app, setup_logging
from zimg.cli._options import (
    BROKER_DEFAULTS,
    DEFAULT_MAX_IMAGE_MB,
    DEFAULT_MAX_PIXELS,
    DEFAULT_MAX_PROCESSES,
    ENDPOINT_HELP,
    PAIR_HELP,
    BrokerKeyOpt,
    Imports,
    KeepHeap,
    KeyOpt,
    LogLevel,
    MaxPixels,
    Oversubscribe,
    endpoint_option,
    failover_config,
    load_client_keys,
)
from zimg.cli._output import fail


@app.command()
def broker(
    bind: Annotated[
        str,
        typer.Option(
            "--bind",
            metavar="URL",
            help=f"Endpoint to bind: {ENDPOINT_HELP} (HOST or PORT * for any).",
            envvar="ZIMG_BIND",
            callback=endpoint_option,
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
            callback=endpoint_option,
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
            callback=endpoint_option,
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

    setup_logging(log_level)
    failover = failover_config(primary, backup, peer, peer_bind, failover_timeout)
    binds = [bind] if failover is None else [bind, failover.peer_bind]
    for exposed in (
        [url for url in binds if not protocol.is_loopback_endpoint(url)] if keys is None else []
    ):
        if not insecure:
            raise fail(
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
        raise fail(str(exc), code=2) from None
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
        raise fail(str(exc)) from None
    if server.yielded is not None:
        raise fail(f"gave way to the peer: {server.yielded}; restart it to rejoin as passive", 3)


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
            help=f"The broker's endpoint: {ENDPOINT_HELP}{PAIR_HELP}. --connect is the same "
            "option.",
            envvar="ZIMG_BROKER",
            callback=endpoint_option,
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
    lanes: Annotated[
        bool,
        typer.Option(
            "--lanes",
            help="Send actor messages to other nodes with --lanes on direct connections, once "
            "the broker introduces them, instead of through the broker (docs/actors.md).",
        ),
    ] = False,
    lane_host: Annotated[
        str | None,
        typer.Option(
            "--lane-host",
            metavar="ADDRESS",
            help="With --lanes: the address to listen for lanes on (default: the one this host "
            "reaches the broker from).",
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

    setup_logging(log_level)
    try:
        cpu_set = parse_cpus(cpus) if cpus is not None else None
        if cpu_set is not None:
            check_usable(cpu_set)  # before pinning: never a bare "[Errno 22] Invalid argument"
        protocol.check_name(name)
        for module in imports or ():
            ops.load_module(module)
    except (ValueError, ZimgError) as exc:
        raise fail(str(exc), code=2) from None
    client_keys = load_client_keys(key, broker_key)
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
            lanes=lanes,
            lane_host=lane_host,
        )
    except ZimgError as exc:
        raise fail(str(exc)) from None
