"""Tests for zimg.fetch against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import cv2
import numpy as np
import pytest
import requests

from zimg._errors import FetchError
from zimg.fetch import fetch

pytestmark = pytest.mark.timeout(15)

SMALL_LIMIT = 1000  # bytes; the "big" endpoints serve more than this
BIG_BODY = bytes(range(256)) * 32  # 8 KiB
SHORT_TIMEOUT_S = 0.3
HANG_S = 10.0  # how long a stalling endpoint would wait if the test never ended


def _make_png() -> bytes:
    gradient = np.tile(np.arange(0, 256, 16, dtype=np.uint8), (16, 1))
    ok, encoded = cv2.imencode(".png", gradient)
    assert ok
    return encoded.tobytes()


PNG = _make_png()


@dataclass
class Server:
    base_url: str
    user_agents: list[str] = field(default_factory=list)

    def url(self, path: str) -> str:
        return self.base_url + path


def _make_handler(stop: threading.Event, server: Server) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # needed for the chunked endpoint

        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            server.user_agents.append(self.headers.get("User-Agent", ""))
            path = urlsplit(self.path).path
            route = self.routes().get(path)
            if route is None and path.startswith("/files/"):
                route = self.any_png
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
            }

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


@pytest.fixture
def server() -> Iterator[Server]:
    stop = threading.Event()
    state = Server(base_url="")
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(stop, state))
    host, port = httpd.server_address[:2]
    state.base_url = f"http://{host!s}:{port}"
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


def test_replaces_existing_file(server: Server, dest_dir: Path) -> None:
    target = dest_dir / "copy.png"
    target.write_bytes(b"old")
    fetch(server.url("/img.png"), target)
    assert target.read_bytes() == PNG
    assert _leftovers(dest_dir) == ["copy.png"]


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
    assert isinstance(info.value.__cause__, requests.Timeout)
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
        ("/page.html", "'text/html; charset=utf-8'"),
        ("/untyped", "no Content-Type"),
    ],
)
def test_non_image_content_type(server: Server, dest_dir: Path, path: str, described: str) -> None:
    url = server.url(path)
    with pytest.raises(FetchError) as info:
        fetch(url, dest_dir)
    message = str(info.value)
    assert url in message
    assert "image/*" in message
    assert described in message
    assert _leftovers(dest_dir) == []


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
