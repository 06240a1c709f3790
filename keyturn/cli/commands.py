"""Inventory commands: init, apply, list, delete (`get` is keyturn.cli.secret's)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from sqlalchemy.orm import Session

from keyturn import auth
from keyturn.app import initialise
from keyturn.audit import log as audit
from keyturn.cli import output, remote
from keyturn.cli.main import actor, app, open_app, settings
from keyturn.cli.options import Json, Reason
from keyturn.db import repo
from keyturn.db.models import Credential, utcnow
from keyturn.domain.errors import UsageError
from keyturn.domain.ids import validate_id, validate_name
from keyturn.domain.model import VersionState

if TYPE_CHECKING:
    # The inventory modules (TOML, plugins, notify) load when `apply` or `delete` runs, not
    # for every command of this module (`get` must start fast).
    from keyturn.inventory import apply as applier


@app.command()
def init(ctx: typer.Context, json: Json = False) -> None:
    """Create the database and, if none is configured, a master key file; print the first
    admin token once."""
    from keyturn.db.engine import parse_url, sqlite_file

    result = initialise(settings(ctx))
    token = None
    if result.created:
        instance = open_app(ctx)
        with instance.db.write() as session:
            token = auth.create_token(session, "admin", name="first admin")
            audit.append(
                session, actor=actor(), action="keyturn.init", details={"token_id": token.id}
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
        output.say(f"keyturn database already initialised ({data['database']})")
        return
    output.say(f"initialised {data['database']}")
    if result.key_file:
        output.say(
            f"created master key file {result.key_file} (mode 0600): "
            "back it up; without it nothing stored can be read"
        )
        if sqlite_file(parse_url(settings(ctx).db)) is None:  # beside no database file
            output.say(
                "keyturn finds it only when run from this folder: elsewhere, and on every "
                f"worker and server, set KEYTURN_MASTER_KEY_FILE={result.key_file}"
            )
    assert token is not None
    output.say(f"first admin token (shown once): {token.token}")


ForTenant = Annotated[
    str | None,
    typer.Option(
        "--tenant",
        help="Apply on behalf of this tenant: only its credentials, only on targets "
        "granted to it (as its tenant-scoped token would over the API)",
    ),
]
TenantEnv = Annotated[
    list[str] | None,
    typer.Option(
        "--env",
        metavar="NAME",
        help="With --tenant: a variable of this shell the tenant's file may read (env:NAME)",
    ),
]


@app.command()
def apply(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="Inventory file (TOML)")],
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show the changes; write nothing")
    ] = False,
    tenant: ForTenant = None,
    env: TenantEnv = None,
    json: Json = False,
) -> None:
    """Declare policies, targets, stores and credentials from a TOML file (idempotent).

    A value that could not be provisioned on its target is kept and retried by the next
    apply."""
    from keyturn.inventory import apply as applier
    from keyturn.inventory.spec import load as load_inventory

    if tenant is not None:
        validate_name(tenant, "tenant")
    elif env:
        raise UsageError("--env names what a tenant's file may read: give --tenant too")
    inventory = load_inventory(file)
    instance = open_app(ctx)
    with output.progress("provisioning", None, enabled=not json) as bar:

        def step(_cred_id: str, total: int) -> None:
            bar.total(total)
            bar.advance()

        result = applier.apply(
            instance,
            inventory,
            file.parent,
            dry_run=dry_run,
            actor=actor(),
            on_provision=step,
            tenant=tenant,
            env=env or (),
        )
    if json:
        output.emit_json(_apply_json(result, dry_run))
    else:
        _apply_report(result, dry_run)
    if result.problems:
        for problem in result.problems:
            output.fail(problem)
        raise typer.Exit(1)


def _apply_json(result: applier.ApplyResult, dry_run: bool) -> dict[str, Any]:
    return {
        "dry_run": dry_run,
        "changes": [c.describe() for c in result.changes],
        "provisioned": result.provisioned,
        "problems": result.problems,
        "existing": result.existing,
        "unmanaged": result.unmanaged,
    }


def _apply_report(result: applier.ApplyResult, dry_run: bool) -> None:
    verb = "would apply" if dry_run else "applied"
    for change in result.changes:
        output.say(f"  {change.describe()}")
    for cred_id in result.provisioned:
        output.say(f"  provisioned {cred_id} on its target")
    summary = f"{verb} {len(result.changes)} change(s)" if result.changes else "no changes"
    if result.provisioned:
        summary += f", {len(result.provisioned)} account(s) provisioned"
    if result.problems:
        summary += f", {len(result.problems)} not provisioned (see below)"
    if result.unmanaged:
        summary += f"; {result.unmanaged} credential(s) in the database are not in the file (kept)"
    output.say(summary)
    if result.existing:
        names = ", ".join(result.existing[:3]) + (", ..." if len(result.existing) > 3 else "")
        output.say(
            f"{len(result.existing)} account(s) already existed on their target and were left "
            f"as they are ({names}): `keyturn verify` logs in to check the stored values work"
        )


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


LIST_COLUMNS = {
    "id": "id",
    "tenant": "tenant",
    "kind": "kind",
    "owner": "owner",
    "version": "version",
    "age_days": "age (d)",
    "max_age_days": "max (d)",
    "due": "due",
    "rotation": "rotation",
    "sync": "sync",
}


@app.command("list")
def list_(
    ctx: typer.Context,
    tenant: Annotated[str | None, typer.Option(help="Only this tenant")] = None,
    kind: Annotated[str | None, typer.Option(help="Only this kind")] = None,
    json: Json = False,
) -> None:
    """The inventory: every credential with its age and due status."""
    api = remote.connect(ctx)
    if api is not None:
        rows = api.credentials(tenant, kind)
    else:
        instance = open_app(ctx)
        now = utcnow()
        with instance.db.read() as session:
            found = repo.list_credentials(session, tenant, kind)
            rows = [status_row(session, c, now) for c in found]
    if json:
        output.emit_json(
            [{k: r.get(k) for k in (*LIST_COLUMNS, "policy", "target", "strategy")} for r in rows]
        )
        return
    if not rows:
        output.say(
            "no credentials yet: declare them in a TOML file and run `keyturn apply FILE`"
            if not (tenant or kind)
            else "no credential matches"
        )
        return
    output.table(
        None, list(LIST_COLUMNS.values()), [[r.get(k) for k in LIST_COLUMNS] for r in rows]
    )


@app.command()
def delete(
    ctx: typer.Context,
    credential_id: Annotated[str, typer.Argument(metavar="ID")],
    reason: Reason,
    json: Json = False,
) -> None:
    """Forget a credential and its versions. Its target is left as it is (and the login
    there keeps its last password): keyturn says which."""
    from keyturn.inventory import remove

    validate_id(credential_id)
    api = remote.connect(ctx)
    if api is not None:
        cred = api.credential(credential_id)
        versions = len(api.versions(credential_id))
        api.delete(credential_id, reason)
        done = remove.Deleted(
            credential_id,
            versions,
            cred["target"],
            tuple(cred["usernames"]),
            tuple(cred["stores"]),
        )
    else:
        done = remove.delete(open_app(ctx), credential_id, actor=actor(), reason=reason)
    if json:
        output.emit_json(
            {
                "deleted": done.credential_id,
                "versions": done.versions,
                "target_left_as_is": done.target,
                "usernames": list(done.usernames),
                "stores": list(done.stores),
            }
        )
    else:
        output.say(done.describe())
