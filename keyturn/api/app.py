"""The FastAPI application: `create_app(keyturn)` mounts everything under /api/v1."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI

from keyturn import __version__
from keyturn.api import errors
from keyturn.api.ratelimit import FailureLimiter
from keyturn.api.routes import audit, credentials, details, health, rotation, tokens
from keyturn.app import Keyturn

PREFIX = "/api/v1"
MAX_BODY = 64 * 1024


def create_app(
    app: Keyturn, *, max_body: int = MAX_BODY, limiter: FailureLimiter | None = None
) -> FastAPI:
    """The API for one keyturn installation. *limiter* counts failed authentications
    (default: 10 per minute per client address)."""
    api = FastAPI(
        title="keyturn",
        version=__version__,
        summary="Credential rotation: inventory, secrets, rotations, audit.",
        openapi_url=f"{PREFIX}/openapi.json",
        docs_url=f"{PREFIX}/docs",
        redoc_url=None,
        swagger_ui_oauth2_redirect_url=None,
    )
    api.state.keyturn = app
    api.state.limiter = limiter or FailureLimiter()
    errors.install(api)
    api.add_middleware(errors.BodyLimit, limit=max_body)
    api.add_middleware(errors.CatchAll)
    v1 = APIRouter(prefix=PREFIX)
    v1.include_router(health.router)
    # Suffix routes (/{id}/secret, /{id}/rotate, ...) before the bare /{id} ones.
    v1.include_router(details.router)
    v1.include_router(rotation.router)
    v1.include_router(credentials.router)
    v1.include_router(audit.router)
    v1.include_router(tokens.router)
    # Compliance reports (issue 8) mount here as routes/reports.py with allow("report.read").
    api.include_router(v1)
    return api
