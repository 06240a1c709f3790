"""Tables. Persisted names (states, steps, kinds, plugin names) never change in place."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

ACTIVE_ROTATION = "status IN ('running', 'waiting', 'retrying')"
LIVE_VERSION = "state IN ('pending', 'current', 'previous')"


class _CheckedOnFirstUse:
    """`Index.dialect_options`, made by SQLAlchemy on first use, with the index's declared
    dialect keywords checked then (see PartialIndex)."""

    def __get__(self, index: Index | None, owner: type | None = None) -> Any:
        if index is None:
            return self
        # SQLAlchemy's memoized property keeps the mapping in the instance's __dict__, where
        # later reads find it: this runs once per index.
        options = Index.dialect_options.__get__(index, owner)
        Index._validate_dialect_kwargs(index, index.__dict__.pop("_unchecked", {}))
        return options


class PartialIndex(Index):
    """An index whose dialect keywords (`sqlite_where=`, `postgresql_where=`) are checked
    when its options are first read (its DDL, Alembic), not where it is declared.

    SQLAlchemy checks dialect keywords against each named dialect's declared arguments,
    which imports that dialect: PostgreSQL's package with its four drivers' modules, ~30 ms
    of every SQLite command that loads the models (issue 23), and SQLite's on PostgreSQL.
    The keywords and the checks are SQLAlchemy's; only the moment moves.
    """

    dialect_options = _CheckedOnFirstUse()

    def _validate_dialect_kwargs(self, kwargs: dict[str, Any]) -> None:
        self.__dict__["_unchecked"] = dict(kwargs)


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores naive text)."""

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


_clock: Callable[[], datetime] | None = None


def utcnow() -> datetime:
    """keyturn's now: the wall clock, or a test's (`keyturn.testing.FakeClock`)."""
    return _clock() if _clock is not None else datetime.now(UTC)


def set_clock(clock: Callable[[], datetime] | None) -> Callable[[], datetime] | None:
    """Install *clock* as keyturn's now (None: the wall clock); returns the one before."""
    global _clock
    previous, _clock = _clock, clock
    return previous


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {datetime: UtcDateTime(), dict[str, Any]: JSON, list[Any]: JSON}


class Meta(Base):
    """Key/value facts about this database: fingerprint key, schema facts."""

    __tablename__ = "meta"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[bytes] = mapped_column(LargeBinary)
    master_key_id: Mapped[str | None] = mapped_column(String(32))


class Tenant(Base):
    __tablename__ = "tenants"
    id: Mapped[str] = mapped_column(String(63), primary_key=True)
    data_key_id: Mapped[str] = mapped_column(String(32))
    # Who hears about this tenant's credentials: e-mail addresses and "webhook:NAME".
    recipients: Mapped[list[Any]] = mapped_column(default=list)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class DataKey(Base):
    """A tenant's data key, wrapped by the master key whose id it records."""

    __tablename__ = "data_keys"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(63), index=True)
    master_key_id: Mapped[str] = mapped_column(String(32), index=True)
    wrapped: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Policy(Base):
    __tablename__ = "policies"
    name: Mapped[str] = mapped_column(String(63), primary_key=True)
    settings: Mapped[dict[str, Any]] = mapped_column(default=dict)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class TargetRow(Base):
    __tablename__ = "targets"
    name: Mapped[str] = mapped_column(String(63), primary_key=True)
    type: Mapped[str] = mapped_column(String(63))
    # Non-secret settings plus secret *references* (env:, file:, keyturn:), never values.
    settings: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # Which tenants may use it: None (not declared: only unscoped admins put credentials on
    # it), a list of tenant names (any account), or {tenant: [account globs]}.
    tenants: Mapped[Any | None] = mapped_column(JSON)
    base_dir: Mapped[str] = mapped_column(Text, default=".")
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class StoreRow(Base):
    __tablename__ = "stores"
    name: Mapped[str] = mapped_column(String(63), primary_key=True)
    type: Mapped[str] = mapped_column(String(63))
    settings: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # Which tenants' credentials it may hold: None (not declared: only unscoped admins attach
    # credentials to it) or a list of tenant names.
    tenants: Mapped[list[str] | None] = mapped_column(JSON)
    base_dir: Mapped[str] = mapped_column(Text, default=".")
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class StoreMark(Base):
    """What keyturn last wrote to a store for a credential, and what `verify` last found.

    `mark` is the store's own id of that write (a KV version, a version id): the check-and-set
    token of the next publish, so that a value changed behind keyturn's back is detected.
    `status` is "in-sync", "drift" (the store holds something else) or "unreachable".
    """

    __tablename__ = "store_marks"
    store: Mapped[str] = mapped_column(
        ForeignKey("stores.name", ondelete="CASCADE"), primary_key=True
    )
    credential_id: Mapped[str] = mapped_column(
        ForeignKey("credentials.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    version: Mapped[int | None] = mapped_column(Integer)
    mark: Mapped[str | None] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), default="in-sync")
    detail: Mapped[str | None] = mapped_column(Text)
    checked_at: Mapped[datetime | None] = mapped_column()
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Credential(Base):
    __tablename__ = "credentials"
    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    kind: Mapped[str] = mapped_column(String(63), index=True)
    owner: Mapped[str] = mapped_column(String(200), default="")
    purpose: Mapped[str] = mapped_column(Text, default="")
    tags: Mapped[dict[str, Any]] = mapped_column(default=dict)
    policy: Mapped[str | None] = mapped_column(ForeignKey("policies.name"))
    target: Mapped[str | None] = mapped_column(ForeignKey("targets.name"))
    strategy: Mapped[str] = mapped_column(String(16), default="single")
    stores: Mapped[list[Any]] = mapped_column(default=list)
    # One login for single/dual; two for alternating.
    usernames: Mapped[list[Any]] = mapped_column(default=list)
    # When the scheduler rotates it (current version's activation + max age + jitter offset)
    # and when it sends the notice; kept up to date by apply and by each promotion, so that
    # finding what is due is one indexed range query even over a million credentials.
    due_at: Mapped[datetime | None] = mapped_column(index=True)
    notice_at: Mapped[datetime | None] = mapped_column(index=True)
    schedule: Mapped[str] = mapped_column(String(100), default="0 2 * * *")
    # The last `verify`: "in-sync", "out-of-sync", "unreachable" or None (never checked).
    sync_status: Mapped[str | None] = mapped_column(String(16))
    # Set when the credential was held back because its account belongs to another one
    # (found by migration 0005): it has no target and its value is not handed out until
    # it is given an account of its own or deleted.
    dispute: Mapped[str | None] = mapped_column(Text)
    verified_at: Mapped[datetime | None] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Account(Base):
    """An account on a target (a login, a key owner) and the one credential it belongs to.

    The unique (target, account) pair is what makes an account one credential's: a second
    claim fails in the database, whatever the interface. `account` is the normalised name
    (keyturn.inventory.grants.account_key), `username` the name as declared.
    """

    __tablename__ = "accounts"
    __table_args__ = (UniqueConstraint("target", "account"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    target: Mapped[str] = mapped_column(ForeignKey("targets.name", ondelete="CASCADE"))
    account: Mapped[str] = mapped_column(String(200))
    username: Mapped[str] = mapped_column(String(200))
    credential_id: Mapped[str] = mapped_column(
        ForeignKey("credentials.id", ondelete="CASCADE"), index=True
    )
    tenant_id: Mapped[str] = mapped_column(String(63))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Version(Base):
    __tablename__ = "versions"
    __table_args__ = (
        UniqueConstraint("credential_id", "number"),
        # At most one pending, one current and one previous version per credential.
        PartialIndex(
            "uq_versions_live_state",
            "credential_id",
            "state",
            unique=True,
            sqlite_where=text(LIVE_VERSION),
            postgresql_where=text(LIVE_VERSION),
        ),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    credential_id: Mapped[str] = mapped_column(
        ForeignKey("credentials.id", ondelete="CASCADE"), index=True
    )
    number: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16))
    username: Mapped[str | None] = mapped_column(String(200))
    # The provider's id of an issued secret (API keys, app tokens).
    key_id: Mapped[str | None] = mapped_column(String(200))
    ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
    # Not indexed: only the rekey's sweeps look versions up by data key, and an index would
    # make every re-sealed row two more B-tree updates.
    data_key_id: Mapped[str] = mapped_column(String(32))
    fingerprint: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    activated_at: Mapped[datetime | None] = mapped_column()
    retired_at: Mapped[datetime | None] = mapped_column()
    # For values that expire by themselves (certificates): their validity, so that the
    # schedule can renew at a fraction of the lifetime.
    valid_from: Mapped[datetime | None] = mapped_column()
    expires_at: Mapped[datetime | None] = mapped_column()


class Consumer(Base):
    __tablename__ = "consumers"
    __table_args__ = (UniqueConstraint("credential_id", "name"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    credential_id: Mapped[str] = mapped_column(
        ForeignKey("credentials.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(200))
    version: Mapped[int | None] = mapped_column(Integer)
    last_seen_at: Mapped[datetime | None] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Where it runs, as the SDK or `keyturn run` reports it; None for a bare registration.
    host: Mapped[str | None] = mapped_column(String(255))
    process: Mapped[str | None] = mapped_column(String(255))
    sdk_version: Mapped[str | None] = mapped_column(String(64))
    fallbacks: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class Rotation(Base):
    __tablename__ = "rotations"
    __table_args__ = (
        # One active rotation per credential, whatever the number of workers.
        PartialIndex(
            "uq_rotations_active",
            "credential_id",
            unique=True,
            sqlite_where=text(ACTIVE_ROTATION),
            postgresql_where=text(ACTIVE_ROTATION),
        ),
        Index("ix_rotations_due", "status", "next_attempt_at"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    credential_id: Mapped[str] = mapped_column(
        ForeignKey("credentials.id", ondelete="CASCADE"), index=True
    )
    trigger: Mapped[str] = mapped_column(String(16))
    actor: Mapped[str] = mapped_column(String(200))
    reason: Mapped[str] = mapped_column(Text, default="")
    strategy: Mapped[str] = mapped_column(String(16))
    step: Mapped[str] = mapped_column(String(16), default="create")
    status: Mapped[str] = mapped_column(String(16), default="running")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    new_version: Mapped[int | None] = mapped_column(Integer)
    old_version: Mapped[int | None] = mapped_column(Integer)
    lease_owner: Mapped[str | None] = mapped_column(String(200))
    lease_expires_at: Mapped[datetime | None] = mapped_column()
    next_attempt_at: Mapped[datetime | None] = mapped_column()
    wait_until: Mapped[datetime | None] = mapped_column()
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column()


class AuditEntry(Base):
    """Append-only; `hash` = HMAC-SHA256 under the audit key over the entry's fields and
    `prev_hash` (plain SHA-256 for entries of the legacy prefix): keyturn.audit.chain."""

    __tablename__ = "audit_entries"
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    at: Mapped[datetime] = mapped_column()
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(64), index=True)
    credential_id: Mapped[str | None] = mapped_column(String(200), index=True)
    tenant_id: Mapped[str | None] = mapped_column(String(63), index=True)
    fingerprint: Mapped[str | None] = mapped_column(String(64))
    reason: Mapped[str | None] = mapped_column(Text)
    outcome: Mapped[str] = mapped_column(String(16))
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class ApiToken(Base):
    __tablename__ = "api_tokens"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    hash: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    role: Mapped[str] = mapped_column(String(16))
    scopes: Mapped[list[Any]] = mapped_column(default=list)
    tenant_id: Mapped[str | None] = mapped_column(String(63))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column()
    revoked_at: Mapped[datetime | None] = mapped_column()
    last_used_at: Mapped[datetime | None] = mapped_column()


class Notice(Base):
    """The outbox: messages to deliver, with retries; `dedupe_key` makes each one once."""

    __tablename__ = "notices"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    dedupe_key: Mapped[str] = mapped_column(String(300), unique=True)
    kind: Mapped[str] = mapped_column(String(32), index=True)
    credential_id: Mapped[str | None] = mapped_column(String(200), index=True)
    tenant_id: Mapped[str | None] = mapped_column(String(63))
    # An e-mail address, "webhook:NAME", or "" when nobody is configured to hear it.
    recipient: Mapped[str] = mapped_column(String(320), default="")
    subject: Mapped[str] = mapped_column(Text)
    body: Mapped[str] = mapped_column(Text)
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column()
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column()


class Channel(Base):
    """A way to deliver notices: `email` (SMTP) or `webhook`; secrets as references."""

    __tablename__ = "channels"
    name: Mapped[str] = mapped_column(String(63), primary_key=True)
    type: Mapped[str] = mapped_column(String(16))
    settings: Mapped[dict[str, Any]] = mapped_column(default=dict)
    base_dir: Mapped[str] = mapped_column(Text, default=".")
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class SchedulerRun(Base):
    """One pass of one check schedule for one cron slot; the unique slot makes the pass
    happen once whatever the number of workers, and a missing slot is a missed run."""

    __tablename__ = "scheduler_runs"
    __table_args__ = (UniqueConstraint("schedule", "slot"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    schedule: Mapped[str] = mapped_column(String(100))
    slot: Mapped[datetime] = mapped_column()
    worker: Mapped[str] = mapped_column(String(200))
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column()
    summary: Mapped[dict[str, Any]] = mapped_column(default=dict)


class AuditHead(Base):
    """One row: the last audit seq and hash. Locking it serialises appends across workers."""

    __tablename__ = "audit_head"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, default=0)
    hash: Mapped[str] = mapped_column(String(64))


class WebSession(Base):
    """A dashboard sign-in. Only the SHA-256 of the session id is stored (the browser's
    cookie holds the id); the session acts as its token, so revoking the token ends it."""

    __tablename__ = "web_sessions"
    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    token_id: Mapped[str] = mapped_column(
        ForeignKey("api_tokens.id", ondelete="CASCADE"), index=True
    )
    # "session" (a browser's cookie) or "link" (a one-use sign-in link, `keyturn demo`'s)
    kind: Mapped[str] = mapped_column(String(8), default="session")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(index=True)
