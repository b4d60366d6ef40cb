"""What the commands print: the console (made when first used), values shown literally, and
usage errors."""

import functools
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from rich.console import Console
    from rich.text import Text


@functools.cache
def rich_console(stderr: bool = False) -> "Console":
    """The console for stdout (or stderr), made when first used: rich is not imported for
    ``--help``. No :emoji: codes: a file named ':skull:.png' is printed as it is."""
    from rich.console import Console

    return Console(stderr=stderr, soft_wrap=True, emoji=False)


def is_terminal(stderr: bool = False) -> bool:
    """Is stdout (or stderr) a terminal? Without one, the commands print plain text and do
    not import rich: that is 0.04-0.05 s of a short command's start here (``python -X
    importtime -m zimg send ...``)."""
    stream = sys.stderr if stderr else sys.stdout
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # replaced by an object without it, or closed
        return False


def plain_table(title: str, columns: Sequence[tuple[str, bool]], rows: list[list[str]]) -> str:
    """A table drawn as rich draws one into a file: ``columns`` are ``(heading, right
    aligned)``, cells are shown as :func:`plain` makes them."""
    cells = [[plain(cell) for cell in row] for row in rows]
    widths = [max([len(name), *(len(r[i]) for r in cells)]) for i, (name, _) in enumerate(columns)]

    def line(left: str, fill: str, middle: str, right: str) -> str:
        return left + middle.join(fill * (w + 2) for w in widths) + right

    def row(edge: str, values: list[str]) -> str:
        parts = [
            v.rjust(w) if right else v.ljust(w)
            for v, w, (_, right) in zip(values, widths, columns, strict=True)
        ]
        return edge + edge.join(f" {p} " for p in parts) + edge

    return "\n".join(
        [
            title,
            line("┏", "━", "┳", "┓"),
            row("┃", [name for name, _ in columns]),
            line("┡", "━", "╇", "┩"),
            *(row("│", r) for r in cells),
            line("└", "─", "┴", "┘"),
        ]
    )


def plain(value: object) -> str:
    """``str(value)`` with control and other invisible characters shown as escapes (``\\x1b``).

    A name or an error text must not move the cursor, colour the terminal or reorder the line.
    """
    text = str(value)
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


def lit(value: object) -> str:
    """``value`` as markup that rich shows literally.

    For every string that did not come from this code (file names, paths, URLs, node names,
    error texts from workers, servers or the system) before it goes into a rich markup string.
    """
    from rich.markup import escape

    return escape(plain(value))


def cell(value: object) -> "Text":
    """A table cell shown literally (rich would read a plain str as markup)."""
    from rich.text import Text

    return Text(plain(value))


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print ``message`` (literally) as an error; return the Exit to raise."""
    rich_console(stderr=True).print(f"[bold red]error:[/] {lit(message)}", highlight=False)
    return typer.Exit(code)
