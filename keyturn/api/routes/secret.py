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
import re
import time
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Query, Request, Response
from starlette.types import Message, Receive, Scope, Send

from keyturn.api import errors as api_errors
from keyturn.api import reading
from keyturn.api import schemas as s
from keyturn.api.auth import Principal, bearer, bearer_token, keyturn_of
from keyturn.api.routes import errors
from keyturn.api.schemas import CredentialId
from keyturn.db import reads
from keyturn.db.reads import Held
from keyturn.domain.errors import NotFound
from keyturn.domain.model import VersionState

router = APIRouter(prefix="/credentials", tags=["credentials"], responses=errors())

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
        return reads.on_target(session.connection(), found.id, pending.number)


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
    # Built from the fields themselves (not main.model_dump() read back): one model less.
    extra = {} if which else {"previous": out.get("previous"), "next": out.get("pending")}
    return (
        s.SecretOut(
            credential=found.id,
            version=main.version,
            state=main.state,
            username=main.username,
            value=main.value,
            on_target=main.on_target,
            **extra,
        )
        .model_dump_json()
        .encode()
    )


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
    state = request.app.state
    while body is None and not state.stopping and time.monotonic() < deadline:
        await asyncio.sleep(min(POLL_SECONDS, max(deadline - time.monotonic(), 0)))
        tag, body = await _serve(*args)
    return _response(tag, body)


def _response(tag: str, body: bytes | None) -> Response:
    headers = {"ETag": tag, "Cache-Control": "no-store"}
    if body is None:
        return Response(status_code=304, headers=headers)
    return Response(body, media_type="application/json", headers=headers)


# The queries the fast path takes; any other (`wait`, several parameters, an unknown or
# misspelt one) goes to the route, which validates and documents them.
_PLAIN: dict[bytes, Which | None] = {
    b"": None,
    b"version=current": "current",
    b"version=previous": "previous",
    b"version=next": "next",
}


class FastRead:
    """`GET {prefix}{id}/secret` answered ahead of FastAPI: the read above, without the
    middleware layers, routing, dependency solving and parameter validation around it, which
    were most of a read's CPU under load (bench/api.py). `keyturn.api.app.API` asks it first
    of every request (`answer`). It takes only what needs none of them (no body, no query or
    a plain `version=`); everything else goes on to `read_secret`, the documented route. The
    path is matched as the route's `{credential_id:path}` matches it (greedy), and no earlier
    GET route can end in `/secret`; errors become responses through the app's own exception
    handlers, and an unexpected one the generic 500 of `errors.CatchAll`, so both paths answer
    alike (tests/api/test_fast_read.py)."""

    def __init__(self, app: Any, prefix: str) -> None:
        self.app = app  # the FastAPI application (its state and exception handlers)
        self.pattern = re.compile(re.escape(prefix) + r"(.+)/secret")

    async def answer(self, scope: Scope, receive: Receive, send: Send) -> bool:
        """Answer *scope* if it is a plain secret read; False: it is not, nothing was sent."""
        if (
            scope["type"] == "http"
            and scope["method"] == "GET"
            and scope["query_string"] in _PLAIN
            and not scope.get("root_path")  # mounted under a prefix: the router strips it
        ):
            found = self.pattern.fullmatch(scope["path"])
            if found is not None and not _has_body(scope["headers"]):
                scope["app"] = self.app  # as Starlette sets it: Request.app
                which = _PLAIN[scope["query_string"]]
                await _fast(scope, receive, send, found[1], which)
                return True
        return False


def _has_body(headers: list[tuple[bytes, bytes]]) -> bool:
    return any(
        (name == b"content-length" and value != b"0") or name == b"transfer-encoding"
        for name, value in headers
    )


async def _fast(
    scope: Scope, receive: Receive, send: Send, credential_id: str, which: Which | None
) -> None:
    request = Request(scope, receive, send)
    started = False  # a response began: an unexpected error after it can send nothing more

    async def tracking(message: Message) -> None:
        nonlocal started
        started = started or message["type"] == "http.response.start"
        await send(message)

    try:
        try:
            token = bearer_token(request, await bearer(request))
            tag, body = await _serve(
                request, token, credential_id, which, request.headers.get("if-none-match")
            )
        except Exception as exc:
            handler = _handler(request, exc)
            if handler is None:
                raise
            response: Response = await handler(request, exc)
            await response(scope, receive, tracking)
            return
        started = True  # a failure of send itself: the connection is gone
        await _send(send, tag, body)
    except Exception as exc:  # as errors.CatchAll answers the route's
        await api_errors.unexpected(exc, scope, receive, send, started=started)


async def _send(send: Send, tag: str, body: bytes | None) -> None:
    """What `_response(tag, body)` sends, without building a Response: the same headers in
    the same order (Starlette's: the given ones, then content-length and content-type)."""
    headers = [(b"etag", tag.encode("latin-1")), _NO_STORE]
    if body is None:
        await send({"type": "http.response.start", "status": 304, "headers": headers})
        await send({"type": "http.response.body", "body": b""})
        return
    headers += [(b"content-length", str(len(body)).encode("latin-1")), _JSON]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


_NO_STORE = (b"cache-control", b"no-store")
_JSON = (b"content-type", b"application/json")


def _handler(request: Request, exc: Exception) -> Any:
    """The app's exception handler for *exc*, looked up by class as Starlette does."""
    handlers = request.app.exception_handlers
    return next((handlers[c] for c in type(exc).__mro__ if c in handlers), None)
