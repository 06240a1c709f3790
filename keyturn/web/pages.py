"""The pages: inventory, one credential, the audit log."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse
from sqlalchemy import select

from keyturn.audit import log as audit
from keyturn.audit.query import Filters as AuditFilters
from keyturn.audit.query import select_entries
from keyturn.auth import a_role
from keyturn.db.models import AuditEntry, utcnow
from keyturn.domain.errors import Forbidden
from keyturn.domain.ids import validate_id
from keyturn.domain.inputs import check_text
from keyturn.web import detail, inventory
from keyturn.web.common import Seen, keyturn_of, render

router = APIRouter()
Text = Annotated[str, Query(max_length=200)]
AUDIT_PAGE = 50


@router.get("/", response_class=HTMLResponse)
def inventory_page(
    request: Request,
    seen: Seen,
    tenant: Text = "",
    kind: Text = "",
    status: Text = "",
    q: Text = "",
    sort: Text = "id",
    after: Annotated[str, Query(max_length=600)] = "",
) -> HTMLResponse:
    """Every credential the viewer may see, 50 to a page."""
    if not seen.who.may("credential.read"):
        raise Forbidden(f"{a_role(seen.who.role)} token may not read the inventory")
    filters = inventory.Filters(tenant, kind, status, q.strip(), sort, after).check()
    with keyturn_of(request).db.read() as session:
        found = inventory.page(session, seen.who, filters, utcnow())
        tenants, kinds = inventory.choices(session, seen.who)
    return render(
        request,
        "inventory.html",
        seen,
        page=found,
        f=filters,
        tenants=tenants,
        kinds=kinds,
        statuses=inventory.STATUSES,
        sorts=list(inventory.SORTS),
        cap=inventory.COUNT_CAP,
    )


@router.get("/credentials/{credential_id:path}", response_class=HTMLResponse)
def credential_page(
    request: Request,
    seen: Seen,
    credential_id: str,
    rotation: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
) -> HTMLResponse:
    """Everything about one credential; rotations under way (and *rotation*) show their steps."""
    if not seen.who.may("credential.read"):
        raise Forbidden(f"{a_role(seen.who.role)} token may not read credentials")
    app = keyturn_of(request)
    with app.db.read() as session:
        view = detail.load(app, session, seen.who, credential_id)
    shown = [r for r in view.rotations if not r.final or r.row.id == rotation]
    return render(request, "credential.html", seen, v=view, c=view.cred, shown=shown)


@router.get("/audit", response_class=HTMLResponse)
def audit_page(
    request: Request,
    seen: Seen,
    credential: Text = "",
    tenant: Text = "",
    action: Text = "",
    actor: Text = "",
    before: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
    verify: bool = False,
) -> HTMLResponse:
    """Newest entries first, with the chain's verification on demand."""
    if not seen.who.may("audit.read"):
        raise Forbidden(f"{a_role(seen.who.role)} token may not read the audit log")
    if credential:
        validate_id(credential)
    for name, value in (("tenant", tenant), ("action", action), ("actor", actor)):
        if value:
            check_text(value, name)
    filters = AuditFilters(
        credential=credential or None,
        tenant=tenant or None,
        action=action or None,
        actor=actor or None,
    )
    query = select_entries(filters, tenant_scope=seen.who.tenant).order_by(None)
    if before:
        query = query.where(AuditEntry.seq < before)
    query = query.order_by(AuditEntry.seq.desc()).limit(AUDIT_PAGE + 1)
    with keyturn_of(request).db.read() as session:
        # The chain first: verify reads it from one snapshot (REPEATABLE READ on PostgreSQL),
        # which it can choose only before the transaction's first statement.
        checked = audit.verify(session) if verify else None
        rows = list(session.execute(query).scalars())
        names = select(AuditEntry.action).distinct().order_by(AuditEntry.action)
        if seen.who.tenant is not None:
            names = names.where(AuditEntry.tenant_id == seen.who.tenant)
        actions = list(session.execute(names).scalars())
    more = len(rows) > AUDIT_PAGE
    entries = [audit.shown(e) for e in rows[:AUDIT_PAGE]]
    return render(
        request,
        "audit.html",
        seen,
        entries=entries,
        filters=filters,
        actions=actions,
        older=entries[-1]["seq"] if more else None,
        checked=checked,
        scoped=seen.who.tenant is not None,
    )
