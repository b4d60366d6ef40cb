"""Protocol constants and small pure helpers shared by the broker and the nodes."""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from typing import Any

from zimg._errors import WireError

PROTOCOL_VERSION = 3
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
RETRYABLE_REJECTS = frozenset({REJECT_NAME_TAKEN, REJECT_LIMIT})

ROLE_WORKER = "worker"
ROLE_CLIENT = "client"
ROLES = (ROLE_WORKER, ROLE_CLIENT)

# Exit and down reasons that the system itself produces (Erlang's atoms, as strings).
NORMAL = "normal"
KILLED = "killed"
NOPROC = "noproc"
NOCONNECTION = "noconnection"

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
