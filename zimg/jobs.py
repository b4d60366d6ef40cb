"""The image job on the wire: what a client sends (JOB) and what a worker answers (RESULT).

A job carries one or more *items* (images) that share a pipeline and a payload mode. Small images
travel several to a job, so the fixed cost of a message (a few hops through Python on each side)
is paid once for all of them; the broker sees one job either way.

In ``encoded`` mode the items' payloads travel *packed*: one array holding them end to end
(``payloads``) and their sizes in the header (``pack``), so a job is two frames however many
images it holds, and a RESULT likewise (every frame costs a ZeroMQ call and a ``zmq.Frame`` on
each side of each hop). The unpacked form, a payload per item, is still read.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from zimg import protocol
from zimg._errors import WireError

PayloadMode = Literal["encoded", "raw", "path"]
PAYLOAD_MODES: tuple[PayloadMode, ...] = ("encoded", "raw", "path")
MAX_ITEMS = 64
MAX_ERROR_CHARS = 1000
"""The longest error text a RESULT carries, for the job or for one item. With at most
``MAX_ITEMS`` items a RESULT's texts stay under 64 K characters, far inside a header
(``wire.Limits.max_header_bytes``, 1 MiB), however long the message an op built."""


def cap_text(text: str, limit: int = MAX_ERROR_CHARS) -> str:
    """``text`` cut to ``limit`` characters, the last one "…"; the start, which names the file
    and the op, is kept."""
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


@dataclass(slots=True)
class JobItem:
    """One image of a job.

    Attributes:
        index: the caller's number for it (its position in the batch).
        name: the input's name (a path), for messages and the manifest; in ``path`` mode the
            worker reads this file.
        ext: the output format's extension, e.g. ``.jpg``.
        payload: the file's bytes as uint8 (``encoded``) or an image (``raw``); None in ``path``.
        output: in ``path`` mode, the prefix of the temporary file the worker writes.
    """

    index: int
    name: str
    ext: str
    payload: np.ndarray[Any, Any] | None = None
    output: str | None = None

    def to_wire(self) -> dict[str, Any]:
        item: dict[str, Any] = {"name": self.name, "ext": self.ext}
        if self.payload is not None:
            item["payload"] = self.payload
        if self.output is not None:
            item["output"] = self.output
        return item


@dataclass(slots=True)
class JobRequest:
    """One job as the client submits it.

    Attributes:
        id: the caller's number for this job; the wire id is assigned when it is sent.
        mode: ``encoded`` (payloads hold the files' bytes), ``raw`` (images), or ``path`` (no
            payload: the worker reads each ``name`` and writes each ``output`` itself, which
            needs a filesystem shared with the client and a worker started with
            ``--allow-paths``).
        ops: the pipeline, as ``[[name, params], ...]``.
        items: the images, at least one.
        max_pixels: the client's limit on image size; workers apply the lower of theirs and it.
        deadline_s: seconds the job may take once a worker has received it (the broker sends
            the lower of this and its own maximum); past it, the worker fails the items it has
            not finished. None: no deadline of the client's.
    """

    id: int
    mode: PayloadMode
    ops: list[list[Any]]
    items: list[JobItem] = field(default_factory=list)
    max_pixels: int | None = None
    deadline_s: float | None = None

    def header(self, job_id: int, *, pack: bool = True) -> dict[str, Any]:
        """The JOB header, with ``job_id`` as the id on the wire.

        ``pack``: in ``encoded`` mode, the payloads go as one array and their sizes (``pack``
        and ``payloads``); False: each in its item, as a worker older than packing reads them.
        """
        payloads = [item.payload for item in self.items]
        packed = pack and self.mode == "encoded" and packable(payloads)
        header: dict[str, Any] = {
            "id": job_id,
            "mode": self.mode,
            "ops": self.ops,
            "items": (
                [{"name": item.name, "ext": item.ext} for item in self.items]
                if packed
                else [item.to_wire() for item in self.items]
            ),
        }
        if packed:
            header["pack"], header["payloads"] = pack_payloads(payloads)
        if self.max_pixels is not None:
            header["max_pixels"] = self.max_pixels
        if self.deadline_s is not None:
            header["deadline_s"] = self.deadline_s
        return header

    @classmethod
    def from_header(cls, header: dict[str, Any]) -> JobRequest:
        """Validate a JOB header as a worker receives it.

        Raises:
            WireError: a field is missing or of the wrong type.
        """
        mode = protocol.field(header, "mode", str)
        if mode not in PAYLOAD_MODES:
            raise WireError(f"payload mode {mode!r} is not one of {PAYLOAD_MODES}")
        raw_items = protocol.field(header, "items", list)
        if not 1 <= len(raw_items) <= MAX_ITEMS:
            raise WireError(f"a job holds 1 to {MAX_ITEMS} items, not {len(raw_items)}")
        packed = "pack" in header
        if packed and mode != "encoded":
            raise WireError(f"only encoded payloads travel packed, not {mode} ones")
        items = [_item(i, raw, mode, packed) for i, raw in enumerate(raw_items)]
        if packed:
            joined = header.get("payloads")
            sizes = unpack_payloads(header["pack"], joined, len(items), missing=False)
            for item, payload in zip(items, sizes, strict=True):
                item.payload = payload
        max_pixels = protocol.field(header, "max_pixels", int) if "max_pixels" in header else None
        return cls(
            id=protocol.field(header, "id", int),
            mode=mode,
            ops=protocol.field(header, "ops", list),
            items=items,
            max_pixels=max_pixels,
            deadline_s=_deadline(header),
        )


def _deadline(header: dict[str, Any]) -> float | None:
    """The optional ``deadline_s``: a finite number of seconds > 0 (int or float, not bool)."""
    if "deadline_s" not in header:
        return None
    value = protocol.field(header, "deadline_s", (int, float))
    if not 0 < value < math.inf:
        raise WireError(f"header field 'deadline_s' must be a number of seconds > 0, not {value}")
    return float(value)


def _item(index: int, raw: Any, mode: str, packed: bool = False) -> JobItem:
    if not isinstance(raw, dict):
        raise WireError(f"job item {index} is not a map")
    payload: np.ndarray[Any, Any] | None = None
    output: str | None = None
    if mode == "path":
        output = protocol.field(raw, "output", str)
    elif packed:
        if "payload" in raw:
            raise WireError(f"job item {index} has a payload of its own in a packed job")
    else:
        payload = protocol.field(raw, "payload", np.ndarray)
        if mode == "encoded" and (payload.dtype != np.uint8 or payload.ndim != 1):
            raise WireError(f"job item {index}: an encoded payload must be a 1-D uint8 array")
    return JobItem(
        index,
        protocol.field(raw, "name", str),
        protocol.field(raw, "ext", str),
        payload=payload,
        output=output,
    )


def packable(payloads: Sequence[np.ndarray[Any, Any] | None]) -> bool:
    """Whether these payloads can travel packed: each a C-contiguous 1-D uint8 array, or
    None (no payload: a failed item of a RESULT), and at least one array."""
    found = False
    for payload in payloads:
        if payload is None:
            continue
        if not isinstance(payload, np.ndarray):
            return False
        if payload.dtype != np.uint8 or payload.ndim != 1 or not payload.flags.c_contiguous:
            return False
        found = True
    return found


def pack_payloads(
    payloads: Sequence[np.ndarray[Any, Any] | None],
) -> tuple[list[int | None], np.ndarray[Any, Any]]:
    """The ``pack`` sizes (None for a missing payload) and the one ``payloads`` array that
    holds the payloads end to end (:func:`packable` ones)."""
    sizes = [None if p is None else p.nbytes for p in payloads]
    joined = np.frombuffer(b"".join([p.data for p in payloads if p is not None]), np.uint8)
    return sizes, joined


def unpack_payloads(
    sizes: Any, joined: Any, count: int, *, missing: bool
) -> list[np.ndarray[Any, Any] | None]:
    """The ``count`` payloads that a ``pack`` list and a ``payloads`` array carry: read-only
    views of the one array, none copied.

    ``missing``: a size may be nil, for an item without a payload (a RESULT's failed items).

    Raises:
        WireError: ``sizes`` is not a list of ``count`` ints >= 0 (or nils, if ``missing``),
            ``joined`` is not a 1-D uint8 array, or the sizes do not add up to its length.
    """
    if type(sizes) is not list or len(sizes) != count:
        got = f"{len(sizes)} entries" if type(sizes) is list else type(sizes).__name__
        raise WireError(f"'pack' must be a list of {count} sizes, one per item, not {got}")
    if not isinstance(joined, np.ndarray) or joined.dtype != np.uint8 or joined.ndim != 1:
        raise WireError("packed payloads need a 'payloads' field: a 1-D uint8 array")
    total = joined.nbytes
    out: list[np.ndarray[Any, Any] | None] = []
    start = 0
    for index, size in enumerate(sizes):
        if size is None and missing:
            out.append(None)
            continue
        if type(size) is not int or not 0 <= size <= total - start:
            raise WireError(
                f"'pack' size {index} must be an int from 0 to the {total - start} bytes "
                f"left of 'payloads', not {size if type(size) is int else type(size).__name__}"
            )
        out.append(joined[start : start + size])
        start += size
    if start != total:
        raise WireError(f"'pack' sizes add up to {start} bytes, but 'payloads' holds {total}")
    return out


@dataclass(slots=True)
class ItemResult:
    """What came back for one item.

    Attributes:
        ok: True if the worker produced an output.
        ms: the worker's processing time in milliseconds.
        error: why it failed, or None.
        payload: encoded bytes (uint8) or the raw image; None on failure or in path mode.
        output: in path mode, the temporary file the worker wrote (the client renames it).
    """

    ok: bool
    ms: float = 0.0
    error: str | None = None
    payload: np.ndarray[Any, Any] | None = None
    output: str | None = None

    def to_wire(self) -> dict[str, Any]:
        """The item's map in a RESULT; ``error`` capped at ``MAX_ERROR_CHARS``."""
        error = None if self.error is None else cap_text(self.error)
        out: dict[str, Any] = {"ok": self.ok, "ms": round(self.ms, 3), "error": error}
        if self.payload is not None:
            out["payload"] = self.payload
        if self.output is not None:
            out["output"] = self.output
        return out


@dataclass(slots=True)
class JobResult:
    """What came back for one job.

    Attributes:
        id: the job's wire id.
        ok: False if the job as a whole failed (it could not be run, or the broker gave up on
            it); then ``error`` says why and ``items`` is empty.
        node: the node that ran it (the last one tried, for a failure).
        attempt: which delivery attempt produced this result (1 = first).
        error: why the whole job failed, or None.
        items: one result per item, in the job's order.
        died: the broker gave up because the workers running it kept dying.
        busy: the broker did not take the job (its queue was full: ``attempt`` is 0); send it
            again later.
    """

    id: int
    ok: bool
    node: str | None
    attempt: int
    error: str | None = None
    items: list[ItemResult] = field(default_factory=list)
    died: bool = False
    busy: bool = False

    def item(self, position: int) -> ItemResult:
        """The result of the job's ``position``-th item; a whole-job failure fails each one."""
        if position < len(self.items):
            return self.items[position]
        return ItemResult(ok=False, error=self.error or "the worker returned no result for it")

    @classmethod
    def from_header(cls, header: dict[str, Any]) -> JobResult:
        """Validate a RESULT header as a client receives it."""
        node, error = header.get("node"), header.get("error")
        raw_items = header.get("items")
        items = [_item_result(x) for x in raw_items] if isinstance(raw_items, list) else []
        if items and "pack" in header:
            _take_packed(items, header)
        return cls(
            id=protocol.field(header, "id", int),
            ok=protocol.field(header, "ok", bool),
            node=node if isinstance(node, str) else None,
            attempt=protocol.field(header, "attempt", int),
            error=error if isinstance(error, str) else None,
            items=items,
            died=header.get("died") is True,
            busy=header.get("busy") is True,
        )


def _item_result(raw: Any) -> ItemResult:
    if not isinstance(raw, dict):
        return ItemResult(ok=False, error="the worker sent a malformed item result")
    ok, ms, error = raw.get("ok"), raw.get("ms", 0.0), raw.get("error")
    payload, output = raw.get("payload"), raw.get("output")
    return ItemResult(
        ok=ok is True,
        ms=float(ms) if isinstance(ms, int | float) and not isinstance(ms, bool) else 0.0,
        error=error if isinstance(error, str) else None,
        payload=payload if isinstance(payload, np.ndarray) else None,
        output=output if isinstance(output, str) else None,
    )


def _take_packed(items: list[ItemResult], header: dict[str, Any]) -> None:
    """Give each item its payload from a RESULT's ``pack`` and ``payloads``; if they are
    malformed, every item fails with that reason (the job is still answered)."""
    try:
        payloads = unpack_payloads(header["pack"], header.get("payloads"), len(items), missing=True)
    except WireError as exc:
        why = cap_text(f"the worker sent malformed packed payloads: {exc}")
        for position in range(len(items)):
            items[position] = ItemResult(ok=False, error=why)
        return
    for item, payload in zip(items, payloads, strict=True):
        if payload is not None:
            item.payload = payload


def pack_result_items(items: list[dict[str, Any]], max_bytes: int) -> dict[str, Any]:
    """For a RESULT to a packed JOB: take each item map's ``payload`` out and return the
    ``pack`` and ``payloads`` fields that carry them instead; {} (the items untouched) if the
    payloads cannot travel packed (none at all, or not 1-D uint8), or if together they would
    be over ``max_bytes`` (a frame's limit) where each alone is not."""
    payloads = [item.get("payload") for item in items]
    if not packable(payloads) or sum(p.nbytes for p in payloads if p is not None) > max_bytes:
        return {}
    for item in items:
        item.pop("payload", None)
    sizes, joined = pack_payloads(payloads)
    return {"pack": sizes, "payloads": joined}
