"""Liveness and readiness, without authentication and without anything secret."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from sqlalchemy import text

from keyturn import __version__
from keyturn.api import schemas as s
from keyturn.api.auth import keyturn_of
from keyturn.api.routes import errors
from keyturn.app import Keyturn

router = APIRouter(tags=["health"])


@router.get("/health", response_model=s.HealthOut, summary="Health", responses=errors(503))
def health(app: Annotated[Keyturn, Depends(keyturn_of)]) -> s.HealthOut:
    """200 when keyturn's database answers; 503 (database_unavailable) when it does not."""
    with app.db.read() as session:
        session.execute(text("SELECT 1"))
    return s.HealthOut(status="ok", version=__version__)
