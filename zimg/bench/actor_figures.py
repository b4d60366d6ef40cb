"""The figures of :mod:`zimg.bench.actors`: round trips, rates, spawns, and a run's sizes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from zimg import wire
from zimg.bench._common import BenchError
from zimg.wire import Command, Pid

REPLY_TIMEOUT_S = 10.0  # one reply; a benchmark that stalls this long has failed

Samples = npt.NDArray[np.float64]


def check_reply(reply: Any, expected: Any) -> None:
    """Raise ``BenchError`` unless ``reply`` is what was expected."""
    if reply != expected:
        raise BenchError(f"expected {expected!r}, got {reply!r}")


# ---------------------------------------------------------------------- results


@dataclass(frozen=True)
class Rtt:
    """Round-trip figures."""

    rounds: int
    p50_us: float
    p99_us: float
    mean_us: float
    per_s: float

    @classmethod
    def of(cls, samples_us: Samples, total_s: float) -> Rtt:
        p50, p99 = np.percentile(samples_us, [50, 99])
        n = len(samples_us)
        mean = float(samples_us.mean())
        return cls(
            n, round(float(p50), 2), round(float(p99), 2), round(mean, 2), round(n / total_s, 1)
        )


@dataclass(frozen=True)
class Rate:
    """A one-way message rate."""

    messages: int
    seconds: float
    per_s: float

    @classmethod
    def of(cls, messages: int, seconds: float) -> Rate:
        return cls(messages, round(seconds, 6), round(messages / seconds, 1))


@dataclass(frozen=True)
class Spawns:
    """Spawn timings, in milliseconds."""

    spawns: int
    first_reply_median_ms: float
    first_reply_min_ms: float
    first_reply_max_ms: float
    spawn_call_median_ms: float


@dataclass(frozen=True)
class ZimgResults:
    """Everything measured through zimg."""

    rtt_n1_n2: Rtt
    rtt_main_n1: Rtt
    rtt_same_node: Rtt
    one_way_n1_n2: Rate
    spawn: Spawns
    # CPU per message of the whole sending (n1) and receiving (n2) worker process during the
    # one-way phase, in microseconds (None where /proc is not there to read).
    one_way_sender_cpu_us: float | None = None
    one_way_receiver_cpu_us: float | None = None


@dataclass(frozen=True)
class RawResults:
    """One raw pyzmq path: its round trips and its one-way rate."""

    rtt: Rtt
    one_way: Rate


@dataclass(frozen=True)
class ErlangResults:
    """Erlang/OTP distribution between two BEAM nodes: round trips and one-way rate."""

    otp: str
    rtt_bytes: int  # term_to_binary size of the request term, for reference
    one_way_bytes: int
    rtt: Rtt
    one_way: Rate


@dataclass(frozen=True)
class Config:
    """What one run does."""

    rounds: int
    warmup_rounds: int
    messages: int
    warmup_messages: int
    spawns: int
    warmup_spawns: int
    rtt_bytes: int  # the zimg request, all frames: the raw RTT payload has this size
    one_way_bytes: int  # likewise for one one-way message


def make_config(
    *, quick: bool, rounds: int | None, messages: int | None, spawns: int | None
) -> Config:
    """The run's sizes: the defaults (or ``--quick`` ones) unless given."""
    rounds = rounds or (1000 if quick else 5000)
    messages = messages or (10_000 if quick else 50_000)
    spawns = spawns or (20 if quick else 50)
    # What zimg sends for one message: its lead frame (magic, command, header). The incarnation
    # is a 62-bit random number, so a large one gives the typical size; the counter is mid-range.
    incarnation = (1 << 61) + 12345
    n1, n2 = Pid("n1", incarnation, 3), Pid("n2", incarnation, 2)
    request = wire.encode(Command.SEND, {"to": n2, "msg": ("echo", n1, rounds // 2)})
    one_way = wire.encode(Command.SEND, {"to": n2, "msg": ("m", messages // 2)})
    return Config(
        rounds=rounds,
        warmup_rounds=max(100, rounds // 10),
        messages=messages,
        warmup_messages=max(500, messages // 10),
        spawns=spawns,
        warmup_spawns=3,
        rtt_bytes=sum(len(f) for f in request),
        one_way_bytes=sum(len(f) for f in one_way),
    )
