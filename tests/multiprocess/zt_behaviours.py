"""Behaviours the actor tests spawn on worker processes (loaded with --import FILE)."""

from __future__ import annotations

import zimg


@zimg.behaviour("zt.count_to")
def count_to(ctx, to, tag, n):
    """Send (tag, 0) ... (tag, n - 1) to ``to``."""
    for i in range(n):
        ctx.send(to, (tag, i))


@zimg.behaviour("zt.waiter")
def waiter(ctx):
    """Wait for one message: 'crash' raises, anything else ends normally."""
    if ctx.receive() == "crash":
        raise RuntimeError("boom")


@zimg.behaviour("zt.crash_at_once")
def crash_at_once(ctx):
    raise ValueError("crashed before anyone could link")


@zimg.behaviour("zt.linked_echo")
def linked_echo(ctx, target):
    """Link to ``target``, then echo until 'stop' (dies with ``target`` unless it trapped)."""
    ctx.link(target)
    zimg.behaviours.echo(ctx)


@zimg.behaviour("zt.trapper")
def trapper(ctx, notify, target):
    """Trap exits, link to ``target``, report the EXIT message to ``notify``."""
    ctx.trap_exit = True
    ctx.link(target)
    ctx.send(notify, ("linked", ctx.self()))
    exit_message = ctx.receive(lambda m: m[0] == "EXIT")
    ctx.send(notify, ("trapped", exit_message))


@zimg.behaviour("zt.watcher")
def watcher(ctx, notify, target):
    """Monitor ``target`` and report the DOWN message to ``notify``."""
    ref = ctx.monitor(target)
    ctx.send(notify, ("watching", ref))
    ctx.send(notify, ("seen", ctx.receive(lambda m: m[0] == "DOWN")))


@zimg.behaviour("zt.relay")
def relay(ctx):
    """Forward ('relay', to, message) as message to ``to``, until 'stop'."""
    while (m := ctx.receive()) != "stop":
        ctx.send(m[1], m[2])


@zimg.behaviour("zt.named")
def named(ctx, name, notify):
    """Register ``name``, report whereis(name), then echo."""
    ctx.register(name)
    ctx.send(notify, ("registered", ctx.whereis(name), ctx.self()))
    zimg.behaviours.echo(ctx)
