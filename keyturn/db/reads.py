"""The secret read on SQLAlchemy Core: the API's hot path and `keyturn get` (issue 23).

The API's read is one statement: the token (by its hash), the credential, and its versions
in the asked states, the token left-joined to the credential and the credential to the
versions. A single statement sees one consistent snapshot by itself, so it runs outside any
transaction: no BEGIN or COMMIT round trip, no ORM identity map, no object loads. The API
runs it and the audit group writer's append on the thread's own DBAPI connection
(`read_direct`, `append_direct`: keyturn.db.direct), without SQLAlchemy's execution around
them; `read` and `append` run the same statements through SQLAlchemy. `keyturn get` reads
the credential with its version the same way, inside the write transaction that appends the
read's audit entry (`append`), as the reference does.

The tables here are Core tables of the columns these statements use, so that neither path
imports the ORM or builds its mapped classes (a third of `keyturn get`'s start-up):
tests/cli/test_get_fast.py checks them against keyturn.db.models, which stays the one
definition of the schema. `keyturn.runtime.read_secret` (ORM, in the caller's write
transaction, with `keyturn.audit.log.append`) is the reference this is read against;
tests/api/test_secret_fast.py and tests/cli/test_get_fast.py compare the two.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    JSON,
    Column,
    DateTime,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    and_,
    bindparam,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Connection, Dialect

from keyturn.audit.chain import keyed_hash
from keyturn.crypto.keyset import KeySet
from keyturn.domain.errors import AuditHeadMissing, CredentialNotFound
from keyturn.domain.model import ACTIVE_STATUSES, Step

if TYPE_CHECKING:
    from keyturn.db.direct import Run
    from keyturn.db.engine import Database

__all__ = [
    "Entry",
    "Held",
    "Stored",
    "append",
    "append_direct",
    "held",
    "keyset",
    "now",
    "on_target",
    "read",
    "read_direct",
    "wrapped_key",
]


class _UtcDateTime(TypeDecorator[datetime]):
    """keyturn.db.models.UtcDateTime's conversions: aware UTC in Python, naive UTC stored."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


_META = MetaData()
TOKENS = Table(
    "api_tokens",
    _META,
    Column("id", String(32), primary_key=True),
    Column("hash", String(64)),
    Column("role", String(16)),
    Column("scopes", JSON),
    Column("tenant_id", String(63)),
    Column("expires_at", _UtcDateTime()),
    Column("revoked_at", _UtcDateTime()),
)
CREDENTIALS = Table(
    "credentials",
    _META,
    Column("id", String(200), primary_key=True),
    Column("tenant_id", String(63)),
    Column("dispute", Text),
)
VERSIONS = Table(
    "versions",
    _META,
    Column("credential_id", String(200)),
    Column("number", Integer),
    Column("state", String(16)),
    Column("username", String(200)),
    Column("ciphertext", LargeBinary),
    Column("data_key_id", String(32)),
    Column("fingerprint", String(64)),
)
META = Table(
    "meta",
    _META,
    Column("key", String(64), primary_key=True),
    Column("value", LargeBinary),
    Column("master_key_id", String(32)),
)
DATA_KEYS = Table(
    "data_keys",
    _META,
    Column("id", String(32), primary_key=True),
    Column("master_key_id", String(32)),
    Column("wrapped", LargeBinary),
)
AUDIT_ENTRIES = Table(
    "audit_entries",
    _META,
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("at", _UtcDateTime()),
    Column("actor", String(200)),
    Column("action", String(64)),
    Column("credential_id", String(200)),
    Column("tenant_id", String(63)),
    Column("fingerprint", String(64)),
    Column("reason", Text),
    Column("outcome", String(16)),
    Column("details", JSON),
    Column("prev_hash", String(64)),
    Column("hash", String(64)),
)
ROTATIONS = Table(
    "rotations",
    _META,
    Column("id", Integer, primary_key=True),
    Column("credential_id", String(200)),
    Column("step", String(16)),
    Column("status", String(16)),
    Column("new_version", Integer),
)
AUDIT_HEAD = Table(
    "audit_head",
    _META,
    Column("id", Integer, primary_key=True),
    Column("seq", Integer),
    Column("hash", String(64)),
)

_T, _C, _V = TOKENS, CREDENTIALS, VERSIONS
_CRED = _C.c.id == bindparam("credential_id")
# The states asked for, in three plain parameters (one state asked: the same one thrice): an
# expanding IN is rewritten at every execution, a tenth of the secret read's own CPU.
_STATE_PARAMS = ("state_a", "state_b", "state_c")
_STATES = and_(
    _V.c.credential_id == _C.c.id, _V.c.state.in_([bindparam(name) for name in _STATE_PARAMS])
)
_NUMBER = and_(_V.c.credential_id == _C.c.id, _V.c.number == bindparam("number"))
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
_BY_STATE = select(*_VALUES).select_from(_C.outerjoin(_V, _STATES)).where(_CRED)
_BY_NUMBER = select(*_VALUES).select_from(_C.outerjoin(_V, _NUMBER)).where(_CRED)


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


def _asked(states: Iterable[str]) -> dict[str, str]:
    """The statement's state parameters for *states* (at most three; none matches nothing)."""
    asked = list(states) or [""]
    if len(asked) > len(_STATE_PARAMS):
        raise ValueError(f"at most {len(_STATE_PARAMS)} states at once, not {len(asked)}")
    return {name: asked[i % len(asked)] for i, name in enumerate(_STATE_PARAMS)}


def read(
    conn: Connection, digest: str, credential_id: str, states: Iterable[str]
) -> tuple[Any, Held | None]:
    """(the token row for *digest* or None, the credential or None when either is missing),
    from one statement. The caller checks the token first (keyturn.auth.caller_of)."""
    params = {"digest": digest, "credential_id": credential_id, **_asked(states)}
    return _found(credential_id, conn.execute(_READ, params).all())


def read_direct(
    db: Database, digest: str, credential_id: str, states: Iterable[str]
) -> tuple[Any, Held | None]:
    """`read` on the calling thread's own connection (keyturn.db.direct), without
    SQLAlchemy's execution around the statement: the API's hot path. The same statement,
    the same rows (tests/api/test_direct.py)."""
    params = {"digest": digest, "credential_id": credential_id, **_asked(states)}
    direct = db.direct
    return _found(credential_id, direct.fetch(direct.prepare(_READ), params))


def _found(credential_id: str, rows: Sequence[Any]) -> tuple[Any, Held | None]:
    if not rows:
        return None, None
    try:
        return rows[0], _held(credential_id, rows)
    except CredentialNotFound:
        return rows[0], None


def held(
    conn: Connection,
    credential_id: str,
    *,
    states: Iterable[str] = (),
    number: int | None = None,
) -> Held:
    """The credential with its versions in *states*, or with version *number* (keyed by its
    state), from one statement; CredentialNotFound as keyturn.db.repo says it."""
    if number is None:
        params: dict[str, Any] = {"credential_id": credential_id, **_asked(states)}
        rows = conn.execute(_BY_STATE, params).all()
    else:
        rows = conn.execute(_BY_NUMBER, {"credential_id": credential_id, "number": number}).all()
    return _held(credential_id, rows)


# A rotation past these steps has put its pending value on the target (`set` is done).
PAST_SET = (Step.TEST, Step.PUBLISH, Step.FINISH)
_ON_TARGET = select(ROTATIONS.c.step).where(
    ROTATIONS.c.credential_id == bindparam("credential_id"),
    ROTATIONS.c.status.in_(ACTIVE_STATUSES),
    ROTATIONS.c.new_version == bindparam("number"),
)


def on_target(conn: Connection, credential_id: str, pending: int) -> bool:
    """Has the rotation in progress put version *pending* on the target (is it past `set`)?
    Then a `single` target already refuses the current value: `next` is the one that works
    (DESIGN.md invariant 9)."""
    params = {"credential_id": credential_id, "number": pending}
    return conn.execute(_ON_TARGET, params).scalar_one_or_none() in PAST_SET


def keyset(conn: Connection, name: str) -> tuple[bytes, str | None] | None:
    """The sealed key set stored as `meta` row *name*, with the id of the key that sealed it."""
    row = conn.execute(
        select(META.c.value, META.c.master_key_id).where(META.c.key == name)
    ).one_or_none()
    return None if row is None else (row.value, row.master_key_id)


def wrapped_key(conn: Connection, key_id: str) -> tuple[str, bytes] | None:
    """(the id of the master key that wrapped data key *key_id*, the wrapped key)."""
    row = conn.execute(
        select(DATA_KEYS.c.master_key_id, DATA_KEYS.c.wrapped).where(DATA_KEYS.c.id == key_id)
    ).one_or_none()
    return None if row is None else (row.master_key_id, row.wrapped)


def now() -> datetime:
    """keyturn's now (keyturn.db.models.utcnow): a test's clock lives in that module, so
    when it is not loaded no clock was installed and the wall clock is keyturn's."""
    models = sys.modules.get("keyturn.db.models")
    clock: Callable[[], datetime] | None = getattr(models, "utcnow", None)
    return clock() if clock is not None else datetime.now(UTC)


@dataclass
class Entry:
    """One audit entry's columns, already checked and cleaned (keyturn.audit.log.fields),
    as keyturn.audit.chain.canonical reads them."""

    actor: str
    action: str
    outcome: str
    credential_id: str | None
    tenant_id: str | None
    fingerprint: str | None
    reason: str | None
    details: dict[str, Any]
    seq: int = 0
    at: datetime = field(default_factory=now)
    prev_hash: str = ""
    hash: str = ""


def append(conn: Connection, keys: KeySet, entries: list[Entry]) -> None:
    """Chain *entries* after the head and insert them, in the caller's write transaction,
    as keyturn.audit.log.append does (the head row locked until it commits)."""
    head = conn.execute(_HEAD).one_or_none()
    if head is None:
        raise AuditHeadMissing()
    rows, moved = _chained(keys, entries, head)
    conn.execute(_INSERT, rows)
    conn.execute(_MOVE_HEAD, moved)


def append_direct(db: Database, keys: KeySet, entries: list[Entry]) -> None:
    """`append` in a transaction of its own on the calling thread's connection
    (keyturn.db.direct), committed when this returns: the audit group writer's. The same
    statements; on SQLite the transaction begins IMMEDIATE, as keyturn's writes do."""
    direct = db.direct_writes

    def work(run: Run) -> None:
        heads = run(direct.prepare(_HEAD), {})
        if not heads:
            raise AuditHeadMissing()
        rows, moved = _chained(keys, entries, heads[0])
        run(direct.prepare(_INSERT), rows, many=True)
        run(direct.prepare(_MOVE_HEAD), moved)

    direct.transaction("BEGIN IMMEDIATE" if db.is_sqlite else None, work)


_HEAD = select(AUDIT_HEAD.c.seq, AUDIT_HEAD.c.hash).where(AUDIT_HEAD.c.id == 1).with_for_update()
_INSERT = insert(AUDIT_ENTRIES)
_MOVE_HEAD = (
    update(AUDIT_HEAD)
    .where(AUDIT_HEAD.c.id == 1)
    .values(seq=bindparam("head_seq"), hash=bindparam("head_hash"))
)


def _chained(
    keys: KeySet, entries: list[Entry], head: Any
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """*entries*' rows chained after *head* (seq, hash), and the head's new parameters."""
    seq, prev = head
    rows = chain(keys, entries, seq, prev)
    if entries:
        seq, prev = entries[-1].seq, entries[-1].hash
    return rows, {"head_seq": seq, "head_hash": prev}


def chain(keys: KeySet, entries: list[Entry], seq: int, prev: str) -> list[dict[str, Any]]:
    """Number and hash *entries* after the head (seq, hash), in order; their rows."""
    rows = []
    for entry in entries:
        seq += 1
        entry.seq, entry.prev_hash = seq, prev
        entry.hash = prev = keyed_hash(keys, entry)
        rows.append({column.name: getattr(entry, column.name) for column in AUDIT_ENTRIES.c})
    return rows
