"""Behaviours the actor tests spawn on worker processes (loaded with --import FILE)."""

from __future__ import annotations

import time

import zimg


@zimg.behaviour("zt.count_to")
def count_to(ctx, to, tag, n):
    """Send (tag, 0) ... (tag, n - 1) to ``to``."""
    for i in range(n):
        ctx.send(to, (tag, i))


@zimg.behaviour("zt.count_until_stopped")
def count_until_stopped(ctx, to, tag, most):
    """Send (tag, 0), (tag, 1), ... to ``to`` until a "stop" comes or ``most`` are sent, then
    ("sent", count). It looks for the stop every 20 messages, waiting up to 1 ms, which also
    paces the stream: at most ``most`` / 20 ms of it, whatever the machine's speed."""
    sent = 0
    while sent < most:
        ctx.send(to, (tag, sent))
        sent += 1
        if sent % 20 == 0:
            try:
                if ctx.receive(lambda m: m == "stop", timeout=0.001) == "stop":
                    break
            except TimeoutError:
                pass
    ctx.send(to, ("sent", sent))


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


@zimg.behaviour("zt.trap_echo_link")
def trap_echo_link(ctx, notify, echo):
    """Trap exits and link to the ``echo`` process; then ask it to echo "linked" to ``notify``,
    which it does only after the link reached it (signals between two processes keep their
    order); report the EXIT message to ``notify``."""
    ctx.trap_exit = True
    ctx.link(echo)
    ctx.send(echo, ("echo", notify, "linked"))
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


@zimg.behaviour("zt.busy")
def busy(ctx, seconds):
    """Compute without calling into zimg for ``seconds``, then return."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


@zimg.behaviour("zt.exit_keeper")
def exit_keeper(ctx, target):
    """Trap exits, link to ``target``; keep its EXIT message until asked ('get', reply_to)."""
    ctx.trap_exit = True
    ctx.link(target)
    ctx.send(target, ("linked", ctx.self()))
    exit_message = ctx.receive(lambda m: m[0] == "EXIT")
    _, reply_to = ctx.receive(lambda m: m[0] == "get")
    ctx.send(reply_to, exit_message)


@zimg.behaviour("zt.keywords")
def keywords(ctx, notify, *, tag="none"):
    ctx.send(notify, ("tag", tag))


@zimg.behaviour("zt.collect")
def collect(ctx, notify, n):
    """Receive ``n`` messages, then send them to ``notify`` as one list, in arrival order."""
    ctx.send(notify, ("collected", [ctx.receive() for _ in range(n)]))
