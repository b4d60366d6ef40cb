"""A batch's ``manifest.jsonl`` lines, encoded as ``json.dumps`` writes them.

A batch writes one line per input, so this runs for every image: filling in a template with the
C string escaper costs a fraction of walking the entry with ``json.JSONEncoder`` (measured in
``docs/performance.md``, issue 18). Entries whose values are not the plain types a batch writes
go through the encoder, so every line is what ``json.dumps(entry)`` gives.
"""

from __future__ import annotations

import json
from json.encoder import encode_basestring_ascii as _quote
from typing import Any

# The keys of an entry, in the order a line has them.
KEYS = ("index", "input", "output", "node", "attempts", "ms", "latency_ms", "error")

# json.dumps without its per-call check of the keyword arguments (the same encoder).
_encode = json.JSONEncoder().encode
_INF = float("inf")


def line(entry: dict[str, Any]) -> str:
    """``json.dumps(entry) + "\\n"`` for a manifest entry (``KEYS``, in that order)."""
    if tuple(entry) == KEYS:
        index, source, output, node, attempts, ms, latency, error = entry.values()
        if (
            type(index) is int
            and type(attempts) is int
            and type(source) is str
            and type(output) in _TEXT
            and type(node) in _TEXT
            and type(error) in _TEXT
            and type(ms) in _NUMBER
            and type(latency) in _NUMBER
            and (ms is None or -_INF < ms < _INF)  # NaN and infinities: the encoder's spelling
            and (latency is None or -_INF < latency < _INF)
        ):
            return (
                f'{{"index": {index}, "input": {_quote(source)}, '
                f'"output": {"null" if output is None else _quote(output)}, '
                f'"node": {"null" if node is None else _quote(node)}, "attempts": {attempts}, '
                f'"ms": {"null" if ms is None else repr(ms)}, '
                f'"latency_ms": {"null" if latency is None else repr(latency)}, '
                f'"error": {"null" if error is None else _quote(error)}}}\n'
            )
    return _encode(entry) + "\n"


# Exactly these types (not bool, not a str or float subclass, whose JSON may differ from repr).
_TEXT = frozenset({str, type(None)})
_NUMBER = frozenset({int, float, type(None)})
