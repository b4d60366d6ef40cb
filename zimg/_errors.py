"""The zimg error tree.

Catch ``ZimgError`` for anything zimg raises on purpose, a group for a family of failures, or a
leaf for one failure. Leaves also subclass the builtin that callers would otherwise catch.

ZimgError                             the root: never raised itself
├── ZimgTimeout (TimeoutError)        a wait ran out: receive, spawn, connect, Broker.start
├── ClosedError                       you closed the node, then used it
├── ClusterError                      the cluster, or this process's way to it, failed or refused
│   ├── BrokenError (ConnectionError) the connection to the broker broke
│   ├── RejectedError                 the broker refused this node (e.g. its name is taken)
│   ├── SpawnError                    a spawn was refused (unknown behaviour, node down, limit)
│   └── ClusterStartError             a worker or broker process died before it joined
├── InputError                        what you gave zimg is wrong: fix the call, not the cluster
│   ├── WireError (ValueError)        a malformed message, or a term over the limits
│   ├── OpError (ValueError)          an image op was misnamed or misused
│   ├── ImageError (ValueError)       a file is missing, is not an image, or is too large
│   ├── NameTakenError (ValueError)   a process or behaviour name is held by another
│   ├── KeyFileError                  a CURVE certificate is missing, unreadable or in the way
│   └── AffinityError (OSError)       the system refused the CPUs given to pin a worker
└── FetchError                        `zimg fetch` could not download an image

``ClusterError`` and ``InputError`` are groups: zimg raises only their leaves (a test checks
that every class here is raised somewhere, and no group directly).
"""

from __future__ import annotations


class ZimgError(Exception):
    """Root of every error zimg raises on purpose. Never raised itself: catch it to catch all."""


class ZimgTimeout(ZimgError, TimeoutError):
    """A wait ran out of time: ``receive``, a spawn's answer, connecting, ``Broker.start``.

    Also a ``TimeoutError``. Retry with a longer timeout, or check that the peer is up.
    """


class ClosedError(ZimgError):
    """The node was closed (or started twice) by its owner and cannot be used any more.

    A bug in the calling code, not a fault of the cluster: compare :class:`BrokenError`.
    """


class ClusterError(ZimgError):
    """The cluster, or this process's connection to it, failed or refused a request.

    A group: raised as one of its subclasses. Usually worth retrying once the cluster is healthy.
    """


class BrokenError(ClusterError, ConnectionError):
    """The connection to the broker broke (or was never made) while the node was in use.

    Raised by sends on a node whose broker is gone. Reconnect, or wait for the node to rejoin.
    """


class RejectedError(ClusterError):
    """The broker refused this node at its first join, for example because a live node holds
    its name, or its protocol version differs. Raised by ``start()`` / ``connect()``."""


class SpawnError(ClusterError):
    """A spawn was refused: unknown behaviour, node not connected or gone down, or a limit
    (``max_processes``, ``max_links``, ``max_monitors``) reached. The message says which."""


class ClusterStartError(ClusterError):
    """A process of a cluster being started exited before it joined: a worker that
    ``local_cluster`` (or ``wait_for_workers``) waits for, or a broker ``wait_for_broker``
    waits for. Its log (stderr) says why."""


class InputError(ZimgError):
    """What was given to zimg is wrong: an argument, a file, a name. Fix the input; retrying
    the same call fails the same way. A group: raised as one of its subclasses."""


class WireError(InputError, ValueError):
    """A term cannot travel (not a wire term, or over a limit), or a message is malformed."""


class OpError(InputError, ValueError):
    """An image op is unknown, registered twice, got bad parameters, or cannot handle this
    image."""


class ImageError(InputError, ValueError):
    """A file could not be read as an image (missing, not an image, too many pixels)."""


class NameTakenError(InputError, ValueError):
    """A name is already registered to another: a process name (``register``) on this node,
    or a behaviour name (``@behaviour``) in this process. Pick another name, or ``unregister``
    the holder first."""


class KeyFileError(InputError):
    """A CURVE certificate is missing, unreadable, not a certificate, the wrong half (a secret
    key given as a public one), or already exists where a new one would be written."""


class AffinityError(InputError, OSError):
    """The system refused to pin a worker to the CPUs given (``--cpus``, ``cpus=``): a CPU that
    does not exist or that this process may not use. Its cause is the system's ``OSError``."""


class FetchError(ZimgError):
    """``zimg fetch`` (``zimg.fetch.fetch``) could not download an image: a refused URL or
    address, an unreachable server, a bad status, the deadline passed, a body that is not an
    image or is too large, or a file already there. Nothing partial is left behind."""
