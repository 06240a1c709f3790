"""The API's routers. Order matters: routes with an action suffix after a credential id
(`/secret`, `/rotate`, ...) are mounted before the bare `/credentials/{id}` routes, so the
suffix wins; ids ending in an action word are refused at creation over the API."""

from __future__ import annotations

from typing import Any

from keyturn.api.errors import ErrorEnvelope

_DESCRIPTIONS = {
    400: "Invalid input or id",
    401: "Missing, invalid, expired or revoked token",
    403: "The token's role may not do this",
    404: "Unknown, or outside the token's tenant or scope",
    409: "Conflicts with the current state (e.g. a rotation in progress)",
    413: "Body too large",
    422: "Body or parameters do not validate",
    429: "Too many failed authentications from this address",
    500: "Internal error",
    502: "The target refused",
    503: "A target or keyturn's database is unreachable",
}


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for error statuses; every route gets the common ones."""
    common = (400, 401, 403, 404, 413, 422, 429, 500, 503)
    return {
        status: {"model": ErrorEnvelope, "description": _DESCRIPTIONS[status]}
        for status in sorted({*common, *statuses})
    }
