"""Decode and encode images with limits, name outputs, write atomically (the grid: zimg.grid)."""

from __future__ import annotations

import os
import stat
import struct
import tempfile
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from zimg._errors import ImageError

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "decode",
    "encode",
    "grid_from_files",
    "load",
    "make_grid",
    "output_name",
    "output_path",
    "read_file",
    "sniff_size",
    "to_bgr8",
    "write_atomic",
]

Image = NDArray[Any]
Data = bytes | bytearray | memoryview | NDArray[np.uint8]

DEFAULT_MAX_PIXELS = 200_000_000
_PNG = b"\x89PNG\r\n\x1a\n"
_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_JPEG_STANDALONE = {0x01, *range(0xD0, 0xD8)}  # TEM and RST0-7 carry no length
_JPEG_EXTS = {".jpg", ".jpeg", ".jpe"}
# Encoders that would silently convert other depths to 8-bit (saturating, not scaling).
_ENCODER_DTYPES = {
    **dict.fromkeys(_JPEG_EXTS, ("uint8",)),
    ".png": ("uint8", "uint16"),
    ".bmp": ("uint8",),
    ".webp": ("uint8",),
    ".gif": ("uint8",),
}


def _as_bytes(data: Data) -> memoryview:
    """Return ``data`` as a flat byte view without copying."""
    if isinstance(data, np.ndarray):
        if data.dtype != np.uint8:
            raise ImageError(f"encoded image data must be uint8, got {data.dtype}")
        return np.ascontiguousarray(data).reshape(-1).data
    return memoryview(data).cast("B")


def _sniff(buf: memoryview) -> tuple[str, int, int, int] | None:
    """Return (format, width, height, end of the JPEG headers) or None for unknown formats.

    Raises:
        ImageError: a known signature with a header too short or corrupt to give a size.
    """
    head = bytes(buf[:32])
    try:
        if head.startswith(_PNG):
            if head[12:16] != b"IHDR":
                raise ImageError("corrupt PNG: IHDR is not the first chunk")
            w, h = struct.unpack(">II", head[16:24])
            return _sized("PNG", w, h)
        if head.startswith(b"\xff\xd8"):
            return _sniff_jpeg(buf)
        if head[:6] in (b"GIF87a", b"GIF89a"):
            return _sized("GIF", *struct.unpack("<HH", head[6:10]))
        if head.startswith(b"BM"):
            if struct.unpack("<I", head[14:18])[0] == 12:  # OS/2 BITMAPCOREHEADER
                return _sized("BMP", *struct.unpack("<HH", head[18:22]))
            w, h = struct.unpack("<ii", head[18:26])
            return _sized("BMP", w, abs(h))  # negative height means top-down rows
        if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
            return _sniff_webp(head)
    except struct.error:
        raise ImageError("truncated image header") from None
    return None


def _sized(fmt: str, w: int, h: int, end: int = 0) -> tuple[str, int, int, int]:
    if w <= 0 or h <= 0:
        raise ImageError(f"corrupt {fmt}: header declares a {w}x{h} image")
    return fmt, w, h, end


def _sniff_webp(head: bytes) -> tuple[str, int, int, int]:
    chunk, body = head[12:16], head[20:30]
    if chunk == b"VP8 " and body[3:6] == b"\x9d\x01\x2a":
        w, h = struct.unpack("<HH", body[6:10])
        return _sized("WebP", w & 0x3FFF, h & 0x3FFF)
    if chunk == b"VP8L" and body[:1] == b"\x2f":
        bits = struct.unpack("<I", body[1:5])[0]
        return _sized("WebP", (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1)
    if chunk == b"VP8X" and len(body) == 10:
        w = int.from_bytes(body[4:7], "little") + 1
        return _sized("WebP", w, int.from_bytes(body[7:10], "little") + 1)
    raise ImageError("truncated or corrupt WebP header")


def _sniff_jpeg(buf: memoryview) -> tuple[str, int, int, int]:
    """Walk the JPEG segments up to the first SOS; the size comes from the SOFn marker."""
    size: tuple[int, int] | None = None
    pos, n = 2, len(buf)
    while pos + 4 <= n:
        if buf[pos] != 0xFF:
            raise ImageError("corrupt JPEG: expected a marker")
        marker = buf[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in _JPEG_STANDALONE:
            pos += 2
            continue
        length = (buf[pos + 2] << 8) | buf[pos + 3]
        if length < 2:
            raise ImageError("corrupt JPEG: bad segment length")
        if marker in _JPEG_SOF and size is None:
            if pos + 9 > n:
                break
            size = ((buf[pos + 7] << 8) | buf[pos + 8], (buf[pos + 5] << 8) | buf[pos + 6])
        if marker == 0xDA:  # start of scan: the headers end here
            if size is None:
                raise ImageError("corrupt JPEG: no SOF marker before the scan")
            return _sized("JPEG", *size, pos + 2 + length)
        if marker == 0xD9:
            break
        pos += 2 + length
    raise ImageError("truncated or corrupt JPEG header")


def sniff_size(data: Data) -> tuple[int, int] | None:
    """Read an image's size from its header without decoding it.

    Knows PNG (IHDR), JPEG (the SOFn marker), GIF (logical screen), BMP and WebP.

    Args:
        data: the encoded image.

    Returns:
        ``(width, height)``, or None when the format is not one of those.

    Raises:
        ImageError: the signature is known but the header is truncated or corrupt.
    """
    found = _sniff(_as_bytes(data))
    return None if found is None else (found[1], found[2])


def _has_eoi(buf: memoryview, start: int) -> bool:
    """Whether an EOI marker (FF D9) follows ``start``; scan data never contains one."""
    if bytes(buf[-2:]) == b"\xff\xd9" and buf.nbytes - 2 >= start:
        return True  # the usual case, without scanning the whole file
    tail = np.frombuffer(buf, dtype=np.uint8)[start:]
    ff = np.flatnonzero(tail[:-1] == 0xFF)
    return bool(np.any(tail[ff + 1] == 0xD9))


def decode(data: Data, *, name: str = "<bytes>", max_pixels: int = DEFAULT_MAX_PIXELS) -> Image:
    """Decode an encoded image with ``cv2.imdecode(..., IMREAD_UNCHANGED)``, guarded.

    The size in the header is checked against ``max_pixels`` before anything is decoded, so a
    decompression bomb allocates nothing. Formats :func:`sniff_size` does not know are left to
    OpenCV (whose own limit is 2**30 pixels) and checked after decoding. A JPEG with no EOI
    marker after its scan data is refused as truncated (libjpeg would return it grey-filled).

    Args:
        data: the encoded bytes.
        name: how to name the data in errors, usually the file path.
        max_pixels: the largest width * height accepted.

    Returns:
        The image: (h, w) gray, or (h, w, 3|4) BGR/BGRA, 8- or 16-bit.

    Raises:
        ImageError: empty data, not an image, corrupt, truncated or too many pixels; the message
            starts with ``name``.
    """
    try:
        buf = _as_bytes(data)
        if len(buf) == 0:
            raise ImageError("empty data, not an image")
        found = _sniff(buf)
        if found is not None:
            fmt, w, h, scan = found
            _check_pixels(w, h, max_pixels)
            if fmt == "JPEG" and not _has_eoi(buf, scan):
                raise ImageError("truncated JPEG (no end-of-image marker)")
        try:
            image = cv2.imdecode(np.frombuffer(buf, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
        except cv2.error as exc:
            raise ImageError(f"cannot decode: {getattr(exc, 'err', exc)}") from exc
        if image is None:
            why = "not an image (unrecognised format)" if found is None else "corrupt or truncated"
            raise ImageError(why if found is None else f"{found[0]} {why}")
        _check_pixels(image.shape[1], image.shape[0], max_pixels)
    except ImageError as exc:
        raise ImageError(f"{name}: {exc}") from exc.__cause__
    result: Image = image
    return result


def _check_pixels(w: int, h: int, max_pixels: int) -> None:
    if w * h > max_pixels:
        raise ImageError(f"{w}x{h} is {w * h} pixels, over the limit of {max_pixels} pixels")


def encode(image: Image, ext: str, *, name: str = "<image>") -> NDArray[np.uint8]:
    """Encode with ``cv2.imencode`` at OpenCV's default quality.

    Args:
        image: the image.
        ext: the container, such as ``.png`` or ``jpg``.
        name: how to name the image in errors.

    Returns:
        The encoded bytes as a 1-D uint8 array.

    Raises:
        ImageError: a dtype the format cannot hold (for example 16-bit JPEG), an unknown
            extension, or any other encoder failure.
    """
    ext = ext.lower() if ext.startswith(".") else f".{ext.lower()}"
    allowed = _ENCODER_DTYPES.get(ext)
    if allowed is not None and image.dtype.name not in allowed:
        hint = ".png" if image.dtype == np.uint16 else ".tiff"
        raise ImageError(
            f"{name}: {ext} cannot hold a {image.dtype} image without losing data; use {hint}"
        )
    try:
        ok, buf = cv2.imencode(ext, image)
    except cv2.error as exc:
        raise ImageError(
            f"{name}: cannot encode a {image.dtype} image of shape {image.shape} as {ext}: "
            f"{getattr(exc, 'err', exc)}"
        ) from exc
    if not ok:
        raise ImageError(f"{name}: OpenCV failed to encode the image as {ext}")
    out: NDArray[np.uint8] = buf.reshape(-1)
    return out


def read_file(path: str | os.PathLike[str]) -> bytes:
    """Read a whole regular file.

    Raises:
        ImageError: ``"<path>: no such file"``, ``is a directory``, ``permission denied``,
            ``not a regular file`` or another read error.
    """
    try:
        with open(path, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise ImageError(f"{path}: not a regular file")
            return f.read()
    except FileNotFoundError:
        raise ImageError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ImageError(f"{path}: is a directory") from None
    except PermissionError:
        raise ImageError(f"{path}: permission denied") from None
    except OSError as exc:
        raise ImageError(f"{path}: cannot read ({exc.strerror or exc})") from exc


def load(path: str | os.PathLike[str], *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image:
    """Read and :func:`decode` a file; errors name the path.

    Raises:
        ImageError: the file cannot be read or decoded.
    """
    return decode(read_file(path), name=str(path), max_pixels=max_pixels)


def output_name(stem: str, suffix: str) -> str:
    """The name of a processed file: ``cat`` and ``.jpg`` -> ``cat_processed.jpg``."""
    return f"{stem}_processed{suffix}"


def output_path(path: str | os.PathLike[str], outdir: str | os.PathLike[str]) -> Path:
    """Return where a processed file goes: ``a/b/cat.jpg`` -> ``outdir/cat_processed.jpg``."""
    src = Path(path)
    return Path(outdir) / output_name(src.stem, src.suffix)


def _new_file_mode() -> int:
    """0o666 less the umask, read without changing it (os.umask is process-wide)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o644


def write_atomic(path: str | os.PathLike[str], data: Data) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same directory and
    ``os.replace``, so readers see the old file or the whole new one, never half of it.

    The new file keeps the old one's permissions, or gets the usual 0o666 less the umask.

    Raises:
        OSError: the directory is missing or not writable; no temporary file is left behind.
    """
    target = Path(path)
    try:
        mode = stat.S_IMODE(target.stat().st_mode)
    except OSError:
        mode = _new_file_mode()
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(_as_bytes(data) if isinstance(data, np.ndarray) else data)
            os.fchmod(f.fileno(), mode)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# zimg.grid imports this module, so it comes last. Re-exported (and in __all__) so
# ``images.make_grid`` and the rest keep working.
from zimg.grid import grid_from_files, make_grid, to_bgr8  # noqa: E402 (see above)
