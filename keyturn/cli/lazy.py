"""Commands loaded on first use, so `keyturn --help` and `keyturn get` import only what they run.

Each command module registers its commands on `keyturn.cli.main.app` when imported, and most
of them pull in SQLAlchemy, the engine or the scanner. `keyturn --help` lists the commands from
the table below without importing any of them; running a command imports its module and
builds the click command then. `tests/cli/test_startup.py` checks that this table matches the
commands the modules define (names, order and first help paragraph).
"""

from __future__ import annotations

import gc
import importlib
import sys
from typing import Any

from typer import _click as click  # the click Typer vendors and builds commands with
from typer.core import TyperCommand, TyperGroup

from keyturn.cli.params import speed_up

# name -> (module under keyturn.cli, the first paragraph of its help), in `--help` order.
COMMANDS: dict[str, tuple[str, str]] = {
    "accounts": ("accounts", "Accounts on targets and the credential each belongs to."),
    "init": (
        "commands",
        "Create the database and, if none is configured, a master key file; print the first\n"
        "admin token once.",
    ),
    "apply": (
        "commands",
        "Declare policies, targets, stores and credentials from a TOML file (idempotent).",
    ),
    "list": ("commands", "The inventory: every credential with its age and due status."),
    "get": (
        "secret",
        "Print a credential's current value (the only command that prints a secret).",
    ),
    "delete": (
        "commands",
        "Forget a credential and its versions. Its target is left as it is (and the login\n"
        "there keeps its last password): keyturn says which.",
    ),
    "demo": (
        "demo",
        "Rotate SMTP admin passwords of three tenants on a local mail server, as seed 000 asks.",
    ),
    "doctor": (
        "doctor",
        "Check the database, the master key, the audit chain, every target (reachable, in\n"
        "sync, really checking passwords) and store; one line per finding, exit 1 on a failure.",
    ),
    "rekey": (
        "rekey",
        "Re-wrap everything under a new master key: KEYTURN_MASTER_KEY is the new key,\n"
        "KEYTURN_OLD_MASTER_KEY the old one. Online and resumable: run it again after a crash.",
    ),
    "report": (
        "report",
        "Compliance of every credential against keyturn's rules (see docs/compliance.md).",
    ),
    "metrics": ("report", "Print keyturn's Prometheus metrics once (text exposition format)."),
    "rotate": (
        "rotation",
        "Rotate a credential now (manual, emergency or leak), with a reason for the audit log.",
    ),
    "resume": (
        "rotation",
        "Carry on interrupted, retrying or waiting rotations (of one credential, or all).",
    ),
    "abort": (
        "rotation",
        "Stop a rotation; before promotion the target is put back on the current value.",
    ),
    "verify": (
        "rotation",
        "Log in with the current value: is each target (and store) in sync with keyturn?",
    ),
    "scan": (
        "scan",
        "Find copies of keyturn's values (named by credential, version, owner and consumers)\n"
        "and hard-coded credentials keyturn does not manage. Exits 1 when a finding is new.",
    ),
    "run-due": (
        "schedule",
        "One scheduler pass now, as cron runs it: rotate what is due, send notices.",
    ),
    "worker": (
        "schedule",
        "Run the schedule continuously: passes at each check slot, rotations, retries, notices.",
    ),
    "plan": (
        "schedule",
        "What the schedule will do and when: notices and rotations over the next N days.",
    ),
    "serve": (
        "serve",
        "Serve the dashboard (/) and the REST API (/api/v1) until interrupted.",
    ),
    "show": (
        "show",
        "One credential: versions (states, fingerprints), consumers, and every step of its last\n"
        "rotations with attempts, reasons, actors and errors.",
    ),
    "consumers": (
        "consumers",
        "Who uses a credential: the version each consumer reports and when it was last seen.",
    ),
    "import": (
        "importer",
        "Bring secrets that already live in a store into the inventory, encrypted at once.",
    ),
    "run": (
        "run",
        "Run COMMAND with credentials in its environment or files; restart or signal it when\n"
        "they rotate. Values never appear on a command line.",
    ),
    "token": ("tokens", "API tokens."),
    "audit": ("audit", "The tamper-evident audit log."),
}


_paused = False


def pause_gc() -> None:
    """Pause the cyclic GC while a command starts (`keyturn.cli.main.main`).

    Start-up makes a few hundred thousand objects (modules, classes, SQLAlchemy's and
    Pydantic's tables) that live until exit, and the collector walks them again and again
    while they load, and once more after: a fifth of `keyturn get`'s and `keyturn rotate`'s
    CPU (bench/cli.py). `resume_gc` moves them out of its reach (`gc.freeze`, which also
    keeps a forked `serve` worker's pages shared) and the GC runs as usual for the command.
    """
    global _paused
    if gc.isenabled():
        gc.disable()
        _paused = True


def resume_gc(*, freeze: bool = False) -> None:
    """End `pause_gc`; *freeze*: the pause covered the import of a command's module, and
    what exists now is kept for good. A process that runs commands in-process (the tests'
    harness) freezes at most once per command module: a run of a loaded command freezes
    nothing, and its garbage stays collectable."""
    global _paused
    if _paused:
        _paused = False
        if freeze:
            gc.freeze()
        gc.enable()


def load(name: str) -> None:
    """Import module *name* where a command first needs it (the engine, for a command that
    runs locally and not over the API), as start-up imports: with the GC paused, and what it
    made frozen after. Loaded already: nothing to do (an in-process run freezes nothing)."""
    if name in sys.modules:
        return
    paused = gc.isenabled()
    gc.disable()
    try:
        importlib.import_module(name)
    finally:
        if paused:
            gc.freeze()
            gc.enable()


def load_all() -> None:
    """Import every command module (what the tests and the table check need)."""
    for module, _ in COMMANDS.values():
        importlib.import_module(f"keyturn.cli.{module}")


class LazyGroup(TyperGroup):
    """The root group: lists the table's commands, imports a command's module when it runs."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._built: set[str] = set()

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        # Here, not in __init__: Typer appends its completion options to a built group, and
        # makes the help option when it parses.
        self.get_help_option(ctx)
        speed_up(self, deep=False)
        return super().parse_args(ctx, args)

    def list_commands(self, ctx: click.Context) -> list[str]:
        extra = [name for name in super().list_commands(ctx) if name not in COMMANDS]
        return [*COMMANDS, *extra]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        """The real command once its module is loaded; a stand-in carrying its help line
        before (all that listing the commands needs)."""
        if cmd_name not in COMMANDS:
            return super().get_command(ctx, cmd_name)
        module, help_text = COMMANDS[cmd_name]
        if f"keyturn.cli.{module}" not in sys.modules:
            return TyperCommand(cmd_name, help=help_text)
        if cmd_name not in self._built:
            self.commands[cmd_name] = speed_up(_build(cmd_name))
            self._built.add(cmd_name)
        return self.commands[cmd_name]

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        fresh = False
        if args and args[0] in COMMANDS:
            module = f"keyturn.cli.{COMMANDS[args[0]][0]}"
            fresh = module not in sys.modules
            importlib.import_module(module)
        name, command, rest = super().resolve_command(ctx, args)
        if command is not None:
            command.get_help_option(ctx)  # made now, with the names the root's settings give
            speed_up(command, deep=False)
        resume_gc(freeze=fresh)  # the command is built: it runs with the GC on
        return name, command, rest


def _build(name: str) -> click.Command:
    """Build the click command of `name` from what its module registered on the app."""
    import typer.main

    from keyturn.cli.main import app

    group = typer.main.get_command(app)
    assert isinstance(group, TyperGroup)
    return group.commands[name]
