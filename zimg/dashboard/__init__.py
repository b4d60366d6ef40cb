"""A live view of a cluster in the browser, and an HTTP front door for any language.

``zimg dashboard`` polls the broker's NODES query at an interval and serves a page that updates
itself over server-sent events; ``zimg send --dashboard`` and ``zimg run --dashboard`` serve the
same page with the batch's results as thumbnails. The web server needs the ``dashboard`` extra
(Starlette and uvicorn), imported only when :class:`Dashboard` is first used. Layout: ``_status``
(the pure view model), ``_poller`` (NODES), ``_app`` (routes), ``_front_door``
(``POST /v1/process``), ``_server`` (runs them), ``static/`` (the page).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from zimg.dashboard._status import Limits, StatusModel

if TYPE_CHECKING:
    from zimg.dashboard._front_door import FrontDoor, Reply
    from zimg.dashboard._server import Dashboard, is_loopback, parse_http

__all__ = ["Dashboard", "FrontDoor", "Limits", "Reply", "StatusModel", "is_loopback", "parse_http"]

_LAZY = {
    "Dashboard": "_server",
    "is_loopback": "_server",
    "parse_http": "_server",
    "FrontDoor": "_front_door",
    "Reply": "_front_door",
}


def __getattr__(name: str) -> Any:
    """The names whose modules import the web stack or NumPy, imported when first asked for."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
