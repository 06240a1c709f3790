"""The `keyturn` command.

With `KEYTURN_URL` and `KEYTURN_TOKEN` set, the commands the API serves talk to a
`keyturn serve` (keyturn.cli.remote); every other command refuses in one line, because it
would open a database that is not there.
"""

from __future__ import annotations

import getpass
import importlib.util
import logging
import os
import sys
import traceback
from typing import TYPE_CHECKING, Annotated, Final

# `pip install 'keyturn[client]'` installs the SDK alone: the command line is the server
# extra's. Without it, say so in one line (no traceback). The libraries the commands import
# later are looked for too (found, not imported: --help stays fast).
try:
    import typer

    from keyturn import __version__
    from keyturn.cli import output
    from keyturn.cli.lazy import LazyGroup, pause_gc, resume_gc
    from keyturn.domain.errors import KeyturnError, UsageError
    from keyturn.domain.inputs import text_problem

    for _library in ("sqlalchemy", "alembic", "cryptography", "croniter", "fastapi"):
        if importlib.util.find_spec(_library) is None:
            raise ModuleNotFoundError(name=_library)
except ModuleNotFoundError as _missing:
    if _missing.name is None or _missing.name.split(".")[0] == "keyturn":
        raise  # a module of keyturn's own is missing: a broken install, not an extra
    sys.stderr.write(
        f"error: keyturn's command line needs the server extra ({_missing.name} is not "
        "installed): pip install 'keyturn[server]'\n"
    )
    raise SystemExit(1) from None

if TYPE_CHECKING:
    from keyturn.app import Keyturn
    from keyturn.settings import Settings

# Help and usage errors in click's plain layout: Typer's Rich layout imports Rich's markdown,
# tables and panels, which cost `keyturn --help` more than everything else it does (issue 23).
PLAIN: Final = None
app = typer.Typer(
    cls=LazyGroup,
    help="keyturn: inventory, encrypted storage and crash-safe rotation of credentials.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=PLAIN,
    context_settings={"help_option_names": ["-h", "--help"]},
)
token_app = typer.Typer(help="API tokens.", no_args_is_help=True, rich_markup_mode=PLAIN)
app.add_typer(token_app, name="token")

_state: dict[str, object] = {"verbose": False}


def _print_version(value: bool) -> None:
    if value:
        sys.stdout.write(f"keyturn {__version__}\n")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    db: Annotated[
        str | None,
        typer.Option(
            "--db",
            envvar="KEYTURN_DB",
            help="Database URL [default: sqlite:///keyturn.db]",
            show_envvar=True,
        ),
    ] = None,
    config: Annotated[
        str | None,
        typer.Option(
            "--config",
            envvar="KEYTURN_CONFIG",
            help="Settings file (its [settings] table)",
            show_envvar=True,
        ),
    ] = None,
    verbose: Annotated[
        bool, typer.Option("-v", "--verbose", help="Tracebacks and keyturn's debug logs")
    ] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version and exit"
        ),
    ] = False,
) -> None:
    """Settings: KEYTURN_* variables (see docs/configuration.md). Remote mode: set
    KEYTURN_URL (e.g. http://127.0.0.1:8080) and KEYTURN_TOKEN to work through a
    `keyturn serve` instead of the database."""
    _state["verbose"] = verbose
    _refuse_remote(ctx, ctx.invoked_subcommand)
    configure_logging(verbose)
    ctx.obj = {"flags": {"db": db}, "config": config}


def configure_logging(verbose: bool) -> None:
    """WARNING, or with -v keyturn's own debug logs and everyone's INFO. Not the libraries'
    DEBUG: botocore's prints each request's body (a SecretString being published), urllib3's
    and httpx's each URL; keyturn's own logs name no value."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("keyturn").setLevel(logging.DEBUG if verbose else logging.NOTSET)


def verbose() -> bool:
    """Was -v given (tracebacks and debug logs)?"""
    return bool(_state["verbose"])


def actor() -> str:
    """Who runs this command, for the audit log: the operating system's user name."""
    try:
        name = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry and no LOGNAME/USER (some containers)
        name = f"uid-{os.getuid()}"
    return f"cli:{name}"


def _refuse_remote(ctx: typer.Context, command: str | None = None) -> None:
    """In remote mode, a command the API does not serve stops here, before it reads a file
    or opens a database."""
    from keyturn.cli import remote

    if remote.configured() and (command is None or command not in remote.REMOTE):
        name = f"keyturn {command}" if command else ctx.command_path
        raise UsageError(
            f"`{name}` works on keyturn's database directly and is not available in remote "
            f"mode (KEYTURN_URL is set); remote commands: {remote.COMMANDS}"
        )


def settings(ctx: typer.Context) -> Settings:
    from keyturn.settings import Settings

    _refuse_remote(ctx)
    obj = ctx.find_root().obj
    return Settings.load(obj["flags"], obj["config"])


def open_app(ctx: typer.Context) -> Keyturn:
    from keyturn.app import Keyturn

    instance = Keyturn.open(settings(ctx))
    ctx.call_on_close(instance.close)
    return instance


def check_argv(argv: list[str]) -> None:
    """Refuse arguments keyturn could not store or show faithfully: invalid UTF-8 (Python
    hands it over as lone surrogates), NUL, control characters, bidirectional controls.
    What follows `--` belongs to another program and is left alone."""
    for position, arg in enumerate(argv, 1):
        if arg == "--":
            return
        problem = text_problem(arg)
        if problem:
            raise UsageError(f"argument {position} {problem}")


def main() -> None:
    # Commands register themselves when their module is imported, on first use (cli.lazy),
    # with the cyclic GC paused until then (cli.lazy.pause_gc).
    pause_gc()
    try:
        check_argv(sys.argv[1:])
        app()
    except KeyturnError as exc:
        if _state["verbose"]:
            traceback.print_exc()
        output.fail(exc.message)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        output.fail("interrupted")
        sys.exit(130)
    except Exception as exc:  # a bug: say so in one line; the traceback is for -v
        if _state["verbose"]:
            traceback.print_exc()
        output.fail(f"internal error ({exc.__class__.__name__}); run with -v for details")
        sys.exit(1)
    finally:
        resume_gc()


if __name__ == "__main__":
    # Run as `python -m keyturn.cli.main`: use the importable module, where commands register.
    from keyturn.cli.main import main as _main

    _main()
