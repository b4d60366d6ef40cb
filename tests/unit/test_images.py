"""Unit tests for zimg.images: sniffing, guarded decode, encode and files."""

from __future__ import annotations

import contextlib
import os
import struct
import zlib
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import zimg
from tests.reference import handmade_png, png_chunk
from zimg import images
from zimg._errors import ImageError
from zimg.images import (
    decode,
    encode,
    load,
    output_path,
    read_file,
    sniff_size,
    write_atomic,
)

SAMPLES = Path(zimg.__file__).parent / "samples"


def noise(h: int, w: int, channels: int = 3, dtype: Any = np.uint8) -> np.ndarray:
    rng = np.random.default_rng(h * 1000 + w)
    top = np.iinfo(dtype).max
    shape = (h, w) if channels == 1 else (h, w, channels)
    return rng.integers(0, top, shape, dtype=dtype, endpoint=True)


def encoded(image: np.ndarray, ext: str) -> bytes:
    ok, buf = cv2.imencode(ext, image)
    assert ok
    return buf.tobytes()


@pytest.fixture
def no_imdecode(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        pytest.fail("cv2.imdecode was called")

    monkeypatch.setattr(cv2, "imdecode", refuse)


# ---- sniff_size ------------------------------------------------------------------------------


@pytest.mark.parametrize("ext", [".png", ".jpg", ".bmp", ".webp", ".gif"])
@pytest.mark.parametrize(
    ("h", "w", "channels"), [(1, 1, 3), (30, 451, 3), (517, 33, 1), (64, 64, 4)]
)
def test_sniff_size_reads_real_headers(ext: str, h: int, w: int, channels: int) -> None:
    if (ext == ".jpg" and channels == 4) or ext == ".gif":
        channels = 3  # OpenCV's GIF encoder wants BGR
    assert sniff_size(encoded(noise(h, w, channels), ext)) == (w, h)


def test_sniff_size_lossless_webp_and_16bit_png() -> None:
    image = noise(21, 37)
    ok, buf = cv2.imencode(".webp", image, [cv2.IMWRITE_WEBP_QUALITY, 101])  # VP8L
    assert ok
    assert bytes(buf[12:16]) == b"VP8L"
    assert sniff_size(buf) == (37, 21)
    assert sniff_size(encoded(noise(9, 11, 1, np.uint16), ".png")) == (11, 9)


def test_sniff_size_of_samples() -> None:
    assert sniff_size((SAMPLES / "chelsea.jpg").read_bytes()) == (451, 300)
    assert sniff_size((SAMPLES / "coins.png").read_bytes()) == (384, 303)


def test_sniff_size_accepts_memoryview_and_arrays() -> None:
    data = encoded(noise(5, 7), ".png")
    assert sniff_size(memoryview(data)) == (7, 5)
    assert sniff_size(np.frombuffer(data, np.uint8)) == (7, 5)


def test_sniff_size_jpeg_skips_exif_thumbnail_segments() -> None:
    data = encoded(noise(40, 60), ".jpg")
    thumb = encoded(noise(8, 8), ".jpg")  # its SOF must not be taken for the image's
    app1 = b"\xff\xe1" + struct.pack(">H", len(thumb) + 8) + b"Exif\0\0" + thumb
    assert sniff_size(data[:2] + app1 + data[2:]) == (60, 40)


@pytest.mark.parametrize("data", [b"", b"hello world", b"\x00" * 100, b"<svg></svg>"])
def test_sniff_size_unknown_is_none(data: bytes) -> None:
    assert sniff_size(data) is None


@pytest.mark.parametrize("ext", [".png", ".jpg", ".bmp", ".webp", ".gif"])
def test_sniff_size_truncated_headers_never_crash(ext: str) -> None:
    data = encoded(noise(20, 30), ext)
    for n in range(1, min(len(data), 700)):
        try:
            size = sniff_size(data[:n])
        except ImageError:
            continue
        assert size in (None, (30, 20))


def test_sniff_size_corrupt_png() -> None:
    with pytest.raises(ImageError, match="IHDR"):
        sniff_size(b"\x89PNG\r\n\x1a\n" + png_chunk(b"tEXt", b"x" * 20))
    with pytest.raises(ImageError, match="0x5"):
        sniff_size(handmade_png(0, 5, zlib.compress(b"")))


@given(st.binary(max_size=200))
def test_sniff_size_garbage(data: bytes) -> None:
    with contextlib.suppress(ImageError):
        sniff_size(data)


@given(st.sampled_from([b"\x89PNG\r\n\x1a\n", b"\xff\xd8", b"GIF89a", b"BM", b"RIFF"]), st.binary())
def test_sniff_size_garbage_after_signature(signature: bytes, rest: bytes) -> None:
    with contextlib.suppress(ImageError):
        sniff_size(signature + rest)


# ---- decode ----------------------------------------------------------------------------------


def test_handmade_png_decodes_when_small() -> None:
    """The builder makes real PNGs, so the bomb test below is refused for its size alone."""
    rows = b"".join(b"\x00" + bytes([10 * y + x for x in range(3)]) for y in range(2))
    image = decode(handmade_png(3, 2, zlib.compress(rows)))
    assert np.array_equal(image, [[0, 1, 2], [10, 11, 12]])


def test_decode_refuses_png_bomb_before_imdecode(no_imdecode: None) -> None:
    bomb = handmade_png(60000, 60000, zlib.compress(b"\x00" * 16))
    assert len(bomb) < 100
    with pytest.raises(ImageError, match=r"^bomb\.png: 60000x60000 .*pixels"):
        decode(bomb, name="bomb.png")


def test_decode_max_pixels_boundary() -> None:
    data = encoded(noise(100, 100), ".png")
    assert decode(data, max_pixels=10_000).shape == (100, 100, 3)
    with pytest.raises(ImageError, match="over the limit of 9999 pixels"):
        decode(data, max_pixels=9_999)


def test_decode_checks_tiff_pixels_from_its_header(no_imdecode: None) -> None:
    data = encoded(noise(10, 10), ".tiff")
    assert sniff_size(data) == (10, 10)
    with pytest.raises(ImageError, match="over the limit of 99 pixels"):
        decode(data, max_pixels=99)


@pytest.mark.parametrize(
    ("image", "ext"),
    [
        (noise(30, 40, 1), ".png"),
        (noise(30, 40, 3), ".png"),
        (noise(30, 40, 4), ".png"),
        (noise(30, 40, 1, np.uint16), ".png"),
        (noise(30, 40, 4, np.uint16), ".png"),
        (noise(30, 40, 3), ".bmp"),
    ],
)
def test_decode_round_trips_lossless(image: np.ndarray, ext: str) -> None:
    result = decode(encoded(image, ext))
    assert result.dtype == image.dtype
    assert np.array_equal(result, image)


def test_decode_read_only_array_and_memoryview() -> None:
    data = encoded(noise(6, 8), ".png")
    frozen = np.frombuffer(data, np.uint8)
    assert not frozen.flags.writeable
    assert decode(frozen).shape == (6, 8, 3)
    assert decode(memoryview(data)).shape == (6, 8, 3)


def test_decode_jpeg_sample_matches_cv2() -> None:
    data = (SAMPLES / "chelsea.jpg").read_bytes()
    expected = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    assert expected is not None
    assert np.array_equal(decode(data), expected)


@pytest.mark.parametrize("cut", [0.3, 0.6, 0.95])
def test_decode_truncated_jpeg_names_file(cut: float) -> None:
    data = (SAMPLES / "chelsea.jpg").read_bytes()
    with pytest.raises(ImageError, match=r"^photo\.jpg: truncated JPEG"):
        decode(data[: int(len(data) * cut)], name="photo.jpg")
    with pytest.raises(ImageError, match=r"^photo\.jpg: truncated JPEG"):
        decode(data[: int(len(data) * cut)] + b"\0" * 64, name="photo.jpg")


def test_decode_jpeg_with_trailing_bytes_after_eoi() -> None:
    data = (SAMPLES / "brick.jpg").read_bytes()
    expected = decode(data)
    assert np.array_equal(decode(data + b"\0" * 10), expected)
    assert np.array_equal(decode(data + b"trailer data from a phone"), expected)


def test_decode_truncated_png() -> None:
    data = encoded(noise(50, 50), ".png")
    with pytest.raises(ImageError, match=r"^cut\.png: PNG corrupt or truncated"):
        decode(data[: len(data) // 2], name="cut.png")


@pytest.mark.parametrize("data", [b"hello, I am text", b"\x00\x01" * 50, b"%PDF-1.4 ..."])
def test_decode_not_an_image(data: bytes) -> None:
    with pytest.raises(ImageError, match=r"^notes\.jpg: not an image \(unrecognised format\)"):
        decode(data, name="notes.jpg")


def test_decode_empty_and_bad_arrays() -> None:
    with pytest.raises(ImageError, match=r"^x\.png: empty"):
        decode(b"", name="x.png")
    with pytest.raises(ImageError, match=r"^x\.png: .*must be uint8"):
        decode(np.zeros(10, np.uint16), name="x.png")


def test_decode_wraps_cv2_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: Any, **kwargs: Any) -> Any:
        raise cv2.error("simulated")

    monkeypatch.setattr(cv2, "imdecode", boom)
    with pytest.raises(ImageError, match=r"^a\.png: cannot decode"):
        decode(encoded(noise(4, 4), ".png"), name="a.png")


# ---- encode ----------------------------------------------------------------------------------


def test_encode_returns_flat_uint8_that_decodes() -> None:
    image = noise(12, 16, 1, np.uint16)
    buf = encode(image, ".png")
    assert buf.dtype == np.uint8
    assert buf.ndim == 1
    assert np.array_equal(decode(buf), image)
    assert encode(image, "PNG").tobytes() == buf.tobytes()


def test_encode_jpeg_keeps_cv2_default_quality() -> None:
    image = noise(40, 40)
    assert encode(image, ".jpg").tobytes() == encoded(image, ".jpg")


@pytest.mark.parametrize("ext", [".jpg", ".jpeg", "JPG", ".webp", ".bmp"])
def test_encode_16bit_to_8bit_only_format_fails(ext: str) -> None:
    with pytest.raises(ImageError, match=r"^out: .*uint16.*use \.png"):
        encode(noise(4, 4, 1, np.uint16), ext, name="out")


def test_encode_float_png_fails_and_unknown_extension_fails() -> None:
    with pytest.raises(ImageError, match=r"float32.*use \.tiff"):
        encode(np.zeros((4, 4), np.float32), ".png")
    with pytest.raises(ImageError, match=r"^a.xyz: cannot encode"):
        encode(noise(4, 4), ".xyz", name="a.xyz")


# ---- files -----------------------------------------------------------------------------------


def test_read_file_and_load(tmp_path: Path) -> None:
    path = tmp_path / "a.png"
    image = noise(5, 6)
    path.write_bytes(encoded(image, ".png"))
    assert read_file(path) == path.read_bytes()
    assert np.array_equal(load(path), image)
    assert np.array_equal(load(str(path)), image)


def test_read_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match=r"missing\.jpg: no such file"):
        read_file(tmp_path / "missing.jpg")
    with pytest.raises(ImageError, match="is a directory"):
        read_file(tmp_path)
    if os.geteuid() != 0:  # root reads anything
        locked = tmp_path / "locked.png"
        locked.write_bytes(b"x")
        locked.chmod(0)
        with pytest.raises(ImageError, match="permission denied"):
            read_file(locked)


def test_read_file_refuses_devices() -> None:
    with pytest.raises(ImageError, match="not a regular file"):
        read_file("/dev/zero")


def test_load_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "notes.jpg"
    path.write_text("not an image")
    with pytest.raises(ImageError, match=f"^{path}: not an image"):
        load(path)
    with pytest.raises(ImageError, match="over the limit"):
        load(SAMPLES / "coins.png", max_pixels=1000)


@pytest.mark.parametrize(
    ("src", "outdir", "expected"),
    [
        ("a/b/cat.jpg", "out", "out/cat_processed.jpg"),
        ("cat.png", "/tmp/x", "/tmp/x/cat_processed.png"),
        ("a/photo.v2.jpeg", "o", "o/photo.v2_processed.jpeg"),
        ("noext", "o", "o/noext_processed"),
    ],
)
def test_output_path(src: str, outdir: str, expected: str) -> None:
    assert output_path(src, outdir) == Path(expected)
    assert output_path(Path(src), Path(outdir)) == Path(expected)


def test_write_atomic_writes_and_replaces(tmp_path: Path) -> None:
    path = tmp_path / "out.png"
    write_atomic(path, b"first")
    assert path.read_bytes() == b"first"
    path.chmod(0o640)
    write_atomic(str(path), np.frombuffer(b"second", np.uint8))
    assert path.read_bytes() == b"second"
    assert path.stat().st_mode & 0o777 == 0o640
    write_atomic(path, memoryview(b"third"))
    assert path.read_bytes() == b"third"
    assert os.listdir(tmp_path) == ["out.png"]


@pytest.mark.parametrize("size", [0, 1, (1 << 16) - 1, 1 << 16, (1 << 16) + 1, 3 << 20])
def test_read_file_reads_whole_files_of_any_size(tmp_path: Path, size: int) -> None:
    data = os.urandom(size)
    (tmp_path / "f").write_bytes(data)
    assert read_file(tmp_path / "f") == data


def test_write_atomic_new_skips_the_old_files_mode(tmp_path: Path) -> None:
    path = tmp_path / "out.png"
    path.write_bytes(b"old")
    path.chmod(0o600)
    old = os.umask(0o022)
    try:
        write_atomic(path, b"x", new=True)  # the caller said there was none: usual mode
    finally:
        os.umask(old)
    assert path.read_bytes() == b"x"
    assert path.stat().st_mode & 0o777 == 0o644


def test_write_atomic_new_file_mode_follows_umask(tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        write_atomic(tmp_path / "new.png", b"x")
    finally:
        os.umask(old)
    assert (tmp_path / "new.png").stat().st_mode & 0o777 == 0o640


def test_write_atomic_cleans_up_on_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "out.png"
    path.write_bytes(b"old")

    def fail(src: Any, dst: Any) -> None:
        raise OSError("disk on fire")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="disk on fire"):
        write_atomic(path, b"new")
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["out.png"]


def test_write_atomic_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        write_atomic(tmp_path / "nope" / "out.png", b"x")


def test_module_keeps_default_limit() -> None:
    assert images.DEFAULT_MAX_PIXELS == 200_000_000


# ---- decoded size in bytes, from the header (issue 12) ----------------------------------------


def tiff_header(
    width: int,
    height: int,
    *,
    spp: int = 3,
    bits: int = 8,
    photometric: int = 2,
    order: str = "<",
    big: bool = False,
) -> bytes:
    """A TIFF's header and first IFD (no pixel data): what zimg reads before decoding."""
    entries = [(256, 4, 1, width), (257, 4, 1, height), (258, 3, spp, bits)]
    entries += [(262, 3, 1, photometric), (277, 3, 1, spp)]
    mark = b"II" if order == "<" else b"MM"
    if big:
        head = mark + struct.pack(order + "HHHQ", 43, 8, 0, 16) + struct.pack(order + "Q", 5)
        values_at = 16 + 8 + 5 * 20 + 8
        body = b""
        for tag, kind, n, value in entries:
            if tag == 258 and n > 4:  # 8-byte fields hold up to 4 shorts
                body += struct.pack(order + "HHQQ", tag, kind, n, values_at)
            else:
                field = struct.pack(order + ("H" if kind == 3 else "I"), value) * min(n, 4)
                body += struct.pack(order + "HHQ", tag, kind, n) + field.ljust(8, b"\0")
        return head + body + bytes(8) + struct.pack(order + f"{spp}H", *[bits] * spp)
    head = mark + struct.pack(order + "HIH", 42, 8, len(entries))
    values_at = 8 + 2 + len(entries) * 12 + 4
    body = b""
    for tag, kind, n, value in entries:
        if tag == 258 and n > 2:  # 4-byte fields hold up to 2 shorts
            body += struct.pack(order + "HHII", tag, kind, n, values_at)
        else:
            field = struct.pack(order + ("H" if kind == 3 else "I"), value) * n
            body += struct.pack(order + "HHI", tag, kind, n) + field.ljust(4, b"\0")
    return head + body + bytes(4) + struct.pack(order + f"{spp}H", *[bits] * spp)


def png_header(width: int, height: int, depth: int, colour: int, *chunks: bytes) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    idat = png_chunk(b"IDAT", zlib.compress(b"\0"))
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + b"".join(chunks) + idat


LAYOUTS = [
    (noise(30, 40, 1), ".png", True),
    (noise(30, 40, 3), ".png", True),
    (noise(30, 40, 4), ".png", True),
    (noise(30, 40, 1, np.uint16), ".png", True),
    (noise(30, 40, 4, np.uint16), ".png", True),
    (noise(30, 40, 1), ".jpg", True),
    (noise(30, 40, 3), ".jpg", True),
    (noise(30, 40, 1), ".bmp", False),  # a palette: BGR at most
    (noise(30, 40, 3), ".bmp", True),
    (noise(30, 40, 4), ".bmp", True),
    (noise(30, 40, 3), ".webp", True),
    (noise(30, 40, 4), ".webp", True),
    (noise(30, 40, 3), ".gif", False),  # BGR or BGRA
    (noise(30, 40, 1), ".tiff", True),
    (noise(30, 40, 3), ".tiff", True),
    (noise(30, 40, 4), ".tiff", True),
    (noise(30, 40, 3, np.uint16), ".tiff", True),
    (noise(30, 40, 1).astype(np.float32), ".tiff", True),
    (noise(30, 40, 3).astype(np.float64), ".tiff", True),
    (noise(30, 40, 1), ".pgm", True),
    (noise(30, 40, 1, np.uint16), ".pgm", True),
    (noise(30, 40, 3), ".ppm", True),
    (noise(30, 40, 3, np.uint16), ".ppm", True),
    (noise(30, 40, 1), ".pbm", True),
    (noise(30, 40, 1), ".pam", True),
    (noise(30, 40, 3), ".pam", True),
    (noise(30, 40, 1).astype(np.float32), ".pfm", True),
    (noise(30, 40, 3).astype(np.float32), ".pfm", True),
]


@pytest.mark.parametrize(("image", "ext", "exact"), LAYOUTS)
def test_the_header_bounds_the_decoded_size(image: np.ndarray, ext: str, exact: bool) -> None:
    data = encoded(image, ext)
    header = images.sniff_header(data)
    assert header is not None
    decoded = decode(data)
    assert (header.width, header.height) == (40, 30)
    assert header.nbytes >= decoded.nbytes
    if exact:
        assert header.nbytes == decoded.nbytes, (header, decoded.shape, decoded.dtype)
    assert decode(data, max_bytes=header.nbytes).shape == decoded.shape


@pytest.mark.parametrize(("image", "ext", "exact"), LAYOUTS)
def test_an_image_over_max_bytes_is_refused_before_decoding(
    image: np.ndarray, ext: str, exact: bool, no_imdecode: None
) -> None:
    data = encoded(image, ext)
    header = images.sniff_header(data)
    assert header is not None
    with pytest.raises(ImageError, match=rf"^in{ext}: a 40x30 .* decodes to \d+ bytes, over"):
        decode(data, name=f"in{ext}", max_bytes=header.nbytes - 1)


def test_a_16_bit_rgba_png_bomb_under_the_pixel_limit_is_refused(no_imdecode: None) -> None:
    # 196 Mpx passes max_pixels; its 1.57 GB of pixels do not pass max_bytes.
    bomb = png_header(14_000, 14_000, 16, 6)
    with pytest.raises(
        ImageError,
        match=r"^bomb\.png: a 14000x14000 16-bit RGBA PNG decodes to 1568000000 bytes, "
        r"over the limit of 536870912 bytes$",
    ):
        decode(bomb, name="bomb.png")


def test_the_default_byte_limit_admits_8k_16_bit_rgba() -> None:
    assert images.DEFAULT_MAX_IMAGE_BYTES == 512 * 2**20
    header = images.sniff_header(png_header(7680, 4320, 16, 6))
    assert header is not None
    assert header.nbytes <= images.DEFAULT_MAX_IMAGE_BYTES


@pytest.mark.parametrize(
    ("colour", "depth", "chunks", "channels"),
    [
        (0, 8, (), 1),
        (2, 8, (), 3),
        (3, 8, (png_chunk(b"PLTE", bytes(3)),), 3),
        (3, 8, (png_chunk(b"PLTE", bytes(3)), png_chunk(b"tRNS", b"\0")), 4),
        (2, 16, (png_chunk(b"tRNS", bytes(6)),), 4),  # OpenCV adds alpha for tRNS
        (4, 8, (), 4),  # gray + alpha decodes to BGRA
        (0, 1, (), 1),
    ],
)
def test_png_channels_come_from_the_colour_type_and_trns(
    colour: int, depth: int, chunks: tuple[bytes, ...], channels: int
) -> None:
    header = images.sniff_header(png_header(10, 10, depth, colour, *chunks))
    assert header is not None
    assert header.channels == channels
    assert header.sample_bytes == (2 if depth == 16 else 1)


@pytest.mark.parametrize("order", ["<", ">"])
@pytest.mark.parametrize("big", [False, True])
def test_a_tiff_bomb_is_refused_from_its_first_ifd(
    order: str, big: bool, no_imdecode: None
) -> None:
    # OpenCV decoded such a file in full (822 MB) before zimg's pixel check could run.
    bomb = tiff_header(16_000, 16_000, order=order, big=big)
    header = images.sniff_header(bomb)
    assert header == images.Header("TIFF", 16_000, 16_000, 3, 1)
    with pytest.raises(ImageError, match=r"^b\.tif: 16000x16000 is 256000000 pixels, over"):
        decode(bomb, name="b.tif")
    under = tiff_header(14_000, 14_000, spp=4, bits=16, order=order, big=big)  # 196 Mpx
    with pytest.raises(ImageError, match=r"^b\.tif: a 14000x14000 16-bit RGBA TIFF decodes to"):
        decode(under, name="b.tif")


@pytest.mark.parametrize(
    ("spp", "bits", "photometric", "channels", "sample_bytes"),
    [
        (1, 1, 1, 1, 1),
        (1, 12, 1, 1, 2),
        (3, 64, 2, 3, 8),
        (1, 8, 3, 4, 1),  # palette: OpenCV decodes to BGR (4 at most)
        (4, 8, 5, 4, 1),  # CMYK
        (2, 8, 1, 4, 1),  # gray + alpha
        (6, 8, 2, 4, 1),  # OpenCV refuses more than 4 channels
    ],
)
def test_tiff_layouts(
    spp: int, bits: int, photometric: int, channels: int, sample_bytes: int
) -> None:
    header = images.sniff_header(tiff_header(7, 5, spp=spp, bits=bits, photometric=photometric))
    assert header is not None
    assert (header.width, header.height) == (7, 5)
    assert (header.channels, header.sample_bytes) == (channels, sample_bytes)


@pytest.mark.parametrize(
    ("data", "fmt"),
    [
        (b"\x00\x00\x00\x0cjP  \r\n\x87\n" + bytes(40), "JPEG 2000"),
        (b"\xffO\xffQ" + bytes(40), "JPEG 2000"),
        (b"v/1\x01" + bytes(40), "OpenEXR"),
        (b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y 60000 +X 60000\n", "Radiance HDR"),
        (b"\x59\xa6\x6a\x95" + bytes(40), "Sun raster"),
        (b"\x00\x00\x00\x1cftypavif" + bytes(40), "AVIF"),
    ],
)
def test_formats_whose_size_is_not_read_are_refused_before_decoding(
    data: bytes, fmt: str, no_imdecode: None
) -> None:
    with pytest.raises(ImageError, match=rf"^x\.img: a {fmt} image, whose size zimg cannot read"):
        decode(data, name="x.img")


def test_an_unknown_format_is_never_handed_to_opencv(no_imdecode: None) -> None:
    with pytest.raises(ImageError, match=r"^x: not an image \(unrecognised format\)"):
        decode(b"hello, I am text", name="x")


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (png_header(10, 10, 16, 3), "bit depth 16 with colour type 3"),
        (png_header(10, 10, 8, 5), "colour type 5"),
        (b"BM" + bytes(12) + struct.pack("<IiiHH", 40, 10, 10, 1, 7) + bytes(4), "7 bits"),
        (b"II*\x00" + struct.pack("<I", 10_000), "past the end"),
        (b"II*\x00" + struct.pack("<IH", 8, 500) + bytes(24), "cut off"),
        (tiff_header(10, 10)[:30], "cut off"),
        (b"II*\x00" + struct.pack("<IH", 8, 1) + struct.pack("<HHII", 258, 3, 1, 8), "ImageWidth"),
        (b"P5\n10 ten\n255\n", "corrupt PNM"),
        (b"P6\n10 10\n70000\n", "maxval 70000"),
        (b"P5\n12345678901 1\n255\n", "corrupt PNM"),
        (b"P7\nWIDTH 10\nHEIGHT 10\nDEPTH 9\nMAXVAL 255\nENDHDR\n", "depth 9"),
        (b"P7\nWIDTH 10\nHEIGHT 10\n" + b"#" * 2000, "no ENDHDR"),
        (b"P3\n10", "truncated or corrupt PNM"),
    ],
)
def test_corrupt_headers_are_refused_before_decoding(
    data: bytes, fragment: str, no_imdecode: None
) -> None:
    with pytest.raises(ImageError, match=r"^x: ") as info:
        decode(data, name="x")
    assert fragment in str(info.value)


@pytest.mark.parametrize(
    ("text", "size", "channels", "sample_bytes"),
    [
        (b"P1\n# a comment\n5 3\n", (5, 3), 1, 1),
        (b"P5 7 2 65535\n", (7, 2), 1, 2),
        (b"P6\n#c\n4\n#d\n9\n255\n", (4, 9), 3, 1),
        (b"PF\n6 2\n-1.0\n", (6, 2), 3, 4),
        (b"P7\nWIDTH 3\nHEIGHT 8\nDEPTH 2\nMAXVAL 65535\nENDHDR\n", (3, 8), 2, 2),
    ],
)
def test_pnm_headers(text: bytes, size: tuple[int, int], channels: int, sample_bytes: int) -> None:
    header = images.sniff_header(text)
    assert header is not None
    assert ((header.width, header.height), header.channels) == (size, channels)
    assert header.sample_bytes == sample_bytes


@given(
    st.sampled_from([b"II*\x00", b"MM\x00*", b"II+\x00", b"P5\n", b"P7\n", b"PF\n"]),
    st.binary(max_size=300),
)
def test_new_headers_with_garbage_raise_only_image_errors(signature: bytes, rest: bytes) -> None:
    with contextlib.suppress(ImageError):
        images.sniff_header(signature + rest)


def test_a_raw_image_over_max_bytes_is_refused() -> None:
    images.check_bytes(np.zeros((4, 4), np.float64), 128)
    with pytest.raises(ImageError, match=r"shape \(4, 4\) is 128 bytes, over the limit of 127"):
        images.check_bytes(np.zeros((4, 4), np.float64), 127)
