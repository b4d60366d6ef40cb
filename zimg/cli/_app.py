"""The ``zimg`` command's Typer app, its global options (--version) and ``main``."""

import logging
import os
import sys
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    pass


app = typer.Typer(
    help="Distributed image processing over ZeroMQ, with Erlang-style nodes.\n\n"
    "Quick start: 'zimg run images/*.jpg' processes files on a local cluster it starts itself. "
    "For several machines: 'zimg broker', then 'zimg worker --name n1' on each worker, "
    "then 'zimg send images/*.jpg'.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Plain help: rich's help formatting imports a Markdown parser, which was two thirds of
    # `zimg --help`'s imports.
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version() -> str:
    """The installed package's version, or the source tree's if zimg is not installed."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("zimg")
    except PackageNotFoundError:
        return "unknown (not installed)"


def _show_version(value: bool) -> None:
    if value:
        print(f"zimg {_version()}")
        raise typer.Exit()


@app.callback()
def _main(
    _version_flag: Annotated[
        bool,
        typer.Option(
            "--version",
            "-V",
            help="Print zimg's version and exit.",
            callback=_show_version,
            is_eager=True,
        ),
    ] = False,
) -> None:
    """Distributed image processing over ZeroMQ, with Erlang-style nodes."""


def main() -> None:
    """Entry point of the ``zimg`` console script."""
    # NumPy's OpenBLAS starts a thread per CPU at import, and each spins for about 0.1 s
    # before it sleeps: 0.12 s of CPU per command on this page's 2-CPU machine, and no zimg
    # command does linear algebra. A worker runs one job per CPU (CPU slots), so a behaviour
    # that does gets no more from BLAS threads either. The environment still has the last word.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    app()


def setup_logging(level: str) -> None:
    numeric = getattr(logging, level.upper(), None)
    if not isinstance(numeric, int):
        raise typer.BadParameter(f"unknown log level {level!r}", param_hint="--log-level")
    logging.basicConfig(
        level=numeric, format="%(asctime)s %(name)s %(levelname)s %(message)s", stream=sys.stderr
    )
