"""A TCP forwarder on loopback that a test can cut: the peer link of a broker pair runs through
it, so the test breaks that link alone while the nodes still reach both brokers."""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading


class TcpProxy:
    """Forwards every connection made to ``127.0.0.1:<port>`` to ``127.0.0.1:<target_port>``,
    on a thread of its own, until :meth:`cut` closes the listener and every connection.

    Args:
        target_port: where connections go.
        port: where to listen (0: a free port, read :attr:`port` after).
    """

    def __init__(self, target_port: int, port: int = 0) -> None:
        self.target_port = target_port
        self._listener = socket.create_server(("127.0.0.1", port))
        self._listener.setblocking(False)
        self.port: int = self._listener.getsockname()[1]
        self._sel = selectors.DefaultSelector()
        self._sel.register(self._listener, selectors.EVENT_READ, None)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="tcp-proxy")
        self._thread.start()

    @property
    def url(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    def cut(self) -> None:
        """Stop forwarding: close the listener and every connection (idempotent)."""
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                for key, _ in self._sel.select(0.05):
                    if key.data is None:
                        self._accept()
                    else:
                        self._pump(key.fileobj, key.data)  # type: ignore[arg-type]
        finally:
            for key in list(self._sel.get_map().values()):
                with contextlib.suppress(OSError):
                    key.fileobj.close()  # type: ignore[union-attr]
            self._sel.close()

    def _accept(self) -> None:
        try:
            client, _ = self._listener.accept()
        except BlockingIOError:
            return
        try:
            server = socket.create_connection(("127.0.0.1", self.target_port), timeout=1)
        except OSError:
            client.close()  # nothing listens there now: the peer's SUB retries
            return
        for sock, other in ((client, server), (server, client)):
            sock.setblocking(False)
            self._sel.register(sock, selectors.EVENT_READ, other)

    def _pump(self, sock: socket.socket, other: socket.socket) -> None:
        try:
            data = sock.recv(65536)
            if data:
                other.sendall(data)  # small state messages: never more than the buffer holds
                return
        except OSError:
            pass
        for s in (sock, other):
            with contextlib.suppress(KeyError, ValueError):
                self._sel.unregister(s)
            s.close()
