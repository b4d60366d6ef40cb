"""Hostile JOBs against a LIVE broker and worker (``python -m zimg`` subprocesses): issue 12.

Each test sends one attack as a crafted JOB from a client node (a :class:`Connection` with no
JobClient in the way, so nothing on the client side filters the header), then checks the bound:
a clear error result comes back in bounded time, the worker's peak resident memory (VmHWM, from
/proc) stays far below what the attack asked for, and the worker has its credit back (it runs
one job at a time, and a normal job completes right after).

The attacks, as filed: an error text that repeats a 380,000-element param (the RESULT no longer
fitted in a header, the worker dropped it and lost its credit for good); a 1.5 MB 16-bit RGBA
PNG under the pixel limit (3.1 GB peak); a TIFF decoded in full before its size was checked;
``resize:scale=14142`` on a 1x1 float64 image (6.4 GB asked); ``blur`` with ksize 1001; 1,000
blurs in one job; and a job that runs past its ``deadline_s``.
"""

from __future__ import annotations

import os
import queue
import struct
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from zimg import wire
from zimg.connection import Connection
from zimg.testing import Processes
from zimg.wire import Command

pytestmark = pytest.mark.timeout(120)

RESULT_TIMEOUT_S = 20.0  # a result that must come; the bounds below are far tighter
REFUSED_WITHIN_S = 3.0  # an attack refused from its header or params: no pixel work at all
# Peak memory the worker may gain over an attack. A worker idles at ~100 MB after a job; the
# smallest attack below asks for 768 MB, so an allocation cannot hide under this bound.
WORKER_HWM_GROWTH_LIMIT_MB = 64
ERROR_CHARS = 1000  # the cap on an error text (items and jobs)


def vm_kb(pid: int, field: str) -> int:
    """A /proc/PID/status memory figure (VmRSS, VmHWM) in kB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for process {pid}")


# ---------------------------------------------------------------------------------- attacks


def zeros_zlib(n: int, block: int = 1 << 20) -> bytes:
    """A zlib stream of ``n`` zero bytes in milliseconds, however large ``n``.

    A full flush resets the compressor, so every block after the first compresses to the same
    bytes: two blocks are compressed and the second repeated. The trailer is the Adler-32 of
    ``n`` zeros (a = 1, b = n mod 65521).
    """
    c = zlib.compressobj(9)
    full, rest = divmod(n, block)
    parts = [c.compress(bytes(block)) + c.flush(zlib.Z_FULL_FLUSH)] if full else []
    if full > 1:
        parts.append((c.compress(bytes(block)) + c.flush(zlib.Z_FULL_FLUSH)) * (full - 1))
    tail = c.compress(bytes(rest)) + c.flush()
    return b"".join(parts) + tail[:-4] + struct.pack(">I", (n % 65521) << 16 | 1)


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png16_rgba_bomb(side: int = 14_000) -> bytes:
    """A 14,000 x 14,000 16-bit RGBA PNG of zeros: 196 Mpx (under the 200 Mpx limit), 1.57 GB
    decoded, 1.5 MB on the wire; every row is really there."""
    ihdr = struct.pack(">IIBBBBB", side, side, 16, 6, 0, 0, 0)
    idat = zeros_zlib(side * (side * 8 + 1))
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", idat)
        + png_chunk(b"IEND", b"")
    )


def tiff_bomb(width: int = 16_000, height: int = 16_000, rows: int = 64) -> bytes:
    """A 5 KB RGB TIFF of 16,000 x 16,000 (768 MB decoded): every strip points at the same
    deflated block of zeros, which OpenCV decodes in full before zimg's old pixel check."""
    strip = zlib.compress(bytes(rows * width * 3), 9)
    strips = -(-height // rows)
    count = 10
    bps_at = 8 + 2 + count * 12 + 4
    offsets_at = bps_at + 6
    counts_at = offsets_at + 4 * strips
    data_at = counts_at + 4 * strips

    def entry(tag: int, kind: int, n: int, value: int) -> bytes:
        if kind == 3 and n == 1:
            return struct.pack("<HHIHH", tag, kind, n, value, 0)
        return struct.pack("<HHII", tag, kind, n, value)

    entries = [
        entry(256, 4, 1, width),
        entry(257, 4, 1, height),
        entry(258, 3, 3, bps_at),  # BitsPerSample 8, 8, 8
        entry(259, 3, 1, 8),  # Deflate
        entry(262, 3, 1, 2),  # RGB
        entry(273, 4, strips, offsets_at),
        entry(277, 3, 1, 3),
        entry(278, 4, 1, rows),
        entry(279, 4, strips, counts_at),
        entry(284, 3, 1, 1),
    ]
    return (
        b"II*\x00"
        + struct.pack("<IH", 8, count)
        + b"".join(entries)
        + struct.pack("<I", 0)
        + struct.pack("<3H", 8, 8, 8)
        + struct.pack(f"<{strips}I", *[data_at] * strips)
        + struct.pack(f"<{strips}I", *[len(strip)] * strips)
        + strip
    )


# ---------------------------------------------------------------------------------- cluster


class Client:
    """A client node that sends JOB headers as given and collects the RESULTs."""

    def __init__(self, url: str) -> None:
        self.results: queue.SimpleQueue[dict[str, Any]] = queue.SimpleQueue()
        self.connection = Connection(url, f"hostile-{os.getpid()}")
        self.connection.on(Command.RESULT, lambda msg: self.results.put(msg.header))
        self.connection.start()

    def run(self, header: dict[str, Any], *, timeout_s: float = RESULT_TIMEOUT_S) -> Answer:
        """Send a JOB and wait for its RESULT."""
        job_id = next(self.connection.job_ids)
        started = time.monotonic()
        self.connection.send(Command.JOB, {**header, "id": job_id})
        deadline = started + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            try:
                result = self.results.get(timeout=left)
            except queue.Empty:
                break
            if result.get("id") == job_id:
                size = len(wire.encode(Command.RESULT, result)[0])
                return Answer(result, time.monotonic() - started, size)
        raise AssertionError(f"no RESULT for job {job_id} within {timeout_s} s")

    def close(self) -> None:
        self.connection.close()


@dataclass
class Answer:
    header: dict[str, Any]
    seconds: float
    header_bytes: int  # the RESULT's encoded header

    @property
    def errors(self) -> list[str]:
        """The job's error, or each item's."""
        if not self.header["ok"]:
            return [self.header["error"]]
        return [item["error"] for item in self.header["items"] if not item["ok"]]


@dataclass
class Cluster:
    url: str
    worker_pid: int
    client: Client

    def hwm_mb(self) -> float:
        return vm_kb(self.worker_pid, "VmHWM") / 1024

    def normal_job_completes(self) -> float:
        """Run an ordinary job; the worker (one job at a time) must be free for it at once."""
        image = (Path(__file__).parents[2] / "zimg" / "samples" / "coins.png").read_bytes()
        answer = self.client.run(
            encoded_job([("coins.png", image)], [["threshold", {}], ["label", {}]]),
            timeout_s=10.0,
        )
        assert answer.header["ok"], answer.header
        assert [item["ok"] for item in answer.header["items"]] == [True], answer.header
        return answer.seconds


def encoded_job(files: list[tuple[str, bytes]], ops: list[list[Any]], **extra: Any) -> dict:
    items = [
        {"name": name, "ext": ".png", "payload": np.frombuffer(data, np.uint8)}
        for name, data in files
    ]
    return {"mode": "encoded", "ops": ops, "items": items, **extra}


def raw_job(images: list[tuple[str, np.ndarray]], ops: list[list[Any]], **extra: Any) -> dict:
    items = [{"name": name, "ext": ".png", "payload": image} for name, image in images]
    return {"mode": "raw", "ops": ops, "items": items, **extra}


@pytest.fixture
def cluster(procs: Processes, ipc_url: str) -> Iterator[Cluster]:
    """A broker and one worker of capacity 1 (one job at a time, nothing held in line)."""
    procs.broker(ipc_url)
    worker = procs.worker(ipc_url, "h1", "--capacity", "1")
    client = Client(ipc_url)
    try:
        cluster = Cluster(ipc_url, worker.pid, client)
        cluster.normal_job_completes()  # warm: imports, OpenCV, first buffers
        yield cluster
    finally:
        client.close()


def assert_capped(errors: list[str]) -> None:
    for error in errors:
        assert isinstance(error, str)
        assert len(error) <= ERROR_CHARS, len(error)


# ---------------------------------------------------------------------------------- tests


def test_an_error_repeating_a_huge_param_comes_back_and_the_worker_keeps_its_credit(
    cluster: Cluster,
) -> None:
    # Two such jobs left the worker at active=2 done=0 for good: their errors repeated the
    # 380,000 zeros, no RESULT fitted in a header, and the broker kept waiting.
    image = np.zeros((8, 8, 3), np.uint8)
    for n in range(2):
        answer = cluster.client.run(
            raw_job([(f"a{n}.png", image)], [["label", {"color": [0] * 380_000}]])
        )
        assert not answer.header["ok"]
        assert_capped(answer.errors)
        (error,) = answer.errors
        assert error.startswith("op 'label': param 'color' has 380000 entries, over the limit")
        assert answer.header_bytes < 4 * ERROR_CHARS
        assert answer.seconds < REFUSED_WITHIN_S
    assert cluster.normal_job_completes() < REFUSED_WITHIN_S


def test_a_16_bit_rgba_png_bomb_under_the_pixel_limit_is_refused_from_its_header(
    cluster: Cluster,
) -> None:
    bomb = png16_rgba_bomb()
    assert len(bomb) < 2_000_000  # 1.57 GB of pixels in 1.5 MB
    before = cluster.hwm_mb()
    answer = cluster.client.run(encoded_job([("bomb.png", bomb)], [["threshold", {}]]))
    assert answer.header["ok"], answer.header  # the item fails, the job is answered
    assert answer.errors == [
        "bomb.png: a 14000x14000 16-bit RGBA PNG decodes to 1568000000 bytes, over the limit "
        "of 536870912 bytes"
    ]
    assert answer.seconds < REFUSED_WITHIN_S
    assert cluster.hwm_mb() - before < WORKER_HWM_GROWTH_LIMIT_MB
    cluster.normal_job_completes()


def test_a_tiff_bomb_is_refused_before_it_is_decoded(cluster: Cluster) -> None:
    bomb = tiff_bomb()
    assert len(bomb) < 10_000  # 768 MB of pixels in 5 KB
    before = cluster.hwm_mb()
    answer = cluster.client.run(encoded_job([("bomb.tif", bomb)], [["threshold", {}]]))
    assert answer.errors == [
        "bomb.tif: 16000x16000 is 256000000 pixels, over the limit of 200000000 pixels"
    ]
    assert answer.seconds < REFUSED_WITHIN_S
    assert cluster.hwm_mb() - before < WORKER_HWM_GROWTH_LIMIT_MB
    cluster.normal_job_completes()


def test_resize_caps_its_output_in_bytes_not_pixels(cluster: Cluster) -> None:
    # 14142 x 14142 is under 200 Mpx, but 4 float64 channels make it 6.4 GB.
    pixel = np.zeros((1, 1, 4), np.float64)
    before = cluster.hwm_mb()
    answer = cluster.client.run(raw_job([("dot.png", pixel)], [["resize", {"scale": 14142}]]))
    assert answer.errors == [
        "dot.png: resize: 14142x14142 of 4 float64 channels is 6399877248 bytes, over the "
        "limit of 536870912 bytes"
    ]
    assert answer.seconds < REFUSED_WITHIN_S
    assert cluster.hwm_mb() - before < WORKER_HWM_GROWTH_LIMIT_MB
    cluster.normal_job_completes()


def test_a_huge_blur_kernel_is_refused_before_any_work(cluster: Cluster) -> None:
    image = np.zeros((2000, 2000), np.uint8)  # 4 Mpx: ksize 1001 took 3.7 s
    answer = cluster.client.run(raw_job([("big.png", image)], [["blur", {"ksize": 1001}]]))
    # Refused by the pipeline's check, before any image is decoded: no image's name in it.
    assert answer.errors == ["blur: ksize must be an integer in [1, 255], got 1001"]
    assert answer.seconds < REFUSED_WITHIN_S
    cluster.normal_job_completes()


def test_a_job_of_a_thousand_blurs_is_refused_and_the_next_job_runs_at_once(
    cluster: Cluster,
) -> None:
    # A 16 KB JOB that held a capacity-1 worker until a legitimate job timed out after 45 s.
    image = (Path(__file__).parents[2] / "zimg" / "samples" / "coins.png").read_bytes()
    pipeline = [["resize", {"scale": 8}], *[["blur", {"ksize": 31}]] * 1000]
    answer = cluster.client.run(encoded_job([("coins.png", image)], pipeline))
    assert answer.errors == ["a pipeline has at most 32 ops, got 1001"]
    assert answer.seconds < REFUSED_WITHIN_S
    assert cluster.normal_job_completes() < REFUSED_WITHIN_S


def test_a_job_past_its_deadline_fails_its_remaining_items_and_still_answers(
    cluster: Cluster,
) -> None:
    # 32 blurs of a 4 Mpx colour image take seconds per item; the job may take 0.5 s.
    image = np.zeros((2000, 2000, 3), np.uint8)
    names = [f"slow{i}.png" for i in range(4)]
    pipeline = [["blur", {"ksize": 31}]] * 32
    answer = cluster.client.run(raw_job([(n, image) for n in names], pipeline, deadline_s=0.5))
    assert answer.header["ok"], answer.header
    items = answer.header["items"]
    assert [item["error"] for item in items] == [
        f"{name}: the job's deadline of 0.5 s passed" for name in names
    ]
    # It stops at the first op that ends past the deadline: one blur's time, not 4 x 32.
    assert answer.seconds < 0.5 + REFUSED_WITHIN_S
    assert cluster.normal_job_completes() < REFUSED_WITHIN_S
