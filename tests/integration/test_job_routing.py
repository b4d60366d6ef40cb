"""Who gets a RESULT: a command has one handler, and a connection's RESULTs one JobRouter, owned by
whoever owns the connection (a Node: ``node.jobs``), shared by every JobClient on it."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

import zimg
from zimg import distribute as distribute_module
from zimg.broker import Broker
from zimg.connection import Connection
from zimg.distribute import JobClient, JobRouter, Processed, distribute
from zimg.node import Node
from zimg.wire import Command
from zimg.worker import Worker

pytestmark = pytest.mark.timeout(60)
TIMEOUT_S = 20.0


@pytest.fixture
def idle() -> Iterator[Connection]:
    """A connection that is never started: registering handlers needs no broker."""
    conn = Connection("tcp://127.0.0.1:9", "idle")
    yield conn
    conn.close()


def test_a_second_handler_for_a_command_is_refused_naming_the_command_and_both(idle):
    def first(msg: Any) -> None: ...

    def second(msg: Any) -> None: ...

    idle.on(Command.NODES, first)
    with pytest.raises(ValueError, match="NODES already has a handler") as info:
        idle.on(Command.NODES, second)
    assert "first" in str(info.value)
    assert "second" in str(info.value)
    with pytest.raises(ValueError, match="NODES"):
        idle.on(Command.NODES, first)  # once is once, even for the same handler
    idle.on(Command.NODEDOWN, second)  # another command is free


def test_handlers_given_to_the_constructor_count_as_registered():
    conn = Connection("tcp://127.0.0.1:9", "idle", handlers={Command.RESULT: print})
    try:
        with pytest.raises(ValueError, match="RESULT already has a handler"):
            JobRouter(conn)
    finally:
        conn.close()


def test_a_bare_connection_has_one_job_router_and_nothing_finds_it_but_its_owner(idle):
    router = JobRouter(idle)
    taken = r"RESULT already has a handler, <bound method JobRouter._on_result of <JobRouter"
    with pytest.raises(ValueError, match=taken):
        JobRouter(idle)
    with pytest.raises(ValueError, match=r"pass it \(or the Node that owns it\) to every"):
        JobClient(idle)  # a bare connection: no registry to look its router up in
    first, second = JobClient(router), JobClient(router)
    assert first._router is router
    assert second._router is router
    assert first.connection is idle


def test_a_node_owns_the_router_of_its_connection():
    node = Node("tcp://127.0.0.1:9", "idle")  # never started
    try:
        assert node.jobs.connection is node.connection
        assert JobClient(node)._router is node.jobs
        assert JobClient(node)._router is node.jobs
    finally:
        node.connection.close()


def test_distribute_keeps_no_registry_of_routers():
    mutable = (dict, set, list)
    module_state = {
        name: type(value).__name__
        for name, value in vars(distribute_module).items()
        if not name.startswith("__")
        and (isinstance(value, mutable) or "Weak" in type(value).__name__)
    }
    assert module_state == {}


def run_concurrently(target: Any, count: int) -> list[list[Processed]]:
    """``count`` threads, each distributing its own images (values k * 100 + i) at once."""
    out: list[list[Processed]] = [[] for _ in range(count)]
    errors: list[BaseException] = []
    barrier = threading.Barrier(count)

    def client(k: int) -> None:
        try:
            images = (np.full((8, 8), k * 100 + i, np.uint8) for i in range(20))
            barrier.wait(TIMEOUT_S)
            for done in distribute(images, target, pipeline=[], window=3, idle_timeout_s=10):
                out[k].append(done)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT_S * 2)
    assert not any(thread.is_alive() for thread in threads)
    if errors:
        raise errors[0]
    return out


@pytest.mark.parametrize("owner", ["node", "connection"])
def test_clients_sharing_a_connection_each_get_their_own_results(ipc_url, owner):
    with (
        Broker(ipc_url),
        Worker(ipc_url, "w1", capacity=2),
        Worker(ipc_url, "w2", capacity=2),
    ):
        if owner == "node":
            with zimg.connect(ipc_url, name="main") as node:
                results, router = run_concurrently(node, 3), node.jobs
                again = list(distribute([np.zeros((2, 2), np.uint8)], node, pipeline=[]))
        else:
            with Connection(ipc_url, "main") as conn:
                router = JobRouter(conn)
                results = run_concurrently(router, 3)
                again = list(distribute([np.zeros((2, 2), np.uint8)], router, pipeline=[]))
    for k, got in enumerate(results):
        assert sorted(p.index for p in got) == list(range(20)), k
        for p in got:
            assert p.error is None
            assert p.image is not None
            assert int(p.image[0, 0]) == k * 100 + p.index  # its own image, not a neighbour's
    assert [p.error for p in again] == [None]  # the router serves the next client too
    assert router.unrouted == 0
