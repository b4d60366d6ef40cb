"""A live view of a cluster in the browser, and an HTTP front door for any language.

``zimg dashboard`` polls the broker's NODES query at an interval and serves a page that updates
itself over server-sent events; ``zimg send --dashboard`` and ``zimg run --dashboard`` serve the
same page with the batch's results as thumbnails. Needs the ``dashboard`` extra (Starlette and
uvicorn). Layout: ``_status`` (pure view model), ``_poller`` (NODES), ``_app`` (routes),
``_front_door`` (``POST /v1/process``), ``_server`` (runs them), ``static/`` (the page).
"""

from __future__ import annotations

from zimg.dashboard._front_door import FrontDoor, Reply
from zimg.dashboard._server import Dashboard, is_loopback, parse_http
from zimg.dashboard._status import Limits, StatusModel

__all__ = ["Dashboard", "FrontDoor", "Limits", "Reply", "StatusModel", "is_loopback", "parse_http"]
