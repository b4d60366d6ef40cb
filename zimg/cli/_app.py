"""The ``zimg`` command's Typer app, its global options (--version) and ``main``."""

import atexit
import copy
import logging
import os
import sys
import threading
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer
from typer.main import get_command_name

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
    """Run the ``zimg`` command line; it ends with ``SystemExit``, as a click program does."""
    # NumPy's OpenBLAS starts a thread per CPU at import, and each spins for about 0.1 s
    # before it sleeps: 0.12 s of CPU per command on this page's 2-CPU machine, and no zimg
    # command does linear algebra. A worker runs one job per CPU (CPU slots), so a behaviour
    # that does gets no more from BLAS threads either. The environment still has the last word.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    _app_for(sys.argv[1:2])()


def _app_for(first: list[str]) -> typer.Typer:
    """The app to run for a command line whose first argument is ``first``: when that names
    one of its commands, the app with that command alone.

    typer turns every command into a click command before it parses anything (each one's
    signature, type hints and options): for all 13 (with ``keys``' two), 7.0-11.4 ms in a new
    interpreter, against 1.8-3.0 ms for ``send`` alone (``typer.main.get_command``, 5 runs
    each). Only the named command runs, under the same group (its callback,
    ``--version``, and its name in the usage), so its parsing, help and errors are the same;
    any other first argument (an option, a sub-app such as ``keys``, a misspelt command)
    gets the whole app, with its help and suggestions.
    """
    for info in app.registered_commands:
        callback = info.callback
        name = info.name or (get_command_name(callback.__name__) if callback else None)
        if first == [name]:
            alone = copy.copy(app)
            alone.registered_commands = [info]
            alone.registered_groups = []  # `keys`: not named either
            return alone
    return app


def run() -> NoReturn:
    """Entry point of the ``zimg`` console script and of ``python -m zimg``: :func:`main`,
    then leave without tearing the interpreter down.

    Freeing every object of NumPy, typer and pyzmq one by one at exit took 0.03 s of CPU after
    a ``zimg send``'s last line (``strace -tt``: from the last write to ``exit_group``) and
    0.09 s of wall on a loaded machine, a third of a 1-image send. The exit functions still
    run (logging's flush, multiprocessing's children) and stdout and stderr are flushed; the
    normal exit is kept while a thread that is not a daemon runs, as Python would wait for it.
    """
    try:
        main()
        code: object = 0
    except SystemExit as exc:
        code = exc.code
    if any(t.is_alive() and not t.daemon for t in threading.enumerate() if t is not _MAIN):
        sys.exit(code)  # type: ignore[arg-type]  # SystemExit's own code, as it came
    if code is None:
        status = 0
    elif isinstance(code, int):
        status = code
    else:  # as Python prints a SystemExit that is not a number
        print(code, file=sys.stderr)
        status = 1
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError, AttributeError):  # a closed pipe: as Python reports it
            status = status or 120
    os._exit(status)


_MAIN = threading.main_thread()


def setup_logging(level: str) -> None:
    numeric = getattr(logging, level.upper(), None)
    if not isinstance(numeric, int):
        raise typer.BadParameter(f"unknown log level {level!r}", param_hint="--log-level")
    logging.basicConfig(
        level=numeric, format="%(asctime)s %(name)s %(levelname)s %(message)s", stream=sys.stderr
    )
