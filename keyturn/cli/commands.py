"""Inventory, secrets and token commands."""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from sqlalchemy.orm import Session

from keyturn import auth
from keyturn.app import initialise
from keyturn.audit import log as audit
from keyturn.cli import output
from keyturn.cli.main import app, open_app, settings, token_app
from keyturn.db import repo
from keyturn.db.models import Credential, utcnow
from keyturn.domain.durations import parse_duration
from keyturn.domain.errors import UsageError
from keyturn.domain.ids import validate_id, validate_name
from keyturn.domain.model import VersionState
from keyturn.inventory import apply as applier
from keyturn.inventory.spec import load as load_inventory
from keyturn.runtime import read_secret

Json = Annotated[bool, typer.Option("--json", help="Machine-readable output")]


@app.command()
def init(ctx: typer.Context, json: Json = False) -> None:
    """Create the database and, if none is configured, a master key file; print the first
    admin token once."""
    result = initialise(settings(ctx))
    token = None
    if result.created:
        instance = open_app(ctx)
        with instance.db.write() as session:
            token = auth.create_token(session, "admin", name="first admin")
            audit.append(
                session, actor="cli", action="keyturn.init", details={"token_id": token.id}
            )
    data = {
        "created": result.created,
        "database": settings(ctx).db,
        "key_file": str(result.key_file) if result.key_file else None,
        "admin_token": token.token if token else None,
    }
    if json:
        output.emit_json(data)
        return
    if not result.created:
        output.console.print(f"keyturn database already initialised ({data['database']})")
        return
    output.console.print(f"initialised {data['database']}")
    if result.key_file:
        output.console.print(
            f"created master key file {result.key_file} (mode 0600): "
            "back it up; without it nothing stored can be read"
        )
    assert token is not None
    output.console.print(f"first admin token (shown once): {token.token}", soft_wrap=True)


@app.command()
def apply(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="Inventory file (TOML)")],
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show the changes; write nothing")
    ] = False,
    tenant: Annotated[
        str | None,
        typer.Option(
            "--tenant",
            help="Apply on behalf of this tenant: only its credentials, only on targets "
            "granted to it (as its tenant-scoped token would over the API)",
        ),
    ] = None,
    json: Json = False,
) -> None:
    """Declare policies, targets, stores and credentials from a TOML file (idempotent)."""
    if tenant is not None:
        validate_name(tenant, "tenant")
    inventory = load_inventory(file)
    instance = open_app(ctx)
    result = applier.apply(instance, inventory, file.parent, dry_run=dry_run, tenant=tenant)
    if json:
        output.emit_json(
            {
                "dry_run": dry_run,
                "changes": [c.describe() for c in result.changes],
                "provisioned": result.provisioned,
                "problems": result.problems,
                "unmanaged": result.unmanaged,
            }
        )
    else:
        verb = "would apply" if dry_run else "applied"
        for change in result.changes:
            output.console.print(f"  {change.describe()}", highlight=False)
        for cred_id in result.provisioned:
            output.console.print(f"  provisioned {cred_id} on its target", highlight=False)
        summary = f"{verb} {len(result.changes)} change(s)" if result.changes else "no changes"
        if result.unmanaged:
            summary += (
                f"; {result.unmanaged} credential(s) in the database are not in the file (kept)"
            )
        output.console.print(summary, highlight=False)
    if result.problems:
        for problem in result.problems:
            output.fail(problem)
        raise typer.Exit(1)


def status_row(session: Session, cred: Credential, now: datetime) -> dict[str, Any]:
    current = repo.version_in_state(session, cred.id, VersionState.CURRENT)
    state = repo.due_state(session, cred, now)
    age, due, policy = state.age, state.status, state
    active = repo.active_rotation(session, cred.id)
    return {
        "id": cred.id,
        "tenant": cred.tenant_id,
        "kind": cred.kind,
        "owner": cred.owner,
        "policy": cred.policy,
        "target": cred.target,
        "strategy": cred.strategy,
        "version": current.number if current else None,
        "age_days": round(age.total_seconds() / 86400, 1) if age is not None else None,
        "max_age_days": policy.max_age.days,
        "due": due,
        "rotation": f"{active.step}/{active.status}" if active else None,
        "sync": cred.sync_status,
        "dispute": cred.dispute,
    }


@app.command("list")
def list_(
    ctx: typer.Context,
    tenant: Annotated[str | None, typer.Option(help="Only this tenant")] = None,
    kind: Annotated[str | None, typer.Option(help="Only this kind")] = None,
    json: Json = False,
) -> None:
    """The inventory: every credential with its age and due status."""
    instance = open_app(ctx)
    now = utcnow()
    with instance.db.read() as session:
        rows = [status_row(session, c, now) for c in repo.list_credentials(session, tenant, kind)]
    if json:
        output.emit_json(rows)
        return
    output.table(
        None,
        ["id", "tenant", "kind", "owner", "version", "age (d)", "max (d)", "due", "rotation"],
        [
            [
                r["id"],
                r["tenant"],
                r["kind"],
                r["owner"],
                r["version"],
                r["age_days"],
                r["max_age_days"],
                r["due"],
                r["rotation"] or "",
            ]
            for r in rows
        ],
    )


@app.command()
def show(
    ctx: typer.Context,
    credential_id: Annotated[str, typer.Argument(metavar="ID")],
    json: Json = False,
) -> None:
    """One credential: versions (states, fingerprints), rotations (steps, errors), consumers."""
    validate_id(credential_id)
    instance = open_app(ctx)
    with instance.db.read() as session:
        cred = repo.get_credential(session, credential_id)
        data = status_row(session, cred, utcnow())
        data.update(
            purpose=cred.purpose,
            tags=cred.tags,
            stores=cred.stores,
            usernames=cred.usernames,
            verified_at=cred.verified_at,
        )
        data["versions"] = [
            {
                "number": v.number,
                "state": v.state,
                "username": v.username,
                "fingerprint": v.fingerprint,
                "created_at": v.created_at,
                "activated_at": v.activated_at,
                "retired_at": v.retired_at,
            }
            for v in repo.versions(session, credential_id)
        ]
        data["rotations"] = [
            {
                "id": r.id,
                "trigger": r.trigger,
                "actor": r.actor,
                "reason": r.reason,
                "step": r.step,
                "status": r.status,
                "attempts": r.attempts,
                "error": r.error,
                "new_version": r.new_version,
                "started_at": r.started_at,
                "finished_at": r.finished_at,
                "next_attempt_at": r.next_attempt_at,
            }
            for r in repo.rotations(session, credential_id)
        ]
        data["consumers"] = [
            {"name": c.name, "version": c.version, "last_seen_at": c.last_seen_at}
            for c in repo.consumers(session, credential_id)
        ]
    if json:
        output.emit_json(data)
        return
    console = output.console
    # Stored text is printed as text, never as Rich markup (an owner "[/b]" is an owner).
    console.print(
        f"[bold]{data['id']}[/bold]  tenant {data['tenant']}  kind {data['kind']}  "
        f"owner {escape(data['owner'] or '-')}  strategy {data['strategy']}  "
        f"target {data['target'] or '-'}  due {data['due']}  sync {data['sync'] or '-'}"
    )
    if data["dispute"]:
        console.print(f"[red]held back[/red]: {escape(data['dispute'])}", highlight=False)
    output.table(
        "versions",
        ["#", "state", "user", "fingerprint", "created", "activated"],
        [
            [
                v["number"],
                v["state"],
                v["username"] or "",
                v["fingerprint"],
                output.when(v["created_at"]),
                output.when(v["activated_at"]),
            ]
            for v in data["versions"]
        ],
    )
    output.table(
        "rotations",
        ["id", "trigger", "actor", "step", "status", "tries", "error"],
        [
            [
                r["id"],
                r["trigger"],
                r["actor"],
                r["step"],
                r["status"],
                r["attempts"],
                r["error"] or "",
            ]
            for r in data["rotations"]
        ],
    )
    if data["consumers"]:
        output.table(
            "consumers",
            ["name", "version", "last seen"],
            [[c["name"], c["version"], output.when(c["last_seen_at"])] for c in data["consumers"]],
        )


@app.command()
def get(
    ctx: typer.Context,
    credential_id: Annotated[str, typer.Argument(metavar="ID")],
    previous: Annotated[bool, typer.Option("--previous", help="The previous version")] = False,
) -> None:
    """Print a credential's current value (the only command that prints a secret)."""
    validate_id(credential_id)
    instance = open_app(ctx)
    with instance.db.write() as session:
        _, value = read_secret(instance, session, credential_id, actor="cli", previous=previous)
    sys.stdout.write(value.reveal() + "\n")


@token_app.command("create")
def token_create(
    ctx: typer.Context,
    role: Annotated[str, typer.Option(help="admin, operator, auditor or consumer")],
    scope: Annotated[
        list[str] | None, typer.Option(help="Path glob a consumer may read (repeat)")
    ] = None,
    tenant: Annotated[str | None, typer.Option(help="Limit the token to one tenant")] = None,
    name: Annotated[str, typer.Option(help="A label")] = "",
    expires: Annotated[str | None, typer.Option(help="Lifetime, e.g. 90d")] = None,
    json: Json = False,
) -> None:
    """Create an API token; it is shown once and stored only as a hash."""
    ttl = parse_duration(expires, "expiry") if expires else None
    if ttl is not None and ttl.total_seconds() <= 0:
        raise UsageError("--expires must be positive")
    instance = open_app(ctx)
    with instance.db.write() as session:
        issued = auth.create_token(session, role, list(scope or []), tenant, name, ttl)
        audit.append(
            session,
            actor="cli",
            action="token.create",
            tenant_id=tenant,
            details={"token_id": issued.id, "role": role, "scopes": list(scope or [])},
        )
    if json:
        output.emit_json(
            {
                "id": issued.id,
                "token": issued.token,
                "role": role,
                "scopes": list(issued.scopes),
                "tenant": tenant,
                "expires_at": issued.expires_at,
            }
        )
    else:
        output.console.print(f"{issued.id} ({role}); token, shown once:", highlight=False)
        sys.stdout.write(issued.token + "\n")
