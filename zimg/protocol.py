"""Protocol constants and small pure helpers shared by the broker and the nodes."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Collection, Mapping
from typing import Any

from zimg._errors import WireError

PROTOCOL_VERSION = 5
DEFAULT_BROKER_URL = "tcp://127.0.0.1:5555"
DEFAULT_HEARTBEAT_INTERVAL_S = 1.0
DEFAULT_LIVENESS = 3
DEFAULT_MAX_ATTEMPTS = 3
MAX_CAPACITY = 4096

# Why a HELLO was refused (REJECT ``code``). A node that is re-joining keeps trying after the
# retryable ones; on its first join every REJECT is final.
REJECT_INVALID = "invalid"
REJECT_VERSION = "version"
REJECT_KEY = "key"
REJECT_NAME_TAKEN = "name_taken"
REJECT_LIMIT = "limit"
# A broker of a failover pair that is passive: the node tries its next endpoint (§6.7).
REJECT_PASSIVE = "passive"
RETRYABLE_REJECTS = frozenset({REJECT_NAME_TAKEN, REJECT_LIMIT})

ROLE_WORKER = "worker"
ROLE_CLIENT = "client"
ROLES = (ROLE_WORKER, ROLE_CLIENT)

# Exit and down reasons that the system itself produces (Erlang's atoms, as strings).
NORMAL = "normal"
KILLED = "killed"
NOPROC = "noproc"
NOCONNECTION = "noconnection"
SYSTEM_LIMIT = "system_limit"  # a bound was reached (a refused WATCH, link or monitor)

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")


def check_name(name: object) -> str:
    """Return ``name`` if it is a valid node name, else raise ``ValueError``.

    A node name is 1 to 64 characters: letters, digits and ``_ . @ -``, starting with a letter or
    digit.
    """
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise ValueError(
            f"invalid node name {name!r}: use 1-64 letters, digits, '_', '.', '@' or '-', "
            "starting with a letter or digit"
        )
    return name


ENDPOINT_FORMS = "tcp://HOST:PORT (tcp://[::1]:PORT for IPv6), ipc://PATH or inproc://NAME"


def check_endpoint(url: str, *, bind: bool = False) -> str:
    """Return ``url`` if it is a ZeroMQ endpoint zimg can use, else raise ``ValueError``.

    Accepted: ``tcp://HOST:PORT`` (HOST a name, an IPv4 address or an IPv6 address in brackets,
    ``tcp://[::1]:5555``), ``ipc://PATH`` and ``inproc://NAME``. With ``bind``, HOST and PORT may
    also be ``*`` (every interface; a free port).

    Raises:
        ValueError: naming ``url`` and, where a likely fix exists, the fix.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        hint = f"did you mean tcp://{url}?" if ":" in url else f"use {ENDPOINT_FORMS}"
        raise ValueError(f"{url!r} is not an endpoint: {hint}")
    if scheme in ("ipc", "inproc"):
        if not rest:
            raise ValueError(f"{url!r} is not an endpoint: {scheme}:// needs a name after it")
        return url
    if scheme != "tcp":
        raise ValueError(f"{url!r} is not an endpoint zimg uses: use {ENDPOINT_FORMS}")
    host, colon, port = rest.rpartition(":")
    wild = bind and port == "*"
    if not colon or not host or not (wild or (port.isdigit() and int(port) <= 65535)):
        raise ValueError(f"{url!r} is not an endpoint: give a port, as in tcp://{rest}:5555")
    if host.startswith("["):
        try:
            ipaddress.IPv6Address(host.removeprefix("[").removesuffix("]"))
        except ValueError:
            raise ValueError(f"{url!r} is not an endpoint: {host} is not an IPv6 address") from None
        if not host.endswith("]"):
            raise ValueError(f"{url!r} is not an endpoint: close the bracket after {host}")
    elif ":" in host:
        raise ValueError(f"{url!r} is not an endpoint: did you mean tcp://[{host}]:{port}?")
    elif host == "*" and not bind:
        raise ValueError(f"{url!r} is not an endpoint: '*' is for binding; name the broker's host")
    elif "/" in host or " " in host or not host.isprintable():
        raise ValueError(f"{url!r} is not an endpoint: {host!r} is not a host")
    return url


def endpoint_host(url: str) -> str | None:
    """The host of a ``tcp://HOST:PORT`` endpoint, an IPv6 address without its brackets; None
    for ``ipc://`` and ``inproc://``, which name no host. (``url`` as :func:`check_endpoint`
    accepts it.)"""
    scheme, _, rest = url.partition("://")
    if scheme != "tcp":
        return None
    return rest.rpartition(":")[0].removeprefix("[").removesuffix("]")


def is_loopback_host(host: str) -> bool:
    """Does ``host`` name this machine only (``localhost``, 127.0.0.0/8, ``::1``)?"""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_loopback_endpoint(url: str) -> bool:
    """Is ``url`` reachable from this machine only (``ipc://``, ``inproc://`` or a loopback
    ``tcp://`` address; ``tcp://*:P`` and other hosts are not)?"""
    host = endpoint_host(url)
    return host is None or is_loopback_host(host)


def split_endpoints(urls: str) -> list[str]:
    """The endpoints of a comma-separated list (a failover pair: ``tcp://A:5555,tcp://B:5555``),
    in order, blanks dropped; a single endpoint is a list of one.

    Raises:
        ValueError: the list names no endpoint.
    """
    found = [u.strip() for u in urls.split(",") if u.strip()]
    if not found:
        raise ValueError(f"{urls!r} names no endpoint: use {ENDPOINT_FORMS}")
    return found


def check_endpoints(urls: str) -> str:
    """Return ``urls`` (one endpoint, or several separated by commas) if each is an endpoint
    a node can connect to, else raise ``ValueError`` naming the bad one."""
    for url in split_endpoints(urls):
        check_endpoint(url)
    return urls


def is_ipv6_endpoint(url: str) -> bool:
    """Does ``url`` name an IPv6 address (``tcp://[::1]:5555``)? Its socket needs ``zmq.IPV6``."""
    return url.startswith("tcp://[")


def node_identity(name: str, incarnation: int, secret: int) -> bytes:
    """The ZeroMQ routing id of a node: ``name/incarnation/secret``, unique per process.

    The secret part is never reported by the broker, so nobody can guess another node's
    routing id and take its connection over (the ROUTER hands an id over to whoever connects
    with it last).
    """
    return f"{name}/{incarnation:x}/{secret:x}".encode()


def name_allowed(name: str, user_id: str, key_names: Collection[str] = ()) -> bool:
    """May a node authenticated (CURVE) as ``user_id`` use the node name ``name``?

    Only its own name, or that name followed by ``.`` and anything (``main.send-42``), unless
    a longer key name owns it: with keys ``n1`` and ``n1.gpu`` in ``key_names``, the names
    ``n1.gpu`` and ``n1.gpu.x`` are ``n1.gpu``'s, not ``n1``'s.
    """
    if name == user_id:
        return True
    if not name.startswith(user_id + "."):
        return False
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        owner = ".".join(parts[:end])
        if owner in key_names:
            return owner == user_id
    return True


def field(header: Mapping[str, Any], key: str, kind: type | tuple[type, ...]) -> Any:
    """Fetch ``header[key]`` and check its type, raising :class:`WireError` if it is wrong.

    ``bool`` is never accepted where ``int`` is asked for.
    """
    try:
        value = header[key]
    except KeyError:
        raise WireError(f"header field {key!r} is missing") from None
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) and bool not in kinds:
        raise WireError(f"header field {key!r} must be {_names(kinds)}, not bool")
    if not isinstance(value, kinds):
        raise WireError(f"header field {key!r} must be {_names(kinds)}, not {type(value).__name__}")
    return value


def _names(kinds: tuple[type, ...]) -> str:
    return " or ".join(k.__name__ for k in kinds)
