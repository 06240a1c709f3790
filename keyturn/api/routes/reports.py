"""`GET /report`: the compliance report, as `keyturn report` makes it, in JSON, CSV or HTML.

For a token that may read reports (admin, operator, auditor). A tenant-scoped token gets its
tenant's report; naming another tenant is answered as any resource outside its scope is:
404, the same answer as for a tenant that does not exist.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response, StreamingResponse

from keyturn.api.auth import Principal, allow, keyturn_of
from keyturn.api.routes import errors
from keyturn.app import Keyturn
from keyturn.domain.errors import NotFound
from keyturn.domain.ids import validate_name
from keyturn.domain.inputs import check_moment, check_text
from keyturn.report.rules import DEFAULT_UNUSED_DAYS

router = APIRouter(tags=["report"], responses=errors())


class Format(StrEnum):
    json = "json"
    csv = "csv"
    html = "html"


MEDIA = {
    Format.json: "application/json",
    Format.csv: "text/csv; charset=utf-8",
    Format.html: "text/html; charset=utf-8",
}


def _scope(who: Principal, tenant: str | None) -> str | None:
    """The tenant the report covers: the token's own when it is scoped."""
    if tenant is not None:
        validate_name(tenant, "tenant")
    if who.tenant is None:
        return tenant
    if tenant is not None and tenant != who.tenant:
        raise NotFound(f"no tenant {tenant!r}")
    return who.tenant


@router.get(
    "/report",
    summary="The compliance report",
    response_class=Response,
    responses={**errors(), 200: {"content": {m: {} for m in MEDIA.values()}}},
)
def report(
    app: Annotated[Keyturn, Depends(keyturn_of)],
    who: Annotated[Principal, Depends(allow("report.read"))],
    form: Annotated[Format, Query(alias="format")] = Format.json,
    at: Annotated[
        datetime | None, Query(description="Evaluate at this time (ISO, with a zone)")
    ] = None,
    tenant: Annotated[str | None, Query(max_length=63)] = None,
    kind: Annotated[str | None, Query(max_length=63)] = None,
    owner: Annotated[str | None, Query(max_length=200)] = None,
    unused_days: Annotated[int, Query(ge=1, le=36500)] = DEFAULT_UNUSED_DAYS,
    weeks: Annotated[int, Query(ge=1, le=104, description="Weekly points in the trend")] = 8,
) -> Response:
    """Rows with their findings, summaries by tenant, kind and owner, and the weekly trend
    (docs/compliance.md); the JSON is `keyturn report --format json`'s."""
    from keyturn.report import build, render

    scope = _scope(who, tenant)
    if kind is not None:
        validate_name(kind, "kind")
    if owner:
        check_text(owner, "owner")
    made = build(
        app,
        at=check_moment(at, "at") if at is not None else None,
        tenant=scope,
        kind=kind,
        owner=owner,
        unused_days=unused_days,
        trend_weeks=weeks,
    )
    if form == Format.csv:
        body = render.to_csv(made)
    elif form == Format.html:
        body = render.to_html(made)
    else:
        # Sent as it is encoded (Report.json_chunks): the bytes of json.dumps(to_dict()).
        return StreamingResponse(made.json_chunks(), media_type=MEDIA[form])
    return Response(body, media_type=MEDIA[form])
