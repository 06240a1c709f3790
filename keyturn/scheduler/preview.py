"""What a scheduler pass at a given time would do, without doing any of it.

`keyturn run-due --at TIME` shows this: the same queries a pass makes (which slots are open,
what is due, what a window or blackout defers, which notices are not sent yet, which
rotations wait for a retry), and nothing is written and no target or store is contacted.
`--execute` runs the pass for real as of TIME (a test installation's time travel).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import func, or_, select

from keyturn.app import Keyturn
from keyturn.db import repo
from keyturn.db.models import Notice, Rotation
from keyturn.domain.model import ACTIVE_STATUSES, PasswordRules, VersionState
from keyturn.scheduler import slots
from keyturn.scheduler.passes import due, noticeable


@dataclass
class Preview:
    at: datetime
    slots: list[tuple[str, datetime]] = field(default_factory=list)
    rotate: list[str] = field(default_factory=list)
    deferred: list[str] = field(default_factory=list)
    notice: list[str] = field(default_factory=list)
    resume: list[str] = field(default_factory=list)
    notifications: int = 0

    def as_dict(self) -> dict[str, object]:
        return {
            "preview": True,
            "at": self.at,
            "passes": [{"schedule": s, "slot": t} for s, t in self.slots],
            "would_rotate": self.rotate,
            "deferred": self.deferred,
            "would_notice": self.notice,
            "would_resume": self.resume,
            "notifications_pending": self.notifications,
        }


def preview(app: Keyturn, at: datetime) -> Preview:
    """The pass `keyturn run-due` would make at *at*, read-only."""
    out = Preview(at, slots.open_slots(app, at))
    for expr, _slot in out.slots:
        out.notice += [c for c in noticeable(app, at, expr) if _notice_is_new(app, c)]
        for cred_id in due(app, at, expr):
            with app.db.read() as session:
                cred = repo.get_credential(session, cred_id)
                policy = repo.policy_for(session, cred, PasswordRules())
            (out.rotate if policy.allows(at) else out.deferred).append(cred_id)
    with app.db.read() as session:
        out.resume = list(
            session.execute(
                select(Rotation.credential_id)
                .where(
                    Rotation.status.in_(ACTIVE_STATUSES),
                    or_(Rotation.next_attempt_at.is_(None), Rotation.next_attempt_at <= at),
                )
                .order_by(Rotation.credential_id)
            ).scalars()
        )
        out.notifications = int(
            session.scalar(
                select(func.count()).select_from(Notice).where(Notice.status == "pending")
            )
            or 0
        )
    return out


def _notice_is_new(app: Keyturn, cred_id: str) -> bool:
    """Would the pass queue a notice? Not if this cycle's was queued already (its dedupe key
    names the current version, as passes._notice writes it)."""
    with app.db.read() as session:
        current = repo.version_in_state(session, cred_id, VersionState.CURRENT)
        if current is None:
            return False
        prefix = f"notice:{cred_id}:{current.number}|"
        found = session.execute(
            select(Notice.id).where(Notice.dedupe_key.startswith(prefix, autoescape=True))
        ).first()
    return found is None
