"""Behaviours that ship with zimg: the notebook's image actor, an echo server and a supervisor.

Every node imports this module, so these names can be spawned anywhere:

- ``zimg.behaviours:process_image`` waits for ``("img", sender, image)``, applies the default
  pipeline (threshold, then its own node name as the label) and replies
  ``("result", node_name, image)`` to ``sender``. One image, then a normal exit, as in the notebook.
- ``zimg.behaviours:image_server`` does the same for every image until it gets ``"stop"``.
- ``zimg.behaviours:echo`` answers ``("echo", sender, x)`` with ``("echo", x)`` until ``"stop"``.
- ``zimg.behaviours:supervisor`` runs children and restarts those that crash, at most
  ``max_restarts`` times in ``period_s`` seconds (Erlang's one_for_one, transient children).
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

from zimg import ops, protocol
from zimg._actor import SHUTDOWN, Process
from zimg._registry import behaviour
from zimg.wire import Pid


def _is_image_request(message: Any) -> bool:
    return (
        isinstance(message, tuple)
        and len(message) == 3
        and message[0] == "img"
        and isinstance(message[1], Pid)
    )


def _answer(ctx: Process, message: tuple[str, Pid, Any]) -> None:
    _, sender, image = message
    out = ops.run_pipeline(image, ops.DEFAULT_PIPELINE, node=ctx.node_name)
    ctx.send(sender, ("result", ctx.node_name, out))


@behaviour
def process_image(ctx: Process) -> None:
    """The notebook's worker: one ``("img", sender, image)`` in, one ``("result", node, image)``
    out."""
    _answer(ctx, ctx.receive(_is_image_request))


@behaviour
def image_server(ctx: Process) -> None:
    """Like :func:`process_image`, for every image, until the message ``"stop"``."""
    while True:
        message = ctx.receive(lambda m: m == "stop" or _is_image_request(m))
        if message == "stop":
            return
        _answer(ctx, message)


@behaviour
def echo(ctx: Process) -> None:
    """Answer ``("echo", sender, x)`` with ``("echo", x)`` until the message ``"stop"``."""
    while True:
        message = ctx.receive()
        if message == "stop":
            return
        if isinstance(message, tuple) and len(message) == 3 and message[0] == "echo":
            ctx.send(message[1], ("echo", message[2]))


def _abnormal(reason: Any) -> bool:
    """Transient children restart only on these: not normal, not a shutdown."""
    if reason in (protocol.NORMAL, SHUTDOWN):
        return False
    return not (isinstance(reason, tuple) and reason[:1] == (SHUTDOWN,))


@behaviour
def supervisor(
    ctx: Process,
    children: list[Any],
    max_restarts: int = 3,
    period_s: float = 5.0,
    notify: Pid | None = None,
) -> None:
    """Keep ``children`` running: restart any that exits abnormally.

    Args:
        children: ``[[node, behaviour, args], ...]``; each runs linked to the supervisor.
        max_restarts: at most this many restarts...
        period_s: ...within this many seconds; one more and the supervisor gives up, exiting
            with ``("shutdown", "too many restarts")`` (which ends its linked children too).
        notify: if given, gets ``("started", index, pid)`` for every start and restart.

    A child that exits ``normal`` or ``shutdown`` (or ``("shutdown", ...)``) is not restarted.
    ``"stop"`` ends the supervisor and its children.
    """
    ctx.trap_exit = True
    restarts: deque[float] = deque()
    running: dict[Pid, int] = {}

    def start(index: int) -> None:
        node, name, args = children[index]
        pid = ctx.spawn(node, name, *args, link=True)
        running[pid] = index
        if notify is not None:
            ctx.send(notify, ("started", index, pid))

    for index in range(len(children)):
        start(index)
    while running:
        message = ctx.receive()
        if message == "stop":
            for pid in running:
                ctx.exit(pid, SHUTDOWN)
            return
        if not (isinstance(message, tuple) and len(message) == 3 and message[0] == "EXIT"):
            continue
        _, pid, reason = message
        if pid not in running:
            if reason != protocol.NORMAL:
                ctx.exit(reason)  # a linked parent ended: so does its supervisor
            continue
        index = running.pop(pid)
        if not _abnormal(reason):
            continue
        now = time.monotonic()
        while restarts and now - restarts[0] > period_s:
            restarts.popleft()
        if len(restarts) >= max_restarts:
            ctx.exit(("shutdown", "too many restarts"))
        restarts.append(now)
        start(index)
