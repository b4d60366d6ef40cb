"""Tests for zimg.fetch against real HTTP servers on 127.0.0.1 (and 127.0.0.2).

The servers are loopback addresses, which fetch refuses by default: most tests allow 127.0.0.1
alone (``allowed_networks``), so that a redirect to 127.0.0.2 is still checked and refused.
"""

from __future__ import annotations

import contextlib
import ipaddress
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import cv2
import numpy as np
import pytest
import requests
from typer.testing import CliRunner

from zimg import _fetch_guard as fetch_guard
from zimg import fetch as fetch_module
from zimg._errors import FetchError
from zimg.cli import app

pytestmark = pytest.mark.timeout(15)

SMALL_LIMIT = 1000  # bytes; the "big" endpoints serve more than this
SHORT_TIMEOUT_S = 0.3
DEADLINE_S = 1.0  # the drip endpoints would take DRIP_STEPS * DRIP_PAUSE_S = 4 s
DRIP_STEPS = 40
DRIP_PAUSE_S = 0.1
HANG_S = 10.0  # how long a stalling endpoint would wait if the test never ended
ALLOW_LOOPBACK_1 = ["127.0.0.1/32"]  # the test server's address, and no other


def _encode(ext: str, image: np.ndarray[Any, Any]) -> bytes:
    ok, encoded = cv2.imencode(ext, image)
    assert ok
    return encoded.tobytes()


GRADIENT = np.tile(np.arange(0, 256, 16, dtype=np.uint8), (16, 1))
PNG = _encode(".png", GRADIENT)
BIG_BODY = PNG + bytes(range(256)) * 32  # over 8 KiB, and an image by its signature
FORMATS = {  # the bytes fetch must recognise, and the extension of a name it makes up
    "png": (PNG, ".png"),
    "jpeg": (_encode(".jpg", GRADIENT), ".jpg"),
    "gif": (_encode(".gif", cv2.cvtColor(GRADIENT, cv2.COLOR_GRAY2BGR)), ".gif"),
    "bmp": (_encode(".bmp", GRADIENT), ".bmp"),
    "webp": (_encode(".webp", cv2.cvtColor(GRADIENT, cv2.COLOR_GRAY2BGR)), ".webp"),
    "tiff-ii": (_encode(".tiff", GRADIENT), ".tif"),
    "tiff-mm": (b"MM\x00*\x00\x00\x00\x08" + bytes(32), ".tif"),
    "pgm": (_encode(".pgm", GRADIENT), ".pgm"),
    "ppm": (_encode(".ppm", cv2.cvtColor(GRADIENT, cv2.COLOR_GRAY2BGR)), ".ppm"),
    "pbm": (_encode(".pbm", GRADIENT), ".pbm"),
}
NOT_IMAGES = {
    "html": b"<!doctype html><html><body>login</body></html>",
    "svg": b'<svg xmlns="http://www.w3.org/2000/svg" width="1" height="1"/>',
    "json": b'{"error": "not found"}',
    "bm-text": b"BMW is a car, not a bitmap, whatever the first two bytes say",
    "empty": b"",
}


def fetch(url: str, dest: Any = None, **kwargs: Any) -> Path:
    """zimg.fetch.fetch, allowed to reach the test server's 127.0.0.1 (and nothing else)."""
    kwargs.setdefault("allowed_networks", ALLOW_LOOPBACK_1)
    return fetch_module.fetch(url, dest, **kwargs)


@dataclass
class Server:
    base_url: str
    user_agents: list[str] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    hosts: list[str] = field(default_factory=list)

    def url(self, path: str) -> str:
        return self.base_url + path


def _make_handler(stop: threading.Event, server: Server) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # needed for the chunked endpoint

        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            server.user_agents.append(self.headers.get("User-Agent", ""))
            server.paths.append(self.path)
            server.hosts.append(self.headers.get("Host", ""))
            path = urlsplit(self.path).path
            route = self.routes().get(path)
            if route is None and path.startswith("/files/"):
                route = self.any_png
            if route is None and path.startswith("/format/"):
                route = self.format
            if route is None and path.startswith("/not-image/"):
                route = self.not_image
            try:
                if route is None:
                    self.send_error(404, "Not Found")
                else:
                    route()
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up first, as several tests intend

        def routes(self) -> dict[str, Callable[[], None]]:
            return {
                "/img.png": lambda: self.reply(PNG, "image/png"),
                "/gallery/": lambda: self.reply(PNG, "image/png"),
                "/page.html": lambda: self.reply(b"<html>hi</html>", "text/html; charset=utf-8"),
                "/untyped": lambda: self.reply(PNG, None),
                "/big.png": lambda: self.reply(BIG_BODY, "image/png"),
                "/big-chunked.png": self.big_chunked,
                "/big-unsized.png": self.big_unsized,
                "/claims-huge.png": self.claims_huge,
                "/truncated.png": self.truncated,
                "/slow.png": self.slow,
                "/stalls.png": self.stalls,
                "/html-as-png": lambda: self.reply(NOT_IMAGES["html"], "image/png"),
                "/png-as-html": lambda: self.reply(PNG, "text/html"),
                "/drip-body.png": self.drip_body,
                "/drip-headers.png": self.drip_headers,
                "/redirect": self.redirect,
                "/loop": lambda: self.redirect_to("/loop"),
            }

        def format(self) -> None:
            body, _ = FORMATS[urlsplit(self.path).path.rstrip("/").rsplit("/", 1)[-1]]
            self.reply(body, "application/octet-stream")

        def not_image(self) -> None:
            self.reply(NOT_IMAGES[self.path.rsplit("/", 1)[-1]], "image/png")

        def redirect(self) -> None:
            [target] = parse_qs(urlsplit(self.path).query)["to"]
            self.redirect_to(target)

        def redirect_to(self, target: str) -> None:
            self.send_response(302)
            self.send_header("Location", target)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def drip_body(self) -> None:
            # A valid start, then 15 bytes every 0.1 s: each read waits far less than any
            # timeout, and the whole body takes 4 s.
            body = PNG + b"\0" * (15 * DRIP_STEPS)
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(PNG)
            for _ in range(DRIP_STEPS):
                self.wfile.flush()
                if stop.wait(DRIP_PAUSE_S):
                    return
                self.wfile.write(b"\0" * 15)

        def drip_headers(self) -> None:
            # The headers arrive one line every 0.1 s, then a complete answer.
            self.send_response(200)
            for i in range(DRIP_STEPS):
                self.send_header(f"X-Pad-{i}", "x")
                self.flush_headers()
                if stop.wait(DRIP_PAUSE_S):
                    return
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(PNG)))
            self.end_headers()
            self.wfile.write(PNG)

        def any_png(self) -> None:
            self.reply(PNG, "image/png")

        def reply(self, body: bytes, content_type: str | None) -> None:
            self.send_response(200)
            if content_type is not None:
                self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def big_chunked(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for start in range(0, len(BIG_BODY), 512):
                piece = BIG_BODY[start : start + 512]
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            self.wfile.write(b"0\r\n\r\n")

        def big_unsized(self) -> None:
            # No Content-Length and no chunking: the body ends when the connection closes.
            self.close_connection = True
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(BIG_BODY)

        def claims_huge(self) -> None:
            # Declares far more than any test allows, then sends nothing: reading would stall.
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(10**9))
            self.end_headers()
            self.wfile.flush()
            stop.wait(HANG_S)

        def truncated(self) -> None:
            self.close_connection = True
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(PNG) * 2))
            self.end_headers()
            self.wfile.write(PNG)

        def slow(self) -> None:
            if stop.wait(HANG_S):
                return
            self.reply(PNG, "image/png")

        def stalls(self) -> None:
            # Headers and part of the body arrive, then nothing.
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(PNG)))
            self.end_headers()
            self.wfile.write(PNG[:10])
            self.wfile.flush()
            stop.wait(HANG_S)

    return Handler


class _HTTPServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError | ssl.SSLError):
            return  # a client that gave up or refused the certificate, as tests intend
        super().handle_error(request, client_address)


@contextlib.contextmanager
def _serve(address: str, tls: ssl.SSLContext | None = None) -> Iterator[Server]:
    stop = threading.Event()
    state = Server(base_url="")
    httpd = _HTTPServer((address, 0), _make_handler(stop, state))
    if tls is not None:
        httpd.socket = tls.wrap_socket(httpd.socket, server_side=True)
    host, port = httpd.server_address[:2]
    state.base_url = f"{'https' if tls else 'http'}://{host!s}:{port}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield state
    finally:
        stop.set()  # release handlers stalled on purpose
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)
        assert not thread.is_alive()


@pytest.fixture
def server() -> Iterator[Server]:
    with _serve("127.0.0.1") as state:
        yield state


@pytest.fixture
def other_server() -> Iterator[Server]:
    """A second server, on another loopback address (Linux routes all of 127/8 to lo)."""
    with _serve("127.0.0.2") as state:
        yield state


@pytest.fixture
def dest_dir(tmp_path: Path) -> Path:
    out = tmp_path / "out"
    out.mkdir()
    return out


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


# --- success ---------------------------------------------------------------------------------


def test_writes_identical_bytes_to_given_path(server: Server, dest_dir: Path) -> None:
    target = dest_dir / "copy.png"
    result = fetch(server.url("/img.png"), target)
    assert result == target
    assert target.read_bytes() == PNG
    assert _leftovers(dest_dir) == ["copy.png"]


def test_accepts_str_dest(server: Server, dest_dir: Path) -> None:
    result = fetch(server.url("/img.png"), str(dest_dir / "copy.png"))
    assert result == dest_dir / "copy.png"
    assert result.read_bytes() == PNG


def test_existing_directory_gets_url_filename(server: Server, dest_dir: Path) -> None:
    result = fetch(server.url("/img.png"), dest_dir)
    assert result == dest_dir / "img.png"
    assert result.read_bytes() == PNG
    assert _leftovers(dest_dir) == ["img.png"]


def test_no_dest_writes_to_current_directory(
    server: Server, dest_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(dest_dir)
    result = fetch(server.url("/img.png"))
    assert result.resolve() == (dest_dir / "img.png").resolve()
    assert (dest_dir / "img.png").read_bytes() == PNG


def test_empty_last_segment_falls_back_to_download_with_extension(
    server: Server, dest_dir: Path
) -> None:
    result = fetch(server.url("/gallery/"), dest_dir)
    assert result == dest_dir / "download.png"
    assert result.read_bytes() == PNG


def test_query_string_is_not_part_of_filename(server: Server, dest_dir: Path) -> None:
    result = fetch(server.url("/files/photo.png?size=large#top"), dest_dir)
    assert result == dest_dir / "photo.png"
    assert result.read_bytes() == PNG


def test_encoded_slashes_cannot_leave_dest_directory(server: Server, dest_dir: Path) -> None:
    result = fetch(server.url("/files/..%2F..%2Fevil.png"), dest_dir)
    assert result == dest_dir / "evil.png"
    assert _leftovers(dest_dir) == ["evil.png"]
    assert _leftovers(dest_dir.parent) == ["out"]


def test_replaces_existing_file_when_told_to(server: Server, dest_dir: Path) -> None:
    target = dest_dir / "copy.png"
    target.write_bytes(b"old")
    fetch(server.url("/img.png"), target, overwrite=True)
    assert target.read_bytes() == PNG
    assert _leftovers(dest_dir) == ["copy.png"]


@pytest.mark.parametrize("as_directory", [False, True], ids=["file", "directory"])
def test_refuses_to_overwrite_an_existing_file_before_any_request(
    server: Server, dest_dir: Path, as_directory: bool
) -> None:
    target = dest_dir / "img.png"
    target.write_bytes(b"old")
    with pytest.raises(FetchError, match=r"img\.png already exists; --force"):
        fetch(server.url("/img.png"), dest_dir if as_directory else target)
    assert target.read_bytes() == b"old"
    assert _leftovers(dest_dir) == ["img.png"]
    assert server.paths == []  # refused before downloading anything


def test_refuses_to_overwrite_a_name_made_from_the_format(server: Server, dest_dir: Path) -> None:
    # The name "download.png" is known only once the bytes say PNG.
    (dest_dir / "download.png").write_bytes(b"old")
    with pytest.raises(FetchError, match="already exists"):
        fetch(server.url("/gallery/"), dest_dir)
    assert (dest_dir / "download.png").read_bytes() == b"old"
    assert _leftovers(dest_dir) == ["download.png"]


def test_a_file_appearing_during_the_download_is_not_replaced(
    server: Server, dest_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = dest_dir / "img.png"
    real_copy = fetch_module._copy_body

    def copy_then_race(*args: Any) -> None:
        real_copy(*args)
        target.write_bytes(b"someone else's")  # after the early checks, before the rename

    monkeypatch.setattr(fetch_module, "_copy_body", copy_then_race)
    with pytest.raises(FetchError, match="already exists"):
        fetch(server.url("/img.png"), dest_dir)
    assert target.read_bytes() == b"someone else's"
    assert _leftovers(dest_dir) == ["img.png"]


def test_a_symlink_in_the_way_counts_as_existing(server: Server, dest_dir: Path) -> None:
    (dest_dir / "img.png").symlink_to(dest_dir / "nowhere")
    with pytest.raises(FetchError, match="already exists"):
        fetch(server.url("/img.png"), dest_dir)
    assert not (dest_dir / "nowhere").exists()


def test_uses_and_keeps_open_a_given_session(server: Server, dest_dir: Path) -> None:
    with requests.Session() as session:
        session.headers["User-Agent"] = "zimg-test/1"
        fetch(server.url("/img.png"), dest_dir / "a.png", session=session)
        fetch(server.url("/img.png"), dest_dir / "b.png", session=session)
    assert server.user_agents == ["zimg-test/1", "zimg-test/1"]
    assert (dest_dir / "b.png").read_bytes() == PNG


def test_body_exactly_at_limit_is_accepted(server: Server, dest_dir: Path) -> None:
    result = fetch(server.url("/img.png"), dest_dir, max_bytes=len(PNG))
    assert result.read_bytes() == PNG


# --- refused before any request --------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "got"),
    [
        ("ftp://example.com/a.png", "scheme 'ftp'"),
        ("file:///etc/passwd", "scheme 'file'"),
        ("example.com/a.png", "no scheme"),
    ],
)
def test_rejects_non_http_schemes(url: str, got: str, dest_dir: Path) -> None:
    with pytest.raises(FetchError) as info:
        fetch(url, dest_dir)
    message = str(info.value)
    assert url in message
    assert "http and https" in message
    assert got in message
    assert _leftovers(dest_dir) == []


def test_rejects_url_without_host(dest_dir: Path) -> None:
    with pytest.raises(FetchError, match="no host"):
        fetch("http:///a.png", dest_dir)


@pytest.mark.parametrize("kwargs", [{"timeout_s": 0}, {"timeout_s": -1.0}, {"max_bytes": -1}])
def test_rejects_bad_limits(kwargs: dict[str, float], dest_dir: Path) -> None:
    with pytest.raises(ValueError, match="must"):
        fetch("http://127.0.0.1/a.png", dest_dir, **kwargs)  # type: ignore[arg-type]


# --- network and HTTP errors -----------------------------------------------------------------


def test_connection_refused(dest_dir: Path) -> None:
    # A bound socket that never listens refuses connections, with no race for the port.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        url = f"http://127.0.0.1:{port}/img.png"
        with pytest.raises(FetchError) as info:
            fetch(url, dest_dir, timeout_s=2)
    message = str(info.value)
    assert url in message
    assert "connection failed" in message
    assert _leftovers(dest_dir) == []


def test_timeout_waiting_for_response(server: Server, dest_dir: Path) -> None:
    url = server.url("/slow.png")
    started = time.monotonic()
    with pytest.raises(FetchError) as info:
        fetch(url, dest_dir, timeout_s=SHORT_TIMEOUT_S)
    assert time.monotonic() - started < HANG_S / 2
    message = str(info.value)
    assert url in message
    assert f"timed out after {SHORT_TIMEOUT_S:g} s" in message
    assert _leftovers(dest_dir) == []


def test_timeout_while_reading_body_leaves_no_partial_file(server: Server, dest_dir: Path) -> None:
    url = server.url("/stalls.png")
    with pytest.raises(FetchError) as info:
        fetch(url, dest_dir, timeout_s=SHORT_TIMEOUT_S)
    assert url in str(info.value)
    assert "timed out" in str(info.value)
    assert _leftovers(dest_dir) == []


def test_http_404(server: Server, dest_dir: Path) -> None:
    url = server.url("/nope.png")
    with pytest.raises(FetchError) as info:
        fetch(url, dest_dir)
    assert url in str(info.value)
    assert "HTTP 404 Not Found" in str(info.value)
    assert _leftovers(dest_dir) == []


@pytest.mark.parametrize(
    ("path", "described"),
    [
        ("/page.html", "Content-Type 'text/html; charset=utf-8'"),
        ("/html-as-png", "Content-Type 'image/png'"),
    ],
)
def test_a_body_that_is_not_an_image_is_refused_whatever_its_type(
    server: Server, dest_dir: Path, path: str, described: str
) -> None:
    url = server.url(path)
    with pytest.raises(FetchError) as info:
        fetch(url, dest_dir)
    message = str(info.value)
    assert url in message
    assert "not an image" in message
    assert "b'<" in message  # the first bytes, as a repr
    assert described in message
    assert _leftovers(dest_dir) == []


@pytest.mark.parametrize("kind", sorted(NOT_IMAGES))
def test_sniffing_refuses_non_images_served_as_png(
    server: Server, dest_dir: Path, kind: str
) -> None:
    with pytest.raises(FetchError, match="body is empty" if kind == "empty" else "not an image"):
        fetch(server.url(f"/not-image/{kind}"), dest_dir)
    assert _leftovers(dest_dir) == []


@pytest.mark.parametrize("path", ["/untyped", "/png-as-html"])
def test_an_image_is_accepted_whatever_its_content_type(
    server: Server, dest_dir: Path, path: str
) -> None:
    assert fetch(server.url(path), dest_dir / "x.png").read_bytes() == PNG


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_every_format_opencv_reads_is_recognised_and_named(
    server: Server, dest_dir: Path, fmt: str
) -> None:
    body, ext = FORMATS[fmt]
    result = fetch(server.url(f"/format/{fmt}/"), dest_dir)
    assert result == dest_dir / f"download{ext}"
    assert result.read_bytes() == body


def test_content_length_over_limit(server: Server, dest_dir: Path) -> None:
    url = server.url("/big.png")
    with pytest.raises(FetchError) as info:
        fetch(url, dest_dir, max_bytes=SMALL_LIMIT)
    message = str(info.value)
    assert url in message
    assert f"Content-Length {len(BIG_BODY)} exceeds the limit of {SMALL_LIMIT} bytes" in message
    assert _leftovers(dest_dir) == []


def test_content_length_over_limit_is_refused_before_reading(
    server: Server, dest_dir: Path
) -> None:
    # The server sends no body at all: had fetch tried to read, it would time out instead.
    with pytest.raises(FetchError) as info:
        fetch(server.url("/claims-huge.png"), dest_dir, max_bytes=SMALL_LIMIT, timeout_s=5)
    assert "Content-Length 1000000000 exceeds" in str(info.value)
    assert _leftovers(dest_dir) == []


@pytest.mark.parametrize("path", ["/big-chunked.png", "/big-unsized.png"])
def test_streamed_body_over_limit_is_cut_and_deleted(
    server: Server, dest_dir: Path, path: str
) -> None:
    url = server.url(path)
    with pytest.raises(FetchError) as info:
        fetch(url, dest_dir, max_bytes=SMALL_LIMIT)
    message = str(info.value)
    assert url in message
    assert f"body exceeds the limit of {SMALL_LIMIT} bytes" in message
    assert _leftovers(dest_dir) == []


@pytest.mark.parametrize("path", ["/big-chunked.png", "/big-unsized.png"])
def test_streamed_body_within_limit_is_written(server: Server, dest_dir: Path, path: str) -> None:
    result = fetch(server.url(path), dest_dir)
    assert result.read_bytes() == BIG_BODY


def test_truncated_body_leaves_no_partial_file(server: Server, dest_dir: Path) -> None:
    url = server.url("/truncated.png")
    with pytest.raises(FetchError) as info:
        fetch(url, dest_dir)
    assert url in str(info.value)
    assert _leftovers(dest_dir) == []


def test_failure_keeps_existing_file_intact(server: Server, dest_dir: Path) -> None:
    target = dest_dir / "keep.png"
    target.write_bytes(b"old")
    with pytest.raises(FetchError):
        fetch(server.url("/big-chunked.png"), target, max_bytes=SMALL_LIMIT)
    assert target.read_bytes() == b"old"
    assert _leftovers(dest_dir) == ["keep.png"]


def test_missing_parent_directory_is_a_fetch_error(server: Server, tmp_path: Path) -> None:
    target = tmp_path / "no-such-dir" / "img.png"
    with pytest.raises(FetchError) as info:
        fetch(server.url("/img.png"), target)
    assert "cannot write" in str(info.value)
    assert str(target) in str(info.value)
    assert not target.parent.exists()


# --- one deadline for the whole download -----------------------------------------------------


@pytest.mark.parametrize("path", ["/drip-body.png", "/drip-headers.png"])
def test_the_timeout_is_a_deadline_for_the_whole_download(
    server: Server, dest_dir: Path, path: str
) -> None:
    # Every read gets data within 0.1 s, so a per-read timeout never fires; the whole answer
    # takes 4 s. The deadline must stop it at DEADLINE_S.
    started = time.monotonic()
    with pytest.raises(FetchError) as info:
        fetch(server.url(path), dest_dir, timeout_s=DEADLINE_S)
    elapsed = time.monotonic() - started
    assert f"timed out after {DEADLINE_S:g} s" in str(info.value)
    assert elapsed < DEADLINE_S + 1.0, elapsed
    assert _leftovers(dest_dir) == []


def test_the_deadline_covers_a_redirect_chain(server: Server, dest_dir: Path) -> None:
    url = server.url("/redirect?to=" + quote(server.url("/drip-body.png"), safe=""))
    started = time.monotonic()
    with pytest.raises(FetchError, match="timed out"):
        fetch(url, dest_dir, timeout_s=DEADLINE_S)
    assert time.monotonic() - started < DEADLINE_S + 1.0


def test_a_stuck_resolver_cannot_pass_the_deadline(
    dest_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    release = threading.Event()

    def stuck(host: str, port: int) -> list[Any]:
        release.wait(HANG_S)
        return []

    monkeypatch.setattr(fetch_guard, "resolve_host", stuck)
    started = time.monotonic()
    try:
        with pytest.raises(FetchError, match=r"timed out after 0\.3 s"):
            fetch("http://slow-dns.test/a.png", dest_dir, timeout_s=SHORT_TIMEOUT_S)
        assert time.monotonic() - started < SHORT_TIMEOUT_S + 1.0
    finally:
        release.set()


# --- public addresses only -------------------------------------------------------------------


def _loopback_only_resolver(
    monkeypatch: pytest.MonkeyPatch, names: dict[str, list[str]]
) -> list[str]:
    """Make fetch resolve ``names`` as given (and nothing else); returns the names asked for."""
    asked: list[str] = []

    def resolve(host: str, port: int) -> list[Any]:
        asked.append(host)
        out = []
        for address in names[host]:
            ip = ipaddress.ip_address(address)
            if ip.version == 4:
                out.append((socket.AF_INET, (address, port)))
            else:
                out.append((socket.AF_INET6, (address, port, 0, 0)))
        return out

    monkeypatch.setattr(fetch_guard, "resolve_host", resolve)
    return asked


def test_a_loopback_url_is_refused_by_default(server: Server, dest_dir: Path) -> None:
    url = server.url("/img.png")
    with pytest.raises(FetchError) as info:
        fetch_module.fetch(url, dest_dir)
    message = str(info.value)
    assert url in message
    assert "127.0.0.1 is a loopback address" in message
    assert "--allow-private" in message
    assert server.paths == []  # not even connected to
    assert _leftovers(dest_dir) == []


def test_allow_private_reaches_loopback(server: Server, dest_dir: Path) -> None:
    result = fetch_module.fetch(server.url("/img.png"), dest_dir, allow_private=True)
    assert result.read_bytes() == PNG


def test_a_redirect_to_loopback_is_refused(
    server: Server, other_server: Server, dest_dir: Path
) -> None:
    # 127.0.0.1 is allowed explicitly; the redirect's 127.0.0.2 is checked on its own.
    target = other_server.url("/img.png")
    url = server.url("/redirect?to=" + quote(target, safe=""))
    with pytest.raises(FetchError) as info:
        fetch(url, dest_dir)
    message = str(info.value)
    assert message.startswith(f"cannot fetch {url}: redirected to {target}: ")
    assert "127.0.0.2 is a loopback address" in message
    assert server.paths == [urlsplit(url).path + "?" + urlsplit(url).query]
    assert other_server.paths == []  # never contacted
    assert _leftovers(dest_dir) == []


def test_allow_private_follows_a_redirect_to_loopback(
    server: Server, other_server: Server, dest_dir: Path
) -> None:
    url = server.url("/redirect?to=" + quote(other_server.url("/img.png"), safe=""))
    result = fetch_module.fetch(url, dest_dir / "x.png", allow_private=True)
    assert result.read_bytes() == PNG
    assert other_server.paths == ["/img.png"]


def test_a_redirect_to_a_name_is_checked_on_every_address(
    server: Server, dest_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = urlsplit(server.base_url).port
    asked = _loopback_only_resolver(
        monkeypatch, {"127.0.0.1": ["127.0.0.1"], "mixed.test": ["127.0.0.1", "10.1.2.3"]}
    )
    url = server.url("/redirect?to=" + quote(f"http://mixed.test:{port}/img.png", safe=""))
    with pytest.raises(FetchError) as info:
        fetch(url, dest_dir)
    assert "redirected to http://mixed.test:" in str(info.value)
    assert "mixed.test resolves to 10.1.2.3, a private address" in str(info.value)
    assert asked == ["127.0.0.1", "mixed.test"]
    assert len(server.paths) == 1  # the redirect only
    assert _leftovers(dest_dir) == []


def test_the_connection_goes_to_the_checked_address(
    server: Server, dest_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # DNS rebinding: a name that resolves to an allowed address when checked, then to another
    # one. fetch resolves once and connects to what it checked; the system resolver, which has
    # never heard of images.test, is not asked at all.
    answers = iter([["127.0.0.1"], ["10.0.0.1"], ["10.0.0.1"]])
    asked: list[str] = []

    def rebinding(host: str, port: int) -> list[Any]:
        asked.append(host)
        return [(socket.AF_INET, (a, port)) for a in next(answers)]

    monkeypatch.setattr(fetch_guard, "resolve_host", rebinding)
    port = urlsplit(server.base_url).port
    result = fetch(f"http://images.test:{port}/img.png", dest_dir)
    assert result.read_bytes() == PNG
    assert asked == ["images.test"]
    assert server.hosts == [f"images.test:{port}"]  # the Host header keeps the name


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("10.0.0.1", "private"),
        ("192.168.1.1", "private"),
        ("172.16.0.1", "private"),
        ("169.254.169.254", "link-local"),  # cloud metadata services
        ("224.0.0.1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("240.0.0.1", "reserved"),
        ("100.64.0.1", "non-global"),  # carrier-grade NAT
        ("::1", "loopback"),
        ("fe80::1", "link-local"),
        ("fc00::1", "private"),
        ("::", "unspecified"),
        ("::ffff:127.0.0.1", "loopback"),  # IPv4-mapped
        ("2002:7f00:1::", "leads to 127.0.0.1 (a loopback address)"),  # 6to4
        ("64:ff9b::a00:1", "reserved"),  # NAT64 of 10.0.0.1
    ],
)
def test_every_kind_of_non_public_address_is_refused(
    dest_dir: Path, monkeypatch: pytest.MonkeyPatch, address: str, kind: str
) -> None:
    _loopback_only_resolver(monkeypatch, {"target.test": [address]})
    with pytest.raises(FetchError) as info:
        fetch_module.fetch("http://target.test/a.png", dest_dir)
    assert f"target.test resolves to {ipaddress.ip_address(address)}," in str(info.value)
    assert kind in str(info.value)


@pytest.mark.parametrize("address", ["93.184.215.14", "8.8.8.8", "2606:4700::1111"])
def test_public_addresses_pass_the_check(address: str) -> None:
    assert fetch_guard.refusal(ipaddress.ip_address(address)) is None
    assert fetch_guard.embedded_ipv4(ipaddress.ip_address(address)) == []


def test_allowed_networks_admit_only_themselves(
    dest_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _loopback_only_resolver(monkeypatch, {"intranet.test": ["10.1.2.3", "10.9.9.9"]})
    with pytest.raises(FetchError, match=r"resolves to 10\.9\.9\.9, a private address"):
        fetch_module.fetch("http://intranet.test/a.png", dest_dir, allowed_networks=["10.1.2.0/24"])


@pytest.mark.parametrize(
    ("target", "got"), [("file:///etc/passwd", "scheme 'file'"), ("gopher://x/", "'gopher'")]
)
def test_a_redirect_to_another_scheme_is_refused(
    server: Server, dest_dir: Path, target: str, got: str
) -> None:
    url = server.url("/redirect?to=" + quote(target, safe=""))
    with pytest.raises(FetchError) as info:
        fetch(url, dest_dir)
    assert f"redirected to {target}" in str(info.value)
    assert got in str(info.value)


def test_a_redirect_loop_ends(server: Server, dest_dir: Path) -> None:
    with pytest.raises(FetchError, match=f"more than {fetch_module.MAX_REDIRECTS} redirects"):
        fetch(server.url("/loop"), dest_dir)
    assert len(server.paths) == fetch_module.MAX_REDIRECTS + 1


# --- the command line ------------------------------------------------------------------------

runner = CliRunner()


def _cli(*args: str) -> Any:
    return runner.invoke(app, ["fetch", *args], catch_exceptions=False)


def test_cli_refuses_loopback_in_one_line_with_exit_code_1(server: Server, dest_dir: Path) -> None:
    result = _cli(server.url("/img.png"), "-o", str(dest_dir))
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert lines[0].startswith("error: cannot fetch http://127.0.0.1:")
    assert "loopback" in lines[0]
    assert "Traceback" not in result.output


def test_cli_allow_private_and_force(server: Server, dest_dir: Path) -> None:
    url = server.url("/img.png")
    result = _cli(url, "-o", str(dest_dir), "--allow-private")
    assert result.exit_code == 0, result.output
    assert f"saved {dest_dir / 'img.png'}" in result.output
    again = _cli(url, "-o", str(dest_dir), "--allow-private")
    assert again.exit_code == 1
    assert "already exists; --force" in again.output
    forced = _cli(url, "-o", str(dest_dir), "--allow-private", "--force")
    assert forced.exit_code == 0, forced.output
    assert (dest_dir / "img.png").read_bytes() == PNG


@pytest.mark.parametrize(("args", "fragment"), [(["--timeout", "0"], "--timeout")])
def test_cli_bad_limits_are_usage_errors(dest_dir: Path, args: list[str], fragment: str) -> None:
    result = _cli("http://example.com/a.png", "-o", str(dest_dir), *args)
    assert result.exit_code == 2
    assert fragment in result.output


# --- TLS to a checked address ----------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A self-signed certificate for the name images.test (not for 127.0.0.1)."""
    if shutil.which("openssl") is None:
        pytest.skip("no openssl command to make a test certificate")
    folder = tmp_path_factory.mktemp("tls")
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-keyout", str(folder / "key.pem"), "-out", str(folder / "cert.pem")),
            *("-subj", "/CN=images.test", "-addext", "subjectAltName=DNS:images.test"),
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return folder


@pytest.fixture
def tls_server(certificate: Path) -> Iterator[Server]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certificate / "cert.pem", certificate / "key.pem")
    with _serve("127.0.0.1", tls=context) as state:
        yield state


@pytest.fixture
def trusting(certificate: Path) -> Iterator[requests.Session]:
    with requests.Session() as session:
        session.verify = str(certificate / "cert.pem")
        yield session


def test_https_goes_to_the_checked_address_and_checks_the_name(
    tls_server: Server,
    trusting: requests.Session,
    dest_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _loopback_only_resolver(monkeypatch, {"images.test": ["127.0.0.1"], "127.0.0.1": ["127.0.0.1"]})
    port = urlsplit(tls_server.base_url).port
    result = fetch(f"https://images.test:{port}/img.png", dest_dir, session=trusting)
    assert result.read_bytes() == PNG
    # The certificate is checked against the name, never against the address connected to.
    with pytest.raises(FetchError, match=r"certificate is not valid for '127\.0\.0\.1'"):
        fetch(tls_server.url("/img.png"), dest_dir / "by-address.png", session=trusting)
    # And against the trusted roots.
    with pytest.raises(FetchError, match="CERTIFICATE_VERIFY_FAILED"):
        fetch(f"https://images.test:{port}/img.png", dest_dir / "untrusted.png")


def test_the_deadline_holds_over_tls(
    tls_server: Server,
    trusting: requests.Session,
    dest_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _loopback_only_resolver(monkeypatch, {"images.test": ["127.0.0.1"]})
    port = urlsplit(tls_server.base_url).port
    started = time.monotonic()
    with pytest.raises(FetchError, match="timed out"):
        fetch(
            f"https://images.test:{port}/drip-body.png",
            dest_dir,
            session=trusting,
            timeout_s=DEADLINE_S,
        )
    assert time.monotonic() - started < DEADLINE_S + 1.0
    assert _leftovers(dest_dir) == []
