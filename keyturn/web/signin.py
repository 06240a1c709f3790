"""Sign in with a token, sign out."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from keyturn.api.ratelimit import FailureLimiter
from keyturn.domain.errors import Forbidden
from keyturn.web import sessions
from keyturn.web.common import HEADERS, Posted, keyturn_of, render

router = APIRouter()


def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _safe_next(target: str) -> str:
    """Only a path on this server: no open redirect to another site."""
    if target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/"


def _form(request: Request, status: int = 200, error: str = "", next_: str = "/") -> Response:
    pre = sessions.new_id()
    response = render(
        request, "signin.html", None, status, csrf=sessions.csrf_for(pre), error=error, next=next_
    )
    response.set_cookie(
        sessions.PRE_COOKIE,
        pre,
        max_age=900,
        path="/signin",
        httponly=True,
        secure=request.url.scheme == "https",
        samesite="strict",
    )
    return response


@router.get("/signin", response_class=HTMLResponse)
def signin_page(request: Request, next: str = "/") -> Response:
    return _form(request, next_=_safe_next(next))


@router.post("/signin")
def signin(
    request: Request,
    token: Annotated[str, Form(max_length=500)] = "",
    csrf: Annotated[str, Form(max_length=100)] = "",
    next: Annotated[str, Form(max_length=500)] = "/",
) -> Response:
    if not sessions.csrf_ok(request.cookies.get(sessions.PRE_COOKIE), csrf):
        return _form(request, 403, "The sign-in form was out of date; try again.")
    limiter: FailureLimiter = request.app.state.limiter
    wait = limiter.retry_after(_client(request))
    if wait is not None:
        return _form(request, 429, f"Too many failed sign-ins; retry in {wait} seconds.")
    try:
        with keyturn_of(request).db.write() as session:
            opened = sessions.open_session(session, token)
    except Forbidden as exc:
        limiter.failed(_client(request))
        return _form(request, 401, f"Sign-in refused: {exc.message}.", _safe_next(next))
    return _signed_in(request, opened, _safe_next(next))


@router.get("/signin/link")
def signin_link(request: Request, code: Annotated[str, Query(max_length=100)] = "") -> Response:
    """A one-use sign-in link (`keyturn demo` prints one): the code becomes a session."""
    with keyturn_of(request).db.write() as session:
        opened = sessions.redeem_link(session, code)
    if opened is None:
        return _form(request, 401, "This sign-in link was used already or has expired.")
    return _signed_in(request, opened, "/")


def _signed_in(request: Request, opened: sessions.Opened, target: str) -> Response:
    response = RedirectResponse(target, status_code=303, headers=HEADERS)
    response.set_cookie(
        sessions.COOKIE,
        opened.session_id,
        expires=opened.expires_at,
        path="/",
        httponly=True,
        secure=request.url.scheme == "https",
        samesite="strict",
    )
    response.delete_cookie(sessions.PRE_COOKIE, path="/signin")
    return response


@router.post("/signout")
def signout(request: Request, seen: Posted) -> Response:
    with keyturn_of(request).db.write() as session:
        sessions.close(session, seen.session_id)
    response = RedirectResponse("/signin", status_code=303, headers=HEADERS)
    response.delete_cookie(sessions.COOKIE, path="/")
    return response


__all__ = ["router"]
