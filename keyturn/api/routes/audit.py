"""The audit log: query with filters and pages, export as JSON lines, verify the chain,
and signed checkpoints of its head.

A tenant-scoped token sees only its tenant's entries, and nothing of the whole log's length
(no counts, no checkpoints).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from fastapi.responses import StreamingResponse
from sqlalchemy import Select

from keyturn.api import schemas as s
from keyturn.api.auth import Principal, allow, keyturn_of
from keyturn.api.routes import errors
from keyturn.app import Keyturn
from keyturn.audit import checkpoint
from keyturn.audit import log as audit
from keyturn.db.models import AuditEntry
from keyturn.domain.errors import Forbidden
from keyturn.domain.ids import validate_id
from keyturn.domain.inputs import check_moment, check_text

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
        for name, value in (("tenant", tenant), ("action", action), ("actor", actor)):
            if value is not None:
                check_text(value, name)
        self.filters = audit.Filters(
            credential=credential,
            tenant=tenant,
            action=action,
            actor=actor,
            since=check_moment(since, "since") if since is not None else None,
            until=check_moment(until, "until") if until is not None else None,
        )

    def query(self, who: Principal, after: int) -> Select[AuditEntry]:
        return audit.select_entries(self.filters, after=after, tenant_scope=who.tenant)


def _entry(row: AuditEntry) -> s.AuditEntryOut:
    return s.AuditEntryOut.model_validate(audit.shown(row))


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
    """One entry per line, oldest first, streamed in batches. The first batch is read before
    the answer starts, so a bad filter or an unavailable database is a proper error status,
    not a 200 that stops."""

    def batch(after: int) -> tuple[str, int | None]:
        with app.db.read() as session:
            rows = session.execute(filters.query(who, after).limit(EXPORT_BATCH)).scalars().all()
            text = "".join(json.dumps(audit.as_dict(r), sort_keys=True) + "\n" for r in rows)
        return text, (rows[-1].seq if len(rows) == EXPORT_BATCH else None)

    first, after = batch(0)

    def lines() -> Iterator[str]:
        chunk, more = first, after
        while True:
            if chunk:
                yield chunk
            if more is None:
                return
            chunk, more = batch(more)

    return StreamingResponse(lines(), media_type="application/x-ndjson")


def _verified(result: audit.VerifyResult, who: Principal) -> s.AuditVerifyOut:
    scoped = who.tenant is not None
    return s.AuditVerifyOut(
        ok=result.ok,
        entries=None if scoped else result.count,
        broken_entry=None if scoped else result.broken_seq,
        kind=result.kind,
        problem=None if scoped else result.problem,
        checkpoints=result.checkpoints,
    )


@router.get("/verify", response_model=s.AuditVerifyOut, summary="Verify the chain")
def verify_audit(app: App, who: Auditor) -> s.AuditVerifyOut:
    """Names the first thing done to the log (`kind`: altered, removed, inserted, appended,
    truncated, head-missing, ...). A tenant-scoped token learns whether the log holds and
    the kind of problem, not how long the log is or where."""
    with app.db.read() as session:
        return _verified(audit.verify(session), who)


@router.post(
    "/verify", response_model=s.AuditVerifyOut, summary="Verify the chain against checkpoints"
)
def verify_against(app: App, who: Auditor, body: s.CheckpointsIn) -> s.AuditVerifyOut:
    """As GET, and also proves the log was not cut or rewritten since each checkpoint."""
    marks = [
        checkpoint.from_dict(cp.model_dump(), f"checkpoints[{i}]")
        for i, cp in enumerate(body.checkpoints)
    ]
    with app.db.read() as session:
        return _verified(audit.verify(session, marks), who)


@router.get(
    "/checkpoint", response_model=s.CheckpointOut, summary="A signed checkpoint of the head"
)
def make_checkpoint(app: App, who: Auditor) -> s.CheckpointOut:
    """Keep it outside keyturn (a monitor that polls this is one way); POST it to
    /audit/verify later. Not for tenant-scoped tokens: it tells the whole log's length."""
    if who.tenant is not None:
        raise Forbidden("a tenant-scoped token cannot see the whole log's head")
    with app.db.read() as session:
        made = checkpoint.make(session, app.vault.keys)
    return s.CheckpointOut.model_validate(made.as_dict())
