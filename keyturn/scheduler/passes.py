"""One scheduler pass: credentials past their due time get a rotation, those inside their
notice lead time get a notice (once per cycle: the dedupe key names the current version)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import ColumnElement, and_, exists, select
from sqlalchemy.orm import InstrumentedAttribute

from keyturn.app import Keyturn
from keyturn.db import repo
from keyturn.db.models import Credential, Rotation, Version
from keyturn.domain.errors import Conflict
from keyturn.domain.model import ACTIVE_STATUSES, PasswordRules, Trigger, VersionState
from keyturn.engine import service
from keyturn.notify import outbox

BATCH = 1000


@dataclass
class PassResult:
    at: datetime
    due: list[str] = field(default_factory=list)
    started: list[int] = field(default_factory=list)
    deferred: list[str] = field(default_factory=list)
    noticed: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, object]:
        return {
            "at": self.at.isoformat(),
            "due": len(self.due),
            "started": len(self.started),
            "deferred": len(self.deferred),
            "noticed": len(self.noticed),
        }


def _ids(
    app: Keyturn,
    column: InstrumentedAttribute[datetime | None],
    at: datetime,
    schedule: str | None,
    extra: ColumnElement[bool] | None = None,
) -> list[str]:
    """Credential ids with *column* <= *at* and no active rotation, in id order, batched."""
    active = exists().where(
        and_(Rotation.credential_id == Credential.id, Rotation.status.in_(ACTIVE_STATUSES))
    )
    out: list[str] = []
    last = ""
    while True:
        query = (
            select(Credential.id)
            .where(column <= at, Credential.id > last, ~active)
            .order_by(Credential.id)
            .limit(BATCH)
        )
        if schedule is not None:
            query = query.where(Credential.schedule == schedule)
        if extra is not None:
            query = query.where(extra)
        with app.db.read() as session:
            batch = session.execute(query).scalars().all()
        if not batch:
            return out
        out += batch
        last = batch[-1]


def due(app: Keyturn, at: datetime, schedule: str | None = None) -> list[str]:
    return _ids(app, Credential.due_at, at, schedule)


def noticeable(app: Keyturn, at: datetime, schedule: str | None = None) -> list[str]:
    return _ids(app, Credential.notice_at, at, schedule, Credential.due_at > at)


def run_pass(app: Keyturn, at: datetime, schedule: str | None = None) -> PassResult:
    """Start the due rotations (they are run by whoever claims them) and queue the notices."""
    result = PassResult(at)
    for cred_id in noticeable(app, at, schedule):
        if _notice(app, cred_id, at):
            result.noticed.append(cred_id)
    for cred_id in due(app, at, schedule):
        result.due.append(cred_id)
        with app.db.read() as session:
            cred = repo.get_credential(session, cred_id)
            policy = repo.policy_for(session, cred, PasswordRules())
        if not policy.allows(at):
            result.deferred.append(cred_id)
            continue
        try:
            result.started.append(
                service.start(app, cred_id, trigger=Trigger.SCHEDULE, actor="scheduler", reason="")
            )
        except Conflict:
            continue  # another worker started it a moment ago
    return result


def _notice(app: Keyturn, cred_id: str, at: datetime) -> bool:
    with app.db.write() as session:
        cred = repo.get_credential(session, cred_id)
        current: Version | None = repo.version_in_state(session, cred_id, VersionState.CURRENT)
        if current is None or cred.due_at is None:
            return False
        days = max((cred.due_at - at).total_seconds() / 86400, 0)
        added = outbox.enqueue(
            session,
            kind="notice",
            dedupe_key=f"notice:{cred_id}:{current.number}",
            subject=f"[keyturn] {cred_id} will be rotated on {cred.due_at:%Y-%m-%d}",
            body=(
                f"{cred_id} (tenant {cred.tenant_id}, owner {cred.owner or '-'}) reaches its "
                f"maximum age in {days:.1f} days and will be rotated at the first scheduled "
                f"check after {cred.due_at:%Y-%m-%d %H:%M} UTC. Consumers that read it from "
                "keyturn or a store will move over by themselves."
            ),
            credential_id=cred_id,
            tenant_id=cred.tenant_id,
            data={"due_at": cred.due_at.isoformat(), "version": current.number},
        )
        return added > 0
