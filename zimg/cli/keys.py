"""``zimg keys``: CURVE certificates for brokers and nodes."""

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from zimg._errors import ZimgError
from zimg.cli._app import app
from zimg.cli._output import fail, lit, rich_console

if TYPE_CHECKING:
    pass


keys_app = typer.Typer(
    help="CURVE certificates: the broker admits only nodes whose public key it holds.",
    no_args_is_help=True,
)
app.add_typer(keys_app, name="keys")


@keys_app.command("new")
def keys_new(
    name: Annotated[str, typer.Argument(help="The node name the key is for ('broker' for it).")],
    directory: Annotated[
        Path, typer.Option("--dir", "-d", metavar="DIR", help="Where to write.")
    ] = Path("."),
) -> None:
    """Write NAME.key (public) and NAME.key_secret (secret, mode 0600)."""
    from zimg.security import create_keys

    try:
        public, secret = create_keys(name, directory)
    except (ValueError, ZimgError) as exc:
        raise fail(str(exc), code=2) from None
    rich_console().print(
        f"public: {lit(public)}\nsecret: {lit(secret)}  (keep it private)", highlight=False
    )


@keys_app.command("authorize")
def keys_authorize(
    public_key: Annotated[Path, typer.Argument(help="A node's NAME.key (public) file.")],
    directory: Annotated[
        Path, typer.Option("--dir", "-d", metavar="DIR", help="The broker's keys directory.")
    ] = Path("."),
) -> None:
    """Let the node of PUBLIC_KEY join the broker whose keys are in DIR (restart the broker)."""
    from zimg.security import authorize_key

    if public_key.name.endswith(".key_secret"):
        raise fail("give the public NAME.key file, never the secret one", code=2)
    try:
        target = authorize_key(public_key, directory)
    except ZimgError as exc:
        raise fail(str(exc), code=2) from None
    except OSError as exc:
        raise fail(f"cannot authorize {public_key}: {exc}") from None
    rich_console().print(f"authorized: {lit(target)}", highlight=False)
