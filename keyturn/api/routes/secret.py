"""A credential's secret: current, previous and next values, conditional and long-polled.

`GET /credentials/{id}/secret` hands out the current value with, when they exist, the
previous one (still accepted during a grace period) and the next one (a rotation in progress
has stored it and is putting it on the target): a client that is refused with `current` tries
`next`, then `previous` (DESIGN.md invariant 9). `?version=` picks one of them alone.

The response carries an ETag naming the versions it holds. A request with that tag in
`If-None-Match` gets 304 and no value (nothing handed out, nothing audited); with `?wait=N`
too it is held until the versions change or N seconds pass: a client learns of a rotation at
once without polling in a loop.
"""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Header, Query, Response
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from keyturn import runtime
from keyturn.api import schemas as s
from keyturn.api.auth import Principal, allow, keyturn_of, visible
from keyturn.api.routes import errors
from keyturn.api.schemas import CredentialId
from keyturn.app import Keyturn
from keyturn.db.models import Version
from keyturn.domain.errors import NotFound
from keyturn.domain.model import VersionState

router = APIRouter(prefix="/credentials", tags=["credentials"], responses=errors())

App = Annotated[Keyturn, Depends(keyturn_of)]
Reader = Annotated[Principal, Depends(allow("secret.read"))]
Which = Literal["current", "previous", "next"]
MAX_WAIT = 60
# How often a held request looks at the versions again: a cheap indexed query, so that a
# rotation run by another process (a worker) is seen within this delay.
POLL_SECONDS = 0.2
_STATES: dict[Which, VersionState] = {
    "current": VersionState.CURRENT,
    "previous": VersionState.PREVIOUS,
    "next": VersionState.PENDING,
}


def _numbers(app: Keyturn, who: Principal, credential_id: str) -> dict[str, int]:
    """State -> number of the readable versions (after the scope check)."""
    with app.db.read() as session:
        visible(session, who, credential_id)
        return _present(session, credential_id, None)


def etag(numbers: dict[str, int], which: Which | None) -> str:
    """Names the versions a response holds: equal tags, equal responses."""
    parts = [f"{n[0]}{numbers.get(_STATES[n].value, 0)}" for n in ("current", "previous", "next")]
    return f'"{which or "all"}.{".".join(parts)}"'


def _matches(header: str | None, tag: str) -> bool:
    if not header:
        return False
    return header.strip() == "*" or tag in (t.strip() for t in header.split(","))


def _read(
    app: Keyturn, who: Principal, credential_id: str, which: Which | None
) -> tuple[s.SecretOut, dict[str, int]]:
    """Reveal the selected values, each an audit entry of its own (fingerprint, never value)."""
    with app.db.write() as session:
        visible(session, who, credential_id)
        found = {
            state: runtime.read_secret(app, session, credential_id, actor=who.actor, number=n)
            for state, n in _present(session, credential_id, which).items()
        }
    out = {
        state: s.SecretValueOut(
            version=row.number, state=row.state, username=row.username, value=value.reveal()
        )
        for state, (row, value) in found.items()
    }
    state = _STATES[which or "current"]
    main = out.get(state.value)
    if main is None:
        raise NotFound(f"{credential_id} has no {which or 'current'} version")
    extra = {} if which else {"previous": out.get("previous"), "next": out.get("pending")}
    body = s.SecretOut(credential=credential_id, **main.model_dump(), **extra)
    return body, {state: v.version for state, v in out.items()}


def _present(session: Session, credential_id: str, which: Which | None) -> dict[str, int]:
    states = [_STATES[which]] if which else list(_STATES.values())
    rows = session.execute(
        select(Version.state, Version.number).where(
            Version.credential_id == credential_id, Version.state.in_(states)
        )
    ).all()
    return {str(state): int(number) for state, number in rows}


@router.get(
    "/{credential_id:path}/secret",
    response_model=s.SecretOut,
    summary="Read the current value, with the previous and next ones",
    responses={304: {"description": "The versions are those named by If-None-Match"}},
)
async def read_secret(
    app: App,
    who: Reader,
    credential_id: CredentialId,
    response: Response,
    version: Annotated[Which | None, Query(description="Only this one")] = None,
    wait: Annotated[
        float, Query(ge=0, le=MAX_WAIT, description="With If-None-Match: hold up to N seconds")
    ] = 0,
    if_none_match: Annotated[str | None, Header()] = None,
) -> s.SecretOut | Response:
    """Every value handed out is an audit entry (with its fingerprint, never the value)."""
    numbers = await run_in_threadpool(_numbers, app, who, credential_id)
    tag = etag(numbers, version)
    deadline = time.monotonic() + wait
    while _matches(if_none_match, tag) and time.monotonic() < deadline:
        await asyncio.sleep(min(POLL_SECONDS, max(deadline - time.monotonic(), 0)))
        numbers = await run_in_threadpool(_numbers, app, who, credential_id)
        tag = etag(numbers, version)
    headers = {"ETag": tag, "Cache-Control": "no-store"}
    if _matches(if_none_match, tag):
        return Response(status_code=304, headers=headers)
    body, held = await run_in_threadpool(_read, app, who, credential_id, version)
    # The values read may be newer than the tag computed above (a rotation moved in between).
    response.headers.update(headers | {"ETag": etag(held, version)})
    return body
