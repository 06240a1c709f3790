"""The secret read's query, on SQLAlchemy Core: the API's hot path (issue 23).

A credential and its readable versions come back in one statement (the credential left-joined
to the versions in the asked states), as plain rows: no ORM identity map, no object loads.
`keyturn.runtime.read_secret` (ORM, one version, in the caller's write transaction) is the
reference this is read against; tests/api/test_secret_fast.py compares the two.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import and_, bindparam, select
from sqlalchemy.orm import Session

from keyturn.db.models import Credential, Version
from keyturn.domain.errors import CredentialNotFound

__all__ = ["Held", "Stored", "held"]

_C = Credential.__table__.c
_V = Version.__table__.c
_QUERY = (
    select(
        _C.tenant_id,
        _C.dispute,
        _V.number,
        _V.state,
        _V.username,
        _V.fingerprint,
        _V.data_key_id,
        _V.ciphertext,
    )
    .select_from(
        Credential.__table__.outerjoin(
            Version.__table__,
            and_(_V.credential_id == _C.id, _V.state.in_(bindparam("states", expanding=True))),
        )
    )
    .where(_C.id == bindparam("credential_id"))
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


def held(session: Session, credential_id: str, states: Iterable[str]) -> Held:
    """The credential and its versions in *states*; CredentialNotFound if there is none."""
    rows = (
        session.connection()
        .execute(_QUERY, {"credential_id": credential_id, "states": list(states)})
        .all()
    )
    if not rows:
        raise CredentialNotFound(f"no credential {credential_id!r}")
    first = rows[0]
    versions = {
        row.state: Stored(
            row.number, row.state, row.username, row.fingerprint, row.data_key_id, row.ciphertext
        )
        for row in rows
        if row.number is not None
    }
    return Held(credential_id, first.tenant_id, first.dispute, versions)
