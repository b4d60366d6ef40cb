"""``python -m zimg.bench.decode``: what one megabyte of header costs :func:`zimg.wire.decode`.

Issue 12, item 1: a header map whose keys all share one Python hash made decoding quadratic
(36.8 s of broker CPU for one 1 MB message). ``wire.decode`` now refuses, as msgpack reads
them, map keys that are not str or bytes, whose hashes are randomised per process. This script
prints, per megabyte of header (CPU time of the decoding thread, best of a few runs):

- **plain** headers: a RESULT-like list of small maps, and one map of str keys;
- **collision** headers, the worst this module can build (2-tuples of ints, pids, ints, floats,
  and all of them mixed), as the decoder meets them now (refused) and as the decoder before the
  fix met them (msgpack building every map into a dict, as it did; timed on two small headers,
  then scaled to 1 MB by the growth between them: quadratic for tuples and pids);
- **floods**: valid headers made of what costs the decoder most per byte (empty containers, tiny
  exts): the worst case left, which is linear.

It also times typical messages (a small SEND, a RESULT of 8 items, a JOB with one array), here
and, with ``--compare-with OLD_WIRE.py`` (e.g. ``git show ed44dd1:zimg/wire.py > /tmp/w.py``),
with another version of the codec.

The collision generators are also what the tests use (``tests/unit/test_wire_collisions.py``,
``tests/integration/test_hostile_decode.py`` and the fuzz in
``tests/integration/test_fuzz_broker.py``). None of them needs to know the process's hash secret.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import importlib.util
import math
import sys
import time
import timeit
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import msgpack
import numpy as np

from zimg import wire
from zimg._errors import WireError

# The collision keys and the headers live in their own modules; their names stay importable
# from here, where the tests have always found them.
from zimg.bench.hash_collisions import (
    KINDS,
    colliding_floats,
    colliding_ids,
    colliding_ints,
    colliding_mixed,
    colliding_pids,
    colliding_tuples,
)
from zimg.bench.headers import (
    FLOODS,
    MB,
    as_msgpack,
    collision_header,
    flood_header,
    packed_map,
    plain_header,
    str_key_header,
)
from zimg.wire import Command, Ext, Pid, Ref

__all__ = [
    "FLOODS",
    "KINDS",
    "MB",
    "as_msgpack",
    "colliding_floats",
    "colliding_ids",
    "colliding_ints",
    "colliding_mixed",
    "colliding_pids",
    "colliding_tuples",
    "collision_header",
    "cpu_seconds",
    "decode_seconds",
    "flood_header",
    "main",
    "old_decode_seconds",
    "packed_map",
    "plain_header",
    "str_key_header",
    "typical_us",
]


def _frames(header: bytes) -> list[bytes]:
    return [wire.lead_frame(Command.SEND, header)]


def cpu_seconds(call: Callable[[], Any], repeat: int = 3) -> float:
    """The least CPU time (of this thread) that ``call`` took over ``repeat`` runs."""
    best = math.inf
    for _ in range(repeat):
        started = time.thread_time()
        call()
        best = min(best, time.thread_time() - started)
    return best


def decode_seconds(header: bytes, repeat: int = 3, codec: ModuleType = wire) -> float:
    """CPU seconds that ``codec.decode`` takes on a SEND with this header (refused or not)."""
    frames = _frames(header)

    def run() -> None:
        with contextlib.suppress(WireError):
            codec.decode(frames)

    return cpu_seconds(run, repeat)


def old_decode_seconds(header: bytes) -> float:
    """CPU seconds that the decoder before the fix took: msgpack built every map into a dict
    whatever its keys (``strict_map_key=False``), decoding tuples and pids on the way."""

    def hook(code: int, data: bytes) -> Any:
        if code == Ext.TUPLE:
            return tuple(msgpack.unpackb(data, strict_map_key=False, ext_hook=hook))
        parts = msgpack.unpackb(data)
        return (Pid if code == Ext.PID else Ref)(*parts)

    return cpu_seconds(
        lambda: msgpack.unpackb(header, raw=False, strict_map_key=False, ext_hook=hook), 1
    )


def typical_us(codec: ModuleType, rounds: int = 30, number: int = 2000) -> dict[str, float]:
    """CPU microseconds ``codec.decode`` takes on typical messages (best of ``rounds``)."""
    command, pid = codec.Command, codec.Pid
    me, to = pid("main", 123456789012345, 0), pid("n1", 987654321098765, 3)
    items = [
        {"ok": True, "ms": 12.345, "error": None, "payload": np.zeros(1000 + i, np.uint8)}
        for i in range(8)
    ]
    result = {"id": 42, "ticket": 7, "attempt": 1, "node": "n1", "ok": True, "error": None}
    job = {
        "id": 7,
        "mode": "encoded",
        "ops": [["threshold", {"thresh": 127}]],
        "items": [{"name": "a.png", "ext": ".png", "payload": np.zeros(5000, np.uint8)}],
    }
    messages = {
        "small SEND": codec.encode(command.SEND, {"to": to, "msg": ("echo", me, "hi")}),
        "RESULT, 8 items": codec.encode(command.RESULT, {**result, "items": items}),
        "JOB, 1 array": codec.encode(command.JOB, job),
    }
    best = dict.fromkeys(messages, math.inf)
    for _ in range(rounds):
        for name, frames in messages.items():
            timer = timeit.Timer(functools.partial(codec.decode, frames), timer=time.thread_time)
            best[name] = min(best[name], timer.timeit(number) / number * 1e6)
    return best


def _load(path: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location("zimg_wire_compared", Path(path))
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot load {path} as a module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m zimg.bench.decode", description=__doc__)
    parser.add_argument(
        "--before-kb",
        type=int,
        default=48,
        help="the larger of the two collision headers the old decoder is timed on (default 48)",
    )
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure (the best counts)")
    parser.add_argument(
        "--compare-with", metavar="WIRE_PY", help="another wire.py to time typical messages with"
    )
    args = parser.parse_args(argv)
    codecs = {"this": wire} | ({"other": _load(args.compare_with)} if args.compare_with else {})
    times = {label: typical_us(codec) for label, codec in codecs.items()}
    print("typical messages: CPU us per decode (best of 30 rounds)")
    for name, now in times["this"].items():
        other = times.get("other", {}).get(name)
        versus = f"   other {other:7.2f} us (this / other {now / other:.3f})" if other else ""
        print(f"  {name:34s} {now:7.2f} us{versus}")
    print(f"wire.decode: CPU ms per MB of header, best of {args.repeat} (gc {gc.isenabled()})")
    plain: dict[str, float] = {}
    plains = {"RESULT-like items": plain_header(), "one map of str keys": str_key_header()}
    for name, header in plains.items():
        plain[name] = decode_seconds(header, args.repeat) / (len(header) / MB)
        print(f"  plain: {name:27s} {plain[name] * 1e3:9.1f} ms/MB")
    typical = plain["RESULT-like items"]

    print(
        f"collisions (~1 MB, refused now); before: the old decoder on {args.before_kb // 2} and "
        f"{args.before_kb} kB, scaled to 1 MB by the growth between them"
    )
    worst_before = worst_now = 0.0
    for kind in KINDS:
        header = collision_header(kind)
        now = decode_seconds(header, args.repeat) / (len(header) / MB)
        half = collision_header(kind, size=args.before_kb * 512)
        small = collision_header(kind, size=args.before_kb * 1024)
        t_half, t_small = old_decode_seconds(half), old_decode_seconds(small)
        growth = min(2.0, max(1.0, math.log(t_small / t_half, len(small) / len(half))))
        before = t_small * (MB / len(small)) ** growth
        worst_before, worst_now = max(worst_before, before), max(worst_now, now)
        print(
            f"  {kind:34s} {now * 1e3:9.3f} ms/MB now {before:9.1f} s/MB before "
            f"(time ~ size^{growth:.2f})"
        )

    print("floods (~1 MB, valid: the costliest headers left, all linear)")
    worst_flood, worst_name = 0.0, ""
    for kind in FLOODS:
        header = flood_header(kind)
        seconds = decode_seconds(header, args.repeat) / (len(header) / MB)
        if seconds > worst_flood:
            worst_flood, worst_name = seconds, kind
        versus = ""
        if "other" in codecs:
            other = decode_seconds(header, args.repeat, codecs["other"]) / (len(header) / MB)
            versus = f"   other {other * 1e3:7.1f} ms/MB"
        print(f"  {kind:34s} {seconds * 1e3:9.1f} ms/MB{versus}")

    print("summary (x: times the RESULT-like plain header)")
    print(f"  plain header:                    {typical * 1e3:11.1f} ms/MB")
    print(
        f"  worst collision header, before:  {worst_before * 1e3:11.0f} ms/MB "
        f"({worst_before / typical:,.0f} x)"
    )
    print(
        f"  worst collision header, now:     {worst_now * 1e3:11.3f} ms/MB "
        f"({worst_now / typical:.4f} x)"
    )
    print(
        f"  worst header of any kind, now:   {worst_flood * 1e3:11.1f} ms/MB "
        f"({worst_flood / typical:.1f} x; {worst_name})"
    )


if __name__ == "__main__":
    main()
