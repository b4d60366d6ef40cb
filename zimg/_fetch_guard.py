"""The address guard of ``zimg.fetch``: one deadline for a whole download, and connections only
to public addresses, each checked once and pinned (no second DNS lookup to rebind).

A :class:`Guard` resolves a host, refuses loopback, private, link-local, multicast, reserved and
other non-global addresses (also embedded in IPv6: NAT64, 6to4, Teredo, IPv4-mapped), pins the
addresses it checked, and shuts the connection down when the deadline passes; the requests
adapter :class:`PinnedAdapter` connects through it.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import threading
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import (
    ConnectTimeoutError,
    MaxRetryError,
    NewConnectionError,
    ReadTimeoutError,
)

from zimg._errors import FetchError

DEFAULT_PORTS = {"http": 80, "https": 443}


IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
SockAddr = tuple[Any, ...]
Pinned = list[tuple[socket.AddressFamily, SockAddr]]


def resolve_host(host: str, port: int) -> Pinned:
    """Every TCP address of ``host`` (the system resolver; tests replace this function)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    return [(f, addr) for f, _, _, _, addr in infos if f in (socket.AF_INET, socket.AF_INET6)]


def refusal(ip: IPAddress) -> str | None:
    """Why ``ip`` is not a public address, or None when it is one."""
    checks = (
        ("loopback", ip.is_loopback),
        ("unspecified", ip.is_unspecified),
        ("link-local", ip.is_link_local),
        ("multicast", ip.is_multicast),
        ("reserved", ip.is_reserved),  # before private: Python counts 240.0.0.0/4 as both
        ("private", ip.is_private),
        ("non-global", not ip.is_global),
    )
    for kind, applies in checks:
        if applies:
            return f"a {kind} address"
    return None


def embedded_ipv4(ip: IPAddress) -> list[ipaddress.IPv4Address]:
    """IPv4 addresses an IPv6 address leads to: mapped, 6to4, Teredo, NAT64 (64:ff9b::/96)."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return []
    found = [a for a in (ip.ipv4_mapped, ip.sixtofour) if a is not None]
    if ip.teredo is not None:
        found.extend(ip.teredo)
    if ip in NAT64:
        found.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    return found


NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


class Guard:
    """The deadline and the checked addresses of one download.

    The deadline is enforced two ways: every connect and read waits at most for the time left,
    and a timer shuts every connection down when the time is up (``socket.shutdown`` on a
    duplicate of its descriptor: a blocked read returns at once, with no race on the descriptor
    the HTTP stack closes).
    """

    def __init__(
        self, url: str, timeout_s: float, *, allow_private: bool, allowed: Sequence[IPNetwork]
    ) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self.allow_private = allow_private
        self.allowed = allowed
        self.deadline = time.monotonic() + timeout_s
        self.expired = False
        self._pins: dict[tuple[str, int], Pinned] = {}
        self._watched: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(timeout_s, self._expire)
        self._timer.daemon = True

    def __enter__(self) -> Guard:
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        with self._lock:
            watched, self._watched = self._watched, []
        for dup in watched:
            dup.close()

    def stop(self) -> None:
        """Stop the watchdog; ``expired`` is final afterwards."""
        self._timer.cancel()
        if self._timer.ident is not None:
            self._timer.join()

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            for dup in self._watched:
                with contextlib.suppress(OSError):
                    dup.shutdown(socket.SHUT_RDWR)

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def timed_out(self) -> FetchError:
        return fetch_error(self.url, f"timed out after {self.timeout_s:g} s (the whole download)")

    # -- resolving and checking

    def pin(self, hop_url: str, *, redirected: bool) -> None:
        """Resolve the host of ``hop_url``, check every address, and remember them for it."""
        parts = urlsplit(hop_url)
        host = parts.hostname or ""
        port = parts.port or DEFAULT_PORTS[parts.scheme.lower()]
        addresses = self._resolve(hop_url, host, port, redirected=redirected)
        if not addresses:
            raise self.refused(hop_url, f"{host} has no IPv4 or IPv6 address", redirected)
        for _, sockaddr in addresses:
            ip = ipaddress.ip_address(sockaddr[0].split("%", 1)[0])
            why = self._why_refused(ip)
            if why is not None:
                shown = f"{ip} is" if host_key(host) == str(ip) else f"{host} resolves to {ip},"
                reason = f"{shown} {why}; --allow-private (allow_private=True) allows it"
                raise self.refused(hop_url, reason, redirected)
        self._pins[(host_key(host), port)] = addresses

    def _resolve(self, hop_url: str, host: str, port: int, *, redirected: bool) -> Pinned:
        """``resolve_host`` in a daemon thread: a stuck resolver cannot pass the deadline."""
        result: list[Pinned] = []
        failure: list[Exception] = []

        def run() -> None:
            try:
                result.append(resolve_host(host, port))
            except Exception as exc:  # OSError, or UnicodeError for a name IDNA refuses
                failure.append(exc)

        thread = threading.Thread(target=run, name="zimg-fetch-resolve", daemon=True)
        thread.start()
        thread.join(max(0.0, self.left()))
        if thread.is_alive():
            raise self.timed_out()
        if failure:
            raise self.refused(hop_url, f"cannot resolve {host} ({failure[0]})", redirected)
        return list(dict.fromkeys(result[0]))

    def _allowed(self, ip: IPAddress) -> bool:
        return any(ip in n for n in self.allowed if n.version == ip.version)

    def _why_refused(self, ip: IPAddress) -> str | None:
        """Why ``ip`` may not be connected to, or None."""
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
        if self.allow_private or self._allowed(ip):
            return None
        why = refusal(ip)
        if why is not None:
            return why
        for inner in embedded_ipv4(ip):
            inner_why = refusal(inner)
            if inner_why is not None and not self._allowed(inner):
                return f"an address that leads to {inner} ({inner_why})"
        return None

    def request_error(self, url: str, exc: requests.RequestException) -> FetchError:
        """What a failed request means for the caller: the deadline passed, or the connection
        or the request failed (and why, from under requests' and urllib3's wrappers)."""
        # A read timeout while streaming the body surfaces as a ConnectionError wrapping urllib3's.
        timed_out = isinstance(exc, requests.Timeout) or any(
            isinstance(arg, ReadTimeoutError) for arg in exc.args
        )
        if timed_out or self.expired:
            return self.timed_out()
        if isinstance(exc, requests.ConnectionError):  # SSLError too
            return fetch_error(url, f"connection failed ({_cause(exc)})")
        return fetch_error(url, f"request failed ({type(exc).__name__}: {exc})")

    def refused(self, hop_url: str, reason: str, redirected: bool) -> FetchError:
        return fetch_error(self.url, f"redirected to {hop_url}: {reason}" if redirected else reason)

    # -- connecting

    def connect(self, conn: HTTPConnection) -> socket.socket:
        """A socket connected to one of the addresses checked for ``conn``'s host and port."""
        addresses = self._pins.get((host_key(conn.host), conn.port or 0))
        if addresses is None:  # fail closed: nothing unchecked is ever connected to
            raise NewConnectionError(conn, f"{conn.host}:{conn.port} was not checked")
        last: OSError | None = None
        for family, sockaddr in addresses:
            left = self.left()
            if left <= 0:
                raise ConnectTimeoutError(conn, f"no time left to connect to {sockaddr[0]}")
            sock = socket.socket(family, socket.SOCK_STREAM)
            try:
                for option in conn.socket_options or ():
                    sock.setsockopt(*option)
                self._watch(sock)
                sock.settimeout(left)
                sock.connect(sockaddr)
                sock.settimeout(max(self.left(), 0.001))  # bounds the TLS handshake too
            except TimeoutError as exc:
                sock.close()
                raise ConnectTimeoutError(conn, f"connecting to {sockaddr[0]} timed out") from exc
            except OSError as exc:
                sock.close()
                last = exc
                continue
            return sock
        raise NewConnectionError(conn, f"Failed to establish a new connection: {last}")

    def _watch(self, sock: socket.socket) -> None:
        dup = sock.dup()
        with self._lock:
            self._watched.append(dup)
            if self.expired:
                with contextlib.suppress(OSError):  # not connected yet: connect() then fails
                    dup.shutdown(socket.SHUT_RDWR)


def host_key(host: str) -> str:
    return host.strip("[]").rstrip(".").lower()


class PinnedAdapter(HTTPAdapter):
    """A transport whose connections go only to the addresses its guard checked."""

    def __init__(self, guard: Guard) -> None:
        self._guard = guard
        super().__init__(max_retries=0)

    def init_poolmanager(
        self, connections: int, maxsize: int, block: bool = False, **pool_kwargs: Any
    ) -> None:
        super().init_poolmanager(connections, maxsize, block, **pool_kwargs)
        guard = self._guard

        class Plain(HTTPConnection):
            def _new_conn(self) -> socket.socket:
                return guard.connect(self)

        class Secure(HTTPSConnection):
            def _new_conn(self) -> socket.socket:
                return guard.connect(self)

        class PlainPool(HTTPConnectionPool):
            ConnectionCls = Plain

        class SecurePool(HTTPSConnectionPool):
            ConnectionCls = Secure

        self.poolmanager.pool_classes_by_scheme = {"http": PlainPool, "https": SecurePool}


# ---------------------------------------------------------------------- the download


def fetch_error(url: str, reason: str) -> FetchError:
    return FetchError(f"cannot fetch {url}: {reason}")


def _cause(exc: requests.RequestException) -> str:
    """The reason under requests' and urllib3's wrappers ("Max retries exceeded ... Caused by")."""
    wrapped = exc.args[0] if exc.args else None
    if isinstance(wrapped, MaxRetryError) and wrapped.reason is not None:
        return str(wrapped.reason)
    return str(exc)
