"""A progress bar, with rich: a live bar in a terminal and in Jupyter."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

T = TypeVar("T")


@contextmanager
def progress_bar(total: int | None, description: str) -> Iterator[Callable[[int], None]]:
    """A rich progress bar for the ``with`` block; yields the function that advances it.

    rich draws it in place in a terminal, and in Jupyter as a widget (with ``ipywidgets``, from
    the ``notebook`` extra). The bar ends with the block.
    """
    from rich.progress import Progress  # imported only when a bar is asked for

    with Progress() as bar:
        task = bar.add_task(description, total=total)

        def advance(count: int = 1) -> None:
            bar.advance(task, count)

        yield advance


def with_progress(items: Iterator[T], total: int | None, description: str) -> Iterator[T]:
    """Yield ``items`` unchanged, advancing a :func:`progress_bar` by one for each; the bar
    ends when ``items`` does or the caller stops early."""
    with progress_bar(total, description) as advance:
        for item in items:
            advance(1)
            yield item
