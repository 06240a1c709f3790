"""One error envelope for the whole API: `{"error": {"code": ..., "message": ...}}`.

Every failure goes through here, so no stack trace, input value or secret reaches a body:
keyturn errors carry messages written to be shown (ids and names, never values), validation
errors are described by location and kind without the input, and anything unexpected is a
generic 500 whose details stay in the server log (class and frames, not the message).
"""

from __future__ import annotations

import functools
import logging
import traceback
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from keyturn.domain import errors as e

log = logging.getLogger("keyturn.api")

# Most specific first: the first class an error is an instance of decides its status.
STATUS: tuple[tuple[type[e.KeyturnError], int], ...] = (
    (e.UsageError, 400),
    (e.NotFound, 404),
    (e.Conflict, 409),
    (e.Forbidden, 403),
    (e.StoreUnavailable, 503),
    (e.AuditHeadMissing, 503),
    (e.TargetUnreachable, 503),
    (e.PublishFailed, 503),
    (e.TargetError, 502),
    (e.RotationFailed, 502),
    (e.PluginError, 500),
    (e.CryptoError, 500),
)

_HTTP_CODES = {
    400: "invalid",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
    422: "validation_failed",
    429: "rate_limited",
}


class ErrorBody(BaseModel):
    code: str
    message: str


class ErrorEnvelope(BaseModel):
    """The shape of every error response."""

    error: ErrorBody


def envelope(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    body = {"error": {"code": code, "message": message}}
    return JSONResponse(body, status_code=status, headers=headers)


class ApiError(Exception):
    """An HTTP-level failure (authentication, rate limit) with its status and headers."""

    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers


def status_of(exc: e.KeyturnError) -> int:
    return next((status for cls, status in STATUS if isinstance(exc, cls)), 500)


async def _keyturn_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, e.KeyturnError)
    status = status_of(exc)
    if status >= 500:
        log.warning("%s %s failed: %s", request.method, _route(request), exc.code)
    return envelope(status, exc.code, exc.message)


async def _api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return envelope(exc.status, exc.code, exc.message, exc.headers)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    code = _HTTP_CODES.get(exc.status_code, "error")
    message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
    return envelope(exc.status_code, code, message, dict(exc.headers or {}) or None)


@functools.cache
def _known_names() -> frozenset[str]:
    """Names that may appear in an error location: our fields, params and type tags.
    Anything else there (an unknown key, a dict key) came from the client and is masked."""
    from keyturn.api import schemas

    names = {"query", "path", "header", "str", "int", "bool", "list[str]", "dict[str,str]"}
    names |= {"none", "null", "credential_id", "name", "token_id", "after", "limit", "offset"}
    names |= {"credential", "tenant", "kind", "status", "action", "actor", "since", "until"}
    names |= {"reason", "version", "now"}
    names |= {"format", "at", "owner", "unused_days", "weeks"}  # GET /report
    for model in vars(schemas).values():
        if isinstance(model, type) and issubclass(model, BaseModel):
            names.add(model.__name__)
            names.update(model.model_fields)
    return frozenset(names)


def describe_validation(errors: Sequence[Any], limit: int = 3) -> str:
    """Where and what kind, never the input (it could be a secret)."""
    known, parts = _known_names(), []
    for err in list(errors)[:limit]:
        loc = [p for p in err.get("loc", ()) if p != "body"]
        shown = [str(p) if isinstance(p, int) or p in known else "*" for p in loc]
        where = ".".join(shown) or "body"
        parts.append(f"{where}: {_safe_msg(err)}")
    more = f" (and {len(errors) - limit} more)" if len(errors) > limit else ""
    return "; ".join(parts) + more


def _safe_msg(err: dict[str, Any]) -> str:
    kind = str(err.get("type", "invalid"))
    # Messages of custom validators may quote what they were given; say only the kind.
    if kind in ("value_error", "assertion_error") or kind.startswith("json"):
        return kind.replace("_", " ")
    return str(err.get("msg", kind)).removeprefix("Value error, ")


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return envelope(422, "validation_failed", describe_validation(exc.errors()))


def _route(request: Request | Scope) -> str:
    scope = request.scope if isinstance(request, Request) else request
    route = scope.get("route")
    return str(getattr(route, "path", "?"))


def install(app: FastAPI) -> None:
    app.add_exception_handler(e.KeyturnError, _keyturn_error)
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)


class CatchAll:
    """The last line: an unexpected exception becomes a generic 500 envelope.

    It is logged with its class and frames only; its message could hold a value.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking)
        except Exception as exc:
            await unexpected(exc, scope, receive, send, started=started)


async def unexpected(
    exc: Exception, scope: Scope, receive: Receive, send: Send, *, started: bool
) -> None:
    """Log *exc* with its class and frames only (its message could hold a value) and, if no
    response has *started*, send the generic 500 envelope."""
    frames = "".join(traceback.format_tb(exc.__traceback__))
    log.error(
        "unexpected %s in %s %s\n%s",
        exc.__class__.__name__,
        scope.get("method"),
        _route(scope),
        frames,
    )
    if not started:
        response = envelope(500, "internal", "internal error; the server log has details")
        await response(scope, receive, send)


class BodyLimit:
    """413 for bodies over *limit* bytes, by Content-Length and by what actually arrives.

    The body is read here (it is small by construction) and replayed to the app.
    """

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            await self._refuse(scope, receive, send)
            return
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.limit:
                await self._refuse(scope, receive, send)
                return
            more = message.get("more_body", False)
        body, replayed = b"".join(chunks), False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        message = f"the request body is larger than {self.limit} bytes"
        await envelope(413, "too_large", message)(scope, receive, send)
