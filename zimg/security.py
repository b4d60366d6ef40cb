"""CURVE keys in the "ironhouse" model: certificates, the broker's ZAP authenticator, name binding.

Certificates use the zcert text format that ``zmq.auth.load_certificate`` reads: ``NAME.key``
holds the public key (mode 0644) and ``NAME.key_secret`` both keys (mode 0600), whatever the umask;
directories made for them are 0755 at most, so nobody else can swap a key. The broker admits
only the public keys found in its ``authorized/`` directory, and binds each key to the node name in
its file name: a node holding ``n2``'s key may join as ``n2`` (or ``n2.anything``), never as ``n1``.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq
from zmq.auth.certs import load_certificate
from zmq.utils import z85

from zimg import protocol
from zimg._errors import KeyFileError

AUTHORIZED_DIR = "authorized"
BROKER_KEY_NAME = "broker"
PUBLIC_FILE_MODE = 0o644
SECRET_FILE_MODE = 0o600
DIR_MODE = 0o755  # the umask may narrow it, never widen it
_DOMAIN = "*"
# The ZAP domain of a failover pair's peer link: it admits the pair's broker key alone.
PEER_DOMAIN = "zimg-peer"


def create_keys(name: str, directory: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Write a new certificate pair ``NAME.key`` and ``NAME.key_secret`` into ``directory``.

    The public file gets mode 0644 and the secret one 0600, whatever the umask; neither is ever
    overwritten. Missing directories are created with mode 0755 (or less, by the umask).

    Returns:
        ``(public_file, secret_file)``.

    Raises:
        KeyFileError: a certificate of that name already exists there.
    """
    protocol.check_name(name)
    folder = Path(directory)
    make_dirs(folder)
    public_file, secret_file = folder / f"{name}.key", folder / f"{name}.key_secret"
    if public_file.exists() or secret_file.exists():
        raise KeyFileError(f"a certificate named {name!r} already exists in {folder}")
    public, secret = zmq.curve_keypair()
    now = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    body = f'curve\n    public-key = "{public.decode()}"\n'
    secret_text = (
        f"#   ZeroMQ CURVE **Secret** Certificate for {name}, {now}\n#   Keep it private.\n"
    )
    secret_text += f'metadata\n    name = "{name}"\n{body}    secret-key = "{secret.decode()}"\n'
    public_text = f"#   ZeroMQ CURVE Public Certificate for {name}, {now}\nmetadata\n{body}"
    _write_new(secret_file, secret_text.encode("ascii"), SECRET_FILE_MODE)
    try:
        _write_new(public_file, public_text.encode("ascii"), PUBLIC_FILE_MODE)
    except BaseException:
        secret_file.unlink(missing_ok=True)
        raise
    return public_file, secret_file


def authorize_key(public_key: str | os.PathLike[str], directory: str | os.PathLike[str]) -> Path:
    """Copy a node's public certificate into ``directory/authorized/`` (mode 0644).

    An authorized key of the same name is replaced (atomically).

    Returns:
        The file written.

    Raises:
        KeyFileError: ``public_key`` is not a certificate, or holds a secret key.
    """
    source = Path(public_key)
    _public, secret = _load(source)
    if secret is not None:
        raise KeyFileError(f"{source} holds a secret key: give the public NAME.key file")
    data = source.read_bytes()
    target = Path(directory) / AUTHORIZED_DIR / source.name
    make_dirs(target.parent)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        _write_new(tmp, data, PUBLIC_FILE_MODE)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target


def make_dirs(folder: Path) -> None:
    """Create ``folder`` and its missing parents with mode 0755 (less if the umask says so).

    ``Path.mkdir(parents=True)`` would create the parents with 0777 minus the umask: with a umask
    of 000, directories anyone could add a key to.
    """
    missing = []
    while not folder.exists():
        missing.append(folder)
        if folder.parent == folder:
            break
        folder = folder.parent
    for path in reversed(missing):
        try:
            path.mkdir(mode=DIR_MODE)
        except FileExistsError:
            if not path.is_dir():
                raise


def _write_new(path: Path, data: bytes, mode: int) -> None:
    """Create ``path`` (never over an existing file) with exactly ``mode``, and write ``data``."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        raise KeyFileError(f"{path} already exists") from None
    try:
        if hasattr(os, "fchmod"):
            os.fchmod(fd, mode)  # the umask only narrows os.open's mode: make it exact
        with os.fdopen(fd, "wb") as f:
            fd = -1
            f.write(data)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        path.unlink(missing_ok=True)
        raise


def load_keypair(secret_file: str | os.PathLike[str]) -> tuple[bytes, bytes]:
    """``(public, secret)`` keys (z85) from a ``.key_secret`` certificate."""
    public, secret = _load(secret_file)
    if secret is None:
        raise KeyFileError(f"{secret_file} holds no secret key (is it the public .key file?)")
    return public, secret


def load_public_key(key_file: str | os.PathLike[str]) -> bytes:
    """The public key (z85) from a ``.key`` or ``.key_secret`` certificate."""
    return _load(key_file)[0]


def _load(path: str | os.PathLike[str]) -> tuple[bytes, bytes | None]:
    try:
        public, secret = load_certificate(path)
    except (OSError, ValueError) as exc:
        raise KeyFileError(f"cannot read a certificate from {path}: {exc}") from None
    return public, secret


@dataclass(frozen=True)
class ClientKeys:
    """What a node needs to talk to a CURVE broker: its own pair and the broker's public key."""

    public: bytes
    secret: bytes
    server_public: bytes

    @classmethod
    def load(
        cls, key_file: str | os.PathLike[str], broker_key_file: str | os.PathLike[str]
    ) -> ClientKeys:
        public, secret = load_keypair(key_file)
        return cls(public, secret, load_public_key(broker_key_file))

    def apply(self, sock: zmq.Socket[Any]) -> None:
        """Make ``sock`` a CURVE client of the broker."""
        sock.setsockopt(zmq.CURVE_PUBLICKEY, self.public)
        sock.setsockopt(zmq.CURVE_SECRETKEY, self.secret)
        sock.setsockopt(zmq.CURVE_SERVERKEY, self.server_public)


def _authenticator(context: zmq.Context[Any], names: dict[bytes, str]) -> Any:
    """A ZAP handler that admits the keys of ``authorized/`` and reports each one's node name
    as its ZAP user id. (Made here: pyzmq's authenticator imports asyncio, which nodes, which
    never authenticate anyone, need not load.)"""
    from zmq.auth.thread import ThreadAuthenticator

    class NameBoundAuthenticator(ThreadAuthenticator):
        def curve_user_id(self, client_public_key: bytes) -> str:
            return names.get(z85.encode(client_public_key), "")

    return NameBoundAuthenticator(context)


class BrokerKeys:
    """The broker's side of CURVE: its pair, and who is authorised.

    Args:
        directory: holds ``broker.key_secret`` and ``authorized/NAME.key`` for each node.
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        folder = Path(directory)
        self.public, self.secret = load_keypair(folder / f"{BROKER_KEY_NAME}.key_secret")
        self.authorized = folder / AUTHORIZED_DIR
        if not self.authorized.is_dir():
            raise KeyFileError(f"{self.authorized} is missing: put the nodes' NAME.key files there")
        self.names = {
            load_public_key(f): f.name.removesuffix(".key")
            for f in sorted(self.authorized.glob("*.key"))
        }
        self._auth: Any = None  # the ZAP handler, once started

    def start(self, context: zmq.Context[Any]) -> None:
        """Start the ZAP handler on ``context`` (before the broker socket binds)."""
        auth = _authenticator(context, self.names)
        auth.start()
        auth.configure_curve(domain=_DOMAIN, location=str(self.authorized))
        # The peer link's own domain: the two brokers of a pair share this certificate, and no
        # node key, however authorised, may subscribe to their state.
        auth.certs[PEER_DOMAIN] = {self.public: True}
        self._auth = auth

    def apply(self, sock: zmq.Socket[Any]) -> None:
        """Make ``sock`` a CURVE server."""
        sock.setsockopt(zmq.CURVE_SERVER, 1)
        sock.setsockopt(zmq.CURVE_PUBLICKEY, self.public)
        sock.setsockopt(zmq.CURVE_SECRETKEY, self.secret)

    def apply_peer_server(self, sock: zmq.Socket[Any]) -> None:
        """Make ``sock`` (the peer link's PUB) a CURVE server that admits only the pair's key."""
        self.apply(sock)
        sock.setsockopt(zmq.ZAP_DOMAIN, PEER_DOMAIN.encode())

    def apply_peer_client(self, sock: zmq.Socket[Any]) -> None:
        """Make ``sock`` (the peer link's SUB) a CURVE client that talks only to a server
        holding the pair's secret key, and shows it the same key."""
        ClientKeys(self.public, self.secret, self.public).apply(sock)

    def stop(self) -> None:
        if self._auth is not None:
            self._auth.stop()
            self._auth = None
