"""The dashboard's web app (Starlette): the page, its live feed, ``/api/status`` and the front door.

Routes:

- ``GET /``: the page (``static/index.html``), whose script builds every element with
  ``textContent``, under a Content-Security-Policy that allows only this origin's script;
- ``GET /static/...``: the script and style, from the package (no CDN: it works offline);
- ``GET /api/status``: the status as JSON (see ``docs/dashboard.md``);
- ``GET /events``: the same, pushed as server-sent events whenever it changes;
- ``GET /thumb/ID``: a recent result's thumbnail (the sending side's page);
- ``POST /v1/process?op=...``: the front door (when the server has one).

With a token, every request must carry it (``?token=`` or ``Authorization: Bearer``).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qs, quote, unquote_to_bytes

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from zimg.dashboard._front_door import FrontDoor, error, too_large
from zimg.dashboard._status import StatusModel

__all__ = ["Hub", "create_app"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_SSE_CHECK_S = 0.2  # how often a live feed looks for a new status
_SSE_KEEPALIVE_S = 15.0


class Hub:
    """The model behind a lock, its JSON cached per version, and the live-feed count.

    Args:
        model: the status model (fed from other threads, under :attr:`lock`).
        max_clients: live feeds served at once; more are refused (counted) with 503.
    """

    def __init__(self, model: StatusModel, *, max_clients: int = 16) -> None:
        self.model = model
        self.lock = threading.Lock()
        self.max_clients = max_clients
        self.clients = 0
        self.refused = 0
        self.stopping = False
        self.front_door: FrontDoor | None = None
        self._cached: tuple[int, str] = (-1, "")

    def status_json(self) -> tuple[int, str]:
        """The current version and the status as JSON text."""
        with self.lock:
            version = self.model.version
            if self._cached[0] != version:
                self.model.extra["live"] = {"clients": self.clients, "refused": self.refused}
                if self.front_door is not None:
                    self.model.extra["front_door"] = dict(self.front_door.stats)
                # default=str: a value of a type JSON lacks (bytes from a peer) is shown as text
                text = json.dumps(self.model.snapshot(), default=str)
                self._cached = (version, text)
            return self._cached

    def thumb(self, rid: int) -> tuple[bytes, str] | None:
        with self.lock:
            return self.model.thumbs.get(rid)

    def enter(self) -> bool:
        with self.lock:
            if self.clients >= self.max_clients:
                self.refused += 1
                self.model.version += 1
                return False
            self.clients += 1
            self.model.version += 1
            return True

    def leave(self) -> None:
        with self.lock:
            self.clients -= 1
            self.model.version += 1


def create_app(hub: Hub, *, token: str | None = None) -> ASGIApp:
    """The ASGI app serving ``hub``'s status (and its front door, if it has one)."""
    from importlib import resources

    static = resources.files("zimg.dashboard") / "static"
    index = str(static / "index.html")

    async def page(request: Request) -> Response:
        return FileResponse(index, media_type="text/html; charset=utf-8")

    async def status(request: Request) -> Response:
        _, text = hub.status_json()
        return Response(text, media_type="application/json")

    async def events(request: Request) -> Response:
        if not hub.enter():
            return JSONResponse(
                {"error": f"{hub.max_clients} live views are open already", "status": 503},
                status_code=503,
                headers={"Retry-After": "5"},
            )
        return StreamingResponse(
            _feed(hub),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    async def thumb(request: Request) -> Response:
        found = hub.thumb(request.path_params["rid"])
        if found is None:
            return JSONResponse({"error": "no such thumbnail", "status": 404}, status_code=404)
        return Response(found[0], media_type=found[1])

    async def process(request: Request) -> Response:
        door = hub.front_door
        if door is None:
            reply = error(404, "this dashboard has no front door (it runs with --no-front-door)")
        else:
            body = await _read_body(request, door.max_body_bytes)
            if body is None:
                reply = door.counted(too_large(door.max_body_bytes))
            else:
                ops = request.query_params.getlist("op")
                reply = await run_in_threadpool(door.process, body, ops)
        return Response(reply.body, reply.status, reply.headers, reply.media_type)

    app = Starlette(
        routes=[
            Route("/", page),
            Route("/api/status", status),
            Route("/events", events),
            Route("/thumb/{rid:int}", thumb),
            Route("/v1/process", process, methods=["POST"]),
            Mount("/static", StaticFiles(packages=[("zimg.dashboard", "static")])),
        ]
    )
    return _guard(app, token)


async def _feed(hub: Hub) -> AsyncIterator[str]:
    """The live feed: the status whenever it changes, a comment now and then to keep it open."""
    last = -1
    quiet = 0.0
    try:
        while not hub.stopping:
            version, text = hub.status_json()
            if version != last:
                last, quiet = version, 0.0
                yield f"data: {text}\n\n"
            elif quiet >= _SSE_KEEPALIVE_S:
                quiet = 0.0
                yield ": keep-alive\n\n"
            await asyncio.sleep(_SSE_CHECK_S)
            quiet += _SSE_CHECK_S
    finally:
        hub.leave()


async def _read_body(request: Request, limit: int) -> bytes | None:
    """The request body, or None once it passes ``limit`` bytes (read no further)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        return None
    chunks = bytearray()
    try:
        async for chunk in request.stream():
            chunks += chunk
            if len(chunks) > limit:
                return None
    except ClientDisconnect:
        return b""
    return bytes(chunks)


def _guard(app: ASGIApp, token: str | None) -> ASGIApp:
    """Check the token on every HTTP request (if there is one) and add the security headers."""
    expected = None if token is None else token.encode()

    async def guarded(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        via = None if expected is None else _token_via(scope, expected)
        if expected is not None and via is None:
            body = b'{"error": "a valid token is required (?token= or Authorization: Bearer)"}'
            await _respond(send, 401, body)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [
                    (b"content-security-policy", _CSP.encode()),
                    (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"no-referrer"),
                ]
                if via == "query" and expected is not None:
                    # The page's script, style, feed and thumbnails then carry it as a cookie.
                    cookie = b"zimg_token=" + quote(expected).encode()
                    headers.append((b"set-cookie", cookie + b"; HttpOnly; SameSite=Strict; Path=/"))
                message["headers"] = headers
            await send(message)

        await app(scope, receive, with_headers)

    return guarded


def _token_via(scope: Scope, expected: bytes) -> str | None:
    """How the request carried the right token: ``header``, ``cookie`` or ``query``; None if
    it did not (each candidate compared in constant time)."""
    for name, value in scope.get("headers", []):
        if name == b"authorization" and value[:7].lower() == b"bearer ":
            if hmac.compare_digest(value[7:].strip(), expected):
                return "header"
        elif name == b"cookie":
            for part in value.split(b";"):
                key, _, given = part.strip().partition(b"=")
                if key == b"zimg_token" and hmac.compare_digest(unquote_to_bytes(given), expected):
                    return "cookie"
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    for given in query.get("token", []):
        if hmac.compare_digest(given.encode("utf-8", "replace"), expected):
            return "query"
    return None


async def _respond(send: Send, status: int, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
