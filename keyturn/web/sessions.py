"""Dashboard sessions: a token signs in once, the browser then holds a session cookie.

The cookie carries a random session id; the database keeps only its SHA-256, so a copy of
the database opens no session. A session acts as its token: every request re-reads the
token, so a revoked or expired token ends its sessions at once. The CSRF token of a session
is an HMAC of the session id: a page can show it, a cross-site form cannot know it.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete
from sqlalchemy.orm import Session

from keyturn import auth as tokens
from keyturn.api.auth import MAX_TOKEN_LENGTH, Principal
from keyturn.db.models import ApiToken, WebSession, utcnow
from keyturn.domain.errors import Forbidden

COOKIE = "keyturn_session"
# Before sign-in: the id whose CSRF token the sign-in form carries.
PRE_COOKIE = "keyturn_signin"
LIFETIME = timedelta(hours=8)
LINK_LIFETIME = timedelta(minutes=15)


def _digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


def csrf_for(session_id: str) -> str:
    return hmac.new(session_id.encode(), b"keyturn-csrf", hashlib.sha256).hexdigest()


def csrf_ok(session_id: str | None, sent: str | None) -> bool:
    if not session_id or not sent:
        return False
    return hmac.compare_digest(csrf_for(session_id), sent)


def new_id() -> str:
    return secrets.token_urlsafe(32)


@dataclass(frozen=True)
class Opened:
    session_id: str
    expires_at: datetime
    principal: Principal


def _principal(row: ApiToken) -> Principal:
    return Principal(row.id, row.role, tuple(row.scopes or ()), row.tenant_id)


def open_session(session: Session, token: str) -> Opened:
    """Sign in with an API token; consumer tokens are for services, not people."""
    token = token.strip()
    if not token.startswith(tokens.PREFIX) or len(token) > MAX_TOKEN_LENGTH:
        raise Forbidden("invalid token")
    caller = tokens.authenticate(session, token)
    if caller.role == "consumer":
        raise Forbidden("a consumer token cannot sign in to the dashboard")
    row = session.get(ApiToken, caller.id)
    if row is None:  # revoked and purged between the two reads
        raise Forbidden("invalid token")
    return _open(session, row)


def _open(session: Session, row: ApiToken, kind: str = "session") -> Opened:
    now = utcnow()
    session.execute(delete(WebSession).where(WebSession.expires_at <= now))
    expires = now + (LIFETIME if kind == "session" else LINK_LIFETIME)
    if row.expires_at is not None:
        expires = min(expires, row.expires_at)
    session_id = new_id()
    session.add(
        WebSession(id_hash=_digest(session_id), token_id=row.id, kind=kind, expires_at=expires)
    )
    session.flush()
    return Opened(session_id, expires, _principal(row))


def create_link(session: Session, token_id: str) -> str:
    """A one-use sign-in code for a token (valid 15 minutes); only its hash is stored."""
    row = session.get(ApiToken, token_id)
    if row is None or row.role == "consumer":
        raise Forbidden("only a person's token gets a sign-in link")
    return _open(session, row, kind="link").session_id


def redeem_link(session: Session, code: str) -> Opened | None:
    """Trade a sign-in code, once, for a session of its token."""
    found = _live(session, code, "link")
    if found is None:
        return None
    session.delete(found)
    row = session.get(ApiToken, found.token_id)
    return _open(session, row) if row is not None and _usable(row) else None


def _live(session: Session, session_id: str | None, kind: str) -> WebSession | None:
    if not session_id or len(session_id) > 100:
        return None
    found = session.get(WebSession, _digest(session_id))
    if found is None or found.kind != kind or found.expires_at <= utcnow():
        return None
    return found


def _usable(row: ApiToken) -> bool:
    if row.revoked_at is not None or row.role == "consumer":
        return False
    return row.expires_at is None or row.expires_at > utcnow()


def principal_for(session: Session, session_id: str | None) -> Principal | None:
    """Who holds this session, if it is live and its token still is."""
    found = _live(session, session_id, "session")
    row = session.get(ApiToken, found.token_id) if found is not None else None
    return _principal(row) if row is not None and _usable(row) else None


def close(session: Session, session_id: str | None) -> None:
    if session_id:
        session.execute(delete(WebSession).where(WebSession.id_hash == _digest(session_id)))
