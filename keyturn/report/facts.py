"""What the report knows about each credential, loaded in a few bulk queries.

Everything that changes over time comes from history, so that a report `--at` a past moment
and the trend see what was so then: versions (when each became current, when it was retired),
rotations, consumers, and the audit log (secret reads, consumer reports, verifies, publishes).
Audit entries are reduced in SQL to the latest one per credential and per *point* (the
moments the report is evaluated at), so a large audit log is scanned once, not loaded.
The credential's own fields (owner, target, stores) are as they are now.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Select,
    String,
    case,
    func,
    literal,
    select,
    type_coerce,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session
from sqlalchemy.sql.functions import FunctionElement

from keyturn.db.models import AuditEntry, Consumer, Credential, Rotation, Version

# Audit actions that show a credential in use: its value was read, or a consumer reported.
USE_ACTIONS = ("secret.read", "consumer.report")
# Audit actions that say whether the target accepts the current value.
SYNC_ACTIONS = ("credential.verify", "rotation.promote")
# Audit actions after which a store holds a version.
PUBLISH_ACTIONS = ("rotation.publish", "store.repair")


def raw(column: Any) -> Any:
    """The column as the driver returns it, without SQLAlchemy's per-value converters."""
    return type_coerce(column, String)


def stamp(column: Any) -> Any:
    """A stored time (naive UTC) as ISO text with its offset, e.g. `2026-01-01
    02:00:00.000000+00:00`, which `datetime.fromisoformat` (C) turns into an aware time:
    600,000 of them at 100,000 credentials, with no Python call between."""
    return _Stamp(column)


class _Stamp(FunctionElement[str]):
    type = String()
    inherit_cache = True
    name = "stamp"


@compiles(_Stamp, "sqlite")
def _stamp_sqlite(element: _Stamp, compiler: Any, **kw: Any) -> str:
    # SQLite holds SQLAlchemy's text, "YYYY-MM-DD HH:MM:SS.ffffff"; NULL stays NULL.
    return f"({compiler.process(element.clauses, **kw)} || '+00:00')"


@compiles(_Stamp, "postgresql")
def _stamp_postgresql(element: _Stamp, compiler: Any, **kw: Any) -> str:
    # timestamp without time zone, naive UTC: written out as it is, to the microsecond.
    column = compiler.process(element.clauses, **kw)
    return f"(to_char({column}, 'YYYY-MM-DD HH24:MI:SS.US') || '+00:00')"


_parse = datetime.fromisoformat


@dataclass(slots=True)  # not frozen: a frozen __init__ costs a call per field
class VersionFact:
    number: int
    activated_at: datetime
    retired_at: datetime | None
    valid_from: datetime | None
    expires_at: datetime | None
    # (policy, when due under it): `rules.due` computes it once per version, not per point.
    due: tuple[object, datetime] | None = field(default=None, compare=False)


@dataclass(slots=True)  # not frozen: a frozen __init__ costs a call per field
class RotationFact:
    trigger: str
    status: str
    started_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    new_version: int | None
    wait_until: datetime | None


@dataclass(slots=True)  # not frozen: a frozen __init__ costs a call per field
class ConsumerFact:
    name: str
    created_at: datetime
    last_seen_at: datetime | None


@dataclass(slots=True)
class Facts:
    """One credential's history up to the last point; per-point lists are indexed like
    `Loaded.points`."""

    id: str
    tenant: str
    kind: str
    owner: str
    purpose: str
    policy: str | None
    target: str | None
    dispute: str | None
    stores: tuple[str, ...]
    created_at: datetime
    versions: list[VersionFact] = field(default_factory=list)  # by activation time
    rotations: list[RotationFact] = field(default_factory=list)  # by start time
    consumers: list[ConsumerFact] = field(default_factory=list)
    # Latest use at or before each point (None: none yet).
    used: list[datetime | None] = field(default_factory=list)
    # Latest sync evidence at or before each point: (when, verify status), the status one of
    # in-sync, out-of-sync, unreachable, store-drift (the target accepts, a store does not).
    synced: list[tuple[datetime, str] | None] = field(default_factory=list)
    # (store, version, when) for every publish up to the last point.
    published: list[tuple[str, int, datetime]] = field(default_factory=list)


@dataclass(frozen=True)
class Selection:
    tenant: str | None = None
    kind: str | None = None
    owner: str | None = None

    @property
    def everything(self) -> bool:
        return not self.tenant and not self.kind and self.owner is None

    def where(self, query: Select[Any]) -> Select[Any]:
        if self.tenant:
            query = query.where(Credential.tenant_id == self.tenant)
        if self.kind:
            query = query.where(Credential.kind == self.kind)
        if self.owner is not None:
            query = query.where(Credential.owner == self.owner)
        return query


def load(session: Session, points: Sequence[datetime], selection: Selection) -> list[Facts]:
    """The facts of every selected credential that existed at the last point."""
    last = points[-1]
    chosen = selection.where(select(Credential.id).where(Credential.created_at <= last))
    facts = {f.id: f for f in _credentials(session, selection, last, len(points))}
    if not facts:
        return []
    # Unselective filters cost more than they save: with no selection, rows of credentials
    # added after the last point are skipped as they come.
    ids = None if selection.everything else chosen.scalar_subquery()
    _versions(session, facts, ids, last)
    _rotations(session, facts, ids, last)
    _consumers(session, facts, ids, last)
    _uses(session, facts, ids, points)
    _syncs(session, facts, ids, points)
    _publishes(session, facts, ids, last)
    return sorted(facts.values(), key=lambda f: f.id)


def _credentials(session: Session, selection: Selection, last: datetime, n: int) -> Iterator[Facts]:
    columns = select(
        Credential.id,
        Credential.tenant_id,
        Credential.kind,
        Credential.owner,
        Credential.purpose,
        Credential.policy,
        Credential.target,
        Credential.dispute,
        raw(Credential.stores),
        stamp(Credential.created_at),
    )
    rows = _rows(session, selection.where(columns.where(Credential.created_at <= last)))
    known: dict[str, tuple[str, ...]] = {"[]": ()}  # a few distinct lists of stores
    # A few distinct tenants, kinds, owners, purposes: one string each, not one per row
    # (400,000 fewer objects to make and free at 100,000 credentials).
    same: dict[str, str] = {}
    one = same.setdefault
    for cid, tenant, kind, owner, purpose, policy, target, dispute, stores, created in rows:
        if isinstance(stores, str):
            found = known.get(stores)
            if found is None:
                found = known[stores] = tuple(json.loads(stores))
            stores = found
        yield Facts(
            id=cid,
            tenant=one(tenant, tenant),
            kind=one(kind, kind),
            owner=one(owner, owner) if owner else "",
            purpose=one(purpose, purpose) if purpose else "",
            policy=one(policy, policy) if policy else policy,
            target=one(target, target) if target else target,
            dispute=dispute,
            stores=stores if stores.__class__ is tuple else tuple(stores or ()),
            created_at=_parse(created),
            used=[None] * n,
            synced=[None] * n,
        )


def _rows(session: Session, query: Select[Any]) -> Sequence[Any]:
    """The rows of *query* on the session's connection, fetched at once: plain Core rows,
    without the ORM's result machinery (which costs a tenth of the load here)."""
    return session.connection().execute(query).all()


def scoped(query: Select[Any], column: Any, ids: Any) -> Select[Any]:
    return query if ids is None else query.where(column.in_(ids))


def _versions(session: Session, facts: dict[str, Facts], ids: object, last: datetime) -> None:
    query = select(
        Version.credential_id,
        Version.number,
        stamp(Version.activated_at),
        stamp(Version.retired_at),
        stamp(Version.valid_from),
        stamp(Version.expires_at),
    ).where(Version.activated_at.is_not(None), Version.activated_at <= last)
    # In table order: SQL's sort of every row costs more than sorting the few lists of two
    # or more afterwards.
    query = scoped(query, Version.credential_id, ids)
    several = []
    for cid, number, activated, retired_at, valid_from, expires_at in _rows(session, query):
        fact = facts.get(cid)
        if fact is None:
            continue
        retired = None if retired_at is None else _parse(retired_at)
        versions = fact.versions
        if len(versions) == 1:  # a second one: this list needs sorting
            several.append(versions)
        versions.append(
            VersionFact(
                number,
                _parse(activated),
                retired if retired and retired <= last else None,
                None if valid_from is None else _parse(valid_from),
                None if expires_at is None else _parse(expires_at),
            )
        )
    for versions in several:
        versions.sort(key=_by_activation)


def _by_activation(version: VersionFact) -> tuple[datetime, int]:
    return version.activated_at, version.number


def _rotations(session: Session, facts: dict[str, Facts], ids: object, last: datetime) -> None:
    query = select(
        Rotation.credential_id,
        Rotation.trigger,
        Rotation.status,
        stamp(Rotation.started_at),
        stamp(Rotation.updated_at),
        stamp(Rotation.finished_at),
        Rotation.new_version,
        stamp(Rotation.wait_until),
    ).where(Rotation.started_at <= last)
    query = scoped(query, Rotation.credential_id, ids).order_by(
        Rotation.credential_id, Rotation.started_at, Rotation.id
    )
    for cid, trigger, status, started, updated, finished, new, wait in _rows(session, query):
        fact = facts.get(cid)
        if fact is not None:
            fact.rotations.append(
                RotationFact(
                    trigger,
                    status,
                    _parse(started),
                    _parse(updated),
                    None if finished is None else _parse(finished),
                    new,
                    None if wait is None else _parse(wait),
                )
            )


def _consumers(session: Session, facts: dict[str, Facts], ids: object, last: datetime) -> None:
    query = select(
        Consumer.credential_id,
        Consumer.name,
        stamp(Consumer.created_at),
        stamp(Consumer.last_seen_at),
    ).where(Consumer.created_at <= last)
    several = []
    for cid, name, created, seen in _rows(session, scoped(query, Consumer.credential_id, ids)):
        fact = facts.get(cid)
        if fact is not None:
            seen_at = None if seen is None else _parse(seen)
            consumers = fact.consumers
            if len(consumers) == 1:
                several.append(consumers)
            consumers.append(ConsumerFact(name, _parse(created), seen_at))
    for consumers in several:  # by name, sorted here rather than in SQL (see _versions)
        consumers.sort(key=_by_name)


def _by_name(consumer: ConsumerFact) -> str:
    return consumer.name


def _bucket(points: Sequence[datetime]) -> ColumnElement[int]:
    """The index of the first point at or after an entry's time."""
    return case(*((AuditEntry.at <= p, literal(i)) for i, p in enumerate(points)), else_=-1)


def _latest(
    session: Session,
    ids: object,
    points: Sequence[datetime],
    actions: Sequence[str],
    flag: ColumnElement[Any],
) -> Iterator[tuple[str, int, object, datetime]]:
    """(credential, bucket, flag, latest time) over the audit entries of *actions*."""
    bucket = _bucket(points).label("bucket")
    label = flag.label("flag")
    query = (
        scoped(
            select(AuditEntry.credential_id, bucket, label, stamp(func.max(AuditEntry.at))),
            AuditEntry.credential_id,
            ids,
        )
        .where(AuditEntry.action.in_(actions), AuditEntry.at <= points[-1])
        .group_by(AuditEntry.credential_id, bucket, label)
    )
    for cred, index, value, at in _rows(session, query):
        yield str(cred), int(index), value, _parse(at)


def _carry(values: list[Any]) -> None:
    """Make each point's value the latest of its own and the earlier points' (values are
    times, or tuples that start with one: an earlier bucket's time is always before a later
    one's, so the tuples never compare beyond it)."""
    before = None
    for i, now in enumerate(values):
        if before is not None and (now is None or before > now):
            values[i] = before
        else:
            before = now


def _uses(
    session: Session, facts: dict[str, Facts], ids: object, points: Sequence[datetime]
) -> None:
    touched = {}
    for cred, index, _flag, at in _latest(session, ids, points, USE_ACTIONS, literal(1)):
        fact = facts.get(cred)
        if fact is None:
            continue
        used = touched[cred] = fact.used
        if used[index] is None or at > used[index]:  # type: ignore[operator]
            used[index] = at
    for used in touched.values():
        _carry(used)


def _syncs(
    session: Session, facts: dict[str, Facts], ids: object, points: Sequence[datetime]
) -> None:
    # A promotion proves the target takes the new value; a verify records what it found.
    status = case(
        (AuditEntry.action == "rotation.promote", literal("in-sync")),
        else_=AuditEntry.details["status"].as_string(),
    )
    touched = {}
    words: dict[str, str] = {}  # one string per status, not one per row
    for cred, index, found, at in _latest(session, ids, points, SYNC_ACTIONS, status):
        fact = facts.get(cred)
        if fact is None:
            continue
        synced = touched[cred] = fact.synced
        seen = synced[index]
        # The later evidence wins; at the same instant, a problem wins over in-sync.
        if seen is None or at > seen[0] or (at == seen[0] and found != "in-sync"):
            word = str(found or "unknown")
            synced[index] = (at, words.setdefault(word, word))
    for synced in touched.values():
        _carry(synced)


def _publishes(session: Session, facts: dict[str, Facts], ids: object, last: datetime) -> None:
    """What each store received: a rotation's publish step (its stores) or a repair (one).
    The fields are picked out in SQL: a few distinct lists of stores are decoded, not every
    entry's details."""
    details = AuditEntry.details
    query = select(
        AuditEntry.credential_id,
        details["version"].as_integer(),
        raw(details["stores"]),
        details["store"].as_string(),
        stamp(AuditEntry.at),
    ).where(AuditEntry.action.in_(PUBLISH_ACTIONS), AuditEntry.at <= last)
    known: dict[str, list[object]] = {}
    for cred, version, stores, store, at in _rows(
        session, scoped(query, AuditEntry.credential_id, ids)
    ):
        fact = facts.get(cred)
        if fact is None or not isinstance(version, int):
            continue
        if isinstance(stores, str):  # SQLite: the JSON text; PostgreSQL: already a list
            found = known.get(stores)
            if found is None:
                found = known[stores] = json.loads(stores)
            stores = found
        when = _parse(at)
        for name in stores or ([store] if store else []):
            fact.published.append((str(name), version, when))
