"""A manifest line, filled in from a template for speed, is exactly what ``json.dumps`` writes."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from zimg._manifest import KEYS, line

TEXT = st.none() | st.text()
NUMBER = st.none() | st.integers() | st.floats(allow_nan=True, allow_infinity=True)


def entry(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "index": 3,
        "input": "in/a.jpg",
        "output": "out/a_processed.jpg",
        "node": "w1",
        "attempts": 1,
        "ms": 2.5,
        "latency_ms": 10.125,
        "error": None,
    }
    base.update(changes)
    return base


@given(
    index=st.integers(min_value=0),
    source=st.text(),
    output=TEXT,
    node=TEXT,
    attempts=st.integers(),
    ms=NUMBER,
    latency=NUMBER,
    error=TEXT,
)
def test_a_line_is_what_json_dumps_writes(
    index: int,
    source: str,
    output: str | None,
    node: str | None,
    attempts: int,
    ms: float | None,
    latency: float | None,
    error: str | None,
) -> None:
    values = [index, source, output, node, attempts, ms, latency, error]
    e = dict(zip(KEYS, values, strict=True))
    assert line(e) == json.dumps(e) + "\n"


class Text(str):
    pass


def test_values_of_other_types_and_other_keys_go_through_the_encoder() -> None:
    odd = [
        entry(ms=float("nan"), latency_ms=float("-inf")),
        entry(attempts=True),  # bool: true, not True
        entry(node=Text("w1"), error='quote " and \u00e9 and \n'),
        entry(ms=1e300, latency_ms=-0.0),
        {"index": 1, "input": "a", "extra": 1},
        dict(reversed(entry().items())),
    ]
    for e in odd:
        assert line(e) == json.dumps(e) + "\n"
