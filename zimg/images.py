"""Decode and encode images with limits, name outputs, write atomically.

What a header says (format, size, layout) is read by ``zimg._image_headers``, re-exported here as
:func:`sniff_size`, :func:`sniff_header` and :class:`Header`.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import stat
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from zimg._errors import ImageError
from zimg._image_headers import (
    Data,
    Header,
    as_byte_view,
    read_header,
    sniff_header,
    sniff_size,
    unsized_reason,
)
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
_JPEG_EXTS = {".jpg", ".jpeg", ".jpe"}
# Encoders that would silently convert other depths to 8-bit (saturating, not scaling).
_ENCODER_DTYPES = {
    **dict.fromkeys(_JPEG_EXTS, ("uint8",)),
    ".png": ("uint8", "uint16"),
    ".bmp": ("uint8",),
    ".webp": ("uint8",),
    ".gif": ("uint8",),
}


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
        buf = as_byte_view(data)
        if len(buf) == 0:
            raise ImageError("empty data, not an image")
        found = read_header(buf)
        if found is None:
            raise ImageError(unsized_reason(buf))
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


def write_atomic(
    path: str | os.PathLike[str], data: Data, *, new: bool = False, dir_fd: int | None = None
) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same directory and
    ``os.replace``, so readers see the old file or the whole new one, never half of it.

    The new file keeps the old one's permissions, or gets the usual 0o666 less the umask (the
    kernel applies the umask as it creates the temporary file). Safe from several threads.
    ``new=True``: the caller knows there was no file at ``path`` (the old mode is not looked
    up; should one appear meanwhile, it is replaced with the usual mode). ``dir_fd``: ``path``
    is relative to this open directory, which spares the kernel looking up its folders three
    times (a batch writes every output into one directory).

    Raises:
        OSError: the directory is missing or not writable; no temporary file is left behind.
    """
    target = os.fspath(path)
    folder, name = os.path.split(target)
    for _ in range(100):  # a leftover of another process of this pid: take the next name
        tmp = os.path.join(folder, f".{name}.{os.getpid()}-{next(_temporaries)}.tmp")
        try:
            fd = os.open(tmp, _NEW_FILE, 0o666, dir_fd=dir_fd)
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
                    mode = os.stat(target, dir_fd=dir_fd).st_mode
                    os.fchmod(fd, stat.S_IMODE(mode))
            _write_all(fd, data)
        finally:
            os.close(fd)
        if dir_fd is None:
            os.replace(tmp, target)
        else:
            os.replace(tmp, target, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        with contextlib.suppress(OSError):
            if dir_fd is None:
                os.unlink(tmp)
            else:
                os.unlink(tmp, dir_fd=dir_fd)
        raise


def _write_all(fd: int, data: Data) -> None:
    """Write all of ``data``; a flat uint8 array (what a batch writes) goes as it is."""
    if type(data) is np.ndarray and data.dtype is _UINT8 and data.flags.c_contiguous:
        view = data.data  # 1-byte items: os.write takes any contiguous buffer
        done = os.write(fd, view)
        if done == data.nbytes:
            return
        view = view.cast("B")[done:]
    else:
        view = memoryview(as_byte_view(data) if isinstance(data, np.ndarray) else data)
        view = view.cast("B") if view.format != "B" or view.ndim != 1 else view
    while view:
        view = view[os.write(fd, view) :]


_UINT8 = np.dtype(np.uint8)
