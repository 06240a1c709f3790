"""A credential's secret: current, previous and next values, conditional and long-polled.

`GET /credentials/{id}/secret` hands out the current value with, when they exist, the
previous one (still accepted during a grace period) and the next one (a rotation in progress
has stored it and is putting it on the target): a client that is refused with `current` tries
`next`, then `previous` (DESIGN.md invariant 9). `?version=` picks one of them alone.

The response carries an ETag naming the versions it holds. A request with that tag in
`If-None-Match` gets 304 and no value (nothing handed out, nothing audited); with `?wait=N`
too it is held until the versions change or N seconds pass: a client learns of a rotation at
once without polling in a loop.

The read is keyturn's hot path (keyturn.api.reading): the token, the scope check and the
versions come from one statement (one snapshot), the audit entries are group-committed before the
values are sent, and a request that is not held makes one thread hop.
"""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Literal

from fastapi import APIRouter, Header, Query, Request, Response
from sqlalchemy import select

from keyturn.api import reading
from keyturn.api import schemas as s
from keyturn.api.auth import Principal, bearer, bearer_token, keyturn_of
from keyturn.api.routes import errors
from keyturn.api.schemas import CredentialId
from keyturn.db.models import Rotation
from keyturn.db.reads import Held
from keyturn.domain.errors import NotFound
from keyturn.domain.model import ACTIVE_STATUSES, Step, VersionState

router = APIRouter(prefix="/credentials", tags=["credentials"], responses=errors())

Which = Literal["current", "previous", "next"]
MAX_WAIT = 60
# How often a held request looks at the versions again: a cheap indexed query, so that a
# rotation run by another process (a worker) is seen within this delay.
POLL_SECONDS = 0.2
# A rotation past these steps has put its pending value on the target.
_PAST_SET = (Step.TEST, Step.PUBLISH, Step.FINISH)
_STATES: dict[Which, VersionState] = {
    "current": VersionState.CURRENT,
    "previous": VersionState.PREVIOUS,
    "next": VersionState.PENDING,
}


def etag(numbers: dict[str, int], which: Which | None, on_target: bool = False) -> str:
    """Names the versions a response holds (and whether `next` is on the target yet):
    equal tags, equal responses."""
    parts = [f"{n[0]}{numbers.get(_STATES[n].value, 0)}" for n in ("current", "previous", "next")]
    return f'"{which or "all"}.{".".join(parts)}{"+" if on_target else ""}"'


def on_target(request: Request, found: Held) -> bool:
    """Has the rotation put the pending version on the target (is it past `set`)? Asked
    only while a rotation holds a pending version."""
    pending = found.versions.get(VersionState.PENDING.value)
    if pending is None:
        return False
    with keyturn_of(request).db.read() as session:
        step = session.execute(
            select(Rotation.step).where(
                Rotation.credential_id == found.id,
                Rotation.status.in_(ACTIVE_STATUSES),
                Rotation.new_version == pending.number,
            )
        ).scalar_one_or_none()
    return step in _PAST_SET


def _matches(header: str | None, tag: str) -> bool:
    if not header:
        return False
    return header.strip() == "*" or tag in (t.strip() for t in header.split(","))


def _states(which: Which | None) -> list[str]:
    return [_STATES[which].value] if which else [v.value for v in _STATES.values()]


def _lookup(
    request: Request, token: str, credential_id: str, states: list[str]
) -> tuple[Principal, Held, bool]:
    """Who asks, what they may read, and whether `next` is on the target yet (the database)."""
    who, found = reading.fetch(request, token, credential_id, states)
    return who, found, on_target(request, found)


async def _serve(
    request: Request, token: str, credential_id: str, which: Which | None, if_none_match: str | None
) -> tuple[str, bytes | None]:
    """(ETag, body); no body when the tag matches If-None-Match (nothing handed out)."""
    states = _states(which)
    lookup = (request, token, credential_id, states)
    who, found, live = await reading.in_thread(request, _lookup, *lookup)
    tag = etag({state: v.number for state, v in found.versions.items()}, which, live)
    if _matches(if_none_match, tag):
        return tag, None
    return tag, await _body(request, who, found, which, states, live)


async def _body(
    request: Request,
    who: Principal,
    found: Held,
    which: Which | None,
    states: list[str],
    live: bool,
) -> bytes:
    """Hand out the values *found* holds, each an audit entry of its own (fingerprint, never
    value), committed before this returns."""
    if _STATES[which or "current"].value not in found.versions:
        raise NotFound(f"{found.id} has no {which or 'current'} version")
    handed = reading.open_values(request, found, states)
    await reading.audit(request, who, found, handed)
    out = {
        state: s.SecretValueOut(
            version=h.version.number,
            state=h.version.state,
            username=h.version.username,
            value=h.value.reveal(),
            on_target=live if state == VersionState.PENDING.value else None,
        )
        for state, h in handed.items()
    }
    main = out[_STATES[which or "current"].value]
    extra = {} if which else {"previous": out.get("previous"), "next": out.get("pending")}
    return s.SecretOut(credential=found.id, **main.model_dump(), **extra).model_dump_json().encode()


@router.get(
    "/{credential_id:path}/secret",
    response_model=s.SecretOut,
    summary="Read the current value, with the previous and next ones",
    responses={304: {"description": "The versions are those named by If-None-Match"}},
    openapi_extra={"security": [{"HTTPBearer": []}]},
)
async def read_secret(
    request: Request,
    credential_id: CredentialId,
    version: Annotated[Which | None, Query(description="Only this one")] = None,
    wait: Annotated[
        float, Query(ge=0, le=MAX_WAIT, description="With If-None-Match: hold up to N seconds")
    ] = 0,
    if_none_match: Annotated[str | None, Header()] = None,
) -> Response:
    """Every value handed out is an audit entry (with its fingerprint, never the value)."""
    # The token is read by the same HTTPBearer the other routes depend on, called here and
    # not as a dependency: FastAPI's per-request dependency solving was a seventh of this hot
    # route's time. `openapi_extra` documents the scheme the dependency would have.
    token = bearer_token(request, await bearer(request))
    args = (request, token, credential_id, version, if_none_match)
    tag, body = await _serve(*args)
    deadline = time.monotonic() + wait
    while body is None and time.monotonic() < deadline:
        await asyncio.sleep(min(POLL_SECONDS, max(deadline - time.monotonic(), 0)))
        tag, body = await _serve(*args)
    headers = {"ETag": tag, "Cache-Control": "no-store"}
    if body is None:
        return Response(status_code=304, headers=headers)
    return Response(body, media_type="application/json", headers=headers)
