"""Rotation commands: rotate, resume, abort, verify (locally, or over the API in remote
mode, with the same output)."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer

from keyturn.cli import lazy, output, remote
from keyturn.cli.main import actor, app, open_app, verbose
from keyturn.cli.options import Json, Reason
from keyturn.domain.errors import KeyturnError, RotationFailed, UsageError
from keyturn.domain.ids import validate_id
from keyturn.domain.model import RotationStatus, Step, Trigger

if TYPE_CHECKING:
    from keyturn.app import Keyturn
    from keyturn.engine.protocol import Outcome

# The engine (SQLAlchemy, the models, the plugins) is imported where a command runs locally
# (`lazy.load`): in remote mode these commands are an API call, and start with httpx and
# Typer alone.
ENGINE = "keyturn.engine.service"


def _load_engine(ctx: typer.Context) -> None:
    """The engine, its failures said by the outcome line alone while this command runs: its
    log's warning of the same failure (which a worker's log needs) would repeat it (-v
    shows it)."""
    lazy.load(ENGINE)
    if not verbose():
        engine_log = logging.getLogger("keyturn.engine")
        level = engine_log.level
        engine_log.setLevel(logging.ERROR)
        ctx.call_on_close(lambda: engine_log.setLevel(level))


def _when(value: datetime | str | None, fmt: str) -> str:
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return f"{value:{fmt}}" if value else "-"


def _standing(o: dict[str, Any]) -> str:
    """What works meanwhile (keyturn.engine.record.current_value)."""
    standing = o.get("current_value", "works")
    if standing == "none":
        return "there is no current value yet"
    if standing == "maybe-refused":
        return (
            "keyturn could not tell which value the target takes now: it may already hold "
            "the new value and refuse the current one"
        )
    if standing == "refused":
        return (
            f"the target holds version {o['version']} already and refuses the current value: "
            f"read it with `keyturn get {o['credential']} --version {o['version']}`"
        )
    return "the current value still works"


def _describe(o: dict[str, Any]) -> str:
    cred, status = o["credential"], o["status"]
    if status == RotationStatus.DONE:
        return f"{cred}: rotated to version {o['version']} (rotation {o['rotation']})"
    if status == RotationStatus.WAITING:
        until = _when(o["wait_until"], "%Y-%m-%d %H:%M UTC")
        return (
            f"{cred}: version {o['version']} is current; the previous one is revoked when "
            f"every consumer reports it, or at {until} (`keyturn resume`)"
        )
    if status == RotationStatus.RETRYING:
        at = _when(o["next_attempt_at"], "%Y-%m-%d %H:%M:%S UTC")
        return (
            f"{cred}: attempt failed ({o['error']}); {_standing(o)}; next attempt at {at} "
            f"(`keyturn resume {cred} --now` to retry at once)"
        )
    return f"{cred}: rotation {o['rotation']} {status} at {o['step']} ({o['error'] or ''})"


def as_dict(o: Outcome) -> dict[str, Any]:
    """An outcome in the API's shape (OutcomeOut)."""
    return {
        "rotation": o.rotation_id,
        "credential": o.credential_id,
        "status": o.status,
        "step": o.step,
        "version": o.new_version,
        "error": o.error,
        "next_attempt_at": o.next_attempt_at,
        "wait_until": o.wait_until,
        "current_value": o.current_value,
    }


def _report(outcomes: list[dict[str, Any]], json: bool) -> None:
    """Each outcome once: the first that failed as the error line, the others on stdout."""
    failed = [
        o for o in outcomes if o["status"] in (RotationStatus.FAILED, RotationStatus.RETRYING)
    ]
    if json:
        output.emit_json(outcomes)
    else:
        for o in outcomes:
            if not failed or o is not failed[0]:
                output.say(_describe(o))
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
    if emergency or leak:
        from keyturn.cli.consumers import preview

        preview(ctx, credential_id, "emergency")
    api = remote.connect(ctx)
    if api is not None:
        if leak:
            raise KeyturnError("--leak is not served by the API: use --emergency remotely")
        _report([api.rotate(credential_id, reason, emergency)], json)
        return
    _load_engine(ctx)
    from keyturn.engine import service

    instance = open_app(ctx)
    trigger = Trigger.LEAK if leak else Trigger.EMERGENCY if emergency else Trigger.MANUAL
    outcome = service.rotate(instance, credential_id, trigger=trigger, actor=actor(), reason=reason)
    _report([as_dict(outcome)], json)


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
    api = remote.connect(ctx)
    if api is not None:
        outcomes, problems = _resume_remote(api, credential_id, now)
    else:
        _load_engine(ctx)
        from keyturn.engine import service
        from keyturn.engine.protocol import Outcome

        instance = open_app(ctx)
        _preview_revokes(ctx, instance, credential_id)
        results = service.resume(instance, credential_id, force=now)
        outcomes = [as_dict(r) for r in results if isinstance(r, Outcome)]
        problems = [r.message for r in results if isinstance(r, KeyturnError)]
    for problem in problems:
        output.fail(problem)
    if not outcomes and not problems and not json:
        output.say("no rotation in progress")
    _report(outcomes, json)
    if problems:
        raise typer.Exit(1)


def _preview_revokes(ctx: typer.Context, instance: Keyturn, credential_id: str | None) -> None:
    """A waiting rotation whose grace is over revokes on this resume: say who would break."""
    from keyturn.cli.consumers import preview
    from keyturn.db.models import utcnow
    from keyturn.engine import service

    for rot in service.active_rotations(instance, credential_id):
        if rot.step == Step.WAIT and rot.wait_until is not None and rot.wait_until <= utcnow():
            preview(ctx, rot.credential_id, "revoke")


def _resume_remote(
    api: remote.Remote, credential_id: str | None, now: bool
) -> tuple[list[dict[str, Any]], list[str]]:
    ids = (
        [credential_id]
        if credential_id
        else [c["id"] for c in api.credentials(None, None) if c["rotation"]]
    )
    outcomes, problems = [], []
    for cid in ids:
        try:
            outcomes += api.resume(cid, now)
        except KeyturnError as exc:
            problems.append(exc.message)
    return outcomes, problems


@app.command()
def abort(
    ctx: typer.Context,
    credential_id: Annotated[str, typer.Argument(metavar="ID")],
    reason: Reason,
    json: Json = False,
) -> None:
    """Stop a rotation; before promotion the target is put back on the current value.

    After promotion the previous value stays accepted until the next rotation revokes it."""
    validate_id(credential_id)
    api = remote.connect(ctx)
    if api is not None:
        rotation_id = int(api.abort(credential_id, reason)["rotation"])
    else:
        _load_engine(ctx)
        from keyturn.engine import service

        rotation_id = service.abort(open_app(ctx), credential_id, actor=actor(), reason=reason)
    if json:
        output.emit_json(
            {"rotation": rotation_id, "credential": credential_id, "status": "aborted"}
        )
    else:
        output.say(f"{credential_id}: rotation {rotation_id} aborted")


@app.command()
def verify(
    ctx: typer.Context,
    credential_id: Annotated[str | None, typer.Argument(metavar="[ID]")] = None,
    json: Json = False,
    repair: Annotated[
        bool,
        typer.Option(
            "--repair",
            help="Publish the current value over what an out-of-sync store of ID holds "
            "(after checking who changed it)",
        ),
    ] = False,
) -> None:
    """Log in with the current value: is each target (and store) in sync with keyturn?"""
    if credential_id:
        validate_id(credential_id)
    api = remote.connect(ctx)
    if repair:
        _repair(ctx, api, credential_id)
    results = (
        _verify_remote(api, credential_id, json) if api else _verify_local(ctx, credential_id, json)
    )
    if json:
        output.emit_json(results)
    else:
        output.table(
            None,
            ["id", "status", "detail"],
            [[r["credential"], r["status"], r["detail"]] for r in results],
        )
        counts: dict[str, int] = {}
        for r in results:
            counts[r["status"]] = counts.get(r["status"], 0) + 1
        summary = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
        output.say(f"verified {len(results)} credential(s): {summary or 'none has a target'}")
    if any(r["status"] in ("out-of-sync", "unreachable", "store-drift") for r in results):
        raise typer.Exit(1)


def _repair(ctx: typer.Context, api: remote.Remote | None, credential_id: str | None) -> None:
    from keyturn.engine import publish

    if credential_id is None or api is not None:
        raise UsageError("--repair needs one credential ID, on keyturn's own database")
    for found in publish.repair(open_app(ctx), credential_id, actor()):
        if found.detail == "republished":
            output.say(f"{credential_id}: republished version {found.version} to {found.store}")


def _verify_local(
    ctx: typer.Context, credential_id: str | None, json: bool
) -> list[dict[str, Any]]:
    _load_engine(ctx)
    from sqlalchemy import select

    from keyturn.db.models import Credential
    from keyturn.engine import service

    instance = open_app(ctx)
    if credential_id:
        ids = [credential_id]
    else:
        with instance.db.read() as session:
            query = select(Credential.id).where(Credential.target.is_not(None))
            ids = list(session.execute(query.order_by(Credential.id)).scalars())
    results = []
    with output.progress("verifying", len(ids), enabled=not json and len(ids) > 1) as bar:
        for cid in ids:
            (found,) = service.verify(instance, cid, actor=actor())
            results.append(
                {
                    "credential": found.credential_id,
                    "status": found.status,
                    "detail": found.detail,
                    "stores": [s.__dict__ for s in found.stores],
                }
            )
            bar.advance()
    return results


def _verify_remote(
    api: remote.Remote, credential_id: str | None, json: bool
) -> list[dict[str, Any]]:
    ids = (
        [credential_id]
        if credential_id
        else [c["id"] for c in api.credentials(None, None) if c["target"]]
    )
    results = []
    with output.progress("verifying", len(ids), enabled=not json and len(ids) > 1) as bar:
        for cid in ids:
            results.append(api.verify(cid))
            bar.advance()
    return results
