"""API tokens: create (shown once), list, revoke. Admin tokens only; a tenant-scoped admin
manages only its tenant's tokens."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Response

from keyturn import auth as tokens
from keyturn.api import schemas as s
from keyturn.api import views
from keyturn.api.auth import Principal, allow, keyturn_of
from keyturn.api.routes import errors
from keyturn.app import Keyturn
from keyturn.audit import log as audit
from keyturn.domain.durations import parse_duration
from keyturn.domain.errors import Forbidden, NotFound, UsageError

router = APIRouter(prefix="/tokens", tags=["tokens"], responses=errors())

App = Annotated[Keyturn, Depends(keyturn_of)]
Admin = Annotated[Principal, Depends(allow("token.manage"))]
MAX_TTL = timedelta(days=3660)


@router.post("", response_model=s.TokenIssued, status_code=201, summary="Create a token")
def create_token(app: App, who: Admin, body: s.TokenIn) -> s.TokenIssued:
    """The token is in this response only; keyturn keeps its SHA-256."""
    tenant = body.tenant if body.tenant is not None else who.tenant
    if not who.sees_tenant(tenant):
        raise Forbidden(f"this token is limited to tenant {who.tenant!r}")
    ttl = parse_duration(body.expires, "expires") if body.expires else None
    if ttl is not None and not timedelta(0) < ttl <= MAX_TTL:
        raise UsageError("expires must be positive and at most 3660d")
    for scope in body.scopes:
        if not scope or len(scope) > 200:
            raise UsageError("a scope is a path glob of 1-200 characters, e.g. acme/*")
    with app.db.write() as session:
        issued = tokens.create_token(session, body.role, body.scopes, tenant, body.name, ttl)
        audit.append(
            session,
            actor=who.actor,
            action="token.create",
            tenant_id=tenant,
            details={"token_id": issued.id, "role": issued.role, "scopes": list(issued.scopes)},
        )
        row = tokens.get_token(session, issued.id)
        return s.TokenIssued(**views.token(row).model_dump(), token=issued.token)


@router.get("", response_model=list[s.TokenOut], summary="List tokens")
def list_tokens(app: App, who: Admin) -> list[s.TokenOut]:
    """Metadata only: tokens cannot be shown again."""
    with app.db.read() as session:
        return [views.token(r) for r in tokens.list_tokens(session, who.tenant)]


@router.delete("/{token_id}", status_code=204, summary="Revoke a token")
def revoke_token(app: App, who: Admin, token_id: Annotated[str, Path(max_length=32)]) -> Response:
    """Revoked tokens stop working at once; revoking twice is harmless."""
    with app.db.write() as session:
        row = tokens.get_token(session, token_id)
        if not who.sees_tenant(row.tenant_id):
            raise NotFound(f"no token {token_id!r}")
        if tokens.revoke_token(session, row):
            audit.append(
                session,
                actor=who.actor,
                action="token.revoke",
                tenant_id=row.tenant_id,
                details={"token_id": token_id},
            )
    return Response(status_code=204)
