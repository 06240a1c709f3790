"""`keyturn rekey`: master key rotation (seed 002)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from keyturn.cli import output
from keyturn.cli.main import app, settings
from keyturn.rekey.job import POOL_FROM, Summary
from keyturn.rekey.service import Options, rekey
from keyturn.settings import Settings

LABELS = {
    "wrap": "re-wrapping data keys",
    "tenants": "fresh data keys",
    "versions": "re-encrypting versions",
}


@app.command("rekey")
def rekey_command(
    ctx: typer.Context,
    data_keys: Annotated[
        bool,
        typer.Option(
            "--data-keys", help="Also re-encrypt every stored version under fresh data keys"
        ),
    ] = False,
    no_backup: Annotated[
        bool, typer.Option("--no-backup", help="Do not back up the database first")
    ] = False,
    backup_dir: Annotated[
        Path | None,
        typer.Option(help="Where the backup goes [default: next to the SQLite file, or .]"),
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Rows per transaction")] = 5000,
    workers: Annotated[
        int | None,
        typer.Option(
            help="Processes re-encrypting versions [default: one per core (at least 2) from "
            f"{POOL_FROM:,} versions, none below]",
            show_default=False,
        ),
    ] = None,
    json: Annotated[bool, typer.Option("--json", help="Machine-readable summary")] = False,
) -> None:
    """Re-wrap everything under a new master key: KEYTURN_MASTER_KEY is the new key,
    KEYTURN_OLD_MASTER_KEY the old one. Online and resumable: run it again after a crash."""
    options = Options(data_keys, not no_backup, backup_dir, batch_size, workers)
    if json:
        summary = rekey(settings(ctx), options)
        output.emit_json(summary.as_dict())
        return
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=output.errors,
        transient=False,
    ) as bar:
        tasks: dict[str, int] = {}

        def progress(phase: str, done: int, total: int) -> None:
            if phase not in tasks:
                tasks[phase] = bar.add_task(LABELS.get(phase, phase), total=total)
            bar.update(tasks[phase], completed=done, total=total)  # type: ignore[arg-type]

        summary = rekey(settings(ctx), options, progress)
    config = settings(ctx)
    _report(summary, old_variable(config))
    if config.master_key:
        output.errors.print(
            "the new master key is only in KEYTURN_MASTER_KEY: store it (e.g. in a file of "
            "mode 0600 named by KEYTURN_MASTER_KEY_FILE) before this shell ends, or nothing "
            "stored can be read again",
            highlight=False,
        )


def old_variable(config: Settings) -> str:
    """Where this process found the old key: the variable, or the file variable naming it."""
    if config.old_master_key_file and not config.old_master_key:
        return "KEYTURN_OLD_MASTER_KEY_FILE"
    return "KEYTURN_OLD_MASTER_KEY"


def _report(summary: Summary, old: str = "KEYTURN_OLD_MASTER_KEY") -> None:
    say = output.console.print
    if summary.backup:
        say(f"backup: {summary.backup} (mode 0600)", highlight=False)
    nothing = not (
        summary.data_keys_rewrapped
        or summary.keys_rewrapped
        or summary.fresh_data_keys
        or summary.versions_resealed
    )
    if nothing and not summary.resumed:
        say(f"nothing to do: everything is wrapped under {summary.new_master_key}", highlight=False)
    else:
        keys = "re-wrapped" if summary.keys_rewrapped else "already done"
        say(
            f"rekeyed to {summary.new_master_key}: {summary.data_keys_rewrapped} data key(s) "
            f"re-wrapped, key set (fingerprint, audit, checkpoint keys) {keys}, "
            f"{summary.fresh_data_keys} fresh data key(s), "
            f"{summary.versions_resealed} version(s) re-encrypted",
            highlight=False,
        )
    if summary.old_master_key:
        say(
            f"now remove {old} ({summary.old_master_key}) from every keyturn "
            "process's environment; keyturn refuses to start while it is still set",
            highlight=False,
        )
