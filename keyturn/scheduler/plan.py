"""`keyturn plan`: what the schedule will do, and when, over the next N days."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import or_, select

from keyturn.app import Keyturn
from keyturn.db import repo
from keyturn.db.models import Credential
from keyturn.domain.model import PasswordRules
from keyturn.domain.policy import Policy
from keyturn.scheduler.slots import first_slot_at_or_after, next_slot

MAX_SLOTS_SEARCHED = 800


@dataclass(frozen=True)
class Event:
    at: datetime
    action: str  # notice | rotate
    credential_id: str
    tenant: str
    detail: str


def _allowed_slot(policy: Policy, start: datetime) -> datetime | None:
    slot = first_slot_at_or_after(policy.schedule, start)
    for _ in range(MAX_SLOTS_SEARCHED):
        if policy.allows(slot):
            return slot
        slot = next_slot(policy.schedule, slot)
    return None


def plan(app: Keyturn, now: datetime, days: int, tenant: str | None = None) -> list[Event]:
    horizon = now + timedelta(days=days)
    events: list[Event] = []
    with app.db.read() as session:
        query = (
            select(Credential)
            .where(or_(Credential.due_at <= horizon, Credential.notice_at <= horizon))
            .order_by(Credential.due_at)
        )
        if tenant:
            query = query.where(Credential.tenant_id == tenant)
        for cred in session.execute(query).scalars():
            assert cred.due_at is not None and cred.notice_at is not None
            policy = repo.policy_for(session, cred, PasswordRules())
            if cred.notice_at > now:
                notice_slot = first_slot_at_or_after(policy.schedule, cred.notice_at)
                if notice_slot <= horizon:
                    events.append(
                        Event(
                            notice_slot,
                            "notice",
                            cred.id,
                            cred.tenant_id,
                            f"due {cred.due_at:%Y-%m-%d}",
                        )
                    )
            slot = _allowed_slot(policy, max(cred.due_at, now))
            if slot is None:
                events.append(
                    Event(
                        cred.due_at,
                        "blocked",
                        cred.id,
                        cred.tenant_id,
                        "no allowed slot: check the policy's window and blackout",
                    )
                )
            elif slot <= horizon:
                late = " (overdue)" if cred.due_at < now else ""
                events.append(
                    Event(slot, "rotate", cred.id, cred.tenant_id, f"{cred.strategy}{late}")
                )
    return sorted(events, key=lambda e: (e.at, e.credential_id))
