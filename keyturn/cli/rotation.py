"""Rotation commands: rotate, resume, abort, verify."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from keyturn.cli import output
from keyturn.cli.commands import Json
from keyturn.cli.main import app, open_app
from keyturn.domain.errors import KeyturnError, RotationFailed
from keyturn.domain.ids import validate_id
from keyturn.domain.model import RotationStatus, Trigger
from keyturn.engine import service
from keyturn.engine.protocol import Outcome

Reason = Annotated[str, typer.Option("--reason", help="Why (required; goes into the audit log)")]


def _actor() -> str:
    return f"cli:{os.environ.get('USER') or os.environ.get('LOGNAME') or 'unknown'}"


def _describe(o: Outcome) -> str:
    if o.status == RotationStatus.DONE:
        return f"{o.credential_id}: rotated to version {o.new_version} (rotation {o.rotation_id})"
    if o.status == RotationStatus.WAITING:
        until = f"{o.wait_until:%Y-%m-%d %H:%M UTC}" if o.wait_until else "-"
        return (
            f"{o.credential_id}: version {o.new_version} is current; the previous one is "
            f"revoked when every consumer reports it, or at {until} (`keyturn resume`)"
        )
    if o.status == RotationStatus.RETRYING:
        at = f"{o.next_attempt_at:%Y-%m-%d %H:%M:%S UTC}" if o.next_attempt_at else "-"
        return f"{o.credential_id}: attempt failed ({o.error}); next attempt at {at}"
    return f"{o.credential_id}: rotation {o.rotation_id} {o.status} at {o.step} ({o.error or ''})"


def _as_dict(o: Outcome) -> dict[str, object]:
    return {
        "rotation": o.rotation_id,
        "credential": o.credential_id,
        "status": o.status,
        "step": o.step,
        "version": o.new_version,
        "error": o.error,
        "next_attempt_at": o.next_attempt_at,
        "wait_until": o.wait_until,
    }


def _report(outcomes: list[Outcome], json: bool) -> None:
    if json:
        output.emit_json([_as_dict(o) for o in outcomes])
    else:
        for o in outcomes:
            output.console.print(_describe(o), highlight=False)
    failed = [o for o in outcomes if o.status in (RotationStatus.FAILED, RotationStatus.RETRYING)]
    if failed:
        if json:
            raise typer.Exit(1)
        raise RotationFailed(_describe(failed[0]))


@app.command()
def rotate(
    ctx: typer.Context,
    credential_id: Annotated[str, typer.Argument(metavar="ID")],
    reason: Reason,
    emergency: Annotated[
        bool,
        typer.Option(
            "--emergency", help="Compromised: revoke the old value at once, no grace period"
        ),
    ] = False,
    leak: Annotated[
        bool,
        typer.Option(
            "--leak",
            help="The value leaked (e.g. a secret scanner found it): as --emergency, "
            "recorded as a leak",
        ),
    ] = False,
    json: Json = False,
) -> None:
    """Rotate a credential now (manual, emergency or leak), with a reason for the audit log."""
    validate_id(credential_id)
    instance = open_app(ctx)
    trigger = Trigger.LEAK if leak else Trigger.EMERGENCY if emergency else Trigger.MANUAL
    outcome = service.rotate(
        instance, credential_id, trigger=trigger, actor=_actor(), reason=reason
    )
    _report([outcome], json)


@app.command()
def resume(
    ctx: typer.Context,
    credential_id: Annotated[str | None, typer.Argument(metavar="[ID]")] = None,
    now: Annotated[bool, typer.Option("--now", help="Retry at once, ignoring backoff")] = False,
    json: Json = False,
) -> None:
    """Carry on interrupted, retrying or waiting rotations (of one credential, or all)."""
    if credential_id:
        validate_id(credential_id)
    instance = open_app(ctx)
    results = service.resume(instance, credential_id, force=now)
    outcomes = [r for r in results if isinstance(r, Outcome)]
    for problem in (r for r in results if isinstance(r, KeyturnError)):
        output.fail(problem.message)
    if not results and not json:
        output.console.print("no rotation in progress")
    _report(outcomes, json)
    if len(outcomes) != len(results):
        raise typer.Exit(1)


@app.command()
def abort(
    ctx: typer.Context, credential_id: Annotated[str, typer.Argument(metavar="ID")], reason: Reason
) -> None:
    """Stop a rotation; before promotion the target is put back on the current value."""
    validate_id(credential_id)
    instance = open_app(ctx)
    rotation_id = service.abort(instance, credential_id, actor=_actor(), reason=reason)
    output.console.print(f"{credential_id}: rotation {rotation_id} aborted", highlight=False)


@app.command()
def verify(
    ctx: typer.Context,
    credential_id: Annotated[str | None, typer.Argument(metavar="[ID]")] = None,
    json: Json = False,
) -> None:
    """Log in with the current value: is each target still in sync with keyturn?"""
    if credential_id:
        validate_id(credential_id)
    instance = open_app(ctx)
    results = service.verify(instance, credential_id)
    if json:
        output.emit_json([r.__dict__ for r in results])
    else:
        output.table(
            None,
            ["id", "status", "detail"],
            [[r.credential_id, r.status, r.detail] for r in results],
        )
    if any(r.status in ("out-of-sync", "unreachable") for r in results):
        raise typer.Exit(1)
