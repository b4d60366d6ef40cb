"""The image job on the wire: what a client sends (JOB) and what a worker answers (RESULT)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from zimg import protocol
from zimg._errors import WireError

PayloadMode = Literal["encoded", "raw"]
PAYLOAD_MODES: tuple[PayloadMode, ...] = ("encoded", "raw")


@dataclass(slots=True)
class JobRequest:
    """One image job as the client submits it.

    Attributes:
        id: the caller's number for this job (an index); the wire id is assigned when it is sent.
        name: the input's name (a path), for messages and the manifest.
        mode: ``encoded`` (``payload`` holds the file's bytes, as uint8) or ``raw`` (an image).
        ext: the output format's extension, e.g. ``.jpg``.
        ops: the pipeline, as ``[[name, params], ...]``.
        payload: the data.
    """

    id: int
    name: str
    mode: PayloadMode
    ext: str
    ops: list[list[Any]]
    payload: np.ndarray[Any, Any]

    def header(self, job_id: int) -> dict[str, Any]:
        """The JOB header, with ``job_id`` as the id on the wire."""
        return {
            "id": job_id,
            "name": self.name,
            "mode": self.mode,
            "ext": self.ext,
            "ops": self.ops,
            "payload": self.payload,
        }

    @classmethod
    def from_header(cls, header: dict[str, Any]) -> JobRequest:
        """Validate a JOB header as a worker receives it.

        Raises:
            WireError: a field is missing or of the wrong type.
        """
        mode = protocol.field(header, "mode", str)
        if mode not in PAYLOAD_MODES:
            raise WireError(f"payload mode {mode!r} is not one of {PAYLOAD_MODES}")
        payload = protocol.field(header, "payload", np.ndarray)
        if mode == "encoded" and (payload.dtype != np.uint8 or payload.ndim != 1):
            raise WireError("an encoded payload must be a 1-D uint8 array")
        ops = protocol.field(header, "ops", list)
        return cls(
            id=protocol.field(header, "id", int),
            name=protocol.field(header, "name", str),
            mode=mode,
            ext=protocol.field(header, "ext", str),
            ops=ops,
            payload=payload,
        )


@dataclass(slots=True)
class JobResult:
    """What came back for one job.

    Attributes:
        id: the job's id.
        ok: True if the worker produced an output.
        node: the node that ran it (the last one tried, for a failure).
        attempt: which delivery attempt produced this result (1 = first).
        ms: the worker's processing time in milliseconds.
        error: why it failed, or None.
        payload: encoded bytes (uint8) or the raw image, or None on failure.
    """

    id: int
    ok: bool
    node: str | None
    attempt: int
    ms: float
    error: str | None
    payload: np.ndarray[Any, Any] | None

    @classmethod
    def from_header(cls, header: dict[str, Any]) -> JobResult:
        """Validate a RESULT header as a client receives it."""
        payload = header.get("payload")
        node = header.get("node")
        error = header.get("error")
        ms = header.get("ms", 0.0)
        return cls(
            id=protocol.field(header, "id", int),
            ok=protocol.field(header, "ok", bool),
            node=node if isinstance(node, str) else None,
            attempt=protocol.field(header, "attempt", int),
            ms=float(ms) if isinstance(ms, int | float) else 0.0,
            error=error if isinstance(error, str) else None,
            payload=payload if isinstance(payload, np.ndarray) else None,
        )
