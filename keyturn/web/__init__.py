"""The admin dashboard: server-rendered pages at `/`, beside the API at /api/v1.

Pages read and act through the API's authorisation (`keyturn.api.auth`: roles, tenant
scope, 404 for what a token may not see) and the engine's services; nothing here is a
second path to the data. A person signs in with a token (not a consumer token) and the
browser holds a session cookie (keyturn.web.sessions); every form carries a CSRF token.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException
from starlette.routing import Match, Mount
from starlette.types import Scope

from keyturn.api.errors import status_of
from keyturn.api.ratelimit import FailureLimiter
from keyturn.app import Keyturn
from keyturn.domain.errors import KeyturnError
from keyturn.web import actions, compliance, pages, signin
from keyturn.web.common import HEADERS, HERE, SignInRequired, is_fragment, render

log = logging.getLogger("keyturn.web")


def create_web(app: Keyturn, limiter: FailureLimiter) -> FastAPI:
    """The dashboard for one keyturn installation; *limiter* is the API's, so failed
    sign-ins and failed API calls count together."""
    web = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    web.state.keyturn = app
    web.state.limiter = limiter
    web.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")
    web.include_router(signin.router)
    # Suffix routes (/rotate, /rotations/N/progress) before the bare /credentials/{id}.
    web.include_router(actions.router)
    web.include_router(pages.router)
    web.include_router(compliance.router)
    web.add_exception_handler(SignInRequired, _sign_in)
    web.add_exception_handler(KeyturnError, _keyturn_error)
    web.add_exception_handler(RequestValidationError, _invalid)
    web.add_exception_handler(HTTPException, _http_error)
    return web


class DashboardMount(Mount):
    """The dashboard at `/`, except under *api* (/api/v1): there a path no API route
    serves keeps the API's own 404 and 405 envelopes instead of becoming a page."""

    def __init__(self, web: FastAPI, api: str) -> None:
        super().__init__("/", app=web, name="dashboard")
        self.api = api

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        path = scope.get("path", "")
        if path == self.api or path.startswith(self.api + "/"):
            return Match.NONE, {}
        return super().matches(scope)


async def _sign_in(request: Request, exc: Exception) -> Response:
    if is_fragment(request) or request.method != "GET":
        return _error(request, 401, "Your session has ended; sign in again.")
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/signin?next={_quote(target)}", status_code=303, headers=HEADERS)


def _quote(path: str) -> str:
    from urllib.parse import quote

    return quote(path, safe="")


async def _keyturn_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, KeyturnError)
    status = status_of(exc)
    if status >= 500:
        log.warning("%s %s failed: %s", request.method, request.url.path, exc.code)
    return _error(request, status, exc.message)


async def _invalid(request: Request, exc: Exception) -> Response:
    return _error(request, 400, "The request was not understood; check the form and retry.")


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    message = "No such page." if exc.status_code == 404 else "The request was refused."
    return _error(request, exc.status_code, message)


def _error(request: Request, status: int, message: str) -> Response:
    name = "error_fragment.html" if is_fragment(request) else "error.html"
    return render(request, name, None, status, code=status, message=message)
