"""The scale harness's light client: a raw DEALER that joins as a client and keeps a window of
small JOBs in flight, costing little per job, so that the jobs per second measured are the
broker's."""

from __future__ import annotations

import contextlib
import secrets
import time
from dataclasses import dataclass
from typing import Any

import msgpack
import numpy as np
import zmq

from zimg import protocol, wire
from zimg._wire_terms import _PREFIX
from zimg._zsock import readable, recv_frames, send_frames
from zimg.wire import Command

WINDOW = 256  # JOBs the light client keeps in flight
PAYLOAD_BYTES = 100
_POLLIN, _NOBLOCK = int(zmq.POLLIN), int(zmq.NOBLOCK)
_RESULT_LEAD = wire.lead_frame(Command.RESULT, b"")


@dataclass
class JobRun:
    jobs: int  # answered with the payload echoed back
    wall_s: float
    failed: int
    busy: int
    complete: bool = True  # False: the time ran out first (``jobs`` were done by then)


class LightClient:
    """A client on a raw DEALER: HELLO as a client, then a window of small JOBs in flight."""

    def __init__(
        self, url: str, context: zmq.Context[zmq.Socket[bytes]], name: str = "bench-client"
    ) -> None:
        self.name = name
        self.incarnation = secrets.randbits(62)
        self.sock = context.socket(zmq.DEALER)
        self.sock.setsockopt(
            zmq.IDENTITY, protocol.node_identity(name, self.incarnation, secrets.randbits(64))
        )
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(url)
        self.interval_s = protocol.DEFAULT_HEARTBEAT_INTERVAL_S
        self.payload = (np.arange(PAYLOAD_BYTES) % 251).astype(np.uint8)
        self._next_id = 0
        self._beat_at = 0.0

    def join(self, timeout_s: float = 10.0) -> None:
        hello = {
            "name": self.name,
            "role": protocol.ROLE_CLIENT,
            "capacity": 0,
            "incarnation": self.incarnation,
            "session": 0,
            "version": protocol.PROTOCOL_VERSION,
        }
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.sock.send_multipart(wire.encode(Command.HELLO, hello))
            if self.sock.poll(1000):
                msg = wire.decode(self.sock.recv_multipart())
                if msg.command is Command.WELCOME:
                    self.interval_s = float(msg.header["heartbeat_interval_s"])
                    self._beat_at = time.monotonic() + self.interval_s
                    return
                if msg.command is Command.REJECT:
                    raise RuntimeError(f"the broker refused the client: {msg.header}")
        raise TimeoutError(f"no WELCOME within {timeout_s} s")

    def _job(self, job_id: int) -> list[Any]:
        header = {
            "id": job_id,
            "mode": "encoded",
            "ops": [],
            "items": [{"name": "x", "ext": ".jpg", "payload": self.payload}],
        }
        lead, *raw = wire.encode(Command.JOB, header)
        return [lead, *(bytes(f) for f in raw)]

    def run(self, jobs: int, window: int = WINDOW, timeout_s: float = 120.0) -> JobRun:
        """Send ``jobs`` JOBs, at most ``window`` unanswered, and wait for every RESULT, or
        until ``timeout_s`` has passed (then ``complete`` is False; the jobs still out are
        forgotten: their ids are never used again).

        The client costs little per job, as the ``zmq.proxy`` benchmark's client does, so that
        the jobs per second are the broker's: the JOBs are encoded before the clock starts, a
        RESULT's header is read by ``msgpack.unpackb`` alone (the broker is trusted here; its
        arrays stay ``ExtType``) and its payload frame compared, and the socket is read with
        :mod:`zimg._zsock`'s calls (a RESULT that is not a plain success is decoded in full).
        """
        sock, monotonic = self.sock, time.monotonic
        ids = range(self._next_id, self._next_id + jobs)
        self._next_id += jobs
        encoded = {job_id: self._job(job_id) for job_id in ids}
        to_send = list(reversed(ids))
        payload = self.payload.tobytes()
        outstanding: set[int] = set()
        done = failed = busy = 0
        started = monotonic()
        deadline = started + timeout_s
        beat = wire.encode(Command.HEARTBEAT, {})
        unpackb = msgpack.unpackb
        while done + failed < jobs:
            while to_send and len(outstanding) < window:
                job_id = to_send.pop()
                outstanding.add(job_id)
                send_frames(sock, encoded[job_id])
            now = monotonic()
            if now >= self._beat_at:
                send_frames(sock, beat)
                self._beat_at = now + self.interval_s
            if now > deadline:
                return JobRun(done, now - started, failed, busy, complete=False)
            if not zmq.zmq_poll([(sock, _POLLIN)], 100):
                continue
            while readable(sock):
                frames = recv_frames(sock, _NOBLOCK)
                lead = frames[0].bytes
                if lead[:_PREFIX] != _RESULT_LEAD:
                    if wire.command_of(frames) is Command.DISCONNECT:
                        raise RuntimeError(f"the broker dropped the client: {frames!r}")
                    continue
                # The broker's (trusted) RESULT, read in compiled code: its arrays stay ExtType.
                head = unpackb(lead[_PREFIX:], raw=False)
                answered = head.get("id")
                if answered not in outstanding:
                    continue  # a duplicate
                outstanding.discard(answered)
                if head.get("ok") is True and len(frames) == 2 and frames[1].bytes == payload:
                    done += 1  # the payload came back: a plain success
                    continue
                h = wire.decode(frames).header
                if h.get("busy") is True:
                    busy += 1
                    to_send.append(answered)  # the broker is full: send it again
                    continue
                items = h.get("items") or []
                if (
                    h.get("ok") is True
                    and len(items) == 1
                    and items[0].get("ok") is True
                    and np.array_equal(items[0].get("payload"), self.payload)
                ):
                    done += 1
                else:
                    failed += 1
        return JobRun(jobs=done, wall_s=monotonic() - started, failed=failed, busy=busy)

    def leave(self) -> None:
        with contextlib.suppress(zmq.ZMQError):
            self.sock.send_multipart(
                wire.encode(Command.DISCONNECT, {"reason": "normal"}), zmq.NOBLOCK
            )
        self.sock.close(linger=500)
