"""Decode and encode images with limits, name outputs, write atomically."""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import stat
import struct
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import NDArray

from zimg._errors import ImageError
from zimg._lazy import LazyModule

cv2: Any = LazyModule("cv2")  # imported when an image is decoded or encoded

__all__ = [
    "DEFAULT_MAX_IMAGE_BYTES",
    "DEFAULT_MAX_PIXELS",
    "Header",
    "check_bytes",
    "decode",
    "encode",
    "load",
    "output_name",
    "output_path",
    "read_file",
    "sniff_header",
    "sniff_size",
    "write_atomic",
]

Image = NDArray[Any]
Data = bytes | bytearray | memoryview | NDArray[np.uint8]

DEFAULT_MAX_PIXELS = 200_000_000
DEFAULT_MAX_IMAGE_BYTES = 512 * 2**20
"""The largest decoded image (width * height * channels * bytes per sample) a worker accepts,
and the largest an op may make (``ops.max_output_bytes``): 512 MiB.

It admits any 8K image (7680 x 4320 16-bit RGBA is 265 MB), 16-bit RGB up to 89 Mpx and 8-bit
RGB up to 179 Mpx (a 150 Mpx medium-format photo), and refuses what ``max_pixels`` alone let
through: a 196 Mpx 16-bit RGBA PNG of 1.5 MB asked 1.57 GB and peaked a worker at 3.1 GB.
Decoding takes about as much again as the image: at the limit, an 8192 x 8192 16-bit RGBA PNG,
a 13700 x 13000 RGB JPEG (baseline or progressive) and an 11585 x 11585 GIF each peaked 1.0 GB
above the process's baseline. An op that makes a new image adds its output (at most this limit
too), so a job peaks near 1.5 GiB at worst, and a worker running N jobs at once N times that."""
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


class Header(NamedTuple):
    """What an image's header says it decodes to (``cv2.IMREAD_UNCHANGED``), read without
    decoding it.

    Attributes:
        format: ``"PNG"``, ``"JPEG"``, ``"GIF"``, ``"BMP"``, ``"WebP"``, ``"PNM"``, ``"PFM"`` or
            ``"TIFF"``.
        width: in pixels.
        height: in pixels.
        channels: channels of the decoded image, an upper bound (e.g. 4 for a palette PNG with
            transparency, which OpenCV may decode as BGR or BGRA).
        sample_bytes: bytes per channel of the decoded image (1, 2, 4 or 8).
        floating: the samples are floats (PFM, float TIFF).
        scan: JPEG only: where the headers end (the scan data starts); else 0.
    """

    format: str
    width: int
    height: int
    channels: int
    sample_bytes: int
    floating: bool = False
    scan: int = 0

    @property
    def pixels(self) -> int:
        return self.width * self.height

    @property
    def nbytes(self) -> int:
        """The decoded image's size in bytes (an upper bound, see ``channels``)."""
        return self.width * self.height * self.channels * self.sample_bytes

    def describe(self) -> str:
        """e.g. ``a 14000x14000 16-bit RGBA PNG``."""
        kind = _CHANNEL_NAMES.get(self.channels) or f"{self.channels}-channel"
        depth = f"{self.sample_bytes * 8}-bit{' float' if self.floating else ''}"
        return f"a {self.width}x{self.height} {depth} {kind} {self.format}"


_CHANNEL_NAMES = {1: "gray", 2: "gray+alpha", 3: "RGB", 4: "RGBA"}

# Formats OpenCV may decode whose size zimg does not read: refused before cv2.imdecode runs
# (their decoders would allocate whatever their headers declare).
_UNSIZED = (
    (b"\x00\x00\x00\x0cjP  \r\n\x87\n", 0, "JPEG 2000"),
    (b"\xffO\xffQ", 0, "JPEG 2000"),
    (b"v/1\x01", 0, "OpenEXR"),
    (b"#?", 0, "Radiance HDR"),
    (b"\x59\xa6\x6a\x95", 0, "Sun raster"),
    (b"ftypavif", 4, "AVIF"),
    (b"ftypavis", 4, "AVIF"),
    (b"ftypheic", 4, "HEIF"),
    (b"ftypmif1", 4, "HEIF"),
)
_SNIFFED = "PNG, JPEG, GIF, BMP, WebP, PNM/PAM/PFM and TIFF"


def _unsized(buf: memoryview) -> str:
    """Why data whose size :func:`_sniff` cannot read is refused."""
    head = bytes(buf[:16])
    for magic, at, fmt in _UNSIZED:
        if head[at : at + len(magic)] == magic:
            return (
                f"a {fmt} image, whose size zimg cannot read before decoding: refused "
                f"(zimg decodes {_SNIFFED})"
            )
    return "not an image (unrecognised format)"


def _sniff(buf: memoryview) -> Header | None:
    """Read an image's header: its format, size and decoded layout; None for unknown formats.

    Raises:
        ImageError: a known signature with a header too short or corrupt to give a size.
    """
    head = bytes(buf[:32])
    try:
        if head.startswith(_PNG):
            return _sniff_png(buf, head)
        if head.startswith(b"\xff\xd8"):
            return _sniff_jpeg(buf)
        if head[:6] in (b"GIF87a", b"GIF89a"):
            # OpenCV decodes to BGR or BGRA; it refuses frames that overflow the screen.
            w, h = struct.unpack("<HH", head[6:10])
            return _sized("GIF", w, h, 4, 1)
        if head.startswith(b"BM"):
            return _sniff_bmp(head)
        if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
            return _sniff_webp(head)
        if head[:2] in (b"II", b"MM"):
            return _sniff_tiff(buf, head)
        if head[:1] == b"P" and head[1:2] in _PNM_KINDS and head[2:3] in _PNM_SPACE:
            return _sniff_pnm(buf)
    except struct.error:
        raise ImageError("truncated image header") from None
    return None


def _sized(
    fmt: str, w: int, h: int, channels: int, sample_bytes: int, *, floating: bool = False
) -> Header:
    if w <= 0 or h <= 0:
        raise ImageError(f"corrupt {fmt}: header declares a {w}x{h} image")
    return Header(fmt, w, h, channels, sample_bytes, floating)


def _sniff_png(buf: memoryview, head: bytes) -> Header:
    if head[12:16] != b"IHDR":
        raise ImageError("corrupt PNG: IHDR is not the first chunk")
    w, h, depth, colour = struct.unpack(">IIBB", head[16:26])
    channels, depths = _PNG_LAYOUTS.get(colour, (0, ()))
    if depth not in depths:
        raise ImageError(f"corrupt PNG: bit depth {depth} with colour type {colour}")
    if channels < 4 and _png_has_trns(buf):
        channels = 4  # OpenCV may add an alpha channel for a tRNS chunk
    return _sized("PNG", w, h, channels, 2 if depth == 16 else 1)


# Colour type: decoded channels, valid bit depths (gray, RGB, palette, gray+alpha, RGBA).
_PNG_LAYOUTS = {
    0: (1, (1, 2, 4, 8, 16)),
    2: (3, (8, 16)),
    3: (3, (1, 2, 4, 8)),
    4: (4, (8, 16)),
    6: (4, (8, 16)),
}
_PNG_CHUNKS_READ = 32


def _png_has_trns(buf: memoryview) -> bool:
    """Whether a tRNS chunk comes before the first IDAT (reading chunk headers only; after
    ``_PNG_CHUNKS_READ`` chunks, or at a cut, it assumes one does)."""
    pos, n = 8, len(buf)
    for _ in range(_PNG_CHUNKS_READ):
        if pos + 8 > n:
            return True
        kind = bytes(buf[pos + 4 : pos + 8])
        if kind == b"tRNS":
            return True
        if kind == b"IDAT":
            return False
        pos += 12 + int.from_bytes(buf[pos : pos + 4], "big")
    return True


def _sniff_bmp(head: bytes) -> Header:
    if struct.unpack("<I", head[14:18])[0] == 12:  # OS/2 BITMAPCOREHEADER
        w, h, _, bits = struct.unpack("<HHHH", head[18:26])
    else:
        w, h, _, bits = struct.unpack("<iiHH", head[18:30])
        h = abs(h)  # negative height means top-down rows
    if bits not in (0, 1, 2, 4, 8, 16, 24, 32):
        raise ImageError(f"corrupt BMP: {bits} bits per pixel")
    # 0: JPEG or PNG inside (OpenCV refuses those); palettes decode to BGR at most.
    return _sized("BMP", w, h, 3 if 0 < bits <= 24 else 4, 1)


def _sniff_webp(head: bytes) -> Header:
    chunk, body = head[12:16], head[20:30]
    if chunk == b"VP8 " and body[3:6] == b"\x9d\x01\x2a":
        w, h = struct.unpack("<HH", body[6:10])
        return _sized("WebP", w & 0x3FFF, h & 0x3FFF, 3, 1)
    if chunk == b"VP8L" and body[:1] == b"\x2f":
        bits = struct.unpack("<I", body[1:5])[0]
        alpha = 4 if bits >> 28 & 1 else 3
        return _sized("WebP", (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1, alpha, 1)
    if chunk == b"VP8X" and len(body) == 10:
        w = int.from_bytes(body[4:7], "little") + 1
        alpha = 4 if body[0] & 0x12 else 3  # alpha, or animation
        return _sized("WebP", w, int.from_bytes(body[7:10], "little") + 1, alpha, 1)
    raise ImageError("truncated or corrupt WebP header")


def _sniff_jpeg(buf: memoryview) -> Header:
    """Walk the JPEG segments up to the first SOS; the size comes from the SOFn marker."""
    sof: tuple[int, int, int, int] | None = None
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
        if marker in _JPEG_SOF and sof is None:
            if pos + 10 > n:
                break
            precision, h, w, components = struct.unpack(">BHHB", buf[pos + 4 : pos + 10])
            sof = (w, h, precision, components)
        if marker == 0xDA:  # start of scan: the headers end here
            if sof is None:
                raise ImageError("corrupt JPEG: no SOF marker before the scan")
            w, h, precision, components = sof
            # One component decodes to gray, more to BGR (CMYK too); 12-bit to 16-bit.
            channels = 1 if components == 1 else 4 if components >= 4 else 3
            found = _sized("JPEG", w, h, channels, 1 if precision <= 8 else 2)
            return found._replace(scan=pos + 2 + length)
        if marker == 0xD9:
            break
        pos += 2 + length
    raise ImageError("truncated or corrupt JPEG header")


_TIFF_TYPES = {1: "B", 3: "H", 4: "I", 16: "Q"}  # BYTE, SHORT, LONG, LONG8
_TIFF_LAST_TAG = 339  # SampleFormat: the tags read are all at most this


def _sniff_tiff(buf: memoryview, head: bytes) -> Header | None:
    """Read the first IFD (the image cv2.imdecode decodes): ImageWidth, ImageLength,
    BitsPerSample, PhotometricInterpretation, SamplesPerPixel and SampleFormat.

    Classic TIFF and BigTIFF, either byte order; the IFD may be anywhere in the data.
    """
    order = "<" if head[:2] == b"II" else ">"
    magic = struct.unpack(order + "H", head[2:4])[0]
    if magic == 42:
        ifd, count_format, entry_format = struct.unpack(order + "I", head[4:8])[0], "H", "HHI4s"
    elif magic == 43:
        ifd, count_format, entry_format = struct.unpack(order + "Q", head[8:16])[0], "Q", "HHQ8s"
    else:
        return None  # "II"/"MM" and something else: not a TIFF
    count_size = struct.calcsize(count_format)
    if ifd + count_size > len(buf):
        raise ImageError("truncated TIFF: the first IFD is past the end of the data")
    (count,) = struct.unpack(order + count_format, buf[ifd : ifd + count_size])
    entry_size = struct.calcsize(order + entry_format)
    start = ifd + count_size
    if start + count * entry_size > len(buf):
        raise ImageError("truncated TIFF: the first IFD is cut off")
    tags: dict[int, list[int]] = {}
    for tag, kind, n, field in struct.iter_unpack(
        order + entry_format, buf[start : start + count * entry_size]
    ):
        if tag > _TIFF_LAST_TAG:
            break  # entries are sorted by tag
        if tag in (256, 257, 258, 262, 277, 339) and n > 0:
            tags[tag] = _tiff_values(buf, order, kind, n, field)
    if 256 not in tags or 257 not in tags:
        raise ImageError("corrupt TIFF: no ImageWidth or ImageLength in the first IFD")
    bits = max(tags.get(258, [1]))
    spp = tags.get(277, [1])[0]
    photometric = tags.get(262, [-1])[0]
    floating = tags.get(339, [1])[0] == 3
    if not 1 <= bits <= 64:
        raise ImageError(f"corrupt TIFF: {bits} bits per sample")
    sample_bytes = 1 if bits <= 8 else 2 if bits <= 16 else 4 if bits <= 32 else 8
    if floating:
        sample_bytes = max(sample_bytes, 4)
    # Gray and RGB(A) decode to their samples (or fewer); palette, CMYK, YCbCr, Lab and the
    # rest go through RGBA conversions: 4 at most (OpenCV refuses more channels).
    channels = spp if photometric in (0, 1, 2) and spp in (1, 3, 4) else 4
    return _sized("TIFF", tags[256][0], tags[257][0], channels, sample_bytes, floating=floating)


def _tiff_values(buf: memoryview, order: str, kind: int, n: int, field: bytes) -> list[int]:
    """The first values (at most 4) of an IFD entry of ``n`` values: in its value field if
    they all fit there, else at the offset the field holds."""
    code = _TIFF_TYPES.get(kind)
    if code is None:
        raise ImageError(f"corrupt TIFF: a size tag of type {kind}")
    read = min(n, 4)
    size = struct.calcsize(code) * read
    if struct.calcsize(code) * n <= len(field):
        data = field[:size]
    else:
        offset = int.from_bytes(field, "little" if order == "<" else "big")
        if offset + size > len(buf):
            raise ImageError("truncated TIFF: a tag's values are past the end of the data")
        data = bytes(buf[offset : offset + size])
    return list(struct.unpack(f"{order}{read}{code}", data))


_PNM_HEADER_BYTES = 1024
_PNM_KINDS = (b"1", b"2", b"3", b"4", b"5", b"6", b"7", b"F", b"f")
_PNM_SPACE = (b" ", b"\t", b"\r", b"\n", b"#")
_PNM_TOKEN = re.compile(rb"(?:\s|#[^\r\n]*)*(\S+)")


def _sniff_pnm(buf: memoryview) -> Header:
    """P1-P6 (PBM, PGM, PPM), P7 (PAM) and PF/Pf (PFM): sizes are text in the first bytes."""
    head = bytes(buf[:_PNM_HEADER_BYTES])
    kind = head[1:2]
    if kind == b"7":
        return _sniff_pam(head)
    words: list[bytes] = []
    pos = 2
    want = 2 if kind in b"14Ff" else 3
    while len(words) < want:
        match = _PNM_TOKEN.match(head, pos)
        if match is None:
            raise ImageError("truncated or corrupt PNM header")
        words.append(match.group(1))
        pos = match.end()
    if not all(w.isdigit() and len(w) <= 10 for w in words):
        raise ImageError(f"corrupt PNM header: {b' '.join(words)[:40]!r}")
    w, h, *maxval = (int(x) for x in words)
    if kind in b"Ff":
        return _sized("PFM", w, h, 3 if kind == b"F" else 1, 4, floating=True)
    if maxval and not 0 < maxval[0] < 65536:
        raise ImageError(f"corrupt PNM: maxval {maxval[0]}")
    sample_bytes = 2 if maxval and maxval[0] > 255 else 1
    return _sized("PNM", w, h, 3 if kind in b"36" else 1, sample_bytes)


def _sniff_pam(head: bytes) -> Header:
    fields: dict[bytes, int] = {}
    for line in head[3:].splitlines():
        key, _, value = line.strip().partition(b" ")
        if key == b"ENDHDR":
            break
        if key in (b"WIDTH", b"HEIGHT", b"DEPTH", b"MAXVAL"):
            value = value.strip()
            if not value.isdigit() or len(value) > 10:
                raise ImageError(f"corrupt PAM header: {line[:40]!r}")
            fields[key] = int(value)
    else:
        raise ImageError("truncated or corrupt PAM header (no ENDHDR)")
    depth, maxval = fields.get(b"DEPTH", 1), fields.get(b"MAXVAL", 255)
    if not 1 <= depth <= 4 or not 0 < maxval < 65536:
        raise ImageError(f"corrupt PAM: depth {depth}, maxval {maxval}")
    w, h = fields.get(b"WIDTH", 0), fields.get(b"HEIGHT", 0)
    return _sized("PAM", w, h, depth, 2 if maxval > 255 else 1)


def sniff_size(data: Data) -> tuple[int, int] | None:
    """Read an image's size from its header without decoding it.

    Knows PNG (IHDR), JPEG (the SOFn marker), GIF (logical screen), BMP, WebP, PNM, PAM, PFM
    and TIFF (the first IFD).

    Args:
        data: the encoded image.

    Returns:
        ``(width, height)``, or None when the format is not one of those.

    Raises:
        ImageError: the signature is known but the header is truncated or corrupt.
    """
    found = _sniff(_as_bytes(data))
    return None if found is None else (found.width, found.height)


def sniff_header(data: Data) -> Header | None:
    """Like :func:`sniff_size`, with the decoded layout: channels and bytes per sample.

    Returns:
        The :class:`Header`, or None when the format is not one zimg reads.

    Raises:
        ImageError: the signature is known but the header is truncated or corrupt.
    """
    return _sniff(_as_bytes(data))


def _has_eoi(buf: memoryview, start: int) -> bool:
    """Whether an EOI marker (FF D9) follows ``start``; scan data never contains one."""
    if bytes(buf[-2:]) == b"\xff\xd9" and buf.nbytes - 2 >= start:
        return True  # the usual case, without scanning the whole file
    tail = np.frombuffer(buf, dtype=np.uint8)[start:]
    ff = np.flatnonzero(tail[:-1] == 0xFF)
    return bool(np.any(tail[ff + 1] == 0xD9))


def decode(
    data: Data,
    *,
    name: str = "<bytes>",
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_bytes: int = DEFAULT_MAX_IMAGE_BYTES,
) -> Image:
    """Decode an encoded image with ``cv2.imdecode(..., IMREAD_UNCHANGED)``, guarded.

    The header is read first (:func:`sniff_header`), and the image refused unless its
    width * height is at most ``max_pixels`` and its decoded size (width * height * channels *
    bytes per sample) at most ``max_bytes``; so a decompression bomb allocates nothing. Data
    whose size cannot be read that way (a format other than PNG, JPEG, GIF, BMP, WebP, PNM,
    PAM, PFM and TIFF, such as JPEG 2000 or OpenEXR) is refused without being decoded. A JPEG
    with no EOI marker after its scan data is refused as truncated (libjpeg would return it
    grey-filled).

    Args:
        data: the encoded bytes.
        name: how to name the data in errors, usually the file path.
        max_pixels: the largest width * height accepted.
        max_bytes: the largest decoded image accepted, in bytes.

    Returns:
        The image: (h, w) gray, or (h, w, 3|4) BGR/BGRA, 8- or 16-bit (PFM and some TIFFs:
        float).

    Raises:
        ImageError: empty data, not an image, a format whose size cannot be read, corrupt,
            truncated, too many pixels or too many bytes; the message starts with ``name``.
    """
    try:
        buf = _as_bytes(data)
        if len(buf) == 0:
            raise ImageError("empty data, not an image")
        found = _sniff(buf)
        if found is None:
            raise ImageError(_unsized(buf))
        _check_pixels(found.width, found.height, max_pixels)
        if found.nbytes > max_bytes:
            raise ImageError(
                f"{found.describe()} decodes to {found.nbytes} bytes, over the limit of "
                f"{max_bytes} bytes"
            )
        if found.format == "JPEG" and not _has_eoi(buf, found.scan):
            raise ImageError("truncated JPEG (no end-of-image marker)")
        try:
            image = cv2.imdecode(np.frombuffer(buf, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
        except cv2.error as exc:
            raise ImageError(f"cannot decode: {getattr(exc, 'err', exc)}") from exc
        if image is None:
            raise ImageError(f"{found.format} corrupt or truncated")
        _check_pixels(image.shape[1], image.shape[0], max_pixels)
        check_bytes(image, max_bytes)
    except ImageError as exc:
        raise ImageError(f"{name}: {exc}") from exc.__cause__
    result: Image = image
    return result


def _check_pixels(w: int, h: int, max_pixels: int) -> None:
    if w * h > max_pixels:
        raise ImageError(f"{w}x{h} is {w * h} pixels, over the limit of {max_pixels} pixels")


def check_bytes(image: Image, max_bytes: int) -> None:
    """Refuse an image (a decoded one, or a raw payload) of more than ``max_bytes`` bytes.

    Raises:
        ImageError: ``"a uint16 image of shape (...): N bytes, over the limit of M bytes"``.
    """
    if image.nbytes > max_bytes:
        raise ImageError(
            f"a {image.dtype} image of shape {image.shape} is {image.nbytes} bytes, over the "
            f"limit of {max_bytes} bytes"
        )


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
    """Read a whole regular file (with plain system calls: this runs for every input).

    Raises:
        ImageError: ``"<path>: no such file"``, ``is a directory``, ``permission denied``,
            ``not a regular file`` or another read error.
    """
    try:
        fd = os.open(path, _READ)
    except FileNotFoundError:
        raise ImageError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ImageError(f"{path}: is a directory") from None
    except PermissionError:
        raise ImageError(f"{path}: permission denied") from None
    except OSError as exc:
        raise ImageError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise ImageError(f"{path}: is a directory")
        if not stat.S_ISREG(info.st_mode):
            raise ImageError(f"{path}: not a regular file")
        chunks = []
        want = max(info.st_size, 1 << 16) + 1
        while True:  # to the end, even if the file grew since fstat
            chunk = os.read(fd, want)
            if chunk:
                chunks.append(chunk)
            if len(chunk) < want:  # a regular file reads short only at its end
                break
        if not chunks:
            return b""
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)
    except OSError as exc:
        raise ImageError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    finally:
        os.close(fd)


_READ = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0)


def load(
    path: str | os.PathLike[str],
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_bytes: int = DEFAULT_MAX_IMAGE_BYTES,
) -> Image:
    """Read and :func:`decode` a file; errors name the path.

    Raises:
        ImageError: the file cannot be read or decoded.
    """
    return decode(read_file(path), name=str(path), max_pixels=max_pixels, max_bytes=max_bytes)


def output_name(stem: str, suffix: str) -> str:
    """The name of a processed file: ``cat`` and ``.jpg`` -> ``cat_processed.jpg``."""
    return f"{stem}_processed{suffix}"


def output_path(path: str | os.PathLike[str], outdir: str | os.PathLike[str]) -> Path:
    """Return where a processed file goes: ``a/b/cat.jpg`` -> ``outdir/cat_processed.jpg``."""
    src = Path(path)
    return Path(outdir) / output_name(src.stem, src.suffix)


_temporaries = itertools.count()  # names of write_atomic's temporary files, in this process
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)


def write_atomic(path: str | os.PathLike[str], data: Data, *, new: bool = False) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same directory and
    ``os.replace``, so readers see the old file or the whole new one, never half of it.

    The new file keeps the old one's permissions, or gets the usual 0o666 less the umask (the
    kernel applies the umask as it creates the temporary file). Safe from several threads.
    ``new=True``: the caller knows there was no file at ``path`` (the old mode is not looked
    up; should one appear meanwhile, it is replaced with the usual mode).

    Raises:
        OSError: the directory is missing or not writable; no temporary file is left behind.
    """
    target = os.fspath(path)
    folder, name = os.path.split(target)
    for _ in range(100):  # a leftover of another process of this pid: take the next name
        tmp = os.path.join(folder, f".{name}.{os.getpid()}-{next(_temporaries)}.tmp")
        try:
            fd = os.open(tmp, _NEW_FILE, 0o666)
            break
        except FileExistsError:
            continue
    else:
        raise FileExistsError(f"cannot make a temporary file next to {target}")
    try:
        try:
            # An old file's mode stays; a new file keeps the mode it was created with.
            if not new:
                with contextlib.suppress(FileNotFoundError):
                    os.fchmod(fd, stat.S_IMODE(os.stat(target).st_mode))
            view = memoryview(_as_bytes(data) if isinstance(data, np.ndarray) else data)
            view = view.cast("B") if view.format != "B" or view.ndim != 1 else view
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
