"""The secret read's query, on SQLAlchemy Core: the API's hot path (issue 23).

One statement answers the whole read: the token (by its hash), the credential, and its
versions in the asked states, the token left-joined to the credential and the credential to
the versions. A single statement sees one consistent snapshot by itself, so it runs outside
any transaction (`Database.single`): no BEGIN or COMMIT round trip, no ORM identity map, no
object loads. `keyturn.runtime.read_secret` (ORM, one version, in the caller's write
transaction) is the reference this is read against; tests/api/test_secret_fast.py compares
the two.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, bindparam, select
from sqlalchemy.engine import Connection

from keyturn.db.models import ApiToken, Credential, Version
from keyturn.domain.errors import CredentialNotFound

__all__ = ["Held", "Stored", "read"]

_T = ApiToken.__table__
_C = Credential.__table__
_V = Version.__table__
_CRED = _C.c.id == bindparam("credential_id")
_STATES = and_(_V.c.credential_id == _C.c.id, _V.c.state.in_(bindparam("states", expanding=True)))
_VALUES = (
    _C.c.id.label("cred_id"),
    _C.c.tenant_id.label("cred_tenant"),
    _C.c.dispute,
    _V.c.number,
    _V.c.state,
    _V.c.username,
    _V.c.fingerprint,
    _V.c.data_key_id,
    _V.c.ciphertext,
)
_READ = (
    select(
        _T.c.id,
        _T.c.hash,
        _T.c.role,
        _T.c.scopes,
        _T.c.tenant_id,
        _T.c.revoked_at,
        _T.c.expires_at,
        *_VALUES,
    )
    .select_from(_T.outerjoin(_C, _CRED).outerjoin(_V, _STATES))
    .where(_T.c.hash == bindparam("digest"))
)


@dataclass(frozen=True)
class Stored:
    """One version as stored: its value still sealed."""

    number: int
    state: str
    username: str | None
    fingerprint: str
    data_key_id: str
    ciphertext: bytes


@dataclass(frozen=True)
class Held:
    """A credential with its versions in the asked states (state -> version)."""

    id: str
    tenant_id: str
    dispute: str | None
    versions: dict[str, Stored]


def _held(credential_id: str, rows: Sequence[Any]) -> Held:
    if not rows or rows[0].cred_id is None:
        raise CredentialNotFound(f"no credential {credential_id!r}")
    versions = {
        row.state: Stored(
            row.number, row.state, row.username, row.fingerprint, row.data_key_id, row.ciphertext
        )
        for row in rows
        if row.number is not None
    }
    return Held(credential_id, rows[0].cred_tenant, rows[0].dispute, versions)


def read(
    conn: Connection, digest: str, credential_id: str, states: Iterable[str]
) -> tuple[Any, Held | None]:
    """(the token row for *digest* or None, the credential or None when either is missing),
    from one statement. The caller checks the token first (keyturn.auth.caller_of)."""
    params = {"digest": digest, "credential_id": credential_id, "states": list(states)}
    rows = conn.execute(_READ, params).all()
    if not rows:
        return None, None
    try:
        return rows[0], _held(credential_id, rows)
    except CredentialNotFound:
        return rows[0], None
