"""Options several commands share, in a module of their own: importing them costs a command
nothing it does not run (keyturn.cli.commands brings the inventory's tokens, audit and
repository modules)."""

from __future__ import annotations

from typing import Annotated

import typer

__all__ = ["Json", "Reason"]

Json = Annotated[bool, typer.Option("--json", help="Machine-readable output")]
Reason = Annotated[str, typer.Option("--reason", help="Why (required; goes into the audit log)")]
