"""`/metrics`: Prometheus's text exposition, for a token that may read reports.

Prometheus sends the token with `authorization: {credentials_file: ...}` in its scrape
config (docs/compliance.md). A tenant-scoped token sees its tenant's metrics only.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import Response

from keyturn.api.auth import Principal, allow, keyturn_of
from keyturn.api.routes import errors
from keyturn.app import Keyturn

router = APIRouter(tags=["metrics"])


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={**errors(), 200: {"content": {"text/plain": {}}}},
)
def metrics(
    app: Annotated[Keyturn, Depends(keyturn_of)],
    who: Annotated[Principal, Depends(allow("report.read"))],
) -> Response:
    """Credential ages and due times, compliance findings, rotations, outbox, consumers."""
    from keyturn.report.metrics import CONTENT_TYPE, exposition

    return Response(exposition(app, tenant=who.tenant), media_type=CONTENT_TYPE)
