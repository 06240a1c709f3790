"""The inventory page's query: one page of credentials, filtered, searched and sorted.

It stays quick over a hundred thousand credentials because it never loads more than a page:
keyset pagination (the cursor is the last row's sort value and id, so page 2,000 costs what
page 1 does), indexed filters, and the page's versions and rotations fetched in two queries
for all its rows. The due status comes from `repo.due_state_of`, the code the API and the
scheduler use.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, func, or_, select
from sqlalchemy.orm import Session

from keyturn.api.auth import Principal
from keyturn.db import repo
from keyturn.db.models import Credential, Rotation, Tenant, Version
from keyturn.domain.errors import UsageError
from keyturn.domain.model import ACTIVE_STATUSES, PasswordRules, VersionState
from keyturn.domain.policy import Policy

PAGE = 50
COUNT_CAP = 10_000
SORTS: dict[str, Any] = {
    "id": Credential.id,
    "tenant": Credential.tenant_id,
    "kind": Credential.kind,
    "owner": Credential.owner,
    "next": Credential.due_at,
}
STATUSES = ("due", "notice", "ok", "unscheduled")


@dataclass(frozen=True)
class Filters:
    tenant: str = ""
    kind: str = ""
    status: str = ""
    q: str = ""
    sort: str = "id"
    after: str = ""

    def check(self) -> Filters:
        if self.sort not in SORTS:
            raise UsageError(f"sort by one of {', '.join(SORTS)}")
        if self.status and self.status not in STATUSES:
            raise UsageError(f"status is one of {', '.join(STATUSES)}")
        if len(self.q) > 200 or len(self.after) > 600:
            raise UsageError("the search text is too long")
        return self


@dataclass(frozen=True)
class Row:
    id: str
    tenant: str
    kind: str
    owner: str
    version: int | None
    age_days: float | None
    max_age_days: int
    age_ratio: float  # age / max age, for the bar (capped at 1)
    next_rotation: datetime | None
    status: str  # due | notice | ok | no-value
    rotation: str | None  # "step/status" of an active rotation
    failed: bool  # the last rotation failed or is retrying
    drift: str | None  # out-of-sync | unreachable (from the last verify)
    held_back: bool


@dataclass(frozen=True)
class Page:
    rows: list[Row]
    total: int
    next_cursor: str | None


def _cursor(sort: str, cred: Credential) -> str:
    value = getattr(cred, SORTS[sort].key)
    if isinstance(value, datetime):
        value = value.isoformat()
    raw = json.dumps([value, cred.id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _after(sort: str, cursor: str) -> ColumnElement[bool]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        value, last = json.loads(raw)
        if not isinstance(last, str) or not (value is None or isinstance(value, str)):
            raise ValueError
        column = SORTS[sort]
        if sort == "id":
            return Credential.id > last
        if sort != "next":
            if value is None:  # tenant, kind and owner are never NULL: not a link we made
                raise ValueError
            return or_(column > value, and_(column == value, Credential.id > last))
        if value is None:  # past the scheduled rows: the unscheduled ones, by id
            return and_(column.is_(None), Credential.id > last)
        moment = datetime.fromisoformat(value)
    except (ValueError, TypeError) as exc:
        raise UsageError("this page link is out of date; start from the first page") from exc
    return or_(column > moment, and_(column == moment, Credential.id > last), column.is_(None))


def _search(q: str, sqlite: bool) -> ColumnElement[bool]:
    """Ids are lower case by rule; owners are free text, matched without regard to case
    (SQLite's LIKE already ignores ASCII case, and lower() on every row would double the
    cost of the scan)."""
    needle = q.lower()
    owner = Credential.owner.contains(q, autoescape=True)
    if not sqlite:
        owner = Credential.owner.icontains(q, autoescape=True)
    return or_(Credential.id.contains(needle, autoescape=True), owner)


def _filtered(who: Principal, f: Filters, now: datetime, sqlite: bool) -> Select[Any]:
    query = select(Credential)
    for column, value in ((Credential.tenant_id, f.tenant), (Credential.kind, f.kind)):
        if value:
            query = query.where(column == value)
    if who.tenant is not None:
        query = query.where(Credential.tenant_id == who.tenant)
    if f.q:
        query = query.where(_search(f.q, sqlite))
    status = {
        "due": Credential.due_at <= now,
        "notice": and_(Credential.notice_at <= now, Credential.due_at > now),
        "ok": Credential.notice_at > now,
        "unscheduled": Credential.due_at.is_(None),
    }
    if f.status:
        query = query.where(status[f.status])
    return query


def page(session: Session, who: Principal, f: Filters, now: datetime) -> Page:
    """One page of what *who* may see, with the total the filters match."""
    base = _filtered(who, f, now, session.get_bind().dialect.name == "sqlite")
    query = base
    if f.after:
        query = query.where(_after(f.sort, f.after))
    column = SORTS[f.sort]
    order = [column.is_(None), column, Credential.id] if f.sort == "next" else [column]
    if f.sort not in ("id", "next"):
        order.append(Credential.id)
    creds = list(session.execute(query.order_by(*order).limit(PAGE + 1)).scalars())
    more = len(creds) > PAGE
    creds = creds[:PAGE]
    total = len(creds) if not (more or f.after) else _count(session, base)
    rows = _rows(session, creds, now)
    return Page(rows, total, _cursor(f.sort, creds[-1]) if more else None)


def _count(session: Session, base: Select[Any]) -> int:
    """Counted up to a cap: past it the page says "more than", and the count stays cheap."""
    capped = base.with_only_columns(Credential.id).limit(COUNT_CAP + 1).subquery()
    total: int = session.execute(select(func.count()).select_from(capped)).scalar_one()
    return total


def _rows(session: Session, creds: list[Credential], now: datetime) -> list[Row]:
    ids = [c.id for c in creds]
    current = {
        v.credential_id: v
        for v in session.execute(
            select(Version).where(
                Version.credential_id.in_(ids), Version.state == VersionState.CURRENT
            )
        ).scalars()
    }
    latest = (
        select(func.max(Rotation.id))
        .where(Rotation.credential_id.in_(ids))
        .group_by(Rotation.credential_id)
    )
    rotations = {
        r.credential_id: r
        for r in session.execute(select(Rotation).where(Rotation.id.in_(latest))).scalars()
    }
    policies: dict[tuple[str, str | None], Policy] = {}
    rows = []
    for cred in creds:
        key = (cred.kind, cred.policy)
        if key not in policies:
            policies[key] = repo.policy_for(session, cred, PasswordRules())
        rows.append(_row(cred, current.get(cred.id), rotations.get(cred.id), policies[key], now))
    return rows


def _row(
    cred: Credential, current: Version | None, rot: Rotation | None, policy: Policy, now: datetime
) -> Row:
    state = repo.due_state_of(cred, current, policy, now)
    age = state.age.total_seconds() / 86400 if state.age is not None else None
    max_days = max(state.max_age.total_seconds() / 86400, 1e-9)
    active = rot is not None and rot.status in ACTIVE_STATUSES
    return Row(
        id=cred.id,
        tenant=cred.tenant_id,
        kind=cred.kind,
        owner=cred.owner,
        version=current.number if current else None,
        age_days=round(age, 1) if age is not None else None,
        max_age_days=state.max_age.days,
        age_ratio=min(age / max_days, 1.0) if age is not None else 0.0,
        next_rotation=cred.due_at,
        status=state.status,
        rotation=f"{rot.step}/{rot.status}" if rot is not None and active else None,
        failed=rot is not None and rot.status in ("failed", "retrying"),
        drift=cred.sync_status if cred.sync_status in ("out-of-sync", "unreachable") else None,
        held_back=cred.dispute is not None,
    )


def choices(session: Session, who: Principal) -> tuple[list[str], list[str]]:
    """The tenants and kinds the filters offer (within the viewer's tenant)."""
    if who.tenant is not None:
        tenants = [who.tenant]
    else:
        tenants = list(session.execute(select(Tenant.id).order_by(Tenant.id)).scalars())
    kinds = select(Credential.kind).distinct().order_by(Credential.kind)
    if who.tenant is not None:
        kinds = kinds.where(Credential.tenant_id == who.tenant)
    return tenants, list(session.execute(kinds).scalars())
