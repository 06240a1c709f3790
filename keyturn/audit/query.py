"""Reading the audit log: filters, and entries in batches, oldest first."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Row, Select, Table, select
from sqlalchemy.orm import Session

from keyturn.db.models import AuditEntry


@dataclass(frozen=True)
class Filters:
    """Which entries to read: every field that is set must match; times are UTC."""

    credential: str | None = None
    tenant: str | None = None
    action: str | None = None
    actor: str | None = None
    since: datetime | None = None  # inclusive
    until: datetime | None = None  # exclusive


def select_entries(
    filters: Filters = Filters(), *, after: int = 0, tenant_scope: str | None = None
) -> Select[AuditEntry]:
    """Entries after seq *after* that match, oldest first; *tenant_scope* limits them to
    one tenant's (a tenant-scoped token's view)."""
    query = select(AuditEntry).where(AuditEntry.seq > after).order_by(AuditEntry.seq)
    for column, value in (
        (AuditEntry.credential_id, filters.credential),
        (AuditEntry.tenant_id, filters.tenant),
        (AuditEntry.action, filters.action),
        (AuditEntry.actor, filters.actor),
        (AuditEntry.tenant_id, tenant_scope),
    ):
        if value is not None:
            query = query.where(column == value)
    if filters.since is not None:
        query = query.where(AuditEntry.at >= filters.since)
    if filters.until is not None:
        query = query.where(AuditEntry.at < filters.until)
    return query


def iter_entries(
    session: Session,
    batch: int = 5000,
    credential_id: str | None = None,
    filters: Filters | None = None,
) -> Iterator[AuditEntry]:
    """Entries oldest first, read in batches (the session forgets each batch after it)."""
    if filters is None:
        filters = Filters(credential=credential_id)
    last = 0
    while True:
        rows = session.execute(select_entries(filters, after=last).limit(batch)).scalars().all()
        if not rows:
            return
        yield from rows
        last = rows[-1].seq
        session.expunge_all()


_ENTRIES = cast(Table, AuditEntry.__table__)


def iter_rows(session: Session, batch: int = 5000) -> Iterator[Row[Any]]:
    """Every entry as a plain row (attributes named as AuditEntry's), oldest first: what
    `verify` walks, without the ORM's cost per object."""
    last = 0
    while True:
        query = select(_ENTRIES).where(_ENTRIES.c.seq > last).order_by(_ENTRIES.c.seq)
        rows = session.execute(query.limit(batch)).all()
        if not rows:
            return
        yield from rows
        last = rows[-1].seq
