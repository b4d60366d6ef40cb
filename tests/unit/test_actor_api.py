"""The actor calls a Node offers are those of Process: one definition, so they cannot drift."""

from __future__ import annotations

import inspect

import pytest

import zimg
from zimg import Node, Process

pytestmark = pytest.mark.timeout(10)

# What a script does as its node's main process (docs/actors.md §1): Node must keep offering it.
MAIN_PROCESS_CALLS = {
    "self",
    "send",
    "receive",
    "spawn",
    "spawn_monitor",
    "link",
    "unlink",
    "monitor",
    "demonitor",
    "exit",
    "register",
    "unregister",
    "whereis",
    "nodes",
    "make_ref",
    "monitor_node",
}


def public_methods(cls: type) -> set[str]:
    return {
        name
        for name in dir(cls)
        if not name.startswith("_") and inspect.isfunction(inspect.getattr_static(cls, name))
    }


def test_node_offers_the_main_process_calls():
    assert public_methods(Process) & public_methods(Node) >= MAIN_PROCESS_CALLS


@pytest.mark.parametrize("name", sorted(public_methods(Process) & public_methods(Node)))
def test_node_and_process_share_each_call(name):
    node_call, process_call = getattr(Node, name), getattr(Process, name)
    if node_call is process_call:
        return  # one definition
    assert inspect.signature(node_call) == inspect.signature(process_call)
    assert inspect.getdoc(node_call) == inspect.getdoc(process_call)


@zimg.behaviour("tests.unit.test_actor_api:trapper")
def trapper(ctx, parent):
    ctx.trap_exit = True
    ctx.send(parent, ("ready", ctx.self()))
    exit_message = ctx.receive(lambda m: m[0] == "EXIT")
    _, asker = ctx.receive(lambda m: m[0] == "ask")
    ctx.send(asker, exit_message)


def test_exit_reason_ends_the_main_process_for_real():
    """``node.exit(reason)`` (Process.exit, now offered by Node) ends the main process as a
    signal does: its links hear ``reason`` and the node gets a new main process."""
    node = zimg.Node("inproc://nobody", "main")  # never started: everything here is local
    try:
        old = node.self()
        pid = node.spawn("main", "tests.unit.test_actor_api:trapper", old, link=True)
        assert node.receive(lambda m: m[0] == "ready", timeout=5) == ("ready", pid)
        with pytest.raises(zimg.ExitSignal) as caught:
            node.exit("bye")
        assert caught.value.reason == "bye"
        assert node.self() != old
        node.send(pid, ("ask", node.self()))
        assert node.receive(timeout=5) == ("EXIT", old, "bye")
    finally:
        node.close()
