"""The in-process reference: the notebook's ops written out with raw cv2 calls."""

from __future__ import annotations

import json
import shutil
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np


def reference(image: np.ndarray, node: str) -> np.ndarray:
    """threshold(127, 255, binary) on the image's full scale (127/255 and 255/255 of it: 127 and
    255 for 8 bits, 32639 and 65535 for 16), then the node name in Hershey simplex at (10, 30)."""
    top = float(np.iinfo(image.dtype).max)
    out = cv2.threshold(image, 127 * top / 255, top, cv2.THRESH_BINARY)[1]
    cv2.putText(out, node, (10, 30), cv2.FONT_HERSHEY_SIMPLEX, 1.0, (0, 0, 0), 2)
    return out


def read(path: str | Path) -> np.ndarray:
    return cv2.imdecode(np.fromfile(str(path), np.uint8), cv2.IMREAD_UNCHANGED)


def manifest(outdir: Path) -> list[dict]:
    lines = (outdir / "manifest.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def check_output(entry: dict) -> None:
    """The output file is byte-identical to encoding the reference for the node that ran it."""
    assert entry["error"] is None, entry
    ref = reference(read(entry["input"]), entry["node"])
    out_path = Path(entry["output"])
    ok, expected = cv2.imencode(out_path.suffix, ref)
    assert ok
    actual = out_path.read_bytes()
    assert actual == expected.tobytes(), (
        f"{out_path} differs from the reference for {entry['node']}"
    )
    assert np.array_equal(read(out_path), read_encoded(expected)), out_path


def read_encoded(buf: np.ndarray) -> np.ndarray:
    return cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)


def copies(src: Path, target: Path, n: int) -> list[Path]:
    """``n`` copies of ``src`` in ``target``, named img_00, img_01, ..."""
    target.mkdir(parents=True, exist_ok=True)
    files = []
    for i in range(n):
        dest = target / f"img_{i:02d}{src.suffix}"
        shutil.copyfile(src, dest)
        files.append(dest)
    return files


def png_chunk(kind: bytes, body: bytes) -> bytes:
    """One PNG chunk: length, type, body and its CRC."""
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def handmade_png(width: int, height: int, idat: bytes) -> bytes:
    """Signature, IHDR (8-bit grayscale), one IDAT (already compressed) and IEND, with correct
    CRCs: a PNG that declares any size, whatever its data holds."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", idat)
        + png_chunk(b"IEND", b"")
    )
