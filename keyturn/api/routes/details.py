"""What hangs off one credential: versions (metadata), its secret, its consumers."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path, Query, Response

from keyturn import runtime
from keyturn.api import schemas as s
from keyturn.api import views
from keyturn.api.auth import Principal, allow, keyturn_of, visible
from keyturn.api.routes import errors
from keyturn.api.schemas import CredentialId
from keyturn.app import Keyturn
from keyturn.audit import log as audit
from keyturn.db import repo
from keyturn.db.models import Consumer
from keyturn.domain.ids import validate_name
from keyturn.domain.model import VersionState
from keyturn.engine import service

router = APIRouter(prefix="/credentials", tags=["credentials"], responses=errors())

App = Annotated[Keyturn, Depends(keyturn_of)]
ConsumerName = Annotated[str, Path(max_length=200)]


@router.get("/{credential_id:path}/versions", response_model=list[s.VersionOut], summary="Versions")
def list_versions(
    app: App,
    who: Annotated[Principal, Depends(allow("credential.read"))],
    credential_id: CredentialId,
) -> list[s.VersionOut]:
    """Numbers, states, fingerprints and times; never values."""
    with app.db.read() as session:
        visible(session, who, credential_id)
        return [views.version(v) for v in repo.versions(session, credential_id)]


@router.get(
    "/{credential_id:path}/secret",
    response_model=s.SecretOut,
    summary="Read the current (or previous) value",
)
def read_secret(
    app: App,
    who: Annotated[Principal, Depends(allow("secret.read"))],
    credential_id: CredentialId,
    response: Response,
    version: Annotated[Literal["current", "previous"], Query()] = "current",
) -> s.SecretOut:
    """Every read is an audit entry (with the value's fingerprint, never the value)."""
    state = VersionState.PREVIOUS if version == "previous" else VersionState.CURRENT
    with app.db.write() as session:
        visible(session, who, credential_id)
        row, value = runtime.read_secret(
            app, session, credential_id, actor=who.actor, previous=state == VersionState.PREVIOUS
        )
    response.headers["Cache-Control"] = "no-store"
    return s.SecretOut(
        credential=credential_id,
        version=row.number,
        state=state.value,
        username=row.username,
        value=value.reveal(),
    )


@router.get(
    "/{credential_id:path}/consumers",
    response_model=list[s.ConsumerOut],
    summary="Registered consumers and the versions they report",
)
def list_consumers(
    app: App,
    who: Annotated[Principal, Depends(allow("credential.read"))],
    credential_id: CredentialId,
) -> list[s.ConsumerOut]:
    with app.db.read() as session:
        visible(session, who, credential_id)
        return [views.consumer(c) for c in repo.consumers(session, credential_id)]


@router.put(
    "/{credential_id:path}/consumers/{name}",
    response_model=s.ConsumerOut,
    summary="Register a consumer",
)
def register_consumer(
    app: App,
    who: Annotated[Principal, Depends(allow("consumer.register"))],
    credential_id: CredentialId,
    name: ConsumerName,
) -> s.ConsumerOut:
    """Idempotent: registering a known consumer changes nothing."""
    validate_name(name, "consumer name")
    with app.db.write() as session:
        cred = visible(session, who, credential_id)
        found = next((c for c in repo.consumers(session, credential_id) if c.name == name), None)
        if found is None:
            found = Consumer(credential_id=credential_id, name=name)
            session.add(found)
            session.flush()
            audit.append(
                session,
                actor=who.actor,
                action="consumer.register",
                credential_id=credential_id,
                tenant_id=cred.tenant_id,
                details={"consumer": name},
            )
        return views.consumer(found)


@router.post(
    "/{credential_id:path}/consumers/{name}",
    response_model=s.ConsumerOut,
    summary="Report the version a consumer uses",
)
def report_consumer(
    app: App,
    who: Annotated[Principal, Depends(allow("consumer.report"))],
    credential_id: CredentialId,
    name: ConsumerName,
    body: s.ConsumerReportIn,
) -> s.ConsumerOut:
    """Registers the consumer if needed; the rotation's wait step revokes the old version
    once every consumer reports the new one."""
    with app.db.read() as session:
        visible(session, who, credential_id)
    service.report_consumer(app, credential_id, name, body.version, actor=who.actor)
    with app.db.read() as session:
        found = next(c for c in repo.consumers(session, credential_id) if c.name == name)
        return views.consumer(found)
