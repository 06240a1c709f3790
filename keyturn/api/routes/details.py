"""What hangs off one credential: versions (metadata) and consumers (the secret: secret.py)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path, Query

from keyturn.api import schemas as s
from keyturn.api import views
from keyturn.api.auth import Principal, allow, keyturn_of, visible
from keyturn.api.routes import errors
from keyturn.api.schemas import CredentialId
from keyturn.app import Keyturn
from keyturn.db import repo
from keyturn.engine import consumers

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
    "/{credential_id:path}/consumers",
    response_model=list[s.ConsumerOut] | list[s.AtRiskOut],
    summary="Registered consumers and the versions they report",
)
def list_consumers(
    app: App,
    who: Annotated[Principal, Depends(allow("credential.read"))],
    credential_id: CredentialId,
    at_risk: Annotated[
        Literal["revoke", "emergency"] | None,
        Query(description="Only those this action would break, with why"),
    ] = None,
) -> list[s.ConsumerOut] | list[s.AtRiskOut]:
    with app.db.read() as session:
        visible(session, who, credential_id)
        if at_risk is None:
            return [views.consumer(c) for c in repo.consumers(session, credential_id)]
    return [s.AtRiskOut(**asdict(r)) for r in consumers.at_risk(app, credential_id, at_risk)]


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
    body: s.ConsumerIdentityIn | None = None,
) -> s.ConsumerOut:
    """Idempotent: registering a known consumer only updates where it runs."""
    with app.db.read() as session:
        visible(session, who, credential_id)
    consumers.register(app, credential_id, name, _identity(body), actor=who.actor)
    return _one(app, credential_id, name)


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
    consumers.report(
        app,
        credential_id,
        name,
        body.version,
        _identity(body),
        fallbacks=body.fallbacks,
        actor=who.actor,
    )
    return _one(app, credential_id, name)


def _identity(body: s.ConsumerIdentityIn | None) -> consumers.Identity | None:
    if body is None:
        return None
    return consumers.Identity(body.host, body.process, body.sdk_version)


def _one(app: Keyturn, credential_id: str, name: str) -> s.ConsumerOut:
    with app.db.read() as session:
        return views.consumer(
            next(c for c in repo.consumers(session, credential_id) if c.name == name)
        )
