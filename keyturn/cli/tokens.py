"""`keyturn token create | list | revoke`: API tokens, shown once, stored as hashes."""

from __future__ import annotations

import sys
from datetime import datetime
from typing import Annotated, Any

import typer

from keyturn import auth
from keyturn.audit import log as audit
from keyturn.cli import output, remote
from keyturn.cli.main import actor, open_app, token_app
from keyturn.cli.options import Json
from keyturn.db.models import ApiToken, utcnow
from keyturn.domain.durations import parse_duration
from keyturn.domain.errors import UsageError


def _row(token: ApiToken) -> dict[str, Any]:
    return {
        "id": token.id,
        "name": token.name,
        "role": token.role,
        "scopes": [str(s) for s in token.scopes or []],
        "tenant": token.tenant_id,
        "created_at": token.created_at,
        "expires_at": token.expires_at,
        "revoked_at": token.revoked_at,
    }


def _status(row: dict[str, Any], now: datetime) -> str:
    if row["revoked_at"]:
        return "revoked"
    expires = row["expires_at"]
    if isinstance(expires, str):
        expires = datetime.fromisoformat(expires.replace("Z", "+00:00"))
    return "expired" if expires is not None and expires <= now else "active"


@token_app.command("create")
def token_create(
    ctx: typer.Context,
    role: Annotated[str, typer.Option(help="admin, operator, auditor or consumer")],
    scope: Annotated[
        list[str] | None, typer.Option(help="Path glob a consumer may read (repeat)")
    ] = None,
    tenant: Annotated[str | None, typer.Option(help="Limit the token to one tenant")] = None,
    name: Annotated[str, typer.Option(help="A label (shown as the actor in `show`)")] = "",
    expires: Annotated[str | None, typer.Option(help="Lifetime, e.g. 90d")] = None,
    json: Json = False,
) -> None:
    """Create an API token; it is shown once and stored only as a hash."""
    ttl = parse_duration(expires, "expiry") if expires else None
    if ttl is not None and ttl.total_seconds() <= 0:
        raise UsageError("--expires must be positive")
    api = remote.connect(ctx)
    if api is not None:
        body = {"role": role, "scopes": list(scope or []), "tenant": tenant, "name": name}
        issued = api.create_token({**body, "expires": expires})
        data = {k: issued[k] for k in ("id", "token", "role", "scopes", "tenant", "expires_at")}
    else:
        data = _create_local(ctx, role, list(scope or []), tenant, name, ttl)
    if json:
        output.emit_json(data)
    else:
        output.errors.print(f"{data['id']} ({role}); token, shown once:", highlight=False)
        sys.stdout.write(str(data["token"]) + "\n")


def _create_local(
    ctx: typer.Context,
    role: str,
    scopes: list[str],
    tenant: str | None,
    name: str,
    ttl: Any,
) -> dict[str, Any]:
    instance = open_app(ctx)
    with instance.db.write() as session:
        issued = auth.create_token(session, role, scopes, tenant, name, ttl)
        audit.append(
            session,
            actor=actor(),
            action="token.create",
            tenant_id=tenant,
            details={"token_id": issued.id, "role": role, "scopes": scopes},
        )
    return {
        "id": issued.id,
        "token": issued.token,
        "role": role,
        "scopes": list(issued.scopes),
        "tenant": tenant,
        "expires_at": issued.expires_at,
    }


@token_app.command("list")
def token_list(
    ctx: typer.Context,
    tenant: Annotated[str | None, typer.Option(help="Only this tenant's tokens")] = None,
    json: Json = False,
) -> None:
    """Every token's metadata (never the token itself): role, scopes, tenant, status."""
    api = remote.connect(ctx)
    if api is not None:
        rows = [r for r in api.tokens() if tenant is None or r["tenant"] == tenant]
    else:
        instance = open_app(ctx)
        with instance.db.read() as session:
            rows = [_row(t) for t in auth.list_tokens(session, tenant)]
    now = utcnow()
    for row in rows:
        row["status"] = _status(row, now)
    if json:
        output.emit_json(rows)
        return
    output.table(
        None,
        ["id", "name", "role", "scopes", "tenant", "created", "expires", "status"],
        [
            [
                r["id"],
                r["name"],
                r["role"],
                ", ".join(r["scopes"]),
                r["tenant"] or "",
                output.when(r["created_at"]),
                output.when(r["expires_at"]),
                r["status"],
            ]
            for r in rows
        ],
    )


@token_app.command("revoke")
def token_revoke(
    ctx: typer.Context,
    token_id: Annotated[str, typer.Argument(metavar="TOKEN_ID", help="e.g. tok_1a2b3c4d5e6f")],
) -> None:
    """Revoke a token at once (revoking twice is harmless)."""
    if len(token_id) > 32:
        raise UsageError("a token id looks like tok_1a2b3c4d5e6f (see `keyturn token list`)")
    api = remote.connect(ctx)
    if api is not None:
        api.revoke_token(token_id)
        output.say(f"revoked {token_id}")
        return
    instance = open_app(ctx)
    with instance.db.write() as session:
        row = auth.get_token(session, token_id)
        changed = auth.revoke_token(session, row)
        if changed:
            audit.append(
                session,
                actor=actor(),
                action="token.revoke",
                tenant_id=row.tenant_id,
                details={"token_id": token_id},
            )
    output.say(f"revoked {token_id}" if changed else f"{token_id} was already revoked")
