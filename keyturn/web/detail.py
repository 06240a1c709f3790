"""What the credential page shows, read through the API's views and the engine's tables."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from keyturn.api import schemas as s
from keyturn.api import views
from keyturn.api.auth import Principal, visible
from keyturn.app import Keyturn
from keyturn.audit import log as audit
from keyturn.audit.query import Filters, select_entries
from keyturn.db import repo
from keyturn.db.models import AuditEntry, Rotation, utcnow
from keyturn.domain.model import STEP_ORDER, RotationStatus, Step
from keyturn.engine import consumers
from keyturn.engine.consumers import AtRisk

TRAIL = 50


@dataclass(frozen=True)
class StepView:
    name: str
    state: str  # done | now | failed | todo


@dataclass(frozen=True)
class RotationView:
    row: Rotation
    steps: list[StepView]

    @property
    def final(self) -> bool:
        return self.row.status not in ("running", "waiting", "retrying")


@dataclass(frozen=True)
class StoreView:
    name: str
    version: int | None  # the version last published, from the audit log
    at: str | None


@dataclass
class CredentialView:
    cred: s.CredentialOut
    versions: list[s.VersionOut]
    rotations: list[RotationView]
    consumers: list[s.ConsumerOut]
    # Who an emergency rotation would break (keyturn.engine.consumers.at_risk), and who a
    # revoke of the previous version would (not on the current version yet).
    at_risk: list[AtRisk]
    behind: list[str]
    stores: list[StoreView]
    trail: list[dict[str, Any]] = field(default_factory=list)


def steps(rot: Rotation) -> list[StepView]:
    """The protocol's steps, each done, under way (now), failed or still to do."""
    if rot.status == RotationStatus.DONE:
        return [StepView(str(step), "done") for step in STEP_ORDER]
    here = STEP_ORDER.index(_failed_at(rot) or Step(rot.step))
    stopped = rot.status in (RotationStatus.FAILED, RotationStatus.ABORTED)
    views_ = []
    for i, step in enumerate(STEP_ORDER):
        state = "done" if i < here else "todo"
        if i == here:
            state = "failed" if stopped or rot.status == RotationStatus.RETRYING else "now"
        views_.append(StepView(str(step), state))
    return views_


def _failed_at(rot: Rotation) -> Step | None:
    """The step an attempt failed at: the engine's error starts with it ("set: ..."), while
    the step pointer may have moved back to where the next attempt starts."""
    if rot.status not in (RotationStatus.RETRYING, RotationStatus.FAILED) or not rot.error:
        return None
    name = rot.error.split(":", 1)[0]
    return Step(name) if name in STEP_ORDER else None


def rotation_view(rot: Rotation) -> RotationView:
    return RotationView(rot, steps(rot))


def _stores(session: Session, credential_id: str, names: list[str]) -> list[StoreView]:
    last = session.execute(
        select(AuditEntry)
        .where(AuditEntry.credential_id == credential_id, AuditEntry.action == "rotation.publish")
        .order_by(AuditEntry.seq.desc())
        .limit(1)
    ).scalar_one_or_none()
    out = []
    for name in names:
        published = last is not None and name in (last.details or {}).get("stores", [])
        version = last.details.get("version") if published and last is not None else None
        when = last.at.strftime("%Y-%m-%d %H:%M UTC") if published and last is not None else None
        out.append(StoreView(name, version if isinstance(version, int) else None, when))
    return out


def load(app: Keyturn, session: Session, who: Principal, credential_id: str) -> CredentialView:
    cred = visible(session, who, credential_id)
    out = views.credential(session, cred, utcnow())
    view = CredentialView(
        cred=out,
        versions=[views.version(v) for v in repo.versions(session, cred.id)],
        rotations=[rotation_view(r) for r in repo.rotations(session, cred.id, limit=10)],
        consumers=[views.consumer(c) for c in repo.consumers(session, cred.id)],
        at_risk=consumers.at_risk(app, cred.id, "emergency"),
        behind=[c.name for c in consumers.at_risk(app, cred.id, "revoke")],
        stores=_stores(session, cred.id, out.stores),
    )
    if who.may("audit.read"):
        query = select_entries(Filters(credential=cred.id), tenant_scope=who.tenant)
        query = query.order_by(None).order_by(AuditEntry.seq.desc()).limit(TRAIL)
        view.trail = [audit.shown(e) for e in session.execute(query).scalars()]
    return view


def rotation_of(session: Session, who: Principal, credential_id: str, rotation: int) -> Rotation:
    """The rotation, if it is of a credential the viewer may see."""
    from keyturn.domain.errors import NotFound

    visible(session, who, credential_id)
    rot = session.get(Rotation, rotation)
    if rot is None or rot.credential_id != credential_id:
        raise NotFound(f"{credential_id} has no rotation {rotation}")
    return rot
