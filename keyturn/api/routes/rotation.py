"""Manual and emergency rotation, resume, abort and verify.

The engine runs synchronously in the server's thread pool (these are plain `def` routes),
so the response carries the outcome: status, step and version.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from keyturn.api import schemas as s
from keyturn.api import views
from keyturn.api.auth import Principal, allow, keyturn_of, visible
from keyturn.api.routes import errors
from keyturn.api.schemas import CredentialId
from keyturn.app import Keyturn
from keyturn.audit import log as audit
from keyturn.auth import a_role
from keyturn.domain.errors import Forbidden, KeyturnError
from keyturn.domain.model import Trigger
from keyturn.engine import service
from keyturn.engine.protocol import Outcome

router = APIRouter(prefix="/credentials", tags=["rotation"], responses=errors(409, 502))

App = Annotated[Keyturn, Depends(keyturn_of)]
Operator = Annotated[Principal, Depends(allow("rotation.run"))]


def _check(app: Keyturn, who: Principal, credential_id: str) -> str:
    with app.db.read() as session:
        return visible(session, who, credential_id).tenant_id


@router.post("/{credential_id:path}/rotate", response_model=s.OutcomeOut, summary="Rotate now")
def rotate(app: App, who: Operator, credential_id: CredentialId, body: s.RotateIn) -> s.OutcomeOut:
    """Runs the whole protocol now. `status` says how it went: `done`, `waiting` (the old
    value stays valid for the grace period), `retrying` or `failed` (with `error`; the
    current value still works). `emergency` (admin only) skips the grace period."""
    if body.emergency and not who.may("rotation.emergency"):
        raise Forbidden(f"{a_role(who.role)} token may not start an emergency rotation")
    _check(app, who, credential_id)
    trigger = Trigger.EMERGENCY if body.emergency else Trigger.MANUAL
    started = service.start(
        app, credential_id, trigger=trigger, actor=who.actor, reason=body.reason
    )
    outcome = service.run(app, started)
    return views.outcome(outcome)


@router.post(
    "/{credential_id:path}/resume",
    response_model=list[s.OutcomeOut],
    summary="Carry on a rotation in progress",
)
def resume(
    app: App,
    who: Operator,
    credential_id: CredentialId,
    now: Annotated[bool, Query(description="Retry at once, ignoring backoff")] = False,
) -> list[s.OutcomeOut]:
    """Runs the credential's active rotation, if any, whose turn it is (or now, with now=true)."""
    tenant = _check(app, who, credential_id)
    with app.db.write() as session:
        audit.append(
            session,
            actor=who.actor,
            action="rotation.resume",
            credential_id=credential_id,
            tenant_id=tenant,
            details={"now": now},
        )
    results = service.resume(app, credential_id, force=now)
    problems = [r for r in results if isinstance(r, KeyturnError)]
    if problems:
        raise problems[0]
    return [views.outcome(r) for r in results if isinstance(r, Outcome)]


@router.post("/{credential_id:path}/abort", response_model=s.AbortOut, summary="Stop a rotation")
def abort(app: App, who: Operator, credential_id: CredentialId, body: s.ReasonIn) -> s.AbortOut:
    """Before promotion the target is put back on the current value; after it, the previous
    value simply stays valid."""
    _check(app, who, credential_id)
    rotation_id = service.abort(app, credential_id, actor=who.actor, reason=body.reason)
    return s.AbortOut(rotation=rotation_id, credential=credential_id, status="aborted")


@router.post(
    "/{credential_id:path}/verify", response_model=s.VerifyOut, summary="Is the target in sync?"
)
def verify(app: App, who: Operator, credential_id: CredentialId) -> s.VerifyOut:
    """Logs in to the target with the current value and records the result."""
    _check(app, who, credential_id)
    (result,) = service.verify(app, credential_id, actor=who.actor)
    stores = [
        s.StoreSyncOut(
            store=x.store,
            version=x.version,
            status=x.status,
            detail=x.detail or None,
            checked_at=None,
        )
        for x in result.stores
    ]
    return s.VerifyOut(
        credential=result.credential_id, status=result.status, detail=result.detail, stores=stores
    )
