"""The compliance page: `keyturn report`'s report (keyturn.report.build) and its charts.

A tenant-scoped viewer gets its tenant's report only, whatever tenant the form names.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse

from keyturn import report
from keyturn.auth import a_role
from keyturn.domain.errors import Forbidden
from keyturn.domain.ids import validate_name
from keyturn.domain.inputs import check_text
from keyturn.report import charts
from keyturn.web.common import Seen, keyturn_of, render

router = APIRouter()
Text = Annotated[str, Query(max_length=200)]
SHOWN = 200  # failing credentials listed on the page; `keyturn report` has them all


@router.get("/compliance", response_class=HTMLResponse)
def compliance_page(
    request: Request, seen: Seen, tenant: Text = "", kind: Text = "", owner: Text = ""
) -> HTMLResponse:
    if not seen.who.may("report.read"):
        raise Forbidden(f"{a_role(seen.who.role)} token may not read the compliance report")
    for what, value in (("tenant", tenant), ("kind", kind)):
        if value:
            validate_name(value, what)
    if owner:
        check_text(owner, "owner")
    if seen.who.tenant is not None:
        tenant = seen.who.tenant
    built = report.build(
        keyturn_of(request), tenant=tenant or None, kind=kind or None, owner=owner or None
    )
    failing = built.failing([])
    drawn = [chart(built) for chart in charts.CHARTS]
    return render(
        request,
        "compliance.html",
        seen,
        r=built,
        rules=[report.BY_ID[rule] for rule in report.RULE_IDS],
        charts=drawn,
        failing=failing[:SHOWN],
        more=max(len(failing) - SHOWN, 0),
        f={"tenant": tenant, "kind": kind, "owner": owner},
        scoped=seen.who.tenant is not None,
    )
