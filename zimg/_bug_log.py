"""A bug met by one message, logged without letting a peer flood the log.

The broker's loop and a node's I/O thread drop a message their own code raised on, count it, and
go on (``docs/decisions.md``, "One message never stops the broker"). A peer can send that
message a million times: the traceback is logged the first :data:`LOGGED_TRACEBACKS` times only.
"""

from __future__ import annotations

import logging

LOGGED_TRACEBACKS = 10


def log_bug(logger: logging.Logger, count: int, message: str, *args: object) -> None:
    """Log the exception being handled with its traceback (call it from an ``except`` block),
    if ``count`` (how many so far, this one included) is at most :data:`LOGGED_TRACEBACKS`;
    the last one logged says that the rest are only counted."""
    if count > LOGGED_TRACEBACKS:
        return
    if count == LOGGED_TRACEBACKS:
        message += " (further ones are counted, not logged)"
    logger.exception(message, *args)
