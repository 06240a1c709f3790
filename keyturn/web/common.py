"""What every dashboard route shares: the viewer, the CSRF check, rendering, headers."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import jinja2
from fastapi import Depends, Form, Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from keyturn.api.auth import Principal
from keyturn.app import Keyturn
from keyturn.domain.errors import Forbidden
from keyturn.web import sessions

HERE = Path(__file__).parent
templates = Jinja2Templates(
    env=jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True, trim_blocks=True
    )
)
# Pages hold no secret value, but they hold what a token may see: no cache, no framing,
# scripts and styles from this server only (the CSP also stops an injected inline script).
HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
FRAGMENT = "x-keyturn-fragment"


class SignInRequired(Exception):
    """No live session: the browser goes to the sign-in page."""


def keyturn_of(request: Request) -> Keyturn:
    instance: Keyturn = request.app.state.keyturn
    return instance


@dataclass(frozen=True)
class Viewer:
    who: Principal
    session_id: str

    @property
    def csrf(self) -> str:
        return sessions.csrf_for(self.session_id)


def viewer(request: Request) -> Viewer:
    """The signed-in person, as the principal of the token they signed in with."""
    session_id = request.cookies.get(sessions.COOKIE)
    with keyturn_of(request).db.read() as session:
        who = sessions.principal_for(session, session_id)
    if who is None or session_id is None:
        raise SignInRequired()
    return Viewer(who, session_id)


def posted(request: Request, csrf: Annotated[str, Form(max_length=100)] = "") -> Viewer:
    """The viewer of a form POST whose CSRF token matches the session's."""
    seen = viewer(request)
    if not sessions.csrf_ok(seen.session_id, csrf):
        raise Forbidden("this form's CSRF token is missing or out of date; reload the page")
    return seen


Seen = Annotated[Viewer, Depends(viewer)]
Posted = Annotated[Viewer, Depends(posted)]


def is_fragment(request: Request) -> bool:
    return request.headers.get(FRAGMENT) == "1"


def render(
    request: Request, name: str, view: Viewer | None, status: int = 200, **context: Any
) -> HTMLResponse:
    context.update(viewer=view, csrf=view.csrf if view else context.get("csrf"))
    response = templates.TemplateResponse(request, name, context, status_code=status)
    response.headers.update(HEADERS)
    return response
