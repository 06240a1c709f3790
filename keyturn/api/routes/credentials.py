"""Credentials: list, read metadata, create, update, delete."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Response
from sqlalchemy import select

from keyturn.api import inventory, views
from keyturn.api import schemas as s
from keyturn.api.auth import Principal, allow, keyturn_of, visible
from keyturn.api.routes import errors
from keyturn.api.schemas import CredentialId
from keyturn.app import Keyturn
from keyturn.audit import log as audit
from keyturn.db import repo
from keyturn.db.models import Credential, utcnow
from keyturn.domain.errors import RotationInProgress, UsageError
from keyturn.domain.ids import validate_name

router = APIRouter(prefix="/credentials", tags=["credentials"], responses=errors())

App = Annotated[Keyturn, Depends(keyturn_of)]
Reader = Annotated[Principal, Depends(allow("credential.read"))]
Writer = Annotated[Principal, Depends(allow("credential.write"))]


@router.get("", response_model=s.CredentialList, summary="List credentials")
def list_credentials(
    app: App,
    who: Reader,
    tenant: Annotated[str | None, Query(max_length=63)] = None,
    kind: Annotated[str | None, Query(max_length=63)] = None,
    status: Annotated[Literal["due", "notice", "ok", "no-value"] | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=10**9)] = 0,
) -> s.CredentialList:
    """Credentials the token can see, with their age and due status; filters combine."""
    if tenant is not None:
        validate_name(tenant, "tenant")
    if kind is not None:
        validate_name(kind, "kind")
    now = utcnow()
    with app.db.read() as session:
        query = select(Credential).order_by(Credential.id)
        for column, value in ((Credential.tenant_id, tenant), (Credential.kind, kind)):
            if value is not None:
                query = query.where(column == value)
        if who.tenant is not None:
            query = query.where(Credential.tenant_id == who.tenant)
        rows = [views.credential(session, c, now) for c in session.execute(query).scalars()]
    rows = [r for r in rows if status is None or r.due == status]
    page = rows[offset : offset + limit]
    more = offset + limit < len(rows)
    return s.CredentialList(credentials=page, next_offset=offset + limit if more else None)


@router.post(
    "",
    response_model=s.ChangeOut,
    status_code=201,
    summary="Create a credential",
    responses=errors(409),
)
def create_credential(app: App, who: Writer, body: s.CredentialIn) -> s.ChangeOut:
    """Declare a credential under the rules of `keyturn apply`; `id` is required."""
    if body.id is None:
        raise UsageError("id is required")
    return inventory.put(app, who, body, body.id, create=True)


@router.get("/{credential_id:path}", response_model=s.CredentialOut, summary="One credential")
def get_credential(app: App, who: Reader, credential_id: CredentialId) -> s.CredentialOut:
    with app.db.read() as session:
        return views.credential(
            session, visible(session, who, credential_id), utcnow(), detail=True
        )


@router.put(
    "/{credential_id:path}",
    response_model=s.ChangeOut,
    summary="Update a credential",
    responses=errors(409),
)
def update_credential(
    app: App, who: Writer, credential_id: CredentialId, body: s.CredentialIn
) -> s.ChangeOut:
    """Replace the declaration (omitted fields take their defaults, as in keyturn.toml)."""
    return inventory.put(app, who, body, credential_id, create=False)


@router.delete(
    "/{credential_id:path}", status_code=204, summary="Delete a credential", responses=errors(409)
)
def delete_credential(
    app: App,
    who: Writer,
    credential_id: CredentialId,
    reason: Annotated[str, Query(min_length=1, max_length=2000)],
) -> Response:
    """Forget a credential and all its versions. The target is not touched."""
    if not reason.strip():
        raise UsageError("a reason is required: it goes into the audit log")
    with app.db.write() as session:
        cred = visible(session, who, credential_id, lock=True)
        if repo.active_rotation(session, credential_id) is not None:
            raise RotationInProgress(f"{credential_id} is being rotated; abort it first")
        tenant = cred.tenant_id
        session.delete(cred)
        audit.append(
            session,
            actor=who.actor,
            action="credential.delete",
            reason=reason.strip(),
            credential_id=credential_id,
            tenant_id=tenant,
        )
    return Response(status_code=204)
