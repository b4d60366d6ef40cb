"""``python -m zimg``: the same as the ``zimg`` command."""

from zimg.cli import run

run()
