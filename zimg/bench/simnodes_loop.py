"""The simulated nodes' engine: :class:`SimNodes`, many DEALERs in one process driven by one
``epoll`` and one heap of timers, each a node of its own on the wire. What they do (join,
heartbeats, jobs, leaving) and how they scale to thousands of sockets is told in
:mod:`zimg.bench.simnodes`, the module to import."""

from __future__ import annotations

import heapq
import random
import select
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from typing import Any

import msgpack
import zmq

from zimg import protocol
from zimg._fd_limit import raise_open_file_limit
from zimg._zsock import readable, recv_frames, send_frames
from zimg.wire import MAGIC, Command, lead_frame

FDS_PER_NODE = 2  # a DEALER's mailbox (its ZMQ_FD) and its TCP connection
RESERVED_FDS = 64  # the process's own: epoll, pipes, libzmq's reaper and I/O thread, logs
MAX_PER_PROCESS = 5000  # what the harness puts in one process (10,000 descriptors)
DEFAULT_JOIN_WINDOW = 256  # nodes that have sent their first HELLO and not yet heard back

_POLLIN = int(zmq.POLLIN)
_NOBLOCK = int(zmq.NOBLOCK)
_PREFIX = len(MAGIC) + 1
_HEARTBEAT = lead_frame(Command.HEARTBEAT, b"\x80")  # HEARTBEAT {}
_EXT_ARRAY, _EXT_BLOB = 4, 5
_HELLO_RETRY_S = 1.0  # HELLO again after this long without an answer, before any WELCOME

_HEARTBEAT_BYTE = int(Command.HEARTBEAT)
_WELCOME, _REJECT = int(Command.WELCOME), int(Command.REJECT)
_DISCONNECT, _JOB = int(Command.DISCONNECT), int(Command.JOB)

# What each node is doing.
_WAITING, _JOINING, _READY, _REFUSED, _CLOSED = range(5)


_PACKER = msgpack.Packer(use_bin_type=True)  # msgpack.packb would make one per call


def _pack(obj: Any) -> bytes:
    packed: bytes = _PACKER.pack(obj)
    return packed


def placement_of(
    index: int, prefix: str, per_host: int | None, cpus: int, threads: int
) -> dict[str, Any]:
    """A worker's HELLO placement: ``per_host`` simulated workers to a host of ``cpus`` CPUs
    (None: no placement, like an older zimg)."""
    if per_host is None:
        return {}
    return {
        "host": f"sim-{prefix}-{index // per_host}",
        "cpus": list(range(cpus)),
        "threads": threads,
    }


class SimNodes:
    """``count`` simulated nodes named ``prefix + str(first + i)``, all in this process.

    Args:
        url: the broker's endpoint.
        count: how many nodes.
        prefix: the start of every node name (and of the simulated host names).
        first: the number of the first node (several processes can share one prefix).
        role: ``"worker"`` or ``"client"``.
        capacity: each node's job credit.
        per_host: placed workers: this many to a simulated host (None: unplaced).
        cpus: CPUs per simulated host.
        threads: each placed worker's threads (default: its capacity).
        answer: answer each JOB at once (False: keep it, like a frozen worker).
        version: the protocol version sent in HELLO.
        join_window: at most this many nodes waiting for their first WELCOME at once (0: all).
    """

    def __init__(
        self,
        url: str,
        count: int,
        *,
        prefix: str = "w",
        first: int = 0,
        role: str = protocol.ROLE_WORKER,
        capacity: int = 2,
        per_host: int | None = None,
        cpus: int = 2,
        threads: int | None = None,
        answer: bool = True,
        version: int = protocol.PROTOCOL_VERSION,
        join_window: int = DEFAULT_JOIN_WINDOW,
    ) -> None:
        if count < 1:
            raise ValueError("count must be at least 1")
        if role not in protocol.ROLES:
            raise ValueError(f"role {role!r} is not one of {protocol.ROLES}")
        self.url = url
        self.count = count
        self.role = role
        self.capacity = capacity
        self.answer = answer
        self.version = version
        self.join_window = join_window or count
        self.names = [protocol.check_name(f"{prefix}{first + i}") for i in range(count)]
        rng = random.SystemRandom()
        self.incarnations = [rng.getrandbits(62) for _ in range(count)]
        self.identities = [
            protocol.node_identity(name, inc, rng.getrandbits(64))
            for name, inc in zip(self.names, self.incarnations, strict=True)
        ]
        threads = threads or capacity
        self._placements = [
            placement_of(first + i, prefix, per_host, cpus, threads) if role == "worker" else {}
            for i in range(count)
        ]
        self.interval_s = protocol.DEFAULT_HEARTBEAT_INTERVAL_S
        self.liveness = protocol.DEFAULT_LIVENESS
        self._socks: list[zmq.Socket[bytes] | None] = [None] * count
        self._state = bytearray(count)  # _WAITING ...
        self._session = [0] * count
        self._welcomed_once = bytearray(count)
        self._heard = [0.0] * count
        self._due = [0.0] * count  # each node's one timer (heartbeat or HELLO retry)
        self._timers: list[tuple[float, int]] = []
        self._fd_index: dict[int, int] = {}
        self._waiting = deque(range(count))
        self._first_joins = 0  # nodes between their first HELLO and its answer
        # Counters (read from other threads: plain ints).
        self.ready = 0
        self.refused = 0
        self.refusals: Counter[str] = Counter()
        self.first_refusal: dict[str, Any] | None = None
        self.disconnects = 0  # DISCONNECTs received while ready (the broker had dropped us)
        self.lost = 0  # liveness timeouts: nothing heard from the broker for too long
        self.rejoins = 0  # WELCOMEs that started a new session after the first
        self.jobs = 0
        self.results = 0
        self.held = 0
        self.malformed = 0
        self.send_dropped = 0
        self.left = 0
        # Set by the loop; waited on by other threads.
        self.all_ready = threading.Event()
        self.settled = threading.Event()  # every node welcomed or refused
        self.on_ready: Callable[[SimNodes], None] | None = None
        self.on_settled: Callable[[SimNodes], None] | None = None
        self._stop = threading.Event()
        self._leave = threading.Event()
        self.gone = threading.Event()  # set once disconnect_all() has been carried out
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._ctx: zmq.Context[zmq.Socket[bytes]] | None = None
        self._epoll: select.epoll | None = None

    # ------------------------------------------------------------------ control

    def start(self) -> SimNodes:
        """Run the nodes on a daemon thread."""
        self._thread = threading.Thread(target=self._run_catching, name="simnodes", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        """End the loop and close every socket (no DISCONNECT: like a crash, minus the kill)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None

    def stop_soon(self) -> None:
        """Ask the loop to end (safe from a signal handler)."""
        self._stop.set()

    def disconnect_all(self) -> None:
        """Make every ready node send DISCONNECT and close, all at once (safe from a signal
        handler); the loop does it on its next turn."""
        self._leave.set()

    def __enter__(self) -> SimNodes:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait_ready(self, timeout_s: float) -> None:
        """Block until every node is welcomed.

        Raises:
            TimeoutError: not within ``timeout_s`` (with the counters).
        """
        self._wait(self.all_ready, timeout_s, "welcomed")

    def wait_settled(self, timeout_s: float) -> None:
        """Block until every node is welcomed or refused."""
        self._wait(self.settled, timeout_s, "welcomed or refused")

    def _wait(self, event: threading.Event, timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while not event.wait(0.05):
            if self._error is not None:
                raise RuntimeError(f"the simulated nodes failed: {self._error!r}")
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"not every node was {what} within {timeout_s} s: {self.status()}"
                )

    def status(self) -> dict[str, Any]:
        """The counters, as one JSON-able dict."""
        return {
            "count": self.count,
            "ready": self.ready,
            "refused": self.refused,
            "refusals": dict(self.refusals),
            "first_refusal": self.first_refusal,
            "disconnects": self.disconnects,
            "lost": self.lost,
            "rejoins": self.rejoins,
            "jobs": self.jobs,
            "results": self.results,
            "held": self.held,
            "malformed": self.malformed,
            "send_dropped": self.send_dropped,
            "left": self.left,
            "error": repr(self._error) if self._error is not None else None,
        }

    # ------------------------------------------------------------------ loop

    def _run_catching(self) -> None:
        try:
            self.run()
        except BaseException as exc:  # reported by wait_ready() and status()
            self._error = exc
            raise

    def run(self) -> None:
        """Run the nodes on this thread until :meth:`stop_soon` (or :meth:`stop`)."""
        soft = raise_open_file_limit()
        need = self.count * FDS_PER_NODE + RESERVED_FDS
        if soft is not None and need > soft:
            room = (soft - RESERVED_FDS) // FDS_PER_NODE
            raise OSError(
                f"{self.count} simulated nodes need about {need} file descriptors, and this "
                f"process may open {soft} (ulimit -n): at most {room} per process"
            )
        ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        ctx.set(zmq.MAX_SOCKETS, self.count + 64)
        self._ctx = ctx
        self._epoll = select.epoll()
        try:
            self._loop()
        finally:
            for i, sock in enumerate(self._socks):
                if sock is not None:
                    sock.close(linger=0)
                    self._socks[i] = None
            self._epoll.close()
            ctx.term()

    def _loop(self) -> None:
        assert self._epoll is not None
        poll, fd_index, drain = self._epoll.poll, self._fd_index, self._drain
        monotonic = time.monotonic
        while not self._stop.is_set():
            now = monotonic()
            if self._leave.is_set():
                self._leave.clear()
                self._leave_all()
            self._start_joins(now)
            self._fire_timers(now)
            wait = 0.05
            if self._timers:
                wait = min(wait, max(0.0, self._timers[0][0] - monotonic()))
            for fd, _ in poll(wait):
                i = fd_index.get(fd)
                if i is not None:
                    drain(i)

    def _start_joins(self, now: float) -> None:
        """Open and connect the next nodes, as the join window allows."""
        assert self._ctx is not None
        assert self._epoll is not None
        while self._waiting and self._first_joins < self.join_window:
            i = self._waiting.popleft()
            sock = self._ctx.socket(zmq.DEALER)
            sock.setsockopt(zmq.IDENTITY, self.identities[i])
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.RECONNECT_IVL, 10)
            sock.setsockopt(zmq.RECONNECT_IVL_MAX, 2000)
            sock.connect(self.url)
            fd = int(sock.getsockopt(zmq.FD))
            self._socks[i] = sock
            self._fd_index[fd] = i
            self._epoll.register(fd, select.EPOLLIN)
            self._state[i] = _JOINING
            self._heard[i] = now
            self._first_joins += 1
            self._hello(i, now)

    def _schedule(self, i: int, due: float) -> None:
        self._due[i] = due
        heapq.heappush(self._timers, (due, i))

    def _fire_timers(self, now: float) -> None:
        timers, due, state = self._timers, self._due, self._state
        expiry = self.liveness * self.interval_s
        while timers and timers[0][0] <= now:
            at, i = heapq.heappop(timers)
            if due[i] != at:
                continue  # superseded
            s = state[i]
            if s == _READY:
                if now - self._heard[i] > expiry:
                    # The broker has been silent too long: start a new session.
                    self.lost += 1
                    self._unready(i)
                    self._hello(i, now)
                    continue
                self._send(i, [_HEARTBEAT])
                nxt = at + self.interval_s
                self._schedule(i, nxt if nxt > now else now + self.interval_s)
                self._drain(i)
            elif s == _JOINING:
                self._hello(i, now)

    def _hello(self, i: int, now: float) -> None:
        header = {
            "name": self.names[i],
            "role": self.role,
            "capacity": self.capacity,
            "incarnation": self.incarnations[i],
            "session": self._session[i],
            "version": self.version,
            **self._placements[i],
        }
        self._send(i, [lead_frame(Command.HELLO, _pack(header))])
        retry = self.interval_s if self._welcomed_once[i] else _HELLO_RETRY_S
        self._schedule(i, now + retry)
        self._drain(i)

    def _unready(self, i: int) -> None:
        """Node ``i`` lost its session: it will HELLO with the next session number."""
        if self._state[i] == _READY:
            self.ready -= 1
            self._session[i] += 1
            self._state[i] = _JOINING

    def _send(self, i: int, frames: Sequence[Any]) -> bool:
        sock = self._socks[i]
        if sock is None:
            return False
        try:
            send_frames(sock, frames, _NOBLOCK)
        except zmq.Again:
            self.send_dropped += 1  # the broker is far behind; a lost message is a lost beat
            return False
        return True

    def _drain(self, i: int) -> None:
        """Read everything waiting on node ``i``'s socket."""
        sock = self._socks[i]
        now = time.monotonic()
        while sock is not None and readable(sock):
            frames = recv_frames(sock, _NOBLOCK)
            self._heard[i] = now
            self._handle(i, frames, now)
            sock = self._socks[i]

    def _handle(self, i: int, frames: list[zmq.Frame], now: float) -> None:
        lead = frames[0].bytes
        if len(lead) < _PREFIX or lead[: len(MAGIC)] != MAGIC:
            self.malformed += 1
            return
        cmd = lead[len(MAGIC)]
        if cmd == _HEARTBEAT_BYTE:
            return
        try:
            header = msgpack.unpackb(lead[_PREFIX:], raw=False)
            if not isinstance(header, dict):
                raise ValueError("the header is not a map")
            if cmd == _JOB:
                self._job(i, header, frames)
            elif cmd == _WELCOME:
                self._welcome(i, header, now)
            elif cmd == _REJECT:
                self._refused(i, header, now)
            elif cmd == _DISCONNECT and self._state[i] == _READY:
                self.disconnects += 1
                self._unready(i)
                self._hello(i, now)
            # NODEDOWN, actor commands, NODES: a simulated node has nothing to do with them.
        except (ValueError, TypeError, KeyError, msgpack.UnpackException):
            self.malformed += 1

    def _welcome(self, i: int, header: dict[str, Any], now: float) -> None:
        interval, liveness = header.get("heartbeat_interval_s"), header.get("liveness")
        if isinstance(interval, float | int) and interval > 0:
            self.interval_s = float(interval)  # the broker widens it as the cluster grows
        if isinstance(liveness, int) and liveness > 0:
            self.liveness = liveness
        if self._state[i] != _JOINING:
            return  # an answer to a repeated HELLO, or the broker's new interval
        self._state[i] = _READY
        self.ready += 1
        if self._welcomed_once[i]:
            self.rejoins += 1
        else:
            self._welcomed_once[i] = 1
            self._first_joins -= 1
        self._schedule(i, now + random.uniform(0.0, self.interval_s))  # staggered beats
        if self.ready == self.count and not self.all_ready.is_set():
            self.all_ready.set()
            if self.on_ready is not None:
                self.on_ready(self)
        self._check_settled()

    def _refused(self, i: int, header: dict[str, Any], now: float) -> None:
        if self._state[i] != _JOINING:
            return
        code = str(header.get("code"))
        if self._welcomed_once[i] and code in protocol.RETRYABLE_REJECTS:
            return  # a re-join refused for now: the HELLO timer asks again
        self.refused += 1
        self.refusals[code] += 1
        if self.first_refusal is None:
            self.first_refusal = {
                "name": self.names[i],
                "code": code,
                "reason": header.get("reason"),
            }
        if not self._welcomed_once[i]:
            self._first_joins -= 1
        self._close(i, _REFUSED)
        self._check_settled()

    def _check_settled(self) -> None:
        if self.ready + self.refused == self.count and not self.settled.is_set():
            self.settled.set()
            if self.on_settled is not None:
                self.on_settled(self)

    def _close(self, i: int, state: int, linger_ms: int = 0) -> None:
        sock = self._socks[i]
        if sock is not None:
            fd = int(sock.getsockopt(zmq.FD))
            if self._epoll is not None:
                self._epoll.unregister(fd)
            del self._fd_index[fd]
            sock.close(linger=linger_ms)
            self._socks[i] = None
        self._state[i] = state
        self._due[i] = -1.0

    def _job(self, i: int, header: dict[str, Any], frames: list[zmq.Frame]) -> None:
        self.jobs += 1
        if not self.answer:
            self.held += 1
            return
        raw = frames[1:]
        out_frames: list[Any] = []
        items: list[dict[str, Any]] = []
        result = {
            "id": header["id"],
            "ticket": header["ticket"],
            "attempt": header.get("attempt", 1),
            "node": self.names[i],
            "ok": True,
            "error": None,
            "items": items,
        }
        packed = header.get("payloads")
        if "pack" in header and isinstance(packed, msgpack.ExtType) and packed.code == _EXT_ARRAY:
            # Packed payloads (zimg.jobs): echoed as they came, one frame, renumbered 0.
            spec = msgpack.unpackb(packed.data, raw=False)
            out_frames.append(raw[spec[0]])
            items.extend({"ok": True, "ms": 0.0, "error": None} for _ in header["items"])
            result["pack"] = header["pack"]
            result["payloads"] = msgpack.ExtType(_EXT_ARRAY, _pack([0, *spec[1:]]))
            if self._send(i, [lead_frame(Command.RESULT, _pack(result)), *out_frames]):
                self.results += 1
            return
        for item in header["items"]:
            payload = item.get("payload") if isinstance(item, dict) else None
            if isinstance(payload, msgpack.ExtType) and payload.code in (_EXT_ARRAY, _EXT_BLOB):
                spec = msgpack.unpackb(payload.data, raw=False)
                index = spec[0] if payload.code == _EXT_ARRAY else spec
                if index != len(out_frames):  # renumber: the frames go out in item order
                    spec = (
                        [len(out_frames), *spec[1:]]
                        if payload.code == _EXT_ARRAY
                        else len(out_frames)
                    )
                    payload = msgpack.ExtType(payload.code, _pack(spec))
                out_frames.append(raw[index])
            items.append({"ok": True, "ms": 0.0, "error": None, "payload": payload})
        if self._send(i, [lead_frame(Command.RESULT, _pack(result)), *out_frames]):
            self.results += 1

    def _leave_all(self) -> None:
        """Every ready node leaves: DISCONNECT, then close (lingering so that it goes out)."""
        bye = lead_frame(Command.DISCONNECT, _pack({"reason": "normal"}))
        ready = [i for i in range(self.count) if self._state[i] == _READY]
        for i in ready:
            if self._send(i, [bye]):
                self.left += 1
        for i in range(self.count):
            if self._socks[i] is not None:
                self._close(i, _CLOSED, linger_ms=500)
        self.ready = 0
        self._waiting.clear()
        self.gone.set()
