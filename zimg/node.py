"""A named node you can embed in a script: Erlang's spawn, send, receive, link and monitor.

``zimg.connect(url, name=...)`` joins a broker and returns a :class:`Node`. The calling thread acts
as the node's main process: it has a pid (``node.self()``) and a mailbox, so a script can
``send`` and ``receive`` like any actor.
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Any

import zmq

from zimg import behaviours as _behaviours  # noqa: F401  (registers the shipped behaviours)
from zimg import protocol, wire
from zimg._actor import (
    ANY,
    DEFAULT_ACTOR_LIMITS,
    SHUTDOWN,
    ActorLimits,
    ActorRuntime,
    ExitSignal,
    Process,
    ProcessCalls,
)
from zimg._errors import ZimgTimeout
from zimg._placement import Placement
from zimg.connection import Connection
from zimg.distribute import JobRouter
from zimg.nodes_query import collect_pages
from zimg.security import ClientKeys
from zimg.wire import Command

__all__ = ["ANY", "ActorLimits", "ExitSignal", "Node", "connect"]


class Node(ProcessCalls):
    """A node: a connection to the broker, the processes it hosts, and its main process.

    The calling thread acts as the main process: ``node.send``, ``node.receive``, ``node.spawn``
    and every other call of :class:`Process` are made as it (they are the same methods, from
    :class:`ProcessCalls`).

    Args:
        url: the broker's endpoint.
        name: this node's name, unique among live nodes.
        role: ``client`` (default) or ``worker`` (also takes jobs).
        capacity: jobs the broker may hand a worker at once.
        placement: a worker's host, CPUs and threads (see :class:`Connection`).
        limits: wire limits.
        actor_limits: what this node's actors may hold: processes, links and monitors per
            process, messages and bytes per mailbox and in all mailboxes (see
            :class:`ActorLimits` and ``docs/actors.md``).
        lanes: send actor messages to other nodes that have lanes on direct connections, once
            the broker introduces them, instead of through the broker (``docs/actors.md``).
        lane_host: the address to bind the lane on (default: the one this host reaches the
            broker from).
    """

    def __init__(
        self,
        url: str,
        name: str,
        *,
        role: str = protocol.ROLE_CLIENT,
        capacity: int = 0,
        placement: Placement | None = None,
        limits: wire.Limits = wire.DEFAULT_LIMITS,
        keys: ClientKeys | None = None,
        context: zmq.Context[zmq.Socket[bytes]] | None = None,
        actor_limits: ActorLimits = DEFAULT_ACTOR_LIMITS,
        lanes: bool = False,
        lane_host: str | None = None,
    ) -> None:
        self.connection = Connection(
            url,
            name,
            role=role,
            capacity=capacity,
            placement=placement,
            limits=limits,
            keys=keys,
            context=context,
            lanes=lanes,
            lane_host=lane_host,
        )
        self.runtime = ActorRuntime(self.connection, self.report, actor_limits)
        self.jobs = JobRouter(self.connection)  # the RESULT routing of every job sent from here
        self._replies: queue.SimpleQueue[wire.Message] = queue.SimpleQueue()
        self._query_lock = threading.Lock()
        self.connection.on(Command.NODES, self._replies.put)

    # ------------------------------------------------------------------ lifecycle

    def start(
        self, timeout_s: float | None = 10.0, *, cancel: threading.Event | None = None
    ) -> Node:
        """Join the broker. Raises RejectedError if the name is taken, ZimgTimeout if no answer.

        ``timeout_s=None`` waits for the broker as long as it takes; ``cancel`` ends the wait
        (ClosedError). See :meth:`Connection.start`.
        """
        self.connection.start(timeout_s, cancel=cancel)
        return self

    def close(self) -> None:
        """End this node's processes (reason ``shutdown``) and leave the broker."""
        self.connection.prepare_to_leave()
        self.runtime.exited(self.main, SHUTDOWN)
        self.runtime.shutdown()
        self.connection.close()

    def __enter__(self) -> Node:
        return self if self.connection.welcomed else self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def name(self) -> str:
        """This node's name."""
        return self.connection.name

    @property
    def main(self) -> Process:
        """The main process: the one the calling script acts as."""
        return self.runtime.main

    # ------------------------------------------------------------------ the cluster

    def report(self, timeout_s: float = 5.0) -> dict[str, Any]:
        """The broker's full node table (what ``zimg nodes`` prints), every page of it."""
        deadline = time.monotonic() + timeout_s

        def ask(request: dict[str, Any]) -> dict[str, Any]:
            while not self._replies.empty():
                self._replies.get_nowait()
            self.connection.send(Command.NODES, request)
            try:
                return self._replies.get(timeout=max(0.0, deadline - time.monotonic())).header
            except queue.Empty:
                raise ZimgTimeout(f"the broker did not answer NODES within {timeout_s} s") from None

        with self._query_lock:
            return collect_pages(ask)

    # ------------------------------------------------------------------ the main process

    @property
    def _proc(self) -> Process:
        return self.runtime.main

    @property
    def trap_exit(self) -> bool:
        """Whether exit signals become ``("EXIT", pid, reason)`` messages for the main process."""
        return self.main.trap_exit

    @trap_exit.setter
    def trap_exit(self, value: bool) -> None:
        self.main.trap_exit = value


def connect(
    url: str = protocol.DEFAULT_BROKER_URL,
    *,
    name: str,
    timeout_s: float = 10.0,
    keys: ClientKeys | None = None,
    lanes: bool = False,
) -> Node:
    """Join the broker at ``url`` as node ``name`` and return the started :class:`Node`.

    With ``lanes``, actor messages to other nodes that have lanes go on direct connections
    once the broker introduces them (``docs/actors.md``).

    ``url`` may name a failover pair's two brokers, ``"tcp://A:5555,tcp://B:5555"``: the node
    joins the active one and moves to the other when it fails (``docs/reliability.md``).

    Use it as a context manager to leave cleanly::

        with zimg.connect("tcp://127.0.0.1:5555", name="main") as node:
            print(node.nodes())
    """
    return Node(url, name, keys=keys, lanes=lanes).start(timeout_s)
