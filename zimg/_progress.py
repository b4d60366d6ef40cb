"""A progress bar over an iterator, with rich: a live bar in a terminal and in Jupyter."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TypeVar

T = TypeVar("T")


def with_progress(items: Iterator[T], total: int | None, description: str) -> Iterator[T]:
    """Yield ``items`` unchanged, advancing a rich progress bar by one for each.

    rich draws it in place in a terminal, and in Jupyter as a widget (with ``ipywidgets``, from
    the ``notebook`` extra). The bar ends when ``items`` does or the caller stops early.
    """
    from rich.progress import Progress  # imported only when a bar is asked for

    with Progress() as bar:
        task = bar.add_task(description, total=total)
        for item in items:
            bar.advance(task)
            yield item
