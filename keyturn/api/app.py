"""The FastAPI application: `create_app(keyturn)` mounts everything under /api/v1.

The interactive docs (Swagger UI at /api/v1/docs, ReDoc at /api/v1/redoc) load their
scripts and styles from this server, from the files the `fastapi-offline` package ships, so
they work on a host with no way out to a CDN.
"""

from __future__ import annotations

import re
from pathlib import Path

import fastapi_offline
from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send

from keyturn import __version__
from keyturn.api import errors, reading
from keyturn.api.ratelimit import FailureLimiter
from keyturn.api.routes import (
    audit,
    credentials,
    details,
    health,
    metrics,
    reports,
    rotation,
    secret,
    tokens,
)
from keyturn.app import Keyturn

PREFIX = "/api/v1"
MAX_BODY = 64 * 1024
ASSETS = f"{PREFIX}/docs/assets"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")  # no path keyturn serves holds one


class API(FastAPI):
    """FastAPI, with the plain secret read answered before any of its layers: a read is
    keyturn's hot path, and each layer (FastAPI's and Starlette's, the body limit, the catch-
    all) cost it a coroutine frame at every suspension (secret.FastRead)."""

    fast: secret.FastRead | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        fast = self.fast
        if fast is not None and await fast.answer(scope, receive, send):
            return
        if scope["type"] == "http" and _CONTROL.search(scope["path"]):
            # A route's pattern ends in `$`, which matches before a final newline: without
            # this, `/credentials/acme/db/secret%0A` would be served as the read of acme/db.
            await errors.envelope(404, "not_found", "no such path")(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def create_app(
    app: Keyturn,
    *,
    max_body: int = MAX_BODY,
    limiter: FailureLimiter | None = None,
    fast_reads: bool = True,
) -> FastAPI:
    """The API for one keyturn installation. *limiter* counts failed authentications
    (default: 10 per minute per client address). *fast_reads*: plain secret reads are
    answered ahead of the router (secret.FastRead); off, the route answers them all (the
    reference the tests compare it with)."""
    api = API(
        title="keyturn",
        version=__version__,
        summary="Credential rotation: inventory, secrets, rotations, audit.",
        openapi_url=f"{PREFIX}/openapi.json",
        docs_url=None,
        redoc_url=None,
        swagger_ui_oauth2_redirect_url=None,
    )
    api.state.keyturn = app
    api.state.stopping = False  # set as the server stops: held secret reads answer at once
    api.state.limiter = limiter or FailureLimiter()
    api.state.readers = reading.readers()
    errors.install(api)
    api.add_middleware(errors.BodyLimit, limit=max_body)
    api.add_middleware(errors.CatchAll)
    if fast_reads:
        api.fast = secret.FastRead(api, prefix=f"{PREFIX}/credentials/")
    v1 = APIRouter(prefix=PREFIX)
    v1.include_router(health.router)
    # Suffix routes (/{id}/secret, /{id}/rotate, ...) before the bare /{id} ones.
    v1.include_router(details.router)
    v1.include_router(secret.router)
    v1.include_router(rotation.router)
    v1.include_router(credentials.router)
    v1.include_router(audit.router)
    v1.include_router(tokens.router)
    v1.include_router(reports.router)  # compliance reports (issue 19), allow("report.read")
    api.include_router(v1)
    api.include_router(metrics.router)  # /metrics, where Prometheus looks by default
    _docs(api)
    # The dashboard (keyturn.web) takes every path outside /api/v1; mounted last.
    from keyturn.web import DashboardMount, create_web

    api.router.routes.append(DashboardMount(create_web(app, api.state.limiter), PREFIX))
    return api


def _docs(api: FastAPI) -> None:
    """Swagger UI and ReDoc, with every asset served from here (none from a CDN)."""
    static = Path(fastapi_offline.__file__).parent / "static"
    api.mount(ASSETS, StaticFiles(directory=str(static)), name="docs-assets")
    openapi = f"{PREFIX}/openapi.json"

    # Plain routes, as FastAPI mounts its own docs: public, outside the API's route table.
    async def swagger(_request: Request) -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=openapi,
            title="keyturn API",
            swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS}/favicon.png",
            # No call home: Swagger UI's default validator badge is a remote service.
            swagger_ui_parameters={"validatorUrl": None},
        )

    async def redoc(_request: Request) -> HTMLResponse:
        return get_redoc_html(
            openapi_url=openapi,
            title="keyturn API",
            redoc_js_url=f"{ASSETS}/redoc.standalone.js",
            redoc_favicon_url=f"{ASSETS}/favicon.png",
            with_google_fonts=False,
        )

    api.add_route(f"{PREFIX}/docs", swagger, include_in_schema=False)
    api.add_route(f"{PREFIX}/redoc", redoc, include_in_schema=False)
