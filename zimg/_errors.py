"""The zimg error tree.

ZimgError
├── WireError (ValueError)        a malformed message or one over the limits
├── ZimgTimeout (TimeoutError)    receive / ask / connect gave up waiting
├── ActorDeadError                the actor addressed is not alive
├── RemoteError                   a remote behaviour or op raised; carries its text
├── SpawnError                    a spawn was refused (unknown behaviour, node down)
├── OpError (ValueError)          an image op was misnamed or misused
├── ImageError (ValueError)       a file is missing, is not an image, or is too large
├── RejectedError                 the broker refused this node (e.g. its name is taken)
├── ClosedError                   you closed the node, then used it
├── BrokenError (ConnectionError) the peer broke the connection
├── KeyFileError                  a CURVE certificate is missing or unreadable
└── FetchError                    `zimg fetch` could not download an image
"""

from __future__ import annotations


class ZimgError(Exception):
    """Root of every error zimg raises on purpose."""


class WireError(ZimgError, ValueError):
    """A message is malformed or exceeds a limit."""


class ZimgTimeout(ZimgError, TimeoutError):
    """A wait ran out of time."""


class ActorDeadError(ZimgError):
    """The actor addressed is not alive."""


class RemoteError(ZimgError):
    """Something raised on another node; carries its type, message and traceback as text."""

    def __init__(self, remote_type: str, message: str, traceback: str = "") -> None:
        super().__init__(f"{remote_type}: {message}")
        self.remote_type = remote_type
        self.message = message
        self.traceback = traceback


class SpawnError(ZimgError):
    """A spawn was refused: unknown behaviour, node not connected, or no worker to run it."""


class OpError(ZimgError, ValueError):
    """An image op is unknown, got bad parameters, or cannot handle this image."""


class ImageError(ZimgError, ValueError):
    """A file could not be read as an image (missing, not an image, too many pixels)."""


class RejectedError(ZimgError):
    """The broker refused this node, for example because its name is held by a live node."""


class ClosedError(ZimgError):
    """The node or actor was closed by its owner and cannot be used any more."""


class BrokenError(ZimgError, ConnectionError):
    """The connection to the broker or a peer broke."""


class KeyFileError(ZimgError):
    """A CURVE certificate is missing, unreadable, or not a certificate."""


class FetchError(ZimgError):
    """A download failed: bad status, wrong content type, too large, or timed out."""
