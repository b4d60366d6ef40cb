"""The broker process: one ROUTER socket driving the pure state machine in ``_broker_state``."""

from __future__ import annotations

import logging
import math
import os
import secrets
import threading
import time
from collections import deque
from collections.abc import Sequence

import zmq

from zimg import _failover, protocol
from zimg._broker_backlog import MAX_BACKLOG, MAX_BACKLOG_BYTES, Backlogs
from zimg._broker_pair import PairHost
from zimg._broker_sending import _EMPTY_HEARTBEAT, Sending
from zimg._broker_state import BrokerConfig, BrokerState
from zimg._bug_log import log_bug
from zimg._errors import ZimgTimeout
from zimg._fd_limit import raise_open_file_limit
from zimg._peer_link import FailoverConfig, PeerLink
from zimg._wire_terms import _PREFIX
from zimg._zsock import NOBLOCK, recv_frames
from zimg.security import BrokerKeys
from zimg.wire import Command

log = logging.getLogger("zimg.broker")

# File descriptors kept for the broker's own use (its sockets, libzmq's, ZAP, logs): the rest
# of its open-file limit is for nodes, one connection each.
RESERVED_FDS = 64
_MAX_BATCH = 256  # messages handled per poll wake-up before timers get a turn
_MAX_SLEEP_S = 0.1  # the loop looks at its timers (and stop_soon) at least this often
_IDLE_AFTER_S = 1.0  # no message but heartbeats for this long: the cluster is idle
# Only a SEND is forwarded unread (BrokerState.forward_target): the loop asks for its target
# only when the lead frame's command byte says SEND, which a JOB or a RESULT skips at once.
_COMMAND_AT = _PREFIX - 1  # the lead frame's command byte
_SEND = int(Command.SEND)


class Broker(Sending):
    """A zimg broker bound to ``url`` (and to each of ``also_bind``: an ``inproc://`` endpoint
    lets a node in this process that shares ``context`` skip the kernel).

    Use :meth:`run` in the foreground (``zimg broker``), or :meth:`start` to run it on a
    background thread (embedded clusters and tests) and :meth:`stop` to end it.

    With ``failover`` it is one broker of a primary/backup pair (``docs/reliability.md``): it
    serves nodes only while active, and :attr:`yielded` says why it stopped if it had to give
    way to its peer.
    """

    def __init__(
        self,
        url: str = protocol.DEFAULT_BROKER_URL,
        config: BrokerConfig | None = None,
        *,
        context: zmq.Context[zmq.Socket[bytes]] | None = None,
        keys: BrokerKeys | None = None,
        also_bind: Sequence[str] = (),
        max_backlog: int = MAX_BACKLOG,
        max_backlog_bytes: int = MAX_BACKLOG_BYTES,
        failover: FailoverConfig | None = None,
    ) -> None:
        self.url = url
        self.also_bind = list(also_bind)
        self.keys = keys
        self.config = config or BrokerConfig()
        self._own_context = context is None
        self._ctx = context or zmq.Context()
        self.context = self._ctx
        self._stop = threading.Event()
        # stop() pushes an empty message here so that the loop's poll returns at once (it may
        # otherwise sleep up to 100 ms, until the next timer).
        self._wake_url = f"inproc://zimg-broker-wake-{os.getpid()}-{secrets.token_hex(8)}"
        self._waking = False
        self._thread: threading.Thread | None = None
        self._bound = threading.Event()
        self._error: BaseException | None = None
        self.endpoint: str | None = None
        self.state = BrokerState(
            self.config,
            now=time.monotonic(),
            epoch=secrets.randbits(63),
            key_names=keys.names.values() if keys is not None else (),
        )
        self._sock: zmq.Socket[bytes] | None = None
        # Messages waiting for a peer whose queue is full (its high-water mark), in order.
        self._backlogs = Backlogs(max_backlog, max_backlog_bytes)
        # Peers found gone while sending: handled one by one after the current instructions,
        # never from inside a send (a mass disconnection must not recurse).
        self._unreachable: deque[bytes] = deque()
        self.pair: PairHost | None = None
        if failover is not None:
            self.pair = PairHost(
                failover,
                self.state,
                heartbeat_interval_s=self.config.heartbeat_interval_s,
                liveness=self.config.liveness,
                stop=self._stop,
            )

    @property
    def failover(self) -> _failover.Failover | None:
        """A broker of a failover pair: its Binary Star state machine (None for a lone one)."""
        return None if self.pair is None else self.pair.failover

    @property
    def peer_link(self) -> PeerLink | None:
        """A broker of a failover pair, while it runs: the peer link's sockets."""
        return None if self.pair is None else self.pair.link

    @property
    def yielded(self) -> str | None:
        """Why this broker stopped to give way to its peer (both were active), or None."""
        return None if self.pair is None else self.pair.yielded

    # ------------------------------------------------------------------ lifecycle

    def start(self, timeout_s: float = 5.0) -> Broker:
        """Bind and run the broker on a daemon thread; return once it is bound.

        Raises:
            ZimgTimeout: it did not bind within ``timeout_s`` (also a ``TimeoutError``).
            OSError: the address cannot be bound (in use, or a bad path).
        """
        self._thread = threading.Thread(target=self._run_catching, name="zimg-broker", daemon=True)
        self._thread.start()
        if not self._bound.wait(timeout_s):
            raise ZimgTimeout(f"broker did not bind {self.url} within {timeout_s} s")
        if self._error is not None:
            raise self._error
        return self

    def stop_soon(self) -> None:
        """Ask the loop to end (safe from a signal handler); :meth:`run` returns shortly after."""
        self._stop.set()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the loop and close the socket."""
        self._stop.set()
        if self._thread is not None:
            self._wake()
            self._thread.join(timeout_s)
            self._thread = None
        if self._own_context:
            self._ctx.term()

    def __enter__(self) -> Broker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _wake(self) -> None:
        """Make the loop's poll return now (from any thread but the loop's)."""
        if not self._waking:
            return
        sock = self._ctx.socket(zmq.PUSH)
        try:
            sock.connect(self._wake_url)
            sock.send(b"", zmq.NOBLOCK)
        except zmq.ZMQError:
            pass  # the loop has already ended, or ends without it at its next timer
        finally:
            sock.close(linger=100)

    def _run_catching(self) -> None:
        try:
            self.run()
        except BaseException as exc:  # reported to start(), which re-raises in the caller
            self._error = exc
            self._bound.set()

    # ------------------------------------------------------------------ loop

    def run(self) -> None:
        """Bind and serve until :meth:`stop` is called (or KeyboardInterrupt)."""
        self._fit_node_limit()
        sock = self._ctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)  # unroutable sends raise instead of vanishing
        # No ROUTER_HANDOVER: a connection never takes over a routing id that another live
        # connection holds (a node's own reconnection waits until its old one is closed, which
        # the ZMTP heartbeats below bound).
        limits = self.config.limits
        sock.setsockopt(zmq.MAXMSGSIZE, limits.largest_frame)
        # ZMTP heartbeats: a connection that sends nothing (a peer stalled in the middle of a
        # frame, a vanished host) is closed after stall_timeout_s to 2 x stall_timeout_s,
        # freeing what it holds. Not shorter: libzmq 4.3 cancels a timer by walking all of its
        # I/O thread's timers, so each PONG costs O(connections); a 1 s interval made the I/O
        # thread's work grow as N**2 and stalled a broker of 5,000 nodes.
        stall_ms = max(1, round(self.config.stall_timeout_s * 1000))
        sock.setsockopt(zmq.HEARTBEAT_IVL, stall_ms)
        sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, stall_ms)
        sock.setsockopt(zmq.HANDSHAKE_IVL, 10_000)
        if any(map(protocol.is_ipv6_endpoint, [self.url, *self.also_bind])):
            sock.setsockopt(zmq.IPV6, 1)  # libzmq cannot bind tcp://[::1]:P without it
        if self.keys is not None:
            self.keys.start(self._ctx)
            self.keys.apply(sock)
        try:
            sock.bind(self.url)
            for extra in self.also_bind:
                sock.bind(extra)
        except zmq.ZMQError as exc:
            sock.close()
            if self.keys is not None:
                self.keys.stop()
            raise OSError(f"cannot bind the broker to {self.url}: {exc}") from exc
        self.endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT)
        log.info("broker listening on %s (pid %d)", self.endpoint, os.getpid())
        pair = self.pair
        if pair is not None:
            try:
                pair.open(self._ctx, self.keys)
            except OSError:
                sock.close()
                if self.keys is not None:
                    self.keys.stop()
                raise
        self._sock = sock
        self._bound.set()
        wake = self._ctx.socket(zmq.PULL)
        wake.bind(self._wake_url)
        self._waking = True
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        poller.register(wake, zmq.POLLIN)  # only stop() writes to it, after setting _stop
        listening = None if pair is None else pair.sub
        if listening is not None:
            poller.register(listening, zmq.POLLIN)
        state = self.state
        # Bound once: this loop runs per message.
        poll, monotonic, execute, send = poller.poll, time.monotonic, self._execute, self._send
        recv = sock.recv
        forward_target = state.forward_target
        # A broker of a pair lets nodes in only while it is active (the gate); a passive one
        # has no nodes, so the two shortcuts before it (heard, forward_target) never match.
        on_unforwarded = state.on_unforwarded if pair is None else pair.gate
        heard = state.heard
        keys = self.keys
        user_id = None
        beat, beat_size = _EMPTY_HEARTBEAT, len(_EMPTY_HEARTBEAT)
        tick_at = 0.0  # timers (heartbeats, expiry) are due no earlier than this
        drained_at = monotonic()  # when the loop last found no message waiting
        busy_at = 0.0  # when the loop last handled something other than a heartbeat
        batch_s, batch_nodes = self.config.idle_batch_s, self.config.idle_batch_nodes
        sleep = time.sleep
        try:
            while not self._stop.is_set():
                now = monotonic()
                if now >= tick_at:
                    execute(state.on_tick(now, drained_at))
                    tick_at = min(state.next_deadline(), now + _MAX_SLEEP_S)
                    if pair is not None:
                        pair.tick(now)
                        tick_at = min(tick_at, pair.next_deadline)
                        if pair.sub is not listening:  # the link was reopened: poll the new one
                            poller.unregister(listening)
                            listening = pair.sub
                            poller.register(listening, zmq.POLLIN)
                wait_ms = 10 if self._backlogs.peers else max(0, math.ceil((tick_at - now) * 1000))
                if poll(wait_ms):
                    if (
                        batch_s > 0
                        and now - busy_at > _IDLE_AFTER_S
                        and len(state.nodes) >= batch_nodes
                    ):
                        # An idle cluster of many nodes: let their heartbeats gather, and read
                        # them in one wake-up (each wake-up costs more than a heartbeat). The
                        # first message after an idle spell waits at most batch_s for it.
                        sleep(batch_s)
                    for _ in range(_MAX_BATCH):
                        try:
                            # The routing id as bytes (0.4 us less than a Frame and its copy);
                            # a ROUTER always has the message's own frames after it.
                            identity = recv(NOBLOCK)
                        except zmq.Again:
                            drained_at = monotonic()
                            break
                        message, at = recv_frames(sock), monotonic()
                        if keys is not None:
                            user_id = self._user_id(message[0])  # metadata is on every frame
                        lead = message[0]
                        if (
                            len(message) == 1
                            and len(lead) == beat_size
                            and lead.bytes == beat
                            and heard(identity, at, user_id)
                        ):
                            continue  # the commonest message of an idle cluster
                        busy_at = at
                        try:
                            # Most other messages go to a live pid, unread: no instructions.
                            target = (
                                forward_target(identity, message, at, user_id)
                                if len(lead) > _COMMAND_AT and lead.buffer[_COMMAND_AT] == _SEND
                                else None
                            )
                            if target is None:
                                instructions = on_unforwarded(identity, message, at, user_id)
                        except Exception:
                            # A message the state machine fails on is a bug, but one message
                            # must not stop the broker for every node: count it, skip it.
                            self._failed_on(identity)
                            continue
                        if target is None:
                            execute(instructions)
                        else:
                            send(target, message)
                            if self._unreachable:
                                execute(())
                else:
                    drained_at = monotonic()
                if pair is not None:
                    pair.hear()
                if self._backlogs.peers:
                    self._flush_backlog()
        finally:
            self._waking = False
            self._sock = None
            if pair is not None:
                pair.close()
            wake.close(linger=0)
            sock.close(linger=0)
            if self.keys is not None:
                self.keys.stop()

    def _failed_on(self, identity: bytes) -> None:
        """The state machine raised on a message from ``identity``: counted (``internal_errors``
        in NODES), and logged with its traceback the first few times only."""
        failures = self.state.on_internal_error()
        log_bug(
            log, failures, "a message from %r hit a bug in the broker; it was dropped", identity
        )

    @staticmethod
    def _user_id(frame: zmq.Frame) -> str:
        """The node name the ZAP handler bound to the sender's key ("" if it bound none); only
        called when the broker has keys."""
        value = frame.get("User-Id")
        return value if isinstance(value, str) else ""

    def _fit_node_limit(self) -> None:
        """Raise the open-file limit as far as the system allows, and admit no more nodes than
        it leaves room for (each is one connection), so that the broker refuses a node with a
        reason rather than failing to accept its connection."""
        soft = raise_open_file_limit()
        if soft is None:
            return
        room = max(16, soft - RESERVED_FDS)
        if room < self.state.node_limit:
            self.state.node_limit = room
            self.state.node_limit_fix = (
                f"its open-file limit (ulimit -n {soft}) leaves room for about {room}: raise "
                "the broker's limit (ulimit -n, and the hard limit: limits.conf, or LimitNOFILE "
                "for a systemd service)"
            )
