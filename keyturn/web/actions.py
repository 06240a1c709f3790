"""Rotate Credentials Now (and Emergency rotate), with the progress of the rotation.

The rotation goes through the engine's service exactly as the API's rotate route does
(`service.start`, then `service.run`), with the same permission checks; only the run
happens in a background thread, so that the page can show its steps as they are done.
Should a worker (`serve --with-worker`) claim the rotation's lease first, the worker runs
it and the page shows the same progress, read from the rotation's row.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Annotated

from fastapi import APIRouter, Form, Path, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from keyturn.api.auth import visible
from keyturn.app import Keyturn
from keyturn.auth import a_role
from keyturn.domain.errors import Forbidden, KeyturnError
from keyturn.domain.model import Trigger
from keyturn.engine import service
from keyturn.web import detail
from keyturn.web.common import HEADERS, Posted, Seen, Viewer, is_fragment, keyturn_of, render

log = logging.getLogger("keyturn.web")
router = APIRouter()
runs = ThreadPoolExecutor(max_workers=4, thread_name_prefix="keyturn-web-rotation")


def _run(app: Keyturn, rotation_id: int) -> None:
    try:
        service.run(app, rotation_id)
    except KeyturnError as exc:  # e.g. a worker holds the lease: it runs the rotation
        log.info("rotation %s not run here: %s", rotation_id, exc.code)
    except Exception as exc:  # the page shows the rotation's row; the log says what broke
        log.error("rotation %s stopped: %s", rotation_id, type(exc).__name__)


def _may_rotate(seen: Viewer, emergency: bool) -> None:
    if not seen.who.may("rotation.run"):
        raise Forbidden(f"{a_role(seen.who.role)} token may not rotate credentials")
    if emergency and not seen.who.may("rotation.emergency"):
        raise Forbidden(f"{a_role(seen.who.role)} token may not start an emergency rotation")


@router.get("/credentials/{credential_id:path}/rotate", response_class=HTMLResponse)
def confirm_page(
    request: Request, seen: Seen, credential_id: str, emergency: bool = False
) -> HTMLResponse:
    """The confirmation as a page of its own, for a browser without JavaScript."""
    _may_rotate(seen, emergency)
    app = keyturn_of(request)
    with app.db.read() as session:
        view = detail.load(app, session, seen.who, credential_id)
    return render(request, "confirm.html", seen, v=view, c=view.cred, emergency=emergency)


@router.post("/credentials/{credential_id:path}/rotate")
def rotate(
    request: Request,
    seen: Posted,
    credential_id: str,
    reason: Annotated[str, Form(max_length=service.MAX_REASON)] = "",
    emergency: Annotated[bool, Form()] = False,
) -> Response:
    """Start the rotation; answer with its progress (a fragment, or the credential page)."""
    _may_rotate(seen, emergency)
    app = keyturn_of(request)
    with app.db.read() as session:
        visible(session, seen.who, credential_id)
    trigger = Trigger.EMERGENCY if emergency else Trigger.MANUAL
    rotation_id = service.start(
        app, credential_id, trigger=trigger, actor=seen.who.actor, reason=reason
    )
    runs.submit(_run, app, rotation_id)
    if is_fragment(request):
        return _progress(request, seen, credential_id, rotation_id, status=202)
    url = f"/credentials/{credential_id}?rotation={rotation_id}#rotation-{rotation_id}"
    return RedirectResponse(url, status_code=303, headers=HEADERS)


@router.get(
    "/credentials/{credential_id:path}/rotations/{rotation_id}/progress",
    response_class=HTMLResponse,
)
def progress(
    request: Request,
    seen: Seen,
    credential_id: str,
    rotation_id: Annotated[int, Path(ge=0, le=2**31 - 1)],
) -> Response:
    """A small fragment the page polls until the rotation is done or has failed."""
    if not seen.who.may("credential.read"):
        raise Forbidden(f"{a_role(seen.who.role)} token may not read credentials")
    return _progress(request, seen, credential_id, rotation_id)


def _progress(
    request: Request, seen: Viewer, credential_id: str, rotation_id: int, status: int = 200
) -> Response:
    with keyturn_of(request).db.read() as session:
        rot = detail.rotation_view(
            detail.rotation_of(session, seen.who, credential_id, rotation_id)
        )
    return render(request, "progress.html", seen, status, r=rot)
