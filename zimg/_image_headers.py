"""Read an image's format, size and decoded layout from its header, without decoding it.

Knows PNG, JPEG, GIF, BMP, WebP, PNM/PAM/PFM and TIFF: enough to refuse a decompression bomb
before any pixel is allocated (``images.decode``) and to check a sender's inputs cheaply.
"""

from __future__ import annotations

import re
import struct
from typing import NamedTuple

import numpy as np
from numpy.typing import NDArray

from zimg._errors import ImageError

Data = bytes | bytearray | memoryview | NDArray[np.uint8]
Buffer = memoryview | bytes  # what the header readers index: a flat byte view, or bytes

_PNG = b"\x89PNG\r\n\x1a\n"
_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_JPEG_STANDALONE = {0x01, *range(0xD0, 0xD8)}  # TEM and RST0-7 carry no length


def as_byte_view(data: Data) -> memoryview:
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


def unsized_reason(buf: Buffer) -> str:
    """Why data whose size :func:`read_header` cannot read is refused."""
    head = bytes(buf[:16])
    for magic, at, fmt in _UNSIZED:
        if head[at : at + len(magic)] == magic:
            return (
                f"a {fmt} image, whose size zimg cannot read before decoding: refused "
                f"(zimg decodes {_SNIFFED})"
            )
    return "not an image (unrecognised format)"


def read_header(buf: Buffer) -> Header | None:
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
    fmt: str,
    w: int,
    h: int,
    channels: int,
    sample_bytes: int,
    *,
    floating: bool = False,
    scan: int = 0,
) -> Header:
    if w <= 0 or h <= 0:
        raise ImageError(f"corrupt {fmt}: header declares a {w}x{h} image")
    return Header(fmt, w, h, channels, sample_bytes, floating, scan)


def _sniff_png(buf: Buffer, head: bytes) -> Header:
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


def _png_has_trns(buf: Buffer) -> bool:
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


def _sniff_jpeg(buf: Buffer) -> Header:
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
            sample = 1 if precision <= 8 else 2
            return _sized("JPEG", w, h, channels, sample, scan=pos + 2 + length)
        if marker == 0xD9:
            break
        pos += 2 + length
    raise ImageError("truncated or corrupt JPEG header")


_TIFF_TYPES = {1: "B", 3: "H", 4: "I", 16: "Q"}  # BYTE, SHORT, LONG, LONG8
_TIFF_LAST_TAG = 339  # SampleFormat: the tags read are all at most this


def _sniff_tiff(buf: Buffer, head: bytes) -> Header | None:
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


def _tiff_values(buf: Buffer, order: str, kind: int, n: int, field: bytes) -> list[int]:
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


def _sniff_pnm(buf: Buffer) -> Header:
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
    # bytes (a file just read) as they are: indexing them costs less than a memoryview's.
    found = read_header(data if type(data) is bytes else as_byte_view(data))
    return None if found is None else (found.width, found.height)


def sniff_header(data: Data) -> Header | None:
    """Like :func:`sniff_size`, with the decoded layout: channels and bytes per sample.

    Returns:
        The :class:`Header`, or None when the format is not one zimg reads.

    Raises:
        ImageError: the signature is known but the header is truncated or corrupt.
    """
    return read_header(as_byte_view(data))
