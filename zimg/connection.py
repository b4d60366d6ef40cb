"""A node's link to the broker: one DEALER on an I/O thread, with HELLO, heartbeats and reconnect.

The session (HELLO, WELCOME, REJECT, heartbeats, liveness, rejoin) is decided by a pure state
machine, ``zimg._node_session.NodeSession``; the I/O thread here only hosts it: it polls,
receives, decodes, feeds the session, and carries out its instructions.

Other threads never touch the DEALER. They hand frames to the I/O thread through an inproc PUSH
socket guarded by a lock (zero-copy, and it blocks the sender only when the I/O thread is far
behind, or the broker cannot take more). The I/O thread decodes what arrives and calls the
handler registered for its command; handlers run on the I/O thread and must not block.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from functools import partial
from random import SystemRandom
from typing import TYPE_CHECKING, Any

import zmq

from zimg import _node_session as ns
from zimg import protocol, wire
from zimg._bug_log import log_bug
from zimg._errors import BrokenError, ClosedError, WireError, ZimgTimeout
from zimg._placement import Placement
from zimg._zsock import NOBLOCK, readable, recv_frames, send_frames
from zimg.security import ClientKeys
from zimg.wire import Command

if TYPE_CHECKING:  # imported when a connection opens lanes: a job client never does, and
    # their pyzmq socket monitor imports asyncio (about 20 ms of a `zimg send`'s start)
    from zimg import _lanes
    from zimg._lane_path import LanePath
    from zimg._lane_reader import LaneReader

# Plain ints: pyzmq's PollEvent flags cost microseconds per operation in this loop.
_POLLIN, _POLLOUT = int(zmq.POLLIN), int(zmq.POLLOUT)
_SESSION_COMMANDS = ns.SESSION_COMMANDS

log = logging.getLogger("zimg.node")

Handler = Callable[[wire.Message], None]
RunHandler = Callable[[list[wire.Message]], None]
SessionHook = Callable[[bool], None]

_STOP = b"stop"
# How long a leaving node waits for room on its socket for what it still has to send (its
# processes' last signals, then DISCONNECT); close() waits for the I/O thread 5 s at most.
LEAVE_FLUSH_S = 2.0
# How often a start that can be cancelled looks at its cancel event while it waits.
_CANCEL_CHECK_S = 0.1
_inproc_ids = itertools.count()
# secrets.randbits, without importing secrets: its hmac loads OpenSSL's hashlib (5 ms).
_randbits = SystemRandom().getrandbits


class Connection:
    """One node's connection to a broker.

    Args:
        url: the broker's endpoint, e.g. ``tcp://127.0.0.1:5555``, or the endpoints of a
            failover pair separated by a comma (``tcp://A:5555,tcp://B:5555``): the node moves
            to the next when the one it uses goes silent or is passive.
        name: this node's name, unique among live nodes.
        role: ``"worker"`` (runs jobs) or ``"client"``.
        capacity: how many jobs the broker may hand this node at once (workers).
        placement: where a worker runs its jobs (host, CPUs, threads), sent in its HELLO so
            that the broker runs no more jobs on a host than it has CPUs.
        handlers: what to call, on the I/O thread, for each command that arrives.
        limits: wire limits for what is sent and received.
        lanes: open direct lanes to the nodes this one sends actor messages to, once the broker
            introduces them (``zimg._lanes``); off, every message crosses the broker.
        lane_host: the address to bind this node's lane on (default: the one it reaches the
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
        handlers: Mapping[Command, Handler] | None = None,
        limits: wire.Limits = wire.DEFAULT_LIMITS,
        keys: ClientKeys | None = None,
        context: zmq.Context[zmq.Socket[bytes]] | None = None,
        lanes: bool = False,
        lane_host: str | None = None,
    ) -> None:
        if not 0 <= capacity <= protocol.MAX_CAPACITY:
            raise ValueError(f"capacity must be in 0..{protocol.MAX_CAPACITY}, got {capacity}")
        self.url = url
        self.name = protocol.check_name(name)
        self.role = role
        self.capacity = capacity
        self.placement = placement
        self.limits = limits
        self.keys = keys
        self.incarnation = _randbits(62)
        self.identity = protocol.node_identity(name, self.incarnation, _randbits(64))
        # Counts reported to the broker with every heartbeat, when not zero (``zimg nodes``
        # shows them): ``malformed`` here, ``dropped`` from the actor runtime's mailboxes.
        self.counters: dict[str, Callable[[], int]] = {"malformed": lambda: self.malformed}
        # A shared context lets the node reach a broker in this process over inproc://.
        self._own_context = context is None
        self._ctx: zmq.Context[zmq.Socket[bytes]] = context or zmq.Context()
        # Held while a handler runs or a lane socket is read (``zimg._lane_reader``).
        self._dispatch = threading.RLock()
        self._handling = threading.local()  # ``depth``: handler calls running on this thread
        hello = dict(placement.to_hello()) if placement else {}
        lane_sockets = None
        if lanes:
            from zimg import _lanes

            host = lane_host or _lanes.lane_host(url)
            lane_sockets = _lanes.Lanes(self._ctx, self.name, host, limits, keys)
            hello.update(lane_sockets.hello_fields())
        self._session = ns.NodeSession(
            self.name,
            url=url,
            role=role,
            capacity=capacity,
            incarnation=self.incarnation,
            placement=hello,
            counters=self.counters,
            secure=keys is not None,
        )
        self.job_ids = itertools.count()
        self._handlers: dict[Command, Handler] = dict(handlers or {})
        self._run_handlers: dict[Command, RunHandler] = {}
        self._session_hooks: list[SessionHook] = []
        self._tick_hooks: list[Callable[[], None]] = []
        n = next(_inproc_ids)
        self._inbox = self._ctx.socket(zmq.PULL)
        self._inbox.bind(f"inproc://zimg-node-{n}")
        self._push = self._ctx.socket(zmq.PUSH)
        self._push.setsockopt(zmq.SNDTIMEO, 200)  # so a sender notices a dead I/O thread
        self._push.connect(f"inproc://zimg-node-{n}")
        self._push_lock = threading.Lock()
        self._lane_path: LanePath | None = None
        if lane_sockets is not None:
            from zimg._lane_path import LanePath

            self._lane_path = LanePath(
                lane_sockets,
                limits=limits,
                dispatch=self._dispatch,
                push_lock=self._push_lock,
                push=self._push_locked,
                forward=self._forward_inbox,
                send_direct=self._send_direct,
                handle=self._handle_lane,
                dispatching=self._hooks_lock,
                on_io_thread=lambda: threading.current_thread() is self._thread,
                to_broker=self.send_frames,
                closed=lambda: self._closed,
                in_handler=lambda: getattr(self._handling, "depth", 0) > 0,
                handle_run=self._handle_lane_run,
            )
            self.counters.update(self._lane_path.counters())
        self._control = self._ctx.socket(zmq.PAIR)
        self._control.bind(f"inproc://zimg-control-{n}")
        self._control_peer = self._ctx.socket(zmq.PAIR)
        self._control_peer.connect(f"inproc://zimg-control-{n}")
        self._welcomed = threading.Event()
        self._error: BaseException | None = None
        self._closed = False
        self.handler_errors = 0  # messages a handler raised on (see _handle)
        self._thread: threading.Thread | None = None
        self._dealer: zmq.Socket[bytes] | None = None
        self._backlog: deque[list[Any]] = deque()

    # ------------------------------------------------------------------ public

    def on(self, command: Command, handler: Handler) -> None:
        """Call ``handler(message)`` on the I/O thread whenever ``command`` arrives.

        A command has one handler, registered once (here or with ``handlers=``), so what a message
        does is decided in one place and a dispatch is one lookup. A part that serves several
        listeners owns the handler and fans out itself: RESULTs go to the connection's one
        :class:`~zimg.distribute.JobRouter`, which its ``JobClient`` s share.

        Raises:
            ValueError: ``command`` has a handler already. Replacing it would silently cut off its
                owner, so a second registration is refused as the bug it is.
        """
        _register(self._handlers, command, handler, self.name, "a handler")

    def on_run(self, command: Command, handler: RunHandler) -> None:
        """Also call ``handler(messages)`` with a run of ``command`` messages that came together
        (in a lane's batch), instead of ``command``'s handler once per message. It must do what
        that handler would do for each, in order.

        Raises:
            ValueError: ``command`` has a run handler already (as :meth:`on`).
        """
        _register(self._run_handlers, command, handler, self.name, "a run handler")

    def on_session(self, hook: SessionHook) -> None:
        """Call ``hook(broker_restarted)`` on the I/O thread whenever the node rejoins the broker.

        That is after a broker restart (``True``: a new broker epoch), or after the broker dropped
        this node for silence (``False``): work the broker held for this node is gone, and must
        be sent again.
        """
        self._session_hooks.append(hook)

    def on_tick(self, hook: Callable[[], None]) -> None:
        """Call ``hook()`` on the I/O thread once per heartbeat interval while the node is
        ready (for housekeeping that must not race the node's own sends)."""
        self._tick_hooks.append(hook)

    def start(
        self, timeout_s: float | None = 10.0, *, cancel: threading.Event | None = None
    ) -> Connection:
        """Connect and wait for the broker's WELCOME.

        While it waits, the node says HELLO once per heartbeat interval, and logs once (after a
        few silent intervals) that the broker is not there yet.

        Args:
            timeout_s: how long to wait for the WELCOME; None waits as long as it takes.
            cancel: stop waiting once this is set (from a signal handler, say).

        Raises:
            RejectedError: the broker refused this node (its name is taken, for example).
            ZimgTimeout: no WELCOME within ``timeout_s``.
            ClosedError: the connection was started (and closed) before, or ``cancel`` was set
                before the WELCOME.
        """
        if self._thread is not None:
            raise ClosedError(f"node {self.name} was already started")
        self._thread = threading.Thread(target=self._run, name=f"zimg-io-{self.name}", daemon=True)
        self._thread.start()
        if not self._wait_welcomed(timeout_s, cancel):
            self.close()
            if cancel is not None and cancel.is_set():
                raise ClosedError(f"node {self.name} stopped before the broker welcomed it")
            assert timeout_s is not None  # only a deadline or ``cancel`` ends the wait
            hint = ns.silence_hint(self.keys is not None)
            raise ZimgTimeout(
                f"no answer from the broker at {' or '.join(self._session.urls)} within "
                f"{timeout_s:g} s ({hint})"
            )
        if self._error is not None:
            error = self._error
            self.close()
            raise error
        return self

    def _wait_welcomed(self, timeout_s: float | None, cancel: threading.Event | None) -> bool:
        """Wait for the WELCOME (or a failure); False after ``timeout_s`` or once ``cancel`` is
        set. With ``cancel``, wait in short slices: a signal handler cannot set ``_welcomed``."""
        if cancel is None:
            return self._welcomed.wait(timeout_s)
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while not cancel.is_set():
            left = _CANCEL_CHECK_S if deadline is None else deadline - time.monotonic()
            if left <= 0:
                return False
            if self._welcomed.wait(min(left, _CANCEL_CHECK_S)):
                return True
        return False

    def send(self, command: Command, header: Mapping[str, Any]) -> None:
        """Encode and send a message to the broker; safe from any thread.

        Raises:
            WireError: the message cannot be encoded or exceeds the limits.
            ClosedError: the node was closed.
            BrokenError: the node lost its place at the broker for good (e.g. refused on rejoin).
        """
        if command is Command.SEND and len(header) == 2 and "to" in header and "msg" in header:
            frames = wire.encode_send(header["to"], header["msg"], self.limits)
        else:
            frames = wire.encode(command, header, self.limits)
        if self._lane_path is not None and command in wire.ACTOR_COMMANDS:
            peer = self._lane_path.destination(header, self.name)
            if peer is not None:
                self._lane_path.send(peer[0], peer[1], frames)
                return
        self.send_frames(frames)

    def send_frames(self, frames: list[Any]) -> None:
        """Send already-encoded frames to the broker; safe from any thread."""
        if threading.current_thread() is self._thread:
            # Replies made here (e.g. DOWN noproc) must not overtake what other threads queued
            # before: forward those first, so each sender's messages keep their order.
            self._forward_inbox()
            self._send_direct(frames)
            return
        with self._push_lock:
            self._push_locked(frames)

    def _push_locked(self, frames: list[Any]) -> None:
        """Hand ``frames`` to the I/O thread (the caller holds ``_push_lock``)."""
        while True:
            self._check_usable()
            try:
                send_frames(self._push, frames)
                return
            except zmq.Again:
                continue  # the I/O thread is behind (or gone): check, then wait again

    def prepare_to_leave(self) -> None:
        """The node is about to close: open no new lanes (what it still sends goes where it
        would have gone)."""
        if self._lane_path is not None:
            self._lane_path.leaving = True

    def close(self) -> None:
        """Leave the broker (DISCONNECT) and stop the I/O thread. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._thread is not None and self._thread.is_alive():
            self._control_peer.send(_STOP)
            self._thread.join(5.0)
        if self._lane_path is not None:
            self._lane_path.close()
        if self._own_context:
            self._ctx.destroy(linger=0)
            return
        for sock in (self._inbox, self._push, self._control, self._control_peer, self._dealer):
            if sock is not None:
                sock.close(linger=0)

    def __enter__(self) -> Connection:
        return self if self._thread is not None else self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def welcomed(self) -> bool:
        """True once the broker has welcomed this node."""
        return self._welcomed.is_set() and self._error is None

    @property
    def lanes(self) -> _lanes.Lanes | None:
        """This node's lanes (``zimg._lanes``: their states and counts), None without lanes."""
        return self._lane_path.lanes if self._lane_path is not None else None

    @property
    def lane_reader(self) -> LaneReader | None:
        """The leader role a waiting receive may take, reading lanes itself (None: no lanes)."""
        return self._lane_path.reader if self._lane_path is not None else None

    @property
    def heartbeat_interval_s(self) -> float:
        """The heartbeat interval (the broker's, once welcomed)."""
        return self._session.heartbeat_interval_s

    @property
    def liveness(self) -> int:
        """How many silent intervals make a peer lost (the broker's, once welcomed)."""
        return self._session.liveness

    @property
    def broker_url(self) -> str:
        """The endpoint of the broker the node talks to now (one of ``url``'s, for a pair)."""
        return self._session.url

    @property
    def epoch(self) -> int | None:
        """The broker's epoch from its last WELCOME (None before the first)."""
        return self._session.epoch

    @property
    def sessions(self) -> int:
        """How many sessions this node began with the broker (1 after the first WELCOME)."""
        return self._session.sessions

    @property
    def malformed(self) -> int:
        """Malformed messages this node dropped. The broker forwards actor messages to a live
        pid without decoding their bodies, so these are counted here and reported to it with
        every heartbeat (``zimg nodes`` shows them)."""
        return self._session.malformed

    def _check_usable(self) -> None:
        if self._closed:
            raise ClosedError(f"node {self.name} is closed")
        if self._thread is None or not self._thread.is_alive():
            why = self._error or "its I/O thread is not running"
            raise BrokenError(f"node {self.name} is not connected: {why}")

    # ------------------------------------------------------------------ I/O thread

    def _new_dealer(self, url: str) -> zmq.Socket[bytes]:
        sock = self._ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.ROUTING_ID, self.identity)
        sock.setsockopt(zmq.LINGER, 0)
        # Retry soon, then back off: an embedded cluster's workers are forked before its broker
        # binds, and a first retry after ZeroMQ's default 100 ms was most of its start-up.
        sock.setsockopt(zmq.RECONNECT_IVL, 10)
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, 2000)
        sock.setsockopt(zmq.MAXMSGSIZE, self.limits.largest_frame)
        if self.keys is not None:
            self.keys.apply(sock)
        if protocol.is_ipv6_endpoint(url):
            sock.setsockopt(zmq.IPV6, 1)  # libzmq cannot reach tcp://[::1]:P without it
        sock.connect(url)
        self._backlog.clear()  # stale: whatever matters is resent on the new session
        return sock

    def _send_direct(self, frames: list[Any]) -> None:
        """Send on the DEALER, or queue behind earlier messages if its queue is full."""
        if self._dealer is None:
            return
        if not self._backlog:
            try:
                send_frames(self._dealer, frames, NOBLOCK)
                return
            except zmq.Again:
                pass
        self._backlog.append(frames)

    def _forward_inbox(self, limit: int | None = None) -> None:
        """Move messages other threads queued to the DEALER (at most ``limit``)."""
        inbox = self._inbox
        count = 0
        while limit is None or count < limit:
            if count == 1 and not readable(inbox):
                return  # see _read_dealer
            try:
                frames = recv_frames(inbox, NOBLOCK)
            except zmq.Again:
                return
            self._send_direct(frames)
            count += 1

    def _drain_backlog(self, timeout_s: float) -> None:
        """Send the whole backlog, waiting up to ``timeout_s`` for room on the DEALER (the
        node is leaving: nothing else is left to do)."""
        deadline = time.monotonic() + timeout_s
        while self._backlog and self._dealer is not None:
            left_ms = int((deadline - time.monotonic()) * 1000)
            if left_ms <= 0 or not self._dealer.poll(left_ms, zmq.POLLOUT):
                log.warning(
                    "node %s: left with %d messages unsent (the broker took none for %g s)",
                    self.name,
                    len(self._backlog),
                    timeout_s,
                )
                return
            self._flush_backlog()

    def _flush_backlog(self) -> None:
        while self._backlog and self._dealer is not None:
            try:
                send_frames(self._dealer, self._backlog[0], NOBLOCK)
            except zmq.Again:
                return
            self._backlog.popleft()

    def _run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # surfaced by start(); logged for a running node
            log.exception("node %s: I/O thread failed", self.name)
            self._error = exc
            self._welcomed.set()

    def _loop(self) -> None:
        session = self._session
        if not self._carry_out(session.start(time.monotonic())):
            return
        poller = zmq.Poller()
        poller.register(self._control, zmq.POLLIN)
        path = self._lane_path
        while True:
            dealer = self._dealer
            if dealer is None:
                return
            # While the DEALER's queue is full, stop taking work from other threads: they block
            # on the inproc socket, which is the backpressure.
            poller.register(dealer, _POLLIN | _POLLOUT if self._backlog else _POLLIN)
            poller.register(self._inbox, 0 if self._backlog else _POLLIN)
            wait_s = max(0.0, session.wake_at - time.monotonic())
            if path is not None:
                wait_s = path.before_poll(poller, wait_s)
            events = dict(poller.poll(int(wait_s * 1000)))
            if self._control in events:
                self._carry_out(session.leave())
                return
            if events.get(dealer, 0) & _POLLIN and not self._read_dealer(dealer):
                return
            # After reading (a broker that spoke while we were frozen is not lost), before
            # sending anything (a DEALER about to be replaced would drop what it holds).
            # on_tick does nothing before wake_at: most passes need not build its empty answer.
            now = time.monotonic()
            if now >= session.wake_at and not self._carry_out(session.on_tick(now)):
                return
            if self._dealer is not dealer:  # replaced: what was polled is stale
                poller.unregister(dealer)
                continue
            if events.get(dealer, 0) & _POLLOUT:
                self._flush_backlog()
            if events.get(self._inbox, 0) & _POLLIN:
                self._forward_inbox(256)
            if path is not None:
                path.after_poll(events, now)

    def _read_dealer(self, dealer: zmq.Socket[bytes]) -> bool:
        """Receive, decode and handle what the broker sent (up to 256 messages; poll said one
        is there). False once the session says stop."""
        session, limits, handle = self._session, self.limits, self._handle
        for count in range(256):
            # Most wake-ups bring one message: asking whether another is there costs less than
            # the zmq.Again of a failed receive; in a burst, receiving until Again costs less.
            if count == 1 and not readable(dealer):
                break
            try:
                frames = recv_frames(dealer, NOBLOCK)
            except zmq.Again:
                break
            now = time.monotonic()
            try:
                msg = wire.decode_common(frames, limits)
            except WireError as exc:
                self._carry_out(session.on_malformed(exc, now))
                continue
            if msg.command in _SESSION_COMMANDS:
                if not self._carry_out(session.on_message(msg, now)):
                    return False
                if self._dealer is not dealer:
                    break  # replaced (a passive broker sent us to the next): the rest is stale
            else:  # what on_message would answer with Deliver(msg), without building it
                session.heard(now)
                handle(msg)
        return True

    def _carry_out(self, instructions: Sequence[ns.Instruction]) -> bool:
        """Do what the session decided; False once it says stop."""
        for ins in instructions:
            if isinstance(ins, ns.Deliver):
                self._handle(ins.message)
            elif isinstance(ins, ns.Send):
                self._send_direct(ins.frames)
            elif isinstance(ins, ns.Log):
                log.log(ins.level, "%s", ins.text)
            elif isinstance(ins, ns.Welcomed):
                self._welcomed.set()
            elif isinstance(ins, ns.RunSessionHooks):
                if self._lane_path is not None:
                    self._lane_path.session_lost()
                with self._hooks_lock():
                    for hook in self._session_hooks:
                        hook(ins.broker_restarted)
            elif isinstance(ins, ns.RunTickHooks):
                with self._hooks_lock():
                    for tick in self._tick_hooks:
                        try:
                            tick()
                        except Exception:
                            log.exception("node %s: a tick hook failed", self.name)
            elif isinstance(ins, ns.NewDealer):
                if self._dealer is not None:
                    self._dealer.close(linger=0)
                self._dealer = self._new_dealer(ins.url)
            elif isinstance(ins, ns.Leave):
                self._leave(ins.farewell)
            elif isinstance(ins, ns.Stop):
                self._error = ins.error
                self._welcomed.set()
                return False
        return True

    def _handle(self, msg: wire.Message) -> None:
        handler = self._handlers.get(msg.command)
        path = self._lane_path
        if path is None:
            self._call(handler, msg)
            return
        if msg.command is Command.LANE:
            handler = path.on_lane
        elif msg.command is Command.NODEDOWN and handler is not None:
            handler = partial(path.on_nodedown, handler)
        # Handlers run one at a time, on whichever thread reads (``zimg._lane_reader``).
        lock = self._dispatch
        if not lock.acquire(False):
            self._wait_dispatch(lock)
        try:
            self._call(handler, msg)
        finally:
            lock.release()

    def _wait_dispatch(self, lock: threading.RLock) -> None:
        """Take the dispatch lock held by another thread. The I/O thread goes on forwarding
        what other threads queued, and flushing lanes, meanwhile: the holder may be waiting for
        room to queue."""
        if threading.current_thread() is not self._thread:
            lock.acquire()
            return
        while not lock.acquire(True, 0.002):
            self._forward_inbox(256)
            if self._lane_path is not None:
                self._lane_path.lanes.flush()

    def _call(self, handler: Callable[[Any], None] | None, msg: Any) -> None:
        """Run ``handler(msg)`` (``msg``: a message, or a run of them for a run handler)."""
        if handler is None:
            log.debug("node %s: no handler for %s", self.name, _command_of(msg).name)
            return
        handling = self._handling
        depth = getattr(handling, "depth", 0)
        handling.depth = depth + 1
        try:
            handler(msg)
        except Exception:
            # A bug met by one message: the I/O thread goes on, and counts it.
            self.handler_errors += 1
            log_bug(
                log,
                self.handler_errors,
                "node %s: handler for %s failed",
                self.name,
                _command_of(msg).name,
            )
        finally:
            handling.depth = depth

    @contextlib.contextmanager
    def _hooks_lock(self) -> Iterator[None]:
        """Hooks run one at a time with handlers (the dispatch lock, once lanes may read)."""
        if self._lane_path is None:
            yield
            return
        lock = self._dispatch
        if not lock.acquire(False):
            self._wait_dispatch(lock)
        try:
            yield
        finally:
            lock.release()

    def _handle_lane(self, msg: wire.Message) -> None:
        """Handle a message a lane brought (already checked), or a NODEDOWN held for a BYE.
        Its callers hold the dispatch lock already: lanes are read, and their NODEDOWNs
        handed on, only under it (``zimg._lane_path``, ``zimg._lane_reader``)."""
        self._call(self._handlers.get(msg.command), msg)

    def _handle_lane_run(self, msgs: list[wire.Message]) -> None:
        """Handle the messages of a lane's batch (checked), in order, as :meth:`_handle_lane`
        does each: a run of one command that has a run handler goes to it at once."""
        handlers, runs = self._handlers, self._run_handlers
        start, end = 0, len(msgs)
        while start < end:
            command = msgs[start].command
            stop = start + 1
            run_handler = runs.get(command)
            if run_handler is None:
                self._call(handlers.get(command), msgs[start])
            else:
                while stop < end and msgs[stop].command is command:
                    stop += 1
                self._call(run_handler, msgs[start:stop] if start or stop < end else msgs)
            start = stop

    def _leave(self, farewell: list[Any] | None) -> None:
        if farewell is not None and self._dealer is not None:
            # What other threads sent before close() goes out first, the DISCONNECT last: a
            # closing node's processes send their exit signals and DOWNs as they end, and the
            # broker handles a node's messages in order, so every link and monitor in another
            # node hears `shutdown` before the broker reports this node gone (`noconnection`).
            self._forward_inbox()
            if self._lane_path is not None:
                self._lane_path.lanes.say_bye(LEAVE_FLUSH_S)
            self._send_direct(farewell)
            self._drain_backlog(LEAVE_FLUSH_S)
            self._dealer.close(linger=500)
        elif self._dealer is not None:
            self._dealer.close(linger=0)
        self._dealer = None


def _command_of(msg: wire.Message | list[wire.Message]) -> Command:
    """The command of a message, or of a run of them (all of one command)."""
    return msg[0].command if isinstance(msg, list) else msg.command


def _register(
    table: dict[Command, Any], command: Command, handler: Any, node: str, kind: str
) -> None:
    """``table[command] = handler``, once: a second registration raises ``ValueError``, naming
    ``node``, the command, the ``kind`` of handler and both handlers."""
    existing = table.get(command)
    if existing is not None:
        raise ValueError(
            f"node {node}: {command.name} already has {kind}, {existing!r}; "
            f"refusing a second one, {handler!r}"
        )
    table[command] = handler
