"""Download one image over HTTP(S) with a timeout, a size limit and an atomic write."""

from __future__ import annotations

import mimetypes
import os
import secrets
from pathlib import Path
from typing import BinaryIO
from urllib.parse import unquote, urlsplit

import requests
from urllib3.exceptions import ReadTimeoutError

from zimg._errors import FetchError

__all__ = ["DEFAULT_MAX_BYTES", "DEFAULT_TIMEOUT_S", "fetch"]

DEFAULT_TIMEOUT_S = 10.0
DEFAULT_MAX_BYTES = 50 * 1024 * 1024

_SCHEMES = ("http", "https")
_CHUNK_BYTES = 64 * 1024
_FALLBACK_STEM = "download"


def fetch(
    url: str,
    dest: str | os.PathLike[str] | None = None,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    max_bytes: int = DEFAULT_MAX_BYTES,
    session: requests.Session | None = None,
) -> Path:
    """Download the image at `url` and write it to disk atomically.

    Args:
        url: An http or https URL.
        dest: Where to write. None means the current directory, and an existing
            directory means inside it, both under the last segment of the URL's path
            (or "download" plus an extension guessed from the Content-Type). Any
            other value is the file path itself; an existing file is replaced.
        timeout_s: Seconds to wait to connect and for each read from the server.
        max_bytes: The largest body accepted.
        session: A `requests.Session` to send the request with. It is left open;
            without one, a private session is opened and closed.

    Returns:
        The path written.

    Raises:
        FetchError: The URL is not http(s), the server could not be reached or
            timed out, answered with status >= 400 or a non-image Content-Type, the
            body is larger than `max_bytes`, or the file could not be written. No
            partial file is left behind.
        ValueError: `timeout_s` is not positive or `max_bytes` is negative.
    """
    if not timeout_s > 0:
        raise ValueError(f"timeout_s must be positive, got {timeout_s!r}")
    if max_bytes < 0:
        raise ValueError(f"max_bytes must not be negative, got {max_bytes!r}")
    _check_url(url)
    if session is not None:
        return _download(session, url, dest, timeout_s, max_bytes)
    with requests.Session() as own_session:
        return _download(own_session, url, dest, timeout_s, max_bytes)


def _check_url(url: str) -> None:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in _SCHEMES:
        got = f"scheme {parts.scheme!r}" if parts.scheme else "no scheme"
        accepted = " and ".join(_SCHEMES)
        raise _error(url, f"only {accepted} URLs are supported (got {got})")
    if not parts.hostname:
        raise _error(url, "the URL has no host")


def _download(
    session: requests.Session,
    url: str,
    dest: str | os.PathLike[str] | None,
    timeout_s: float,
    max_bytes: int,
) -> Path:
    try:
        response = session.get(url, timeout=timeout_s, stream=True)
    except requests.RequestException as exc:
        raise _request_error(url, exc, timeout_s) from exc
    with response:
        media_type = _check_response(url, response, max_bytes)
        path = _destination(url, dest, media_type)
        try:
            _save(url, response, path, max_bytes)
        except requests.RequestException as exc:  # before OSError: it subclasses it
            raise _request_error(url, exc, timeout_s) from exc
        except OSError as exc:
            raise _error(url, f"cannot write {path}: {exc}") from exc
    return path


def _check_response(url: str, response: requests.Response, max_bytes: int) -> str:
    """Refuse a bad status, a non-image type or a declared size over the limit; return the type."""
    if response.status_code >= 400:
        status = f"HTTP {response.status_code} {response.reason or ''}".rstrip()
        raise _error(url, status)
    content_type = response.headers.get("Content-Type", "").strip()
    media_type = content_type.split(";", 1)[0].strip().lower()
    if not media_type.startswith("image/") or media_type == "image/":
        got = f"Content-Type {content_type!r}" if content_type else "no Content-Type"
        raise _error(url, f"expected an image/* Content-Type, got {got}")
    declared = _content_length(response)
    if declared is not None and declared > max_bytes:
        raise _error(url, f"Content-Length {declared} exceeds the limit of {max_bytes} bytes")
    return media_type


def _content_length(response: requests.Response) -> int | None:
    """The declared body size, or None when absent or unreadable (the stream limit still holds)."""
    value = response.headers.get("Content-Length")
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        return None


def _destination(url: str, dest: str | os.PathLike[str] | None, media_type: str) -> Path:
    if dest is None:
        return Path(_filename(url, media_type))
    path = Path(dest)
    if path.is_dir():
        return path / _filename(url, media_type)
    return path


def _filename(url: str, media_type: str) -> str:
    """The last segment of the URL's path, or "download" plus a guessed extension."""
    segment = unquote(urlsplit(url).path.rsplit("/", 1)[-1])
    # An encoded slash or a backslash must not lead out of the destination directory.
    name = segment.replace("\\", "/").rsplit("/", 1)[-1]
    if name in ("", ".", "..") or "\0" in name:
        return _FALLBACK_STEM + (mimetypes.guess_extension(media_type) or "")
    return name


def _save(url: str, response: requests.Response, path: Path, max_bytes: int) -> None:
    """Stream the body into a temporary file beside `path`, then rename it over `path`."""
    fd, tmp = _open_temp(path)
    try:
        with open(fd, "wb") as out:
            _copy_body(url, response, out, max_bytes)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _open_temp(path: Path) -> tuple[int, Path]:
    """Create a new file in `path`'s directory; os.open's 0o666 lets the umask apply."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    while True:
        tmp = path.with_name(f".{path.name[:64]}.{secrets.token_hex(6)}.part")
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue


def _copy_body(url: str, response: requests.Response, out: BinaryIO, max_bytes: int) -> None:
    written = 0
    for chunk in response.iter_content(_CHUNK_BYTES):
        if not isinstance(chunk, bytes):  # only decode_unicode=True yields str
            raise TypeError("expected bytes from iter_content")
        written += len(chunk)
        if written > max_bytes:
            raise _error(url, f"body exceeds the limit of {max_bytes} bytes")
        out.write(chunk)


def _request_error(url: str, exc: requests.RequestException, timeout_s: float) -> FetchError:
    # A read timeout while streaming the body surfaces as a ConnectionError wrapping urllib3's.
    timed_out = isinstance(exc, requests.Timeout) or any(
        isinstance(arg, ReadTimeoutError) for arg in exc.args
    )
    if timed_out:
        return _error(url, f"timed out after {timeout_s:g} s")
    if isinstance(exc, requests.ConnectionError):
        return _error(url, f"connection failed ({exc})")
    return _error(url, f"request failed ({type(exc).__name__}: {exc})")


def _error(url: str, reason: str) -> FetchError:
    return FetchError(f"cannot fetch {url}: {reason}")
