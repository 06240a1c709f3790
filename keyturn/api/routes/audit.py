"""The audit log: query with filters and pages, export as JSON lines, verify the chain.

A tenant-scoped token sees only its tenant's entries.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from fastapi.responses import StreamingResponse
from sqlalchemy import Select, select

from keyturn.api import schemas as s
from keyturn.api.auth import Principal, allow, keyturn_of
from keyturn.api.routes import errors
from keyturn.app import Keyturn
from keyturn.audit import log as audit
from keyturn.db.models import AuditEntry
from keyturn.domain.errors import UsageError
from keyturn.domain.ids import validate_id

router = APIRouter(prefix="/audit", tags=["audit"], responses=errors())

App = Annotated[Keyturn, Depends(keyturn_of)]
Auditor = Annotated[Principal, Depends(allow("audit.read"))]
EXPORT_BATCH = 1000


class Filters:
    """Query parameters shared by the query and export routes."""

    def __init__(
        self,
        credential: Annotated[str | None, Query(max_length=200)] = None,
        tenant: Annotated[str | None, Query(max_length=63)] = None,
        action: Annotated[str | None, Query(max_length=64)] = None,
        actor: Annotated[str | None, Query(max_length=200)] = None,
        since: Annotated[datetime | None, Query(description="ISO time, inclusive")] = None,
        until: Annotated[datetime | None, Query(description="ISO time, exclusive")] = None,
    ) -> None:
        if credential is not None:
            validate_id(credential)
        for when in (since, until):
            if when is not None and when.tzinfo is None:
                raise UsageError("since and until need a time zone, e.g. 2026-01-01T00:00:00Z")
        self.credential, self.tenant, self.action, self.actor = credential, tenant, action, actor
        self.since, self.until = since, until

    def query(self, who: Principal, after: int) -> Select[AuditEntry]:
        query = select(AuditEntry).where(AuditEntry.seq > after).order_by(AuditEntry.seq)
        for column, value in (
            (AuditEntry.credential_id, self.credential),
            (AuditEntry.tenant_id, self.tenant),
            (AuditEntry.action, self.action),
            (AuditEntry.actor, self.actor),
        ):
            if value is not None:
                query = query.where(column == value)
        if who.tenant is not None:
            query = query.where(AuditEntry.tenant_id == who.tenant)
        if self.since is not None:
            query = query.where(AuditEntry.at >= self.since)
        if self.until is not None:
            query = query.where(AuditEntry.at < self.until)
        return query


def _entry(row: AuditEntry) -> s.AuditEntryOut:
    return s.AuditEntryOut.model_validate(audit.as_dict(row))


@router.get("", response_model=s.AuditPage, summary="Query the audit log")
def query_audit(
    app: App,
    who: Auditor,
    filters: Annotated[Filters, Depends()],
    after: Annotated[int, Query(ge=0, le=2**31 - 1, description="Entries after this seq")] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> s.AuditPage:
    """Oldest first; page on with `after=next_after`."""
    with app.db.read() as session:
        rows = session.execute(filters.query(who, after).limit(limit + 1)).scalars().all()
        entries = [_entry(r) for r in rows[:limit]]
    more = len(rows) > limit
    return s.AuditPage(entries=entries, next_after=entries[-1].seq if more else None)


@router.get(
    "/export",
    summary="Export the audit log as JSON lines",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/x-ndjson": {"schema": {"type": "string"}}}}},
)
def export_audit(
    app: App, who: Auditor, filters: Annotated[Filters, Depends()]
) -> StreamingResponse:
    """One entry per line, oldest first, streamed in batches."""

    def lines() -> Iterator[str]:
        after = 0
        while True:
            with app.db.read() as session:
                rows = (
                    session.execute(filters.query(who, after).limit(EXPORT_BATCH)).scalars().all()
                )
                chunk = [json.dumps(audit.as_dict(r), sort_keys=True) + "\n" for r in rows]
            if not rows:
                return
            yield "".join(chunk)
            after = rows[-1].seq

    return StreamingResponse(lines(), media_type="application/x-ndjson")


@router.get("/verify", response_model=s.AuditVerifyOut, summary="Verify the hash chain")
def verify_audit(app: App, who: Auditor) -> s.AuditVerifyOut:
    """Names the first edited, removed, reordered or inserted entry. A tenant-scoped token
    learns whether the chain holds, not how long it is."""
    with app.db.read() as session:
        result = audit.verify(session)
    scoped = who.tenant is not None
    return s.AuditVerifyOut(
        ok=result.ok,
        entries=None if scoped else result.count,
        broken_entry=result.broken_seq,
        problem=result.problem,
    )
