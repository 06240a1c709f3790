"""API tokens: `kt_` + 256 random bits, stored as SHA-256, compared in constant time."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from keyturn.db.models import ApiToken, utcnow
from keyturn.domain.errors import Forbidden, UsageError
from keyturn.domain.ids import validate_name
from keyturn.refs import looks_like_secret

ROLES = ("admin", "operator", "auditor", "consumer")
PREFIX = "kt_"


def a_role(role: str) -> str:
    """The role with its article, for messages: "an operator", "a consumer"."""
    return ("an " if role[:1] in "aeiou" else "a ") + role


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class IssuedToken:
    id: str
    token: str  # shown once
    role: str
    scopes: tuple[str, ...]
    tenant: str | None
    expires_at: datetime | None


def create_token(
    session: Session,
    role: str,
    scopes: list[str] | None = None,
    tenant: str | None = None,
    name: str = "",
    ttl: timedelta | None = None,
) -> IssuedToken:
    if role not in ROLES:
        raise UsageError(f"unknown role; choose one of {', '.join(ROLES)}")
    if tenant is not None:
        validate_name(tenant, "tenant")
    if name.startswith(PREFIX) or looks_like_secret(name):  # stored and listed in clear
        raise UsageError(
            "the token name looks like a secret value; name a token by what it is for, "
            "e.g. 'ci deploy'"
        )
    if role == "consumer" and not scopes:
        raise UsageError("a consumer token needs at least one --scope PATH-GLOB (least privilege)")
    token = PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(
        id="tok_" + secrets.token_hex(6),
        hash=token_hash(token),
        name=name,
        role=role,
        scopes=list(scopes or []),
        tenant_id=tenant,
        expires_at=utcnow() + ttl if ttl else None,
    )
    session.add(row)
    session.flush()
    return IssuedToken(row.id, token, role, tuple(row.scopes), tenant, row.expires_at)


@dataclass(frozen=True)
class Caller:
    """Who a live token is: what the API needs to decide, and nothing of the token itself."""

    id: str
    role: str
    scopes: tuple[str, ...]
    tenant_id: str | None


_TOKENS = ApiToken.__table__.c
# The lookup every API request makes: one indexed Core query, no ORM object.
_BY_HASH = select(
    _TOKENS.id,
    _TOKENS.hash,
    _TOKENS.role,
    _TOKENS.scopes,
    _TOKENS.tenant_id,
    _TOKENS.revoked_at,
    _TOKENS.expires_at,
).where(_TOKENS.hash == bindparam("digest"))


def authenticate(session: Session, token: str) -> Caller:
    """The caller *token* stands for; Forbidden if unknown, expired or revoked."""
    digest = token_hash(token)
    return caller_of(session.connection().execute(_BY_HASH, {"digest": digest}).first(), digest)


def caller_of(row: Any, digest: str) -> Caller:
    """The caller of the token row found by *digest* (None: no such token); Forbidden if
    unknown, expired or revoked. Shared with the secret read, whose one statement also
    reads the token (keyturn.db.reads)."""
    # The lookup is by hash (a timing leak there reveals nothing of the token); compare again
    # in constant time all the same.
    if row is None or not hmac.compare_digest(row.hash, digest):
        raise Forbidden("invalid token")
    now = utcnow()
    if row.revoked_at is not None or (row.expires_at is not None and row.expires_at <= now):
        raise Forbidden("token expired or revoked")
    return Caller(row.id, row.role, tuple(row.scopes or ()), row.tenant_id)


def get_token(session: Session, token_id: str) -> ApiToken:
    """The token row with this id (live or not); NotFound otherwise."""
    from keyturn.domain.errors import NotFound

    row = session.get(ApiToken, token_id)
    if row is None:
        raise NotFound(f"no token {token_id!r}")
    return row


def list_tokens(session: Session, tenant: str | None = None) -> list[ApiToken]:
    """Every token (of one tenant, if given), oldest first; hashes are not for showing."""
    query = select(ApiToken).order_by(ApiToken.created_at, ApiToken.id)
    if tenant is not None:
        query = query.where(ApiToken.tenant_id == tenant)
    return list(session.execute(query).scalars())


def revoke_token(session: Session, row: ApiToken) -> bool:
    """Revoke at once; False if it was already revoked."""
    if row.revoked_at is not None:
        return False
    row.revoked_at = utcnow()
    session.flush()
    return True
