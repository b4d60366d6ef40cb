"""Download one image over HTTP(S): one deadline, public addresses, sniffed bytes, no clobbering.

What ``fetch`` guarantees, whatever the server does:

- **One deadline.** ``timeout_s`` bounds the whole download: name resolution, connecting, the
  TLS handshake, the headers, every redirect and the body. A watchdog shuts the connection down
  when it passes, so a server that sends a byte every second cannot stretch it.
- **Public addresses only.** Before each request (the URL's and every redirect's) the host is
  resolved once and *every* address it resolves to is checked: loopback, private, link-local,
  multicast, unspecified, reserved and other non-global addresses are refused (also when they
  are embedded in an IPv6 address). The connection then goes to one of the checked addresses:
  the name is never resolved again, so a DNS answer that changes between the check and the
  connection (DNS rebinding) cannot redirect it. TLS still checks the certificate against the
  host name. Proxies from the environment are not used (a proxy would resolve the name itself).
- **The bytes decide.** The body must start with the signature of an image format OpenCV reads
  (PNG, JPEG, GIF, BMP, WebP, TIFF, PNM), whatever the Content-Type says.
- **No clobbering.** An existing file is kept unless ``overwrite`` is set; the final rename
  fails rather than replace a file that appeared meanwhile.
- **Bounded and atomic.** At most ``max_bytes`` are accepted, and the file appears complete
  or not at all.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import secrets
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import unquote, urljoin, urlsplit

import requests
from requests.cookies import extract_cookies_to_jar
from requests.utils import requote_uri

from zimg._errors import FetchError
from zimg._fetch_guard import Guard, IPNetwork, PinnedAdapter, fetch_error

__all__ = ["DEFAULT_MAX_BYTES", "DEFAULT_TIMEOUT_S", "MAX_REDIRECTS", "fetch"]

DEFAULT_TIMEOUT_S = 10.0
DEFAULT_MAX_BYTES = 50 * 1024 * 1024
MAX_REDIRECTS = 10

_SCHEMES = ("http", "https")
_CHUNK_BYTES = 64 * 1024
_SNIFF_BYTES = 32
_FALLBACK_STEM = "download"


def fetch(
    url: str,
    dest: str | os.PathLike[str] | None = None,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    max_bytes: int = DEFAULT_MAX_BYTES,
    session: requests.Session | None = None,
    overwrite: bool = False,
    allow_private: bool = False,
    allowed_networks: Iterable[str | IPNetwork] = (),
) -> Path:
    """Download the image at `url` and write it to disk atomically.

    Args:
        url: An http or https URL.
        dest: Where to write. None means the current directory, and an existing
            directory means inside it, both under the last segment of the URL's path
            (or "download" plus the extension of the image's format). Any other value
            is the file path itself.
        timeout_s: Seconds for the whole download: resolving, connecting, redirects,
            headers and body.
        max_bytes: The largest body accepted.
        session: A `requests.Session` whose headers, cookies, auth and TLS settings the
            requests use (not its adapters, hooks or proxies: the connections are
            made here). It is left open.
        overwrite: Replace an existing file (by default it is an error).
        allow_private: Also connect to loopback, private, link-local and other
            non-public addresses (refused by default, for the URL and every redirect).
        allowed_networks: Networks (such as "10.1.2.0/24") allowed even without
            `allow_private`; the others stay refused.

    Returns:
        The path written.

    Raises:
        FetchError: The URL is not http(s), its host (or a redirect's) resolves to a
            refused address, the server could not be reached, answered with status
            >= 400 or too many redirects, the deadline passed, the body is not an
            image or larger than `max_bytes`, the file exists already, or it could not
            be written. No partial file is left behind.
        ValueError: `timeout_s` is not positive, `max_bytes` is negative, or a network
            in `allowed_networks` is malformed.
    """
    if not timeout_s > 0:
        raise ValueError(f"timeout_s must be positive, got {timeout_s!r}")
    if max_bytes < 0:
        raise ValueError(f"max_bytes must not be negative, got {max_bytes!r}")
    networks = tuple(ipaddress.ip_network(n) for n in allowed_networks)
    _check_url(url, url, redirected=False)
    early = _destination(url, dest, None)
    if early is not None and not overwrite and os.path.lexists(early):
        raise _exists(url, early)
    with contextlib.ExitStack() as stack:  # closed in reverse: guard, adapter, own session
        if session is None:
            session = stack.enter_context(requests.Session())
        guard = Guard(url, timeout_s, allow_private=allow_private, allowed=networks)
        adapter = PinnedAdapter(guard)
        stack.callback(adapter.close)
        stack.enter_context(guard)
        return _download(session, adapter, guard, url, dest, max_bytes, overwrite)
    raise AssertionError("unreachable")  # for mypy: ExitStack may swallow exceptions


# ---------------------------------------------------------------------- addresses


def _check_url(url: str, hop_url: str, *, redirected: bool) -> None:
    parts = urlsplit(hop_url)
    scheme = parts.scheme.lower()
    where = f"redirected to {hop_url}: " if redirected else ""
    if scheme not in _SCHEMES:
        got = f"scheme {parts.scheme!r}" if parts.scheme else "no scheme"
        accepted = " and ".join(_SCHEMES)
        raise fetch_error(url, f"{where}only {accepted} URLs are supported (got {got})")
    if not parts.hostname:
        raise fetch_error(url, f"{where}the URL has no host")
    try:
        parts.port  # noqa: B018  # raises on a malformed port
    except ValueError as exc:
        raise fetch_error(url, f"{where}{exc}") from None


def _download(
    session: requests.Session,
    adapter: PinnedAdapter,
    guard: Guard,
    url: str,
    dest: str | os.PathLike[str] | None,
    max_bytes: int,
    overwrite: bool,
) -> Path:
    response = _follow(session, adapter, guard, url)
    with response:
        if response.status_code >= 400:
            status = f"HTTP {response.status_code} {response.reason or ''}".rstrip()
            raise fetch_error(url, status)
        declared = _content_length(response)
        if declared is not None and declared > max_bytes:
            raise fetch_error(
                url, f"Content-Length {declared} exceeds the limit of {max_bytes} bytes"
            )
        return _save(url, response, guard, dest, max_bytes, overwrite)


def _follow(
    session: requests.Session, adapter: PinnedAdapter, guard: Guard, url: str
) -> requests.Response:
    """Send the request, and follow redirects, checking every hop's scheme and addresses."""
    hop_url, hops = url, 0
    previous_host: str | None = None
    while True:
        redirected = hops > 0
        try:
            request = session.prepare_request(requests.Request("GET", hop_url))
        except requests.RequestException as exc:
            raise fetch_error(url, f"bad URL {hop_url} ({exc})") from exc
        hop_url = request.url or hop_url  # as requests encoded it (IDNA, quoting)
        _check_url(url, hop_url, redirected=redirected)
        host = urlsplit(hop_url).hostname
        if previous_host is not None and host != previous_host:
            request.headers.pop("Authorization", None)  # as requests does across hosts
        guard.pin(hop_url, redirected=redirected)
        # The session's TLS settings (REQUESTS_CA_BUNDLE and the like when it says verify=True);
        # never a proxy.
        settings = session.merge_environment_settings(
            hop_url, {}, True, session.verify, session.cert
        )
        left = guard.left()
        if left <= 0:
            raise guard.timed_out()
        try:
            response = adapter.send(
                request,
                stream=True,
                timeout=(left, left),
                verify=True if settings["verify"] is None else settings["verify"],
                cert=settings["cert"],
            )
        except requests.RequestException as exc:
            raise guard.request_error(url, exc) from exc
        extract_cookies_to_jar(session.cookies, request, response.raw)  # type: ignore[no-untyped-call]
        target = session.get_redirect_target(response)
        if target is None:
            return response
        response.close()
        hops += 1
        if hops > MAX_REDIRECTS:
            raise fetch_error(url, f"more than {MAX_REDIRECTS} redirects")
        previous_host = host
        hop_url = requote_uri(urljoin(hop_url, target))


def _content_length(response: requests.Response) -> int | None:
    """The declared body size, or None when absent or unreadable (the stream limit still holds)."""
    value = response.headers.get("Content-Length")
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        return None


def _save(
    url: str,
    response: requests.Response,
    guard: Guard,
    dest: str | os.PathLike[str] | None,
    max_bytes: int,
    overwrite: bool,
) -> Path:
    """Sniff the first bytes, stream the body beside the destination, then put it in place."""
    chunks = response.iter_content(_CHUNK_BYTES)
    try:
        head = _head(url, chunks, max_bytes)
    except requests.RequestException as exc:
        raise guard.request_error(url, exc) from exc
    fmt = _sniff_format(head)
    if fmt is None:
        if guard.expired:
            raise guard.timed_out()
        raise _not_an_image(url, head, response)
    path = _destination(url, dest, fmt)
    assert path is not None  # the format is known
    if not overwrite and os.path.lexists(path):
        raise _exists(url, path)
    try:
        fd, tmp = _open_temp(path)
    except OSError as exc:
        raise fetch_error(url, f"cannot write {path}: {exc}") from exc
    try:
        with open(fd, "wb") as out:
            out.write(head)
            _copy_body(url, chunks, out, len(head), max_bytes)
            out.flush()
            os.fsync(out.fileno())
        guard.stop()
        if guard.expired:  # a body cut short by the watchdog may look complete
            raise guard.timed_out()
        _install(url, tmp, path, overwrite)
    except requests.RequestException as exc:  # before OSError: it subclasses it
        tmp.unlink(missing_ok=True)
        raise guard.request_error(url, exc) from exc
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise fetch_error(url, f"cannot write {path}: {exc}") from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def _head(url: str, chunks: Iterator[Any], max_bytes: int) -> bytes:
    """The first bytes of the body (at least ``_SNIFF_BYTES`` unless the body is shorter)."""
    head = b""
    for chunk in chunks:
        head += _as_bytes(chunk)
        if len(head) > max_bytes:
            raise fetch_error(url, f"body exceeds the limit of {max_bytes} bytes")
        if len(head) >= _SNIFF_BYTES:
            break
    return head


def _as_bytes(chunk: object) -> bytes:
    if not isinstance(chunk, bytes):  # only decode_unicode=True yields str
        raise TypeError("expected bytes from iter_content")
    return chunk


def _copy_body(
    url: str, chunks: Iterator[Any], out: BinaryIO, written: int, max_bytes: int
) -> None:
    for chunk in chunks:
        written += len(_as_bytes(chunk))
        if written > max_bytes:
            raise fetch_error(url, f"body exceeds the limit of {max_bytes} bytes")
        out.write(chunk)


def _install(url: str, tmp: Path, path: Path, overwrite: bool) -> None:
    """Move the finished file into place; without ``overwrite``, never over an existing file."""
    if overwrite:
        os.replace(tmp, path)
        return
    try:
        os.link(tmp, path)  # atomic, and fails if `path` exists, even if it appeared just now
    except FileExistsError:
        raise _exists(url, path) from None
    except OSError:  # a filesystem without hard links: check, then rename
        if os.path.lexists(path):
            raise _exists(url, path) from None
        os.replace(tmp, path)
        return
    tmp.unlink()


# ---------------------------------------------------------------------- formats and names

_EXTENSIONS = {
    "PNG": ".png",
    "JPEG": ".jpg",
    "GIF": ".gif",
    "BMP": ".bmp",
    "WebP": ".webp",
    "TIFF": ".tif",
    "PBM": ".pbm",
    "PGM": ".pgm",
    "PPM": ".ppm",
    "PAM": ".pam",
}
_PNM = {b"1": "PBM", b"2": "PGM", b"3": "PPM", b"4": "PBM", b"5": "PGM", b"6": "PPM", b"7": "PAM"}
_BMP_HEADER_SIZES = {12, 16, 40, 52, 56, 64, 108, 124}
_TIFF = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # and BigTIFF


def _sniff_format(head: bytes) -> str | None:
    """The image format ``head`` (a body's first bytes) starts with, or None.

    Only signatures: ``zimg.images`` checks the header itself when the file is decoded.
    """
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if head[:2] == b"BM" and int.from_bytes(head[14:18], "little") in _BMP_HEADER_SIZES:
        return "BMP"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WebP"
    if head[:4] in _TIFF:
        return "TIFF"
    if head[:1] == b"P" and head[1:2] in _PNM and head[2:3] in (b" ", b"\t", b"\n", b"\r"):
        return _PNM[head[1:2]]
    return None


def _not_an_image(url: str, head: bytes, response: requests.Response) -> FetchError:
    content_type = response.headers.get("Content-Type", "").strip()
    declared = f"Content-Type {content_type!r}" if content_type else "no Content-Type"
    if not head:
        return fetch_error(url, f"the body is empty ({declared})")
    return fetch_error(
        url,
        "the body is not an image (PNG, JPEG, GIF, BMP, WebP, TIFF or PNM): it starts with "
        f"{head[:16]!r} ({declared})",
    )


def _destination(url: str, dest: str | os.PathLike[str] | None, fmt: str | None) -> Path | None:
    """Where to write; None while it depends on the format (not known yet)."""
    if dest is not None and not Path(dest).is_dir():
        return Path(dest)
    name = _filename(url, fmt)
    if name is None:
        return None
    return Path(name) if dest is None else Path(dest) / name


def _filename(url: str, fmt: str | None) -> str | None:
    """The last segment of the URL's path, or "download" plus the format's extension."""
    segment = unquote(urlsplit(url).path.rsplit("/", 1)[-1])
    # An encoded slash or a backslash must not lead out of the destination directory.
    name = segment.replace("\\", "/").rsplit("/", 1)[-1]
    if name not in ("", ".", "..") and "\0" not in name:
        return name
    return None if fmt is None else _FALLBACK_STEM + _EXTENSIONS[fmt]


def _open_temp(path: Path) -> tuple[int, Path]:
    """Create a new file in `path`'s directory; os.open's 0o666 lets the umask apply."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    while True:
        tmp = path.with_name(f".{path.name[:64]}.{secrets.token_hex(6)}.part")
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue


# ---------------------------------------------------------------------- errors


def _exists(url: str, path: Path) -> FetchError:
    return fetch_error(url, f"{path} already exists; --force (overwrite=True) replaces it")
