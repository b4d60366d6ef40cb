"""No choice of bytes makes ``wire.decode`` slow: map keys whose hashes collide (issue 12, item 1).

CPython hashes ints as themselves, tuples by an unkeyed mix of their items' hashes, and a
:class:`Pid` as the tuple of its fields, so a peer can choose map keys that all share one hash
(``zimg.bench.decode`` builds them, without knowing the process's hash secret), and a dict of
``n`` of them costs ``n²/2`` comparisons. ``decode`` now accepts only str and bytes map keys
(randomised hashes) and refuses any other as msgpack reads it, before it goes into a dict.

Work is counted where it can be (``__eq__``/``__hash__`` calls on pids, ext decodes); where it
cannot (tuples of ints), a colliding header is timed against a plain one of the same size, with
a generous ratio and no absolute time.
"""

from __future__ import annotations

import gc
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zimg import _wire_decode, _wire_terms
from zimg._errors import WireError
from zimg.bench.decode import (
    FLOODS,
    KINDS,
    MB,
    as_msgpack,
    colliding_ids,
    colliding_tuples,
    collision_header,
    flood_header,
    packed_map,
    str_key_header,
)
from zimg.wire import Command, Ext, Limits, Pid, Ref, decode, encode, lead_frame, peek_head

SETTINGS = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
KEY_ERROR = "map keys must be str or bytes"


def send(header: bytes, command: Command = Command.SEND) -> list[bytes]:
    return [lead_frame(command, header)]


def cpu_time(call: Callable[[], Any], repeat: int = 3) -> float:
    """The least CPU time of this thread that ``call`` takes over ``repeat`` runs."""
    best = float("inf")
    for _ in range(repeat):
        started = time.thread_time()
        call()
        best = min(best, time.thread_time() - started)
    return best


def refused(frames: list[bytes]) -> None:
    with pytest.raises(WireError):
        decode(frames)


# ---------------------------------------------------------------- the generators collide


@pytest.mark.parametrize("kind", ["tuples", "pids"])
def test_the_generators_give_one_hash_for_every_key(kind: str) -> None:
    keys = KINDS[kind](500)
    assert len(set(keys)) == 500
    assert len({hash(k) for k in keys}) == 1


def test_the_pid_collisions_need_no_hash_secret() -> None:
    """The same pids collide in processes with other str-hash secrets (PYTHONHASHSEED)."""
    script = (
        "from zimg.bench.decode import colliding_pids\n"
        "print(len({hash(p) for p in colliding_pids(300)}), hash(colliding_pids(1)[0]))"
    )
    seen = set()
    for seed in ("1", "2", "random"):
        out = subprocess.run(
            [sys.executable, "-c", script],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout.split()
        assert out[0] == "1", out  # one hash for all 300 pids...
        seen.add(out[1])
    assert len(seen) == 3  # ...although that hash differs from process to process


def test_other_kinds_share_hashes_in_groups() -> None:
    for kind in ("ints", "floats", "mixed"):
        keys = KINDS[kind](200)
        assert len({hash(k) for k in keys}) < len(keys) / 4, kind


# ---------------------------------------------------------------- refused while reading


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("where", ["nested", "top"])
def test_a_collision_header_of_a_megabyte_is_refused(kind: str, where: str) -> None:
    header = collision_header(kind, where=where)
    assert len(header) > MB - 1000
    with pytest.raises(WireError, match=KEY_ERROR):
        decode(send(header))


def _wrap(inner: bytes, where: str) -> bytes:
    """The packed map ``inner`` at one of the places a map can be in a header."""
    if where == "value":
        return b"\x81\xa3msg" + inner
    if where == "after str keys":
        return b"\x83\xa1a\x01\xa1b\xc0\xa3msg" + inner
    if where == "in a list":
        return b"\x81\xa3msg\x92\x07" + inner
    if where == "in a map in a map":
        return b"\x81\xa3msg\x81\xa1k" + inner
    if where == "in a tuple":
        return b"\x81\xa3msg" + bytes(msgpack.packb(msgpack.ExtType(Ext.TUPLE, b"\x91" + inner)))
    assert where == "header", where
    return inner


PLACES = ["header", "value", "after str keys", "in a list", "in a map in a map", "in a tuple"]
colliding_keys = st.sampled_from(list(KINDS)).flatmap(
    lambda kind: st.integers(2, 300).map(lambda n: KINDS[kind](n))
)
odd_keys = st.lists(
    st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.none()
    | st.booleans()
    | st.tuples(st.integers(-9, 9), st.text(max_size=3))
    | st.builds(Pid, st.text(max_size=3), st.integers(0, 9), st.integers(0, 9))
    | st.builds(Ref, st.text(max_size=3), st.integers(0, 9), st.integers(0, 9)),
    min_size=1,
    max_size=40,
)


@SETTINGS
@given(
    keys=colliding_keys | odd_keys,
    where=st.sampled_from(PLACES),
    command=st.sampled_from([Command.SEND, Command.RESULT, Command.NODES, Command.HELLO]),
    safe_first=st.lists(st.text(max_size=4) | st.binary(max_size=4), max_size=5),
)
def test_any_map_with_a_key_that_is_not_str_or_bytes_is_refused(
    keys: list[Any], where: str, command: Command, safe_first: list[Any]
) -> None:
    """Collision families, and any int, float, None, bool, tuple, pid or ref key, anywhere."""
    ordered = list(dict.fromkeys(safe_first)) + keys  # str/bytes keys first: a later key fails
    header = _wrap(packed_map(ordered), where)
    with pytest.raises(WireError):
        decode(send(header, command))
    # ...and what decode refuses, encode refuses too.
    with pytest.raises(WireError, match=KEY_ERROR):
        encode(command, {"msg": dict.fromkeys(keys)})


@pytest.mark.parametrize("key", [b"k", "k", b"", "", b"\xff" * 70_000])
def test_str_and_bytes_keys_travel(key: Any) -> None:
    header = {"m": {key: 1, "other": [{key: (key,)}]}}
    assert decode(encode(Command.SEND, header)).header == header


def test_the_top_level_keys_are_str_only() -> None:
    with pytest.raises(WireError, match="header must be a map with string keys"):
        decode(send(packed_map([b"id"])))


# ---------------------------------------------------------------- work, counted


@pytest.fixture
def pid_calls(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Counts of ``__hash__`` and ``__eq__`` calls on pids and refs while the test runs."""
    calls = {"hash": 0, "eq": 0}
    for cls in (Pid, Ref):
        hash_of, equal = cls.__hash__, cls.__eq__

        def counted_hash(self: Any, hash_of: Any = hash_of) -> int:
            calls["hash"] += 1
            return int(hash_of(self))

        def counted_eq(self: Any, other: Any, equal: Any = equal) -> Any:
            calls["eq"] += 1
            return equal(self, other)

        monkeypatch.setattr(cls, "__hash__", counted_hash)
        monkeypatch.setattr(cls, "__eq__", counted_eq)
    return calls


@pytest.mark.timeout(60)
@pytest.mark.parametrize("cls", [Pid, Ref])
def test_colliding_pid_keys_cost_no_comparisons(cls: type, pid_calls: dict[str, int]) -> None:
    """Before: n²/2 comparisons (2000 keys: 2 million). Now: not one hash, not one compare."""
    keys = [cls(*parts) for parts in colliding_ids(2000)]
    assert len({hash(k) for k in keys}) == 1
    pid_calls.update(hash=0, eq=0)
    refused(send(_wrap(packed_map(keys), "value")))
    assert pid_calls == {"hash": 0, "eq": 0}


@pytest.mark.timeout(60)
def test_a_map_is_refused_at_its_first_bad_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """The key is refused as msgpack reads it: one tuple decoded, not 20,000 (nor a dict)."""
    decoded = []
    hook = _wire_decode._Decoder.ext_hook

    def counting(self: Any, code: int, data: bytes) -> Any:
        decoded.append(code)
        return hook(self, code, data)

    monkeypatch.setattr(_wire_decode._Decoder, "ext_hook", counting)
    refused(send(_wrap(packed_map(colliding_tuples(20_000)), "value")))
    assert decoded == [Ext.TUPLE]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("kind", list(KINDS))
def test_a_collision_header_costs_no_more_than_a_plain_one(kind: str) -> None:
    """Compared with a map of str keys of the same size (~256 kB), with a generous ratio.
    Before: tuples 300 times and pids 2,000 times the plain header's time."""
    size = 256 * 1024
    plain, colliding = send(str_key_header(size)), send(collision_header(kind, size))
    assert abs(len(plain[0]) - len(colliding[0])) < size // 10
    decode(plain)
    plain_s = cpu_time(lambda: decode(plain))
    colliding_s = cpu_time(lambda: refused(colliding))
    assert colliding_s < 5 * plain_s + 0.002, (colliding_s, plain_s)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("kind", FLOODS)
def test_the_costliest_headers_left_cost_time_linear_in_their_size(kind: str) -> None:
    """Eight times the bytes of empty containers or tiny exts: under 16 times the time (a
    quadratic cost would be 64 times; measured: 6 to 10)."""
    small, large = (send(flood_header(kind, size)) for size in (128 * 1024, MB - 64))
    assert decode(small).header
    assert decode(large).header
    ratio = cpu_time(lambda: decode(large)) / cpu_time(lambda: decode(small))
    assert ratio < 16, ratio
    with pytest.raises(WireError):
        decode(send(flood_header(kind, 128 * 1024, bad_end=True)))


# ---------------------------------------------------------------- the rest of the decoder


@pytest.mark.parametrize(
    ("header", "entries"),
    [
        (b"\x82\xa1a\x01\xa1a\x02", 2),  # fixmap
        (b"\xde\x00\x02\xa1a\x01\xa1a\x02", 2),  # map 16
        (b"\xdf\x00\x00\x00\x03\xa1a\x01\xa1b\x01\xa1a\x02", 3),  # map 32
        (b"\x82\xa2to" + msgpack.packb(as_msgpack(Pid("n1", 1, 2))) + b"\xa2to\x01", 2),
    ],
)
def test_a_header_key_given_twice_is_refused(header: bytes, entries: int) -> None:
    """Peeks read a header's first entries, decode would keep the last: the two must agree, so
    a repeated header key is malformed (and peek_head gives None for it)."""
    with pytest.raises(WireError, match="header has a key more than once"):
        decode(send(header))
    assert peek_head(send(header, Command.RESULT), entries) is None


def test_a_nested_map_keeps_the_last_of_a_repeated_key() -> None:
    assert decode(send(b"\x81\xa1m\x82\xa1a\x01\xa1a\x02")).header == {"m": {"a": 2}}


BIG = "x" * 1_000_000


@pytest.mark.parametrize(
    "frames",
    [
        send(msgpack.packb({"a": msgpack.ExtType(Ext.ARRAY, msgpack.packb([0, BIG, [1]]))})),
        send(msgpack.packb({"a": msgpack.ExtType(Ext.ARRAY, msgpack.packb([0, "|u1", [BIG]]))})),
        send(msgpack.packb({"a": msgpack.ExtType(Ext.BLOB, msgpack.packb(BIG))})),
        send(msgpack.packb({"a": msgpack.ExtType(Ext.BLOB, msgpack.packb([[[[[[[1]]]]]]] * 9))})),
    ],
    ids=["dtype", "shape", "blob index", "nested blob index"],
)
def test_error_texts_quote_a_peer_briefly(frames: list[bytes]) -> None:
    """Error texts are logged: a megabyte-long field must not make a megabyte-long line."""
    with pytest.raises(WireError) as info:
        decode(frames)
    assert len(str(info.value)) < 200, str(info.value)[:300]


def test_the_pid_cache_keeps_only_pid_sized_payloads() -> None:
    _wire_terms._decode_small_pid.cache_clear()
    long_node = Pid("n" * 10_000, 1, 2)
    assert decode(encode(Command.SEND, {"p": long_node})).header["p"] == long_node
    assert _wire_terms._decode_small_pid.cache_info().currsize == 0
    longest = Pid("n" * 64, 2**64 - 1, -(2**63))  # the widest pid a real node has
    assert decode(encode(Command.SEND, {"p": longest})).header["p"] == longest
    assert _wire_terms._decode_small_pid.cache_info().currsize == 1


@pytest.mark.parametrize("enabled", [True, False])
@pytest.mark.parametrize("valid", [True, False])
def test_decoding_a_large_header_leaves_the_garbage_collector_as_it_found_it(
    enabled: bool, valid: bool
) -> None:
    header = flood_header("empty lists", 256 * 1024, bad_end=not valid)
    was = gc.isenabled()
    try:
        (gc.enable if enabled else gc.disable)()
        try:
            decode(send(header))
        except WireError:
            assert not valid
        assert gc.isenabled() is enabled
    finally:
        (gc.enable if was else gc.disable)()


# ---------------------------------------------------------------- the two checks agree

Timestamp = msgpack.Timestamp
leaves = st.none() | st.integers() | st.text(max_size=3) | st.just(Timestamp(1, 2))
trees = st.recursive(
    leaves,
    lambda kids: (
        st.lists(kids, max_size=3)
        | st.lists(kids, max_size=3).map(tuple)
        | st.dictionaries(st.text(max_size=2), kids, max_size=3)
    ),
    max_leaves=40,
)


def _chain(depth: int, kinds: list[str]) -> Any:
    term: Any = None
    for i in range(depth):
        kind = kinds[i % len(kinds)]
        term = [term] if kind == "list" else (term,) if kind == "tuple" else {"k": term}
    return term


deep = st.builds(
    _chain, st.integers(0, 40), st.lists(st.sampled_from(["list", "tuple", "map"]), min_size=1)
)


def _outcome(check: Callable[..., None], header: dict[str, Any], limit: int) -> str:
    try:
        check(header, limit)
    except WireError as exc:
        return re.sub(r"\d+", "N", str(exc)).split(",")[0]
    return "ok"


@settings(max_examples=300, deadline=None)
@given(
    header=st.dictionaries(st.text(max_size=3), trees | deep, max_size=4),
    limit=st.integers(1, 33),
)
def test_the_recursive_and_the_level_walk_agree(header: dict[str, Any], limit: int) -> None:
    """Small headers are checked by a recursive walk, large ones a depth at a time: they refuse
    the same headers (not always with the same text, when one has two faults)."""
    small, large = (
        _outcome(_wire_decode._check_term, header, limit),
        _outcome(_wire_decode._check_terms, header, limit),
    )
    assert (small == "ok") == (large == "ok"), (small, large)


@pytest.mark.parametrize("pad", [0, 4000], ids=["recursive", "level walk"])
@pytest.mark.parametrize("levels", [32, 33])
def test_decode_applies_the_depth_limit_on_both_walks(pad: int, levels: int) -> None:
    header = {"pad": "p" * pad, "a": _chain(levels, ["list", "map", "tuple"])}
    frames = encode(Command.SEND, header, Limits(max_depth=99))
    assert (len(frames[0]) > _wire_decode._LEVEL_WALK_BYTES) is (pad > 0)
    if levels <= 32:
        assert decode(frames).header == header
    else:
        with pytest.raises(WireError, match="nested deeper than 32 levels"):
            decode(frames)
