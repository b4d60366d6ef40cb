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


def test_decode_max_pixels_for_formats_not_sniffed() -> None:
    data = encoded(noise(10, 10), ".tiff")
    assert sniff_size(data) is None
    assert decode(data).shape == (10, 10, 3)
    with pytest.raises(ImageError, match="over the limit"):
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
