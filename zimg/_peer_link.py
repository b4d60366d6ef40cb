"""The peer link of a failover pair of brokers: a PUB that publishes this broker's state and a SUB
that hears the peer's, hosting nothing but sockets (the decisions are ``zimg._failover``'s).

Why PUB/SUB and not DEALER/ROUTER: a state message is idempotent and only the latest one
matters, so a PUB that drops what a slow or absent peer cannot take is exactly right, and there
is no routing id to take over, no backlog and no reply to wait for. Each broker binds its PUB at
its own ``--peer-bind`` and connects its SUB to the other's (``--peer``); the SUB reconnects on
its own when the peer comes back.

With CURVE both sockets use the pair's broker certificate: the SUB accepts only a server that
holds its secret key, and the PUB's ZAP domain admits only that key (``security.PEER_DOMAIN``).
Without keys the SUB still hears only what is published at the ``--peer`` address; every
message that is not a well-formed state message is dropped, counted and logged (first one at
WARNING) by the caller.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import zmq

from zimg import _failover, protocol, wire
from zimg._errors import WireError
from zimg._zsock import NOBLOCK, recv_frames
from zimg.security import BrokerKeys
from zimg.wire import Command

__all__ = ["PEER_LIMITS", "FailoverConfig", "PeerLink"]

# A state message is a few dozen bytes: a peer link refuses anything much larger.
PEER_LIMITS = wire.Limits(
    max_header_bytes=1024, max_frames=0, max_frame_bytes=1024, max_depth=2, max_ndim=0
)
_MAX_PEER_MESSAGE = 2048  # bytes: libzmq drops a connection that sends a larger frame
_READ_AT_ONCE = 64


@dataclass(frozen=True)
class FailoverConfig:
    """A broker's place in a failover pair.

    Attributes:
        role: ``"primary"`` or ``"backup"``.
        peer: the other broker's peer-link endpoint (its ``peer_bind``).
        peer_bind: where this broker publishes its state.
        failover_timeout_s: how long the peer must be silent before a node's vote makes this
            broker active; None: the nodes' liveness bound (liveness x heartbeat interval).
    """

    role: str
    peer: str
    peer_bind: str
    failover_timeout_s: float | None = None

    def __post_init__(self) -> None:
        _failover.Role(self.role)  # ValueError for anything but primary / backup
        protocol.check_endpoint(self.peer)
        protocol.check_endpoint(self.peer_bind, bind=True)
        if self.failover_timeout_s is not None and self.failover_timeout_s <= 0:
            raise ValueError("failover_timeout_s must be > 0")


class PeerLink:
    """The two sockets of the peer link, on the broker's context and thread."""

    def __init__(
        self,
        context: zmq.Context[zmq.Socket[bytes]],
        config: FailoverConfig,
        keys: BrokerKeys | None,
    ) -> None:
        self.config = config
        self._context, self._keys = context, keys
        pub = self._socket(zmq.PUB)
        pub.setsockopt(zmq.SNDHWM, 16)  # states queued for a slow peer are stale anyway
        if keys is not None:
            keys.apply_peer_server(pub)
        try:
            pub.bind(config.peer_bind)
        except zmq.ZMQError as exc:
            pub.close()
            raise OSError(f"cannot bind the peer link to {config.peer_bind}: {exc}") from exc
        self.pub = pub
        self.endpoint = pub.getsockopt_string(zmq.LAST_ENDPOINT)
        self.sub = self._new_sub()

    def _socket(self, kind: int) -> zmq.Socket[bytes]:
        sock = self._context.socket(kind)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.MAXMSGSIZE, _MAX_PEER_MESSAGE)
        sock.setsockopt(zmq.RECONNECT_IVL, 50)
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, 500)
        if any(map(protocol.is_ipv6_endpoint, (self.config.peer, self.config.peer_bind))):
            sock.setsockopt(zmq.IPV6, 1)
        return sock

    def _new_sub(self) -> zmq.Socket[bytes]:
        sub = self._socket(zmq.SUB)
        sub.setsockopt(zmq.RCVHWM, 256)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        if self._keys is not None:
            self._keys.apply_peer_client(sub)
        sub.connect(self.config.peer)
        return sub

    def reconnect(self) -> None:
        """Replace the receiving socket with a fresh one connected to the peer (the caller
        polls :attr:`sub`, and must poll the new one)."""
        self.sub.close(linger=0)
        self.sub = self._new_sub()

    def publish(self, header: dict[str, Any]) -> None:
        """Publish this broker's state (dropped if the peer cannot take it now)."""
        with contextlib.suppress(zmq.Again):  # a PUB drops rather than block; belt and braces
            self.pub.send_multipart(wire.encode(Command.PEER, header, PEER_LIMITS), NOBLOCK)

    def receive(self) -> list[dict[str, Any] | str]:
        """What the peer sent since the last call: each a state header, or the text of why a
        message was malformed."""
        out: list[dict[str, Any] | str] = []
        for _ in range(_READ_AT_ONCE):
            try:
                frames = recv_frames(self.sub, NOBLOCK)
            except zmq.Again:
                break
            try:
                msg = wire.decode(frames, PEER_LIMITS)
            except WireError as exc:
                out.append(str(exc))
                continue
            if msg.command is not Command.PEER:
                out.append(f"command {msg.command.name} on the peer link")
                continue
            out.append(msg.header)
        return out

    def close(self) -> None:
        self.pub.close(linger=0)
        self.sub.close(linger=0)
