"""The ``zimg`` command line: thin typer commands over the library.

The commands live by kind (``servers``: broker and worker; ``batches``: send, run and demo;
``tools``: nodes, dashboard, fetch and grid; ``keys``), each registered on the one Typer app
(``_app``) when its module is imported here, in the order ``zimg --help`` lists them. The CLI
imports what a command needs when it runs, not before: ``zimg --help`` and ``zimg nodes`` load
no OpenCV, NumPy or ZeroMQ.
"""

from zimg.cli import batches, keys, servers, tools  # noqa: F401  (registers the commands)
from zimg.cli._app import app, main, run

__all__ = ["app", "main", "run"]
