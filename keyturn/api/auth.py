"""Who is calling, and may they? Bearer tokens, roles, tenant and path scopes.

The permission table is the one place that says which role may do what; routes name an
action with `allow(...)`. Credentials outside a token's tenant or path scope are reported
as not found (404), never as forbidden, so a token learns nothing about them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from fnmatch import fnmatchcase

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from keyturn import auth as tokens
from keyturn.api.errors import ApiError
from keyturn.api.ratelimit import FailureLimiter
from keyturn.app import Keyturn
from keyturn.auth import a_role
from keyturn.db import repo
from keyturn.db.models import Credential
from keyturn.domain.errors import CredentialNotFound, Forbidden
from keyturn.domain.ids import validate_id

ALL = frozenset(tokens.ROLES)
READERS = frozenset({"admin", "operator", "auditor"})

PERMISSIONS: dict[str, frozenset[str]] = {
    "credential.read": READERS,
    "credential.write": frozenset({"admin"}),
    "secret.read": frozenset({"admin", "consumer"}),
    "consumer.report": frozenset({"admin", "consumer"}),
    "consumer.register": frozenset({"admin"}),
    "rotation.run": frozenset({"admin", "operator"}),
    "rotation.emergency": frozenset({"admin"}),
    "audit.read": frozenset({"admin", "auditor"}),
    "report.read": READERS,
    "token.manage": frozenset({"admin"}),
}

MAX_TOKEN_LENGTH = 200
CHALLENGE = {"WWW-Authenticate": "Bearer"}
bearer = HTTPBearer(auto_error=False, description="An API token: `Authorization: Bearer kt_...`")


@dataclass(frozen=True)
class Principal:
    token_id: str
    role: str
    scopes: tuple[str, ...]
    tenant: str | None

    @property
    def actor(self) -> str:
        return f"token:{self.token_id}"

    def may(self, action: str) -> bool:
        return self.role in PERMISSIONS[action]

    def sees_tenant(self, tenant: str | None) -> bool:
        return self.tenant is None or tenant == self.tenant

    def sees(self, cred: Credential) -> bool:
        """Within the token's tenant and, for consumers, its path globs."""
        return self.sees_id(cred.id, cred.tenant_id)

    def sees_id(self, credential_id: str, tenant: str | None) -> bool:
        if not self.sees_tenant(tenant):
            return False
        if self.role == "consumer":
            return any(fnmatchcase(credential_id, glob) for glob in self.scopes)
        return True


def keyturn_of(request: Request) -> Keyturn:
    instance: Keyturn = request.app.state.keyturn
    return instance


def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def bearer_token(request: Request, credentials: HTTPAuthorizationCredentials | None) -> str:
    """The token a request presents; 401 if none, 429 once its address failed too often."""
    limiter: FailureLimiter = request.app.state.limiter
    wait = limiter.retry_after(_client(request))
    if wait is not None:
        raise ApiError(
            429,
            "rate_limited",
            f"too many failed authentications from this address; retry in {wait} seconds",
            {"Retry-After": str(wait)},
        )
    if credentials is None:
        raise ApiError(401, "unauthorized", "send Authorization: Bearer kt_...", CHALLENGE)
    return credentials.credentials


def caller(request: Request, token: str, find: Callable[[str], tokens.Caller]) -> Principal:
    """The caller of *token*, as find(token) looks it up (after the token's shape is checked:
    the secret read finds it in the statement that also reads the value); 401 for a bad
    token, counted by the failure limiter."""
    try:
        if not token.startswith(tokens.PREFIX) or len(token) > MAX_TOKEN_LENGTH:
            raise Forbidden("invalid token")
        row = find(token)
    except Forbidden as exc:
        request.app.state.limiter.failed(_client(request))
        raise ApiError(401, "unauthorized", exc.message, CHALLENGE) from exc
    return Principal(row.id, row.role, row.scopes, row.tenant_id)


def principal(
    request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(bearer)
) -> Principal:
    """The caller; 401 for a missing or bad token, 429 once an address failed too often."""
    token = bearer_token(request, credentials)
    with keyturn_of(request).db.read() as session:
        return caller(request, token, lambda t: tokens.authenticate(session, t))


def require(who: Principal, action: str) -> Principal:
    """*who*, if its role may do *action*; 403 otherwise."""
    if not who.may(action):
        raise Forbidden(f"{a_role(who.role)} token may not do {action}")
    return who


def allow(action: str) -> Callable[[Principal], Principal]:
    """A dependency: the caller, if its role may do *action*; 403 otherwise."""
    roles = PERMISSIONS[action]

    def check(who: Principal = Depends(principal)) -> Principal:
        if who.role not in roles:
            raise Forbidden(f"{a_role(who.role)} token may not do {action}")
        return who

    check.__name__ = f"allow_{action.replace('.', '_')}"
    return check


def visible(
    session: Session, who: Principal, credential_id: str, *, lock: bool = False
) -> Credential:
    """The credential, if the caller may know it exists; 404 (not 403) otherwise."""
    validate_id(credential_id)
    cred = repo.get_credential(session, credential_id, lock=lock)
    if not who.sees(cred):
        raise CredentialNotFound(f"no credential {credential_id!r}")
    return cred
