"""What ``zimg dashboard`` and ``--dashboard`` on ``zimg send``/``zimg run`` do once parsed."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
from collections.abc import Iterator

from zimg._errors import ZimgError
from zimg.connection import Connection
from zimg.dashboard._front_door import FrontDoor
from zimg.dashboard._server import Dashboard, is_loopback, parse_http
from zimg.security import ClientKeys

__all__ = ["check_http", "run_dashboard", "sending_dashboard"]

log = logging.getLogger("zimg.dashboard")


def check_http(http: str, token: str | None, insecure: bool) -> str | None:
    """Why ``http`` may not be served as asked (None if it may), as the broker treats binds:
    loopback by default; another address needs a token, or ``insecure`` said out loud."""
    try:
        host, _ = parse_http(http)
    except ValueError as exc:
        return f"--http: {exc}"
    if is_loopback(host) or token:
        return None
    if not insecure:
        return (
            f"--http {http} is reachable from other machines, and without --token anyone "
            "there could watch the cluster and send it jobs. Pass --token TOKEN (or "
            "ZIMG_DASHBOARD_TOKEN), serve a loopback address, or pass --insecure on a network "
            "you trust."
        )
    log.warning("--insecure: the dashboard at %s is open to anyone on the network", http)
    return None


def run_dashboard(
    broker_url: str,
    http: str,
    *,
    token: str | None,
    interval_s: float,
    keys: ClientKeys | None,
    front_door: bool,
    name: str | None,
    max_body_bytes: int,
    max_pending: int,
    deadline_s: float,
    max_pixels: int,
) -> None:
    """Serve the dashboard (and front door) until interrupted.

    The front door joins the broker as a client in the background, and answers 503 until it
    is welcomed.
    """
    from zimg.distribute import JobRouter

    conn = None
    door = None
    stopping = threading.Event()
    if front_door:
        conn = Connection(broker_url, name or f"dashboard-{os.getpid()}", keys=keys)
        router = JobRouter(conn)
        # Joined in the background: the page is served (and shows the broker missing) while
        # the broker is not there yet; the front door answers 503 until it is welcomed.
        joining = threading.Thread(
            target=_join, args=(conn, stopping), name="zimg-dashboard-join", daemon=True
        )
        joining.start()
        door = FrontDoor(
            router,
            max_body_bytes=max_body_bytes,
            max_pixels=max_pixels,
            deadline_s=deadline_s,
            max_pending=max_pending,
        )
    dash = Dashboard(
        broker_url, http, token=token, interval_s=interval_s, keys=keys, front_door=door
    )
    print(f"zimg dashboard at {dash.url} (broker {broker_url})", flush=True)
    try:
        dash.serve()
    finally:
        stopping.set()
        if conn is not None:
            conn.close()


def _join(conn: Connection, stopping: threading.Event) -> None:
    """Start ``conn``, however long the broker takes; log why if it is refused."""
    try:
        conn.start(timeout_s=None, cancel=stopping)
    except ZimgError as exc:
        if not stopping.is_set():
            log.error("the front door could not join the broker: %s", exc)


@contextlib.contextmanager
def sending_dashboard(
    broker_url: str, http: str, *, token: str | None, keys: ClientKeys | None = None
) -> Iterator[Dashboard]:
    """A dashboard for the sending side while the block runs: feed it ``add_entry``."""
    dash = Dashboard(broker_url, http, token=token, keys=keys)  # http checked by check_http
    with dash.running():
        print(f"zimg dashboard at {dash.url}", file=sys.stderr, flush=True)
        yield dash
