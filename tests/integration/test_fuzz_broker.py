"""Bad input against a LIVE broker (a ``python -m zimg broker`` subprocess and two workers).

- The fuzz: random and mutated messages from raw DEALERs with several identities (registered
  ones, one that took over a registered node's routing id, one of a node that has left, and
  unregistered ones), and oversize or cut-off messages over raw ZMTP, while valid traffic runs
  alongside (``zimg send`` of 40 images, actor echo round trips) and must come out exact.
- A peer taking over a live worker's routing id cannot stall a batch.
- Frame and header size limits: the socket (MAXMSGSIZE) and ``wire.decode`` (``Limits``).

The fuzz is a seeded ``random.Random``: the seed is printed, and taken from ``ZIMG_FUZZ_SEED``
when set, so a failure is reproduced by running again with that seed (the messages are the same;
how many are sent depends on timing). Each message is made knowing how the broker must count it
(``Expect``), so the broker's counters are checked against exact bounds, not "something grew".
"""

from __future__ import annotations

import functools
import logging
import os
import random
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pytest
import zmq

import zimg
from tests.reference import check_output, manifest
from zimg import protocol, wire
from zimg._broker_state import BrokerConfig, result_head
from zimg._errors import WireError
from zimg.bench.decode import KINDS, collision_header, packed_map
from zimg.broker import Broker
from zimg.connection import Connection
from zimg.nodes_query import query_nodes
from zimg.testing import Processes, free_tcp_url
from zimg.wire import MAGIC, Command, Ext, Limits, Pid, Ref

SEED = int(os.environ.get("ZIMG_FUZZ_SEED", "0")) or random.SystemRandom().randrange(1, 2**32)
FUZZ_MIN_MESSAGES = 2000  # at least this many and this long, and on until the valid traffic is
FUZZ_MIN_S = 8.0  # done...
FUZZ_MAX_S = 15.0  # ...but never longer
RECV_TIMEOUT_S = 10.0  # generous bound for a reply that must come
# Broker RSS growth allowed over the fuzz. The broker handles one message at a time and keeps
# none (the largest fuzz message is ~2 MiB); the rest is the valid batch's jobs in flight (a
# window of 16 encoded images of at most 220 kB: under 4 MB) and the fuzz's jobs (payloads under
# 64 kB), plus what glibc and pymalloc keep after freeing. Measured: 3 to 8 MB. Keeping just 1 kB
# per message (~20,000 messages) measured +33 MB.
BROKER_RSS_GROWTH_LIMIT_MB = 16


def vm_kb(pid: int, field_name: str = "VmRSS") -> int:
    """A /proc/PID/status memory figure (VmRSS, VmHWM) in kB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field_name} for process {pid}")


# ---------------------------------------------------------------------------------- raw ZMTP


def zmtp_connect(url: str, identity: bytes = b"") -> socket.socket:
    """A TCP connection that has done the ZMTP 3.0 NULL handshake as a DEALER.

    It lets a test declare a frame of any size without having (or sending) the bytes.
    """
    host, port = url.removeprefix("tcp://").rsplit(":", 1)
    conn = socket.create_connection((host, int(port)), timeout=RECV_TIMEOUT_S)
    greeting = b"\xff" + bytes(8) + b"\x7f" + b"\x03\x00" + b"NULL".ljust(20, b"\0") + bytes(32)
    conn.sendall(greeting)
    got = b""
    while len(got) < 64:
        chunk = conn.recv(64 - len(got))
        assert chunk, "the broker closed the connection during the ZMTP greeting"
        got += chunk
    assert got[:1] == b"\xff", got
    assert got[10:11] == b"\x03", got  # ZMTP 3.x

    def prop(name: bytes, value: bytes) -> bytes:
        return bytes([len(name)]) + name + struct.pack(">I", len(value)) + value

    body = b"\x05READY" + prop(b"Socket-Type", b"DEALER") + prop(b"Identity", identity)
    conn.sendall(bytes([0x04, len(body)]) + body)
    return conn


def frame_bytes(frame: Any) -> bytes:
    """A frame's bytes, whatever holds them (bytes, an array of any shape, a zmq.Frame):
    ``bytes(array)`` of a 0-d array is bytes(int(array)), a run of zeros or an error."""
    return memoryview(frame).tobytes()


def zmtp_frame(data: bytes, *, more: bool, declared: int | None = None) -> bytes:
    """One ZMTP message frame; ``declared`` overrides the length in its header."""
    size = len(data) if declared is None else declared
    flags = 0x01 if more else 0x00
    if size > 255:
        return bytes([flags | 0x02]) + struct.pack(">Q", size) + data
    return bytes([flags, size]) + data


def closed_within(conn: socket.socket, timeout_s: float) -> bool:
    """True if the peer closes the connection within ``timeout_s`` (whatever it sends first)."""
    deadline = time.monotonic() + timeout_s
    while (left := deadline - time.monotonic()) > 0:
        conn.settimeout(left)
        try:
            if not conn.recv(65536):
                return True
        except TimeoutError:
            return False
        except ConnectionResetError:
            return True
    return False


def zmtp_receive(conn: socket.socket, deadline: float) -> list[bytes]:
    """The next message on a raw ZMTP connection (its frames), skipping commands (PING)."""

    def exactly(size: int) -> bytes:
        data = b""
        while len(data) < size:
            conn.settimeout(max(0.001, deadline - time.monotonic()))
            chunk = conn.recv(size - len(data))
            assert chunk, "the broker closed the connection"
            data += chunk
        return data

    frames: list[bytes] = []
    while True:
        flags = exactly(1)[0]
        size = struct.unpack(">Q", exactly(8))[0] if flags & 0x02 else exactly(1)[0]
        body = exactly(size)
        if flags & 0x04:  # a command frame, not part of a message
            continue
        frames.append(body)
        if not flags & 0x01:
            return frames


# ---------------------------------------------------------------------------------- messages


@dataclass(frozen=True)
class Expect:
    """How the broker must count one message, depending on whether its sender is registered.

    Each counter named is incremented exactly once; one in ``maybe`` at most once.
    """

    registered: tuple[str, ...]
    unregistered: tuple[str, ...]
    maybe: tuple[str, ...] = ()


WIRE = Expect(("malformed",), ("malformed",))  # wire.decode refuses it, whoever sends it
# A broken RESULT whose first three entries are still plain, with an int/str id and a bin client:
# from a registered node the broker settles it on those (docs/protocol.md §4) and finds it is not
# that node's job; from anyone else it decodes it, and refuses it.
PEEKED_RESULT = Expect(("late_results",), ("malformed",))
# A SEND to a live pid whose `to` comes first: from a registered node the broker forwards it
# unread and the worker decodes, drops and counts it; from anyone else the broker decodes it.
FORWARDED_MALFORMED = Expect((), ("malformed",))
BAD_HELLO = Expect(("rejected",), ("rejected",))  # answered REJECT
TAKEN_HELLO = Expect(("rejected",), ("rejected",))  # a live node's name: probed, then REJECT
NOT_FOR_BROKER = Expect(("malformed",), ("unknown_peer",))  # commands the broker never takes
NOT_GIVEN = Expect(("late_results",), ("unknown_peer",))  # forged RESULT
JOB = Expect(("jobs_received",), ("unknown_peer",))  # id fine, anything else may be junk
UNFORWARDABLE_JOB = Expect(("jobs_received", "jobs_failed"), ("unknown_peer",))
ACTOR = Expect((), ("unknown_peer",))  # routed to a node, or unroutable
# An actor command whose `to` is no pid, node name or (name, node) pair of strs.
BAD_TO = Expect(("malformed",), ("unknown_peer",))
PLAIN = Expect((), ())  # NODES from anyone
HEARTBEAT = Expect((), ("unknown_peer",))

# An actor command naming a pid of another node as its sender: the broker drops it (forged).
FORGED = Expect(("forged",), ("unknown_peer",))
COUNTED = (
    "malformed",
    "rejected",
    "unknown_peer",
    "late_results",
    "jobs_received",
    "jobs_failed",
    "forged",
)
# Which header field of an actor command must name the sender's own pid (docs/protocol.md §8.2).
OWN_FIELD = {
    Command.SPAWN: "from",
    Command.LINK: "from",
    Command.UNLINK: "from",
    Command.MONITOR: "from",
    Command.EXIT: "from",
    Command.DOWN: "pid",
    Command.DEMONITOR: "ref",
}
# Tickets no job of the valid traffic has (the broker numbers its jobs from 1).
NO_TICKET = 10**12


def pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def ext(code: int, obj: Any) -> msgpack.ExtType:
    return msgpack.ExtType(code, pack(obj))


LEAD = len(MAGIC) + 1  # the lead frame's magic and command byte, before the header


def header_of(frames: list[Any]) -> bytes:
    """The packed header of a message: its lead frame after the magic and the command byte."""
    return bytes(frames[0])[LEAD:]


def raw_message(command: Command, header: Any, *frames: bytes) -> list[bytes]:
    """A message whose header is packed as given (ext types and all), not through wire.encode."""
    body = header if isinstance(header, bytes) else pack(header)
    return [wire.lead_frame(command, body), *frames]


def tiny_png_bomb() -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    ihdr = struct.pack(">IIBBBBB", 60_000, 60_000, 8, 0, 0, 0, 0)
    idat = zlib.compress(bytes(60_001 * 2))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


@functools.cache
def colliding_maps() -> dict[str, list[bytes]]:
    """Packed maps whose keys share one hash (``zimg.bench.decode``), by kind, of 40 and 3,000
    keys, made once (in about a second: ``Fuzzer.setup`` makes them before the fuzz starts)."""
    return {kind: [packed_map(make(40)), packed_map(make(3000))] for kind, make in KINDS.items()}


@functools.cache
def colliding_megabyte() -> bytes:
    """A ~1 MB header of 2-tuple keys with one hash: 37 s of broker CPU before the fix."""
    return collision_header("tuples", where="top")


class Generator:
    """Makes fuzz messages from one seeded random stream.

    Args:
        rng: the random stream.
        targets: names of live worker nodes (actor commands are sent their way).
        incarnations: their incarnations (pids that look real but name no process).
    """

    def __init__(
        self,
        rng: random.Random,
        targets: list[str],
        incarnations: dict[str, int],
    ) -> None:
        self.rng = rng
        self.targets = targets
        self.incarnations = incarnations
        self.job_ids = iter(range(10**9))
        self.np = np.random.default_rng(rng.getrandbits(32))

    # -------------------------------------------------------------- building blocks

    def blob(self, low: int = 0, high: int = 64) -> bytes:
        return self.rng.randbytes(self.rng.randint(low, high))

    def term(self, depth: int = 0) -> Any:
        """A random valid term (as wire.encode takes it)."""
        r = self.rng
        kind = r.randrange(12 if depth < 3 else 7)
        if kind == 0:
            return None
        if kind == 1:
            return r.choice([True, False, 0, -1, 2**63 - 1, -(2**63), 2**64 - 1, 1.5, float("nan")])
        if kind == 2:
            return r.randint(-(2**40), 2**40)
        if kind == 3:
            return "".join(r.choice("aZ09_ é\u2603\x00") for _ in range(r.randrange(12)))
        if kind == 4:
            return self.blob()
        if kind == 5:
            return Pid(r.choice([*self.targets, "ghost", "x"]), r.getrandbits(62), r.randrange(9))
        if kind == 6:
            return Ref("n1", r.getrandbits(62), r.randrange(99))
        if kind == 7:
            return self.array()
        if kind == 8:
            return [self.term(depth + 1) for _ in range(r.randrange(4))]
        if kind == 9:
            return tuple(self.term(depth + 1) for _ in range(r.randrange(4)))
        if kind == 10:
            # str and bytes keys only: any other is malformed (docs/protocol.md §3)
            return {r.choice(["a", "b", "", b"k"]): self.term(depth + 1) for _ in range(3)}
        return b"\x00" * r.choice([65_537, 70_000])  # a BLOB frame

    def array(self) -> np.ndarray:
        r = self.rng
        dtype = r.choice(["u1", "i1", "u2", "<i2", ">u4", "<f4", ">f8", "<c8", "?", "<f2", "<i8"])
        shape = r.choice(
            [(), (0,), (3,), (4, 5), (2, 3, 3), (1, 1, 1, 1, 2), (0, 10**6), (7, 1, 4)]
        )
        return self.np.integers(0, 255, shape).astype(dtype)

    def valid_header(self, command: Command) -> dict[str, Any]:
        """A header the command could plausibly carry (before any mutation)."""
        r = self.rng
        if command is Command.HELLO:
            return {
                "name": f"mut{r.randrange(10**6)}",
                "role": "client",
                "capacity": 0,
                "incarnation": r.getrandbits(62),
                "version": protocol.PROTOCOL_VERSION,
            }
        if command is Command.JOB:
            return {
                "id": r.randrange(10**6),
                "name": "x.png",
                "mode": "encoded",
                "ext": ".png",
                "ops": [["threshold", {"thresh": 127}]],
                "payload": np.frombuffer(self.blob(1, 64), np.uint8),
            }
        if command is Command.RESULT:
            ticket = NO_TICKET + r.randrange(10**6)
            return {"id": r.randrange(10**6), "ticket": ticket, "ok": True, "attempt": 1}
        return {"to": Pid("n1", r.getrandbits(62), 3), "msg": self.term()}

    # -------------------------------------------------------------- malformed on the wire

    def wire_malformed(self) -> list[bytes]:
        r = self.rng
        good = wire.encode(Command.HEARTBEAT, {})
        choice = r.randrange(22)
        if choice == 0:  # a lead frame cut short: empty, part of the magic, no command byte...
            # ...or no header at all after the command byte
            return [wire.lead_frame(Command.NODES, b"")[: r.randint(0, LEAD)]]
        if choice == 1:  # bad magic: other versions, case, length, junk
            magic = r.choice(
                [b"ZIMG1", b"ZIMG3", b"ZIMG0", b"zimg2", b"ZIMG", b"ZZIMG2", b"", b"\x00" * 5]
            )
            if magic == b"ZIMG1" and r.random() < 0.5:  # a version 1 peer, in its own layout
                return [magic, bytes([Command.HEARTBEAT]), header_of(good)]
            lead = magic + bytes(good[0])[len(MAGIC) :]
            assert not lead.startswith(MAGIC), lead  # never the right magic by accident
            return [lead, *good[1:]]
        if choice == 2:  # unknown command byte, or none or two (the header then starts off)
            known = {int(c) for c in Command}
            command = r.choice(
                [b"", b"\x01\x01", bytes([r.choice(sorted(set(range(256)) - known))])]
            )
            return [MAGIC + command + b"\x80"]
        if choice == 3:  # random multipart garbage (never starting with the magic)
            frames = [self.blob(0, 300) for _ in range(r.randint(3, 9))]
            frames[0] = b"?" + frames[0]
            return frames
        if choice == 4:  # a valid header cut short: a strict prefix of msgpack never decodes
            message = wire.encode(Command.JOB, self.valid_header(Command.JOB))
            body = header_of(message)
            cut = r.randrange(len(body))
            return [wire.lead_frame(Command.JOB, body[:cut]), *message[1:]]
        if choice == 5:  # trailing bytes after the header
            return raw_message(Command.NODES, b"\x80" + self.blob(1, 8))
        if choice == 6:  # not a map, or a map with non-str keys
            header: Any = r.choice([[1, 2], "x", None, 5, {1: 2}, {b"id": 1}, {(1,): 2}])
            return raw_message(Command.NODES, pack(header) if header is not None else b"\xc0")
        if choice == 7:  # deeply nested lists or maps: over max_depth, or msgpack's stack
            depth = r.choice([34, 40, 100, 1000, 5000, 200_000])
            inner = r.choice([b"\x91", b"\x81\xa1k"])
            return raw_message(Command.SEND, b"\x81\xa1a" + inner * depth + b"\xc0")
        if choice == 8:  # nested tuple exts, each one level deeper
            obj: Any = None
            for _ in range(r.choice([33, 40, 64])):
                obj = ext(Ext.TUPLE, [obj])
            return raw_message(Command.SEND, {"to": "n1", "msg": obj})
        if choice == 9:  # invalid UTF-8 in a str
            return raw_message(Command.NODES, b"\x81\xa2\xff\xfe\x01")
        if choice == 10:  # unknown ext codes, and the timestamp ext
            code = r.choice([0, 6, 7, 42, 127, -1, -5, -128])
            data = struct.pack(">I", 1) if code == -1 else self.blob(0, 8)
            # as ext 8 by hand: msgpack.ExtType refuses negative (reserved) codes
            value = b"\xc7" + bytes([len(data)]) + struct.pack(">b", code) + data
            return raw_message(Command.SEND, b"\x82\xa2to\xa2n1\xa3msg" + value)
        if choice == 11:  # pid/ref ext not [str, int, int]
            parts = r.choice([[1, 2, 3], ["n1", 1], ["n1", True, 3], ["n1", 1.0, 2], "n1", None])
            code = r.choice([Ext.PID, Ext.REF])
            return raw_message(Command.SEND, {"to": ext(code, parts), "msg": 1})
        if choice == 12:  # arrays: dtype not allowed
            dtype = r.choice(["|O", "<U4", "|V8", "f4", "<M8", "|S3", "<f16", "int", "", 5])
            return raw_message(
                Command.SEND, {"to": "n1", "msg": ext(Ext.ARRAY, [0, dtype, [4]])}, b"\0" * 16
            )
        if choice == 13:  # arrays: bad shapes
            shape = r.choice([[-1], [2] * 9, "4", [1.0], [True], None, [2**63, -1]])
            return raw_message(
                Command.SEND, {"to": "n1", "msg": ext(Ext.ARRAY, [0, "|u1", shape])}, b"\0" * 4
            )
        if choice == 14:  # huge declared shapes over a small frame (the data "is elsewhere")
            shape = r.choice([[60_000, 60_000, 3], [2**31, 2**31], [10**6] * 8, [2**32, 2**32, 2]])
            spec = ext(Ext.ARRAY, [0, r.choice(["|u1", "<f8"]), shape])
            return raw_message(Command.JOB, {"id": 1, "payload": spec}, self.blob(0, 64))
        if choice == 15:  # frame length does not match shape and dtype
            n = r.randrange(1, 100)
            frame = b"\0" * (n * 4 + r.choice([-1, 1, 3, n * 4]))
            return raw_message(
                Command.SEND, {"to": "n1", "msg": ext(Ext.ARRAY, [0, "<f4", [n]])}, frame
            )
        if choice == 16:  # frame index out of range, used twice, or not an int
            array_spec = r.choice(
                [[5, "|u1", [1]], [-1, "|u1", [1]], ["0", "|u1", [1]], [True, "|u1", [1]]]
            )
            return raw_message(Command.SEND, {"to": "n1", "msg": ext(Ext.ARRAY, array_spec)}, b"\0")
        if choice == 17:  # a raw frame nobody references, or a blob referenced twice
            if r.random() < 0.5:
                return [*wire.encode(Command.NODES, {}), self.blob(0, 100)]
            return raw_message(Command.SEND, {"a": ext(Ext.BLOB, 0), "b": ext(Ext.BLOB, 0)}, b"xy")
        if choice == 18:  # more raw frames than max_frames (all referenced)
            n = DEFAULT_LIMITS.max_frames + r.randint(1, 10)
            header = {f"b{i}": ext(Ext.BLOB, i) for i in range(n)}
            return raw_message(Command.SEND, header, *([b"z"] * n))
        if choice == 19:  # a header over max_header_bytes (well under the socket's MAXMSGSIZE)
            size = DEFAULT_LIMITS.max_header_bytes + r.choice([1, 10, 1000, 1 << 20])
            return raw_message(Command.NODES, {"pad": "p" * size})
        if choice == 20:  # a reserved byte, or lengths far past the end of the data
            header = b"\x81\xa1a" + r.choice(
                [b"\xc1", b"\xdb\xff\xff\xff\xff", b"\xc6\x7f\xff\xff\xff", b"\xdd\xff\xff\xff\xff"]
            )
            return raw_message(Command.SEND, header)
        # a pid, ref, array or blob ext whose payload ends in a reserved byte
        return raw_message(
            Command.SEND,
            {"msg": msgpack.ExtType(r.choice([1, 2, 4, 5]), self.blob(0, 3) + b"\xc1")},
        )

    def collision(self) -> tuple[list[bytes], Expect]:
        """A header holding a map whose keys share one hash (tuples, pids, ints, floats, mixed):
        refused by whoever decodes it, at its first key, as msgpack reads it."""
        r = self.rng
        maps = colliding_maps()
        colliding = r.choice(maps[r.choice(sorted(maps))])
        place = r.randrange(5)
        if place == 0:  # the header itself
            if r.random() < 0.05:
                colliding = colliding_megabyte()
            command = r.choice([Command.NODES, Command.HELLO, Command.JOB, Command.HEARTBEAT])
            return raw_message(command, colliding), WIRE
        if place == 1:  # a value, after plain entries; any command the broker decodes
            command = r.choice([Command.HELLO, Command.JOB, Command.NODES, Command.SEND])
            header = b"\x82\xa2id" + pack(r.randrange(99)) + b"\xa3msg" + colliding
            return raw_message(command, header), WIRE
        if place == 2:  # deeper: in a list in a tuple in a map
            inner = msgpack.ExtType(Ext.TUPLE, b"\x91\x91" + colliding)
            return raw_message(Command.SEND, b"\x81\xa3msg\x81\xa1k" + pack(inner)), WIRE
        if place == 3:  # a SEND to a live pid, `to` first: forwarded unread by the broker
            target = r.choice(self.targets)
            to = pack(ext(Ext.PID, [target, self.incarnations[target], 10**6 + r.randrange(99)]))
            header = b"\x82\xa2to" + to + b"\xa3msg" + colliding
            return raw_message(Command.SEND, header), FORWARDED_MALFORMED
        # A RESULT whose first entries look valid: the broker may settle it on them.
        head = pack({"id": r.randrange(10**6), "ticket": NO_TICKET + r.randrange(99), "attempt": 1})
        header = b"\x84" + head[1:] + b"\xa5items" + colliding
        frames = raw_message(Command.RESULT, header)
        settled = result_head(frames, DEFAULT_LIMITS) is not None
        return frames, PEEKED_RESULT if settled else WIRE

    def mutated(self) -> list[bytes] | None:
        """A valid message with bytes flipped, inserted or cut; None if it still decodes."""
        r = self.rng
        command = r.choice([Command.HELLO, Command.JOB, Command.RESULT, Command.SEND])
        frames = [frame_bytes(f) for f in wire.encode(command, self.valid_header(command))]
        index = r.randrange(len(frames))
        data = bytearray(frames[index])
        for _ in range(r.randint(1, 4)):
            op = r.randrange(3)
            pos = r.randrange(len(data) + 1)
            if op == 0 and data:
                data[min(pos, len(data) - 1)] ^= 1 << r.randrange(8)
            elif op == 1:
                data[pos:pos] = self.blob(1, 4)
            else:
                del data[pos : pos + r.randint(1, 4)]
        frames[index] = bytes(data)
        try:
            wire.decode(frames)
        except WireError:
            return frames
        return None  # decodes: what it does depends on what it became, so it is not sent

    # -------------------------------------------------------------- decodable, but wrong

    def bad_hello(self) -> list[bytes]:
        r = self.rng
        header = self.valid_header(Command.HELLO)
        problem = r.randrange(10)
        if problem == 0:
            del header[r.choice(sorted(header))]
        elif problem == 1:
            header["name"] = r.choice(["", "a" * 65, "../etc", "n1\x00", "-x", "a b", 7, None])
        elif problem == 2:
            header["role"] = r.choice(["admin", "", "WORKER", 1, None])
        elif problem == 3:
            header["capacity"] = r.choice([-1, 4097, 2**63 - 1, True, 1.0, "2"])
        elif problem == 4:
            version = protocol.PROTOCOL_VERSION
            header["version"] = r.choice(
                [0, version - 1, version + 1, 99, -1, str(version), float(version), True, None]
            )
        elif problem == 5:
            header["incarnation"] = r.choice(["0", None, 1.5, True, [1]])
        elif problem == 6:
            header = {}
        elif problem == 7:  # a worker name, but a bad field as well: still malformed first
            header.update(name=r.choice(self.targets), version=protocol.PROTOCOL_VERSION + 1)
        elif problem == 8:
            header["role"] = header["role"].encode()  # bin instead of str
        else:
            header["session"] = r.choice(["1", 1.5, None, [0], True])
        return wire.encode(Command.HELLO, header)

    def taken_hello(self) -> list[bytes]:
        """A valid HELLO with the name of a live worker: the holder is reachable, so REJECT."""
        header = self.valid_header(Command.HELLO)
        header.update(
            name=self.rng.choice(self.targets), role=self.rng.choice(["worker", "client"])
        )
        header["capacity"] = self.rng.randrange(5)
        return wire.encode(Command.HELLO, header)

    def not_for_broker(self) -> tuple[list[bytes], Expect]:
        """Decodes, but the broker takes it from nobody: RESULTs for jobs never given, JOBs with
        a bad id, and commands only the broker sends."""
        r = self.rng
        kind = r.randrange(5)
        if kind == 0:  # a RESULT for a job this sender was never given (oversized ones too)
            header: dict[str, Any] = {
                "id": r.choice([r.randrange(64), r.randrange(10**6), "7", -1]),
                "ticket": NO_TICKET + r.randrange(10**6),
                "attempt": r.choice([1, 2, 99]),
                "ok": r.choice([True, False]),
                "node": r.choice(self.targets),
            }
            if r.random() < 0.5:
                header["payload"] = self.array()
            if r.random() < 0.05:  # an error text filling most of the header limit
                header["error"] = "e" * r.randint(500_000, DEFAULT_LIMITS.max_header_bytes - 200)
            return wire.encode(Command.RESULT, header), NOT_GIVEN
        if kind == 1:  # a RESULT without the fields the broker routes by
            header = {"id": r.choice([1, None, 1.5, [1]]), "ticket": r.choice([None, "abc", 5.0])}
            if r.random() < 0.5:
                del header[r.choice(["id", "ticket"])]
            return wire.encode(Command.RESULT, header), NOT_FOR_BROKER
        if kind == 2:  # a JOB whose id is missing or of a type the broker refuses
            header = self.valid_header(Command.JOB)
            if r.random() < 0.3:
                del header["id"]
            else:
                header["id"] = r.choice([None, 1.5, True, False, [1], b"id", (1,), {"a": 1}])
            return wire.encode(Command.JOB, header), NOT_FOR_BROKER
        command = r.choice([Command.WELCOME, Command.ERROR, Command.NODEDOWN, Command.REJECT])
        header = {"reason": "x", "node": "n1"} if r.random() < 0.5 else {}
        return wire.encode(command, header), NOT_FOR_BROKER

    def job(self) -> tuple[list[bytes], Expect]:
        """A JOB the broker takes (its id is fine) with junk in the fields only a worker reads."""
        r = self.rng
        header = self.valid_header(Command.JOB)
        header["id"] = r.choice([next(self.job_ids), f"s{next(self.job_ids)}"])
        problem = r.randrange(10)
        if problem == 0:
            header["mode"] = r.choice(["weird", 1, None, "RAW"])
        elif problem == 1:
            header["ops"] = r.choice(
                [[["nope", {}]], [["threshold", {"thresh": "x"}]], "ops", [[1, 2, 3]], [["label"]]]
            )
        elif problem == 2:  # an encoded decompression bomb, a truncated or a fake image
            header["payload"] = np.frombuffer(
                r.choice(
                    [
                        tiny_png_bomb(),
                        b"\xff\xd8\xff\xe0",
                        b"GIF89a\xff\xff\xff\xff",
                        self.blob(1, 200),
                    ]
                ),
                np.uint8,
            )
        elif problem == 3:  # raw mode with arrays no image op expects
            header.update(mode="raw", payload=self.array())
        elif problem == 4:
            header["payload"] = r.choice([None, "bytes", 5, [1, 2], self.array()])
        elif problem == 5:
            del header[r.choice(["payload", "mode", "ops", "ext", "name"])]
        elif problem == 6:
            header.update(
                ext=r.choice([".exe", "", ".jpg\x00", 5, ".PNG"]), client=b"spoof", attempt=99
            )
        elif problem == 7:  # a header so close to the limit that the broker cannot forward it
            target = DEFAULT_LIMITS.max_header_bytes - r.randrange(8)
            header["pad"] = ""
            base = len(header_of(wire.encode(Command.JOB, header)))
            header["pad"] = "p" * (target - base - 4)  # a str32 has 4 more length bytes
            assert len(header_of(wire.encode(Command.JOB, header))) == target
            return wire.encode(Command.JOB, header), UNFORWARDABLE_JOB
        elif problem == 8:
            header["extra"] = self.term()
        else:  # a zero-size raw image with a huge dimension
            header.update(mode="raw", payload=np.zeros((0, 2**40), np.uint8))
        return wire.encode(Command.JOB, header), JOB

    def forged(self) -> tuple[list[bytes], Expect]:
        """An actor command that names a live worker's own pid as its sender: a forged EXIT
        kill, LINK, MONITOR, DOWN... The broker drops it, whoever sends it."""
        r = self.rng
        victim = r.choice(self.targets)
        real = Pid(victim, self.incarnations[victim], r.randrange(3))
        other = Pid(r.choice(self.targets), self.incarnations[victim], 0)
        command = r.choice(list(OWN_FIELD))
        header: dict[str, Any] = {
            Command.EXIT: {"to": other, "from": real, "reason": "kill", "link": r.random() < 0.5},
            Command.LINK: {"to": other, "from": real},
            Command.UNLINK: {"to": other, "from": real},
            Command.MONITOR: {"to": other, "from": real, "ref": Ref(victim, 1, 1)},
            Command.DEMONITOR: {"to": other, "ref": Ref(victim, self.incarnations[victim], 1)},
            Command.DOWN: {"to": other, "ref": Ref("x", 1, 1), "pid": real, "reason": "normal"},
            Command.SPAWN: {"to": victim, "from": real, "ref": Ref(victim, 1, 2),
                            "behaviour": "zimg.behaviours:echo", "args": []},
        }[command]  # fmt: skip
        return wire.encode(command, header), FORGED

    def actor(self) -> tuple[list[bytes], Expect]:
        """Actor commands with junk fields, to live workers, dead pids and unknown nodes. The
        fuzz peers' own pids never come up, so a command that must name its sender is forged
        (the broker checks that before routing)."""
        frames = self._actor()
        header = wire.decode(frames)
        own = OWN_FIELD.get(header.command)
        pid = header.header.get("pid")
        if own is not None or (header.command is Command.SPAWNED and pid is not None):
            return frames, FORGED
        to = header.header.get("to")
        pair = isinstance(to, tuple | list) and len(to) == 2
        if not (isinstance(to, Pid | str) or (pair and all(type(x) is str for x in to))):
            return frames, BAD_TO  # checked after the sender, before routing
        return frames, ACTOR

    def _actor(self) -> list[bytes]:
        r = self.rng
        command = r.choice(
            [
                Command.SPAWN,
                Command.SEND,
                Command.LINK,
                Command.UNLINK,
                Command.MONITOR,
                Command.DEMONITOR,
                Command.EXIT,
                Command.DOWN,
                Command.SPAWNED,
            ]
        )
        target = r.choice(self.targets)
        stale = Pid(
            target, self.incarnations[target], 10**6 + r.randrange(10**6)
        )  # no such process
        to = r.choice(
            [
                target,
                stale,
                Pid(target, r.getrandbits(62), 1),
                ("nobody", target),
                "ghost-node",
                ("x", "nowhere"),
                None,
                5,
                "*",
                [target],
            ]
        )
        me = Pid("fuzz", r.getrandbits(62), r.randrange(9))
        header: dict[str, Any] = {"to": to}
        for key in r.sample(
            [
                "from",
                "ref",
                "msg",
                "reason",
                "behaviour",
                "args",
                "kwargs",
                "link",
                "monitor",
                "pid",
            ],
            4,
        ):
            header[key] = {
                "from": r.choice([me, "me", None]),
                "ref": r.choice([Ref("fuzz", 1, r.randrange(99)), 7]),
                "behaviour": r.choice(["no.such", "zimg.behaviours:nope", 5, "zt.nothing"]),
                "args": r.choice([[], "x", None, [self.term()]]),
                "kwargs": r.choice([{}, {b"k": 2}, "x", None]),
            }.get(key, self.term())
        return wire.encode(command, header)

    # -------------------------------------------------------------- one message

    def next(self) -> tuple[list[bytes], Expect]:
        """One message and how the broker must count it.

        As a check on this generator (and on the codec), the pure ``wire.decode`` must refuse
        exactly the messages made to be malformed on the wire.
        """
        frames, expect = self._next()
        try:
            wire.decode(frames)
            decodes = True
        except WireError:
            decodes = False
        malformed = expect in (WIRE, PEEKED_RESULT, FORWARDED_MALFORMED)
        assert decodes == (not malformed), (expect, [frame_bytes(f)[:80] for f in frames])
        return frames, expect

    def _next(self) -> tuple[list[bytes], Expect]:
        r = self.rng
        roll = r.random()
        if roll < 0.37:
            return self.wire_malformed(), WIRE
        if roll < 0.40:
            return self.collision()
        if roll < 0.55:
            frames = self.mutated()
            if frames is not None:
                settled = result_head(frames, DEFAULT_LIMITS) is not None
                return frames, PEEKED_RESULT if settled else WIRE
            return self._next()
        if roll < 0.63:
            return self.bad_hello(), BAD_HELLO
        if roll < 0.66:
            return self.taken_hello(), TAKEN_HELLO
        if roll < 0.80:
            return self.not_for_broker()
        if roll < 0.87:
            return self.job()
        if roll < 0.94:
            return self.actor()
        if roll < 0.97:
            return self.forged()
        if roll < 0.985:
            return wire.encode(Command.HEARTBEAT, {}), HEARTBEAT
        return wire.encode(Command.NODES, {}), PLAIN


DEFAULT_LIMITS = wire.DEFAULT_LIMITS


# ---------------------------------------------------------------------------------- the fuzzer


@dataclass
class Peer:
    """One raw DEALER the fuzzer sends from."""

    label: str
    sock: zmq.Socket[bytes]
    registered: bool
    nodes_asked: int = 0  # NODES requests not answered yet


@dataclass
class Tally:
    least: Counter[str] = field(default_factory=Counter)  # what each counter must grow by...
    most: Counter[str] = field(default_factory=Counter)  # ...and at most
    sent: Counter[str] = field(default_factory=Counter)  # by peer label
    oversize: int = 0
    truncated: int = 0
    partial: int = 0  # messages sent in pieces cut mid-frame, then whole
    stalled: int = 0  # messages cut mid-frame and never finished
    replies: int = 0


class Fuzzer:
    """Sends fuzz messages to a live broker from several identities, on its own thread.

    Identities: registered clients (``fuzz-a`` ...), one that reuses the id of a node that has
    left (``ghost``),
    and unregistered ones (random ids, an empty-looking one, one ZeroMQ picks). Oversize frames
    and cut-off messages go over raw ZMTP connections: ZeroMQ itself must drop those.
    """

    def __init__(self, url: str, gen: Generator, ghost_id: bytes, stop: threading.Event) -> None:
        self.url = url
        self.gen = gen
        self.rng = gen.rng
        self.ghost_id = ghost_id
        self.stop = stop
        self.ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self.peers: list[Peer] = []
        self.stalled: list[socket.socket] = []  # raw connections left in the middle of a frame
        self.tally = Tally()
        self.error: BaseException | None = None
        self.count = 0
        self.done = threading.Event()  # the fuzz is over and the broker has handled all of it
        self.closing = threading.Event()  # the test has read the counters: stop heartbeating
        self.thread = threading.Thread(target=self._run, name="fuzzer", daemon=True)

    def dealer(self, identity: bytes | None) -> zmq.Socket[bytes]:
        sock = self.ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDTIMEO, int(RECV_TIMEOUT_S * 1000))
        if identity is not None:
            sock.setsockopt(zmq.ROUTING_ID, identity)
        sock.connect(self.url)
        return sock

    def wait_for(self, sock: zmq.Socket[bytes], command: Command) -> wire.Message:
        """Receive until a message with ``command`` arrives (others are dropped)."""
        deadline = time.monotonic() + RECV_TIMEOUT_S
        while (left := deadline - time.monotonic()) > 0:
            if sock.poll(int(left * 1000) + 1):
                msg = wire.decode(sock.recv_multipart())
                if msg.command is command:
                    return msg
        raise AssertionError(f"no {command.name} from the broker within {RECV_TIMEOUT_S} s")

    def hello(self, sock: zmq.Socket[bytes], name: str) -> None:
        header = {
            "name": name,
            "role": "client",
            "capacity": 0,
            "incarnation": 1,
            "version": protocol.PROTOCOL_VERSION,
        }
        sock.send_multipart(wire.encode(Command.HELLO, header))
        self.wait_for(sock, Command.WELCOME)

    def setup(self) -> None:
        colliding_maps()  # made now, not while registered identities must keep heartbeating
        colliding_megabyte()
        rng = self.rng
        for name in ("fuzz-a", "fuzz-b", "fuzz-c"):
            sock = self.dealer(f"{name}/{rng.getrandbits(32):x}".encode())
            self.hello(sock, name)
            self.peers.append(Peer(name, sock, registered=True))
        # (A second socket under a registered node's routing id gets nothing through while the
        # first lives: tests/integration/test_hostile_peers.py.)
        self.peers.append(Peer("ghost", self.dealer(self.ghost_id), registered=False))
        self.peers.append(Peer("auto-id", self.dealer(None), registered=False))
        for i in range(3):
            # unique ids (two sockets with one id would take it from each other), up to 255 bytes
            base = rng.choice([b"n1", b"\xff" * 254, b"x", b"n2/0", rng.randbytes(16)])
            ident = base + bytes([i])
            self.peers.append(Peer(f"anon{i}", self.dealer(ident), registered=False))

    def _run(self) -> None:
        try:
            self.setup()
            started = time.monotonic()
            next_beat = 0.0
            while time.monotonic() - started < FUZZ_MAX_S:
                enough = self.count >= FUZZ_MIN_MESSAGES and time.monotonic() - started > FUZZ_MIN_S
                if enough and self.stop.is_set():
                    break
                next_beat = self.heartbeat(next_beat)
                roll = self.rng.random()
                if roll < 0.006:
                    self.oversize()
                elif roll < 0.009:
                    self.truncated()
                elif roll < 0.013:
                    self.partial()
                else:
                    self.send_one()
                self.count += 1
                if self.count % 64 == 0:
                    self.drain()
            self.finish()
        except BaseException as exc:
            self.error = exc
        finally:
            self.done.set()
        # Keep the registered identities alive until the test has read the broker's table.
        while self.error is None and not self.closing.wait(0.1):
            next_beat = self.heartbeat(next_beat)
            self.drain()

    def heartbeat(self, next_beat: float) -> float:
        """Every 0.5 s, a HEARTBEAT from each registered identity, so none is purged."""
        now = time.monotonic()
        if now < next_beat:
            return next_beat
        for peer in self.peers:
            if peer.registered:
                self.send(peer, wire.encode(Command.HEARTBEAT, {}))
        return now + 0.5

    def send(self, peer: Peer, frames: list[Any]) -> None:
        try:
            peer.sock.send_multipart(frames, copy=True)
        except zmq.Again:
            raise AssertionError(
                f"the broker has not read from {peer.label} for {RECV_TIMEOUT_S} s"
            ) from None

    def send_one(self) -> None:
        peer = self.rng.choice(self.peers)
        frames, expect = self.gen.next()
        self.send(peer, frames)
        peer.nodes_asked += expect is PLAIN
        for name in expect.registered if peer.registered else expect.unregistered:
            self.tally.least[name] += 1
            self.tally.most[name] += 1
        for name in expect.maybe:
            self.tally.most[name] += 1
        self.tally.sent[peer.label] += 1

    def oversize(self) -> None:
        """A frame declared above the broker's MAXMSGSIZE: the broker must hang up at once,
        before reading (or allocating) the body, which is never sent."""
        limit = max(DEFAULT_LIMITS.max_frame_bytes, DEFAULT_LIMITS.max_header_bytes)
        declared = self.rng.choice([limit + 1, limit + 4096, 2**40, 2**63 - 1])
        conn = zmtp_connect(self.url, f"big{self.tally.oversize}".encode())
        try:
            prefix = b""
            if self.rng.random() < 0.5:  # after the lead frame of a real message
                lead = wire.encode(Command.JOB, self.gen.valid_header(Command.JOB))[0]
                prefix = zmtp_frame(bytes(lead), more=True)
            conn.sendall(prefix + zmtp_frame(b"x" * 100, more=False, declared=declared))
            assert closed_within(conn, RECV_TIMEOUT_S), f"a {declared}-byte frame was not refused"
        finally:
            conn.close()
        self.tally.oversize += 1

    def truncated(self) -> None:
        """The first frames of a message, then the connection closes: nothing is delivered."""
        conn = zmtp_connect(self.url, f"cut{self.tally.truncated}".encode())
        body = wire.encode(Command.JOB, self.gen.valid_header(Command.JOB))
        data = zmtp_frame(bytes(body[0]), more=True)  # the payload frame never comes
        conn.sendall(data[: self.rng.randrange(1, len(data) + 1)])
        conn.close()
        self.tally.truncated += 1

    def partial(self) -> None:
        """A fuzz message over raw ZMTP, its bytes cut at random points (in frame headers, in
        frame bodies) into separate writes. Either all the pieces go, and the broker handles it
        as from an unknown peer (a NODES asked after it on the same connection proves it has);
        or the last piece never comes and the connection stays open until the fuzz ends: the
        message is never delivered, and counted nowhere."""
        r = self.rng
        frames, expect = self.gen.next()
        data = b"".join(
            zmtp_frame(frame_bytes(f), more=i < len(frames) - 1) for i, f in enumerate(frames)
        )
        cuts = sorted(r.sample(range(1, len(data)), min(len(data) - 1, r.randint(1, 6))))
        pieces = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
        conn = zmtp_connect(self.url, f"part{self.tally.partial + self.tally.stalled}".encode())
        if r.random() < 0.4 and len(pieces) > 1:
            for piece in pieces[:-1]:
                conn.sendall(piece)
            self.stalled.append(conn)  # closed by finish(), or by the broker's ZMTP heartbeats
            self.tally.stalled += 1
            return
        try:
            for piece in pieces:
                conn.sendall(piece)
            conn.sendall(zmtp_frame(bytes(wire.encode(Command.NODES, {})[0]), more=False))
            deadline = time.monotonic() + RECV_TIMEOUT_S
            while wire.command_of(zmtp_receive(conn, deadline)) is not Command.NODES:
                pass  # a REJECT or a DISCONNECT first; the NODES answer comes after it
        finally:
            conn.close()
        for name in expect.unregistered:
            self.tally.least[name] += 1
            self.tally.most[name] += 1
        for name in expect.maybe:
            self.tally.most[name] += 1
        self.tally.partial += 1

    def drain(self, peer: Peer | None = None) -> None:
        for each in [peer] if peer is not None else self.peers:
            while True:
                try:
                    frames = each.sock.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                self.tally.replies += 1
                each.nodes_asked -= wire.command_of(frames) is Command.NODES

    def finish(self) -> None:
        """Each socket asks NODES last: the answer to it means the broker handled all it sent."""
        for conn in self.stalled:  # never finished: nothing of theirs reaches the broker
            conn.close()
        for peer in self.peers:
            self.send(peer, wire.encode(Command.NODES, {}))
            peer.nodes_asked += 1
            deadline = time.monotonic() + RECV_TIMEOUT_S
            while peer.nodes_asked > 0:
                assert time.monotonic() < deadline, f"{peer.label}: NODES went unanswered"
                peer.sock.poll(100)
                self.drain(peer)

    def close(self) -> None:
        self.closing.set()
        self.thread.join(RECV_TIMEOUT_S)
        self.ctx.destroy(linger=0)


# ---------------------------------------------------------------------------------- valid traffic


def echo_payload(i: int) -> Any:
    rng = np.random.default_rng(i)
    return [
        i,
        f"text {i} \u2603",
        bytes(rng.integers(0, 256, 100 if i % 2 else 70_000, np.uint8)),  # inline, then a BLOB
        (i, ("nested", [i, None, 1.5])),
        rng.integers(0, 256, (30, 40, 3), np.uint8),
        rng.random((5, 7)).astype(np.float32),
    ][i % 6]


def same(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.dtype == b.dtype and np.array_equal(a, b)
    return type(a) is type(b) and a == b


def copies(samples: Path, target: Path, n: int) -> list[Path]:
    target.mkdir(parents=True, exist_ok=True)
    names = ["chelsea.jpg", "coins.png", "brick.jpg", "grass.png"]
    files = []
    for i in range(n):
        name = names[i % len(names)]
        dest = target / f"img_{i:02d}_{name}"
        dest.write_bytes((samples / name).read_bytes())
        files.append(dest)
    return files


def jobs_settled(url: str, before: dict[str, int]) -> bool:
    """No job queued or held, and as many answered (or failed) as received since ``before``."""
    report = query_nodes(url)
    grew = {
        k: report["stats"][k] - before[k] for k in ("jobs_received", "jobs_done", "jobs_failed")
    }
    held = sum(n["active"] for n in report["nodes"])
    done: bool = grew["jobs_done"] + grew["jobs_failed"] == grew["jobs_received"]
    idle: bool = report["queued"] == 0 and held == 0
    return idle and done


# One image per job: the broker's counters must move by exactly one job per valid file.
SEND = [sys.executable, "-m", "zimg", "send", "--timeout", "60", "--job-items", "1"]


def wait_until(condition: Callable[[], bool], what: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.05)


def node_names(url: str) -> list[str]:
    return [n["name"] for n in query_nodes(url)["nodes"]]


def client_identity(url: str, name: str) -> bytes | None:
    for n in query_nodes(url)["nodes"]:
        if n["name"] == name:
            # The best an outsider can do: the secret part of a routing id is never reported.
            return protocol.node_identity(name, n["incarnation"], 0)
    return None


@pytest.mark.timeout(120)
def test_fuzzing_a_live_broker_breaks_nothing(
    procs: Processes, tcp_url: str, tmp_path: Path, samples: Path
) -> None:
    print(f"fuzz seed: {SEED} (rerun with ZIMG_FUZZ_SEED={SEED})")
    # --trim-heap: the broker hands freed memory back, so that its RSS shows what it holds
    # (with --keep-heap, the default, it keeps up to 128 MiB of freed memory for reuse, and
    # the fuzz's ~1 MB collision headers leave some of that behind).
    broker = procs.broker(tcp_url, "--trim-heap")
    workers = {name: procs.worker(tcp_url, name) for name in ("n1", "n2")}
    incarnations = {n["name"]: n["incarnation"] for n in query_nodes(tcp_url)["nodes"]}
    assert sorted(incarnations) == ["n1", "n2"]
    # A node that joins and leaves: the fuzz reuses its (registered, then stale) routing id.
    with Connection(tcp_url, "ghost") as ghost:
        ghost_id = ghost.identity
    wait_until(lambda: node_names(tcp_url) == ["n1", "n2"], "the ghost has left")
    rss_before = vm_kb(broker.pid)
    before = query_nodes(tcp_url)

    files = copies(samples, tmp_path / "in", 40)
    outdir = tmp_path / "out"
    sender = subprocess.Popen(
        [*SEND, "--broker", tcp_url, "-o", str(outdir), "--name", "sender", *map(str, files)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    stop = threading.Event()
    gen = Generator(random.Random(SEED), ["n1", "n2"], incarnations)
    fuzzer = Fuzzer(tcp_url, gen, ghost_id, stop)
    echoes = 0

    def sender_joined() -> bool:
        return client_identity(tcp_url, "sender") is not None

    try:
        wait_until(sender_joined, "zimg send has joined")
        fuzzer.thread.start()
        with zimg.connect(tcp_url, name="main") as node:
            pids = [node.spawn(name, "zimg.behaviours:echo") for name in ("n1", "n2")]
            deadline = time.monotonic() + FUZZ_MAX_S + 60
            # Round trips all along the fuzz, and until the batch is done.
            while not fuzzer.done.is_set() or sender.poll() is None or echoes < 100:
                assert time.monotonic() < deadline, "the valid traffic did not finish"
                payload = echo_payload(echoes)
                node.send(pids[echoes % 2], ("echo", node.self(), payload))
                reply = node.receive(timeout=RECV_TIMEOUT_S)
                assert reply[0] == "echo", reply
                assert same(reply[1], payload), (echoes, reply)
                echoes += 1
                if sender.poll() is not None and echoes >= 100:
                    stop.set()
            for pid in pids:
                node.send(pid, "stop")
        stdout, stderr = sender.communicate(timeout=RECV_TIMEOUT_S)
        assert fuzzer.done.wait(RECV_TIMEOUT_S), "the fuzzer did not finish"
        if fuzzer.error is not None:
            raise fuzzer.error
        # Every job the broker took, junk ones included, ends with one result: the workers
        # answered them all (a job a worker silently dropped would hold its credit for ever).
        wait_until(lambda: jobs_settled(tcp_url, before["stats"]), "every job is answered")
        after = query_nodes(tcp_url)
    finally:
        stop.set()
        if sender.poll() is None:
            sender.kill()
            sender.communicate()
        fuzzer.close()

    tally = fuzzer.tally
    print(
        f"fuzz: {fuzzer.count} messages from {dict(tally.sent)}, "
        f"{tally.oversize} oversize and {tally.truncated} cut-off raw connections, "
        f"{tally.replies} replies drained; {echoes} echo round trips"
    )
    # The valid traffic is exact.
    assert sender.returncode == 0, stdout + stderr
    entries = manifest(outdir)
    assert sorted(e["input"] for e in entries) == sorted(map(str, files))
    for entry in entries:
        assert entry["node"] in ("n1", "n2"), entry
        assert entry["attempts"] == 1, entry
        check_output(entry)

    # Everyone is still up, and the broker's memory did not grow with the fuzz.
    assert broker.poll() is None, "the broker died"
    for name, proc in workers.items():
        assert proc.poll() is None, f"worker {name} died"
    listed = {n["name"] for n in after["nodes"]}
    assert {"n1", "n2"} <= listed, after["nodes"]
    # The registered fuzz identities were never dropped: registered throughout, so what they
    # sent was counted as from registered nodes.
    assert {"fuzz-a", "fuzz-b", "fuzz-c"} <= listed, after["nodes"]
    assert node_names(tcp_url)  # still answering
    rss_after = vm_kb(broker.pid)
    growth_mb = (rss_after - rss_before) / 1024
    print(f"broker VmRSS {rss_before / 1024:.1f} MB before, {rss_after / 1024:.1f} MB after")
    assert growth_mb < BROKER_RSS_GROWTH_LIMIT_MB

    # Every rejection is counted, exactly once; the oversize frames and cut-off messages, which
    # ZeroMQ drops before the broker sees them, are not counted at all.
    delta = {k: after["stats"][k] - before["stats"][k] for k in COUNTED}
    least = {k: tally.least[k] for k in COUNTED}
    most = {k: tally.most[k] for k in COUNTED}
    for bounds in (least, most):
        bounds["jobs_received"] += len(files)  # the valid batch
    print(f"counters moved by {delta}; expected at least {least}, at most {most}")
    for k in COUNTED:
        assert least[k] <= delta[k] <= most[k], (k, delta[k], least[k], most[k])
    assert after["stats"]["jobs_requeued"] == before["stats"]["jobs_requeued"]


class Impostor:
    """A DEALER that takes over a live node's routing id and sends heartbeats and junk as it."""

    def __init__(self, url: str, identity: bytes) -> None:
        self.url = url
        self.identity = identity
        self.got: Counter[str] = Counter()
        self.holding = threading.Event()
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="impostor", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        gen = Generator(random.Random(SEED), ["n1", "n2"], {"n1": 1, "n2": 1})
        ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        try:
            sock = ctx.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.ROUTING_ID, self.identity)
            sock.connect(self.url)
            sock.send_multipart(wire.encode(Command.NODES, {}))
            assert sock.poll(int(RECV_TIMEOUT_S * 1000)), "the impostor got no answer"
            self.holding.set()  # answered on its connection: the id is now the impostor's
            while not self.stop.is_set():
                # Heartbeats keep "n1" alive at the broker; the junk is n1's as far as it knows.
                sock.send_multipart(wire.encode(Command.HEARTBEAT, {}))
                sock.send_multipart(gen.next()[0])
                while sock.poll(20):
                    self.got[wire.decode(sock.recv_multipart()).command.name] += 1
        except BaseException as exc:
            self.error = exc
            self.holding.set()
        finally:
            ctx.destroy(linger=0)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(RECV_TIMEOUT_S)


@pytest.mark.timeout(90)
def test_a_peer_cannot_take_over_a_live_worker_id_from_the_nodes_report(
    procs: Processes, tcp_url: str, tmp_path: Path, samples: Path
) -> None:
    """A routing id is ``name/incarnation/secret`` and NODES reports only the first two, so an
    impostor that builds n1's id from the report (with any secret) is just an unknown peer (and
    even with the real id, the broker never hands a live connection's id to a second one): it
    gets none of n1's jobs, and the batch completes, pixel-exact, with n1 still working."""
    procs.broker(tcp_url, "--heartbeat", "0.5")
    workers = {name: procs.worker(tcp_url, name) for name in ("n1", "n2")}
    n1 = next(n for n in query_nodes(tcp_url)["nodes"] if n["name"] == "n1")
    files = copies(samples, tmp_path / "in", 16)
    options = zimg.BatchOptions(outdir=tmp_path / "out", window=4, idle_timeout_s=20)
    with Connection(tcp_url, "tester") as conn:
        impostor = Impostor(tcp_url, protocol.node_identity("n1", n1["incarnation"], 0))
        try:
            assert impostor.holding.wait(RECV_TIMEOUT_S)
            report = zimg.run_batch(conn, files, options)  # at once, while n1 is cut off
        finally:
            impostor.close()
    if impostor.error is not None:
        raise impostor.error
    print(f"the impostor received {dict(impostor.got)}")
    assert impostor.got["JOB"] == 0, "the impostor took over n1's connection"
    assert impostor.got["DISCONNECT"] > 0, "the impostor's messages never reached the broker"
    assert report.failed == 0, report.failures
    entries = manifest(tmp_path / "out")
    assert len(entries) == len(files)
    for entry in entries:
        check_output(entry)
    for name, proc in workers.items():
        assert proc.poll() is None, f"worker {name} died"
    wait_until(lambda: node_names(tcp_url) == ["n1", "n2"], "n1 is back")


# ---------------------------------------------------------------------------------- size limits


SMALL = Limits(max_header_bytes=4096, max_frame_bytes=64 * 1024)


@pytest.fixture
def small_broker() -> Iterator[Broker]:
    """An in-process broker with small limits (``zimg broker`` has no option for them)."""
    broker = Broker(free_tcp_url(), BrokerConfig(limits=SMALL)).start()
    yield broker
    broker.stop()


class Client:
    """A raw DEALER with a monitor, to see the broker hang up on it."""

    def __init__(self, url: str) -> None:
        self.ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.events = self.sock.get_monitor_socket(zmq.EVENT_DISCONNECTED)
        self.sock.connect(url)
        self.url = url

    def ask_nodes(self, header: bytes = b"\x80", *frames: bytes) -> dict[str, Any] | None:
        """Send NODES (with this header and frames); the reply's header, or None if none came."""
        self.sock.send_multipart([wire.lead_frame(Command.NODES, header), *frames])
        if not self.sock.poll(int(RECV_TIMEOUT_S * 1000)):
            return None
        return wire.decode(self.sock.recv_multipart()).header

    def disconnected_within(self, timeout_s: float) -> bool:
        return bool(self.events.poll(int(timeout_s * 1000)))

    def close(self) -> None:
        self.events.close()
        self.ctx.destroy(linger=0)


def stats(url: str) -> dict[str, int]:
    """The broker's counters, less the NODES request that asked for them."""
    got = dict(query_nodes(url)["stats"])
    got["messages"] -= 1
    return got


def padded_header(size: int) -> bytes:
    """A valid msgpack map of exactly ``size`` bytes: ``{"pad": "ppp..."}``."""
    for n in range(size, 0, -1):
        header = pack({"pad": "p" * n})
        if len(header) == size:
            return header
    raise AssertionError(size)


@pytest.mark.timeout(60)
def test_a_frame_over_the_limit_never_reaches_the_state_machine(small_broker: Broker) -> None:
    url = small_broker.endpoint
    assert url is not None
    start = stats(url)
    blob = pack({"pad": ext(Ext.BLOB, 0)})
    client = Client(url)
    try:
        # Exactly at the limit: delivered and fully decoded (NODES answers).
        assert client.ask_nodes(blob, b"x" * SMALL.max_frame_bytes) is not None
        # One byte more: ZeroMQ drops the connection; the message never reaches the broker.
        client.sock.send_multipart(
            [wire.lead_frame(Command.NODES, blob), b"x" * (SMALL.max_frame_bytes + 1)]
        )
        assert client.disconnected_within(RECV_TIMEOUT_S), "the broker kept the connection"
    finally:
        client.close()
    now = stats(url)
    assert now["messages"] - start["messages"] == 2  # the answered one and our stats query
    assert now["malformed"] == start["malformed"]


@pytest.mark.timeout(60)
def test_the_socket_hangs_up_on_the_declared_size_before_any_body_arrives(
    small_broker: Broker,
) -> None:
    url = small_broker.endpoint
    assert url is not None
    start = stats(url)
    over = zmtp_connect(url, b"over")
    at = zmtp_connect(url, b"at")
    lead = zmtp_frame(wire.lead_frame(Command.NODES, pack({"pad": ext(Ext.BLOB, 0)})), more=True)
    try:
        # Declared one byte over MAXMSGSIZE, with 10 of its bytes sent: refused on the header.
        over.sendall(lead + zmtp_frame(b"x" * 10, more=False, declared=SMALL.max_frame_bytes + 1))
        assert closed_within(over, RECV_TIMEOUT_S)
        # Declared exactly at the limit: the broker waits for the rest (so the size is the cause).
        at.sendall(lead + zmtp_frame(b"x" * 10, more=False, declared=SMALL.max_frame_bytes))
        assert not closed_within(at, 0.5)
    finally:
        over.close()
        at.close()
    now = stats(url)
    assert now["messages"] - start["messages"] == 1  # only the stats query


@pytest.mark.timeout(60)
def test_a_header_over_the_limit_is_refused_by_decode_and_counted(small_broker: Broker) -> None:
    url = small_broker.endpoint
    assert url is not None
    start = stats(url)
    client = Client(url)
    try:
        # A valid NODES request with a header of exactly max_header_bytes is answered...
        assert client.ask_nodes(padded_header(SMALL.max_header_bytes)) is not None
        # ...one byte more gets through the socket (far under MAXMSGSIZE) but not through decode:
        lead = wire.lead_frame(Command.NODES, padded_header(SMALL.max_header_bytes + 1))
        assert len(lead) < SMALL.max_frame_bytes
        client.sock.send_multipart([lead])
        # The next answer is to the request after it (so it was not answered), and the broker
        # had counted it malformed by then; the connection stays up.
        reply = client.ask_nodes()
        assert reply is not None
        assert reply["stats"]["malformed"] == start["malformed"] + 1
        assert not client.disconnected_within(0)
    finally:
        client.close()
    now = stats(url)
    assert now["messages"] - start["messages"] == 4  # the stats query and our three
    assert now["malformed"] - start["malformed"] == 1


# ------------------------------------------------------------- malformed bodies to a live pid


def joined(url: str, name: str, **options: int) -> zmq.Socket[bytes]:
    """A raw DEALER that has joined ``url`` as client node ``name`` (incarnation 1)."""
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    for option, value in options.items():
        sock.setsockopt(getattr(zmq, option), value)
    sock.connect(url)
    hello = {
        "name": name,
        "role": protocol.ROLE_CLIENT,
        "capacity": 0,
        "incarnation": 1,
        "version": protocol.PROTOCOL_VERSION,
    }
    sock.send_multipart(wire.encode(Command.HELLO, hello))
    assert sock.poll(int(RECV_TIMEOUT_S * 1000))
    assert wire.decode(sock.recv_multipart()).command is Command.WELCOME
    return sock


@pytest.mark.timeout(60)
def test_a_malformed_body_to_a_live_pid_is_dropped_and_counted_by_its_node() -> None:
    """The broker forwards a message to a live pid on its ``to`` alone; the node decodes the rest,
    drops what is malformed, counts it and reports the count with its heartbeats."""
    broker = Broker(free_tcp_url(), BrokerConfig(heartbeat_interval_s=0.1)).start()
    url = broker.endpoint
    assert url is not None
    sender = joined(url, "raw")
    try:
        with zimg.connect(url, name="target") as node:
            start = stats(url)
            to = header_of(wire.encode(Command.SEND, {"to": node.self()}))  # {"to": pid}
            garbage = [wire.lead_frame(Command.SEND, b"\x82" + to[1:] + b"\xa3msg\xc1")]
            with pytest.raises(WireError):
                wire.decode(garbage)
            sender.send_multipart(garbage)
            sender.send_multipart(wire.encode(Command.SEND, {"to": node.self(), "msg": "ok"}))
            assert node.receive(timeout=RECV_TIMEOUT_S) == "ok"  # the node carries on
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                [reported] = [n for n in query_nodes(url)["nodes"] if n["name"] == "target"]
                if reported["malformed"] == 1:
                    break
                time.sleep(0.05)  # polling the broker's report: nothing to wait on instead
            assert reported["malformed"] == 1
            assert node.connection.malformed == 1
            assert stats(url)["malformed"] == start["malformed"]  # the broker did not decode it
    finally:
        sender.close()
        broker.stop()


# ------------------------------------------------------------------- a peer that stops reading


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("caps", "queued"),
    [({"max_backlog": 300}, 300), ({"max_backlog_bytes": 300 * 1024}, 300)],
    ids=["messages", "bytes"],
)
def test_a_peer_that_stops_reading_gets_a_bounded_backlog(
    caps: dict[str, Any], queued: int
) -> None:
    broker = Broker(free_tcp_url(), **caps).start()
    url = broker.endpoint
    assert url is not None
    # The stuck peer takes one message at a time into its socket and never reads; the kernel
    # buffers hold some more, so the broker's own queue fills after an unknown count.
    stuck = joined(url, "stuck", RCVHWM=1, RCVBUF=4096)
    sender = joined(url, "sender", SNDHWM=0)
    try:
        # 1 KiB each, so that both caps are reached by about the same count.
        message = wire.encode(Command.SEND, {"to": Pid("stuck", 1, 1), "msg": b"x" * 1000})
        total = 5000
        for _ in range(total):
            sender.send_multipart(message)
        deadline = time.monotonic() + 20
        report = query_nodes(url)["stats"]
        while report["messages"] < total + 2 and time.monotonic() < deadline:
            report = query_nodes(url)["stats"]  # polling the broker: no event to wait on
        # The backlog may have started more than once: while ZeroMQ's I/O thread still moves
        # messages into the kernel's buffers, a retry can empty it before the next batch comes.
        assert report["backlogged"] >= 1
        [backlog] = broker._backlogs.peers.values()
        held = len(backlog.messages)
        # Full to the cap (messages of ~1 KiB: a few fewer than 300 fit in 300 KiB), and the
        # rest dropped, apart from those in ZeroMQ's and the kernel's buffers.
        assert queued - 10 <= held <= queued
        assert report["dropped"] > 0
        assert report["dropped"] + held <= total
    finally:
        stuck.close()
        sender.close()
        broker.stop()


# ------------------------------------------------------------------- a bug in the state machine


@pytest.mark.timeout(60)
def test_a_message_the_state_machine_raises_on_is_counted_and_the_broker_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Whatever bug a message finds in the state machine, that message is dropped, counted as
    ``internal_errors`` and logged with its traceback (the first 10 times): the broker keeps
    serving every other node, instead of stopping for all of them."""
    broker = Broker(free_tcp_url())
    real = broker.state.on_unforwarded

    def buggy(identity: bytes, frames: Any, now: float, user_id: str | None = None) -> Any:
        if bytes(frames[0]).endswith(b"boom"):
            raise RuntimeError("a bug")
        return real(identity, frames, now, user_id)

    broker.state.on_unforwarded = buggy  # type: ignore[method-assign]
    broker.start()
    url = broker.endpoint
    assert url is not None
    sock = joined(url, "trigger")
    try:
        with caplog.at_level(logging.ERROR, logger="zimg.broker"):
            for _ in range(30):
                sock.send_multipart(wire.encode(Command.HEARTBEAT, {"x": "boom"}))
            deadline = time.monotonic() + 20
            report = query_nodes(url)["stats"]
            while report["internal_errors"] < 30 and time.monotonic() < deadline:
                report = query_nodes(url)["stats"]  # polling the broker: no event to wait on
        assert report["internal_errors"] == 30
        assert [n["name"] for n in query_nodes(url)["nodes"]] == ["trigger"]
        joined(url, "after").close()  # a newcomer is still let in
        tracebacks = [r for r in caplog.records if r.exc_info and "hit a bug" in r.getMessage()]
        assert len(tracebacks) == 10
    finally:
        sock.close()
        broker.stop()


@pytest.mark.timeout(60)
def test_a_message_a_node_handler_raises_on_is_counted_and_logged_a_bounded_number_of_times(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A node's handler that raises on a message (a bug) costs that message only: the I/O
    thread goes on, counts it, and logs the traceback the first 10 times, not once per message
    a peer keeps sending."""
    broker = Broker(free_tcp_url()).start()
    url = broker.endpoint
    assert url is not None
    node = Connection(url, "n1")

    def buggy(message: wire.Message) -> None:
        raise RuntimeError("a bug")

    node.on(Command.SEND, buggy)
    sender = None
    try:
        with caplog.at_level(logging.ERROR, logger="zimg.node"):
            node.start()
            sender = joined(url, "sender")
            for i in range(30):
                to = Pid("n1", node.incarnation, 1)
                sender.send_multipart(wire.encode(Command.SEND, {"to": to, "msg": i}))
            deadline = time.monotonic() + 20
            while node.handler_errors < 30 and time.monotonic() < deadline:
                time.sleep(0.01)  # counted on the node's I/O thread: no event to wait on
        assert node.handler_errors == 30
        logged = [r for r in caplog.records if "handler for SEND failed" in r.getMessage()]
        assert len(logged) == 10
        assert all(r.exc_info for r in logged)
    finally:
        if sender is not None:
            sender.close()
        node.close()
        broker.stop()
