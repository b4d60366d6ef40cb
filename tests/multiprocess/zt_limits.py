"""Behaviours the actor-limit tests spawn on worker processes (loaded with --import FILE): they
report what the worker's actor runtime holds, from inside the worker."""

from __future__ import annotations

from typing import Any

import zimg
from zimg.wire import Pid


def _counters(ctx: Any) -> dict[str, Any]:
    runtime = ctx.runtime
    names = ("dropped_messages", "refused_spawns", "refused_links", "refused_monitors")
    counters = {name: getattr(runtime, name, None) for name in names}  # None: not counted
    counters["processes"] = len(runtime.processes())
    if hasattr(runtime, "counters"):
        counters.update(runtime.counters())
    return counters


@zimg.behaviour("zt.limits.stats")
def stats(ctx, reply_to):
    """Send ``("stats", counters, main_pid)`` to ``reply_to`` and end."""
    ctx.send(reply_to, ("stats", _counters(ctx), ctx.runtime.main.pid))


@zimg.behaviour("zt.limits.inspect")
def inspect(ctx, reply_to, pid):
    """Send ``("inspect", counters, links, monitored_by, mailbox)`` about the local ``pid``."""
    proc = ctx.runtime._local(pid) if isinstance(pid, Pid) else None
    sizes = (len(proc.links), len(proc.monitored_by), len(proc.mailbox)) if proc else (-1, -1, -1)
    ctx.send(reply_to, ("inspect", _counters(ctx), *sizes))


@zimg.behaviour("zt.limits.spawn_on")
def spawn_on(ctx, node, behaviour, reply_to):
    """Spawn ``behaviour`` on ``node`` (no link, no monitor) and send its pid to ``reply_to``."""
    ctx.send(reply_to, ("spawned", ctx.spawn(node, behaviour)))
