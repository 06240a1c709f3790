"""What the report knows about each credential, loaded in a few bulk queries.

Everything that changes over time comes from history, so that a report `--at` a past moment
and the trend see what was so then: versions (when each became current, when it was retired),
rotations, consumers, and the audit log (secret reads, consumer reports, verifies, publishes).
Audit entries are reduced in SQL to the latest one per credential and per *point* (the
moments the report is evaluated at), so a large audit log is scanned once, not loaded.
The credential's own fields (owner, target, stores) are as they are now.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, case, func, literal, or_, select
from sqlalchemy.orm import Session

from keyturn.db.models import AuditEntry, Consumer, Credential, Rotation, Version

# Audit actions that show a credential in use: its value was read, or a consumer reported.
USE_ACTIONS = ("secret.read", "consumer.report")
# Audit actions that say whether the target accepts the current value.
SYNC_ACTIONS = ("credential.verify", "rotation.promote")


@dataclass(frozen=True)
class VersionFact:
    number: int
    activated_at: datetime
    retired_at: datetime | None
    valid_from: datetime | None
    expires_at: datetime | None


@dataclass(frozen=True)
class RotationFact:
    trigger: str
    status: str
    started_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    new_version: int | None
    wait_until: datetime | None


@dataclass(frozen=True)
class ConsumerFact:
    name: str
    created_at: datetime
    last_seen_at: datetime | None


@dataclass
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
    # Latest sync evidence at or before each point: (when, accepted?).
    synced: list[tuple[datetime, bool] | None] = field(default_factory=list)
    # (store, version, when) for every publish up to the last point.
    published: list[tuple[str, int, datetime]] = field(default_factory=list)


@dataclass(frozen=True)
class Selection:
    tenant: str | None = None
    kind: str | None = None
    owner: str | None = None

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
    facts = {f.id: f for f in _credentials(session, chosen, len(points))}
    if not facts:
        return []
    ids = chosen.scalar_subquery()
    _versions(session, facts, ids, last)
    _rotations(session, facts, ids, last)
    _consumers(session, facts, ids, last)
    _uses(session, facts, ids, points)
    _syncs(session, facts, ids, points)
    _publishes(session, facts, ids, last)
    return sorted(facts.values(), key=lambda f: f.id)


def _credentials(session: Session, chosen: Select[Any], n: int) -> Iterator[Facts]:
    query = select(
        Credential.id,
        Credential.tenant_id,
        Credential.kind,
        Credential.owner,
        Credential.purpose,
        Credential.policy,
        Credential.target,
        Credential.dispute,
        Credential.stores,
        Credential.created_at,
    ).where(Credential.id.in_(chosen.scalar_subquery()))
    for row in session.execute(query):
        yield Facts(
            id=row.id,
            tenant=row.tenant_id,
            kind=row.kind,
            owner=row.owner or "",
            purpose=row.purpose or "",
            policy=row.policy,
            target=row.target,
            dispute=row.dispute,
            stores=tuple(row.stores or ()),
            created_at=row.created_at,
            used=[None] * n,
            synced=[None] * n,
        )


def _versions(session: Session, facts: dict[str, Facts], ids: object, last: datetime) -> None:
    query = (
        select(
            Version.credential_id,
            Version.number,
            Version.activated_at,
            Version.retired_at,
            Version.valid_from,
            Version.expires_at,
        )
        .where(
            Version.credential_id.in_(ids),  # type: ignore[arg-type]
            Version.activated_at.is_not(None),
            Version.activated_at <= last,
        )
        .order_by(Version.credential_id, Version.activated_at, Version.number)
    )
    for row in session.execute(query):
        retired = row.retired_at if row.retired_at and row.retired_at <= last else None
        facts[row.credential_id].versions.append(
            VersionFact(row.number, row.activated_at, retired, row.valid_from, row.expires_at)
        )


def _rotations(session: Session, facts: dict[str, Facts], ids: object, last: datetime) -> None:
    query = (
        select(
            Rotation.credential_id,
            Rotation.trigger,
            Rotation.status,
            Rotation.started_at,
            Rotation.updated_at,
            Rotation.finished_at,
            Rotation.new_version,
            Rotation.wait_until,
        )
        .where(Rotation.credential_id.in_(ids), Rotation.started_at <= last)  # type: ignore[arg-type]
        .order_by(Rotation.credential_id, Rotation.started_at, Rotation.id)
    )
    for row in session.execute(query):
        facts[row.credential_id].rotations.append(
            RotationFact(
                row.trigger,
                row.status,
                row.started_at,
                row.updated_at,
                row.finished_at,
                row.new_version,
                row.wait_until,
            )
        )


def _consumers(session: Session, facts: dict[str, Facts], ids: object, last: datetime) -> None:
    query = (
        select(Consumer.credential_id, Consumer.name, Consumer.created_at, Consumer.last_seen_at)
        .where(Consumer.credential_id.in_(ids), Consumer.created_at <= last)  # type: ignore[arg-type]
        .order_by(Consumer.credential_id, Consumer.name)
    )
    for row in session.execute(query):
        facts[row.credential_id].consumers.append(
            ConsumerFact(row.name, row.created_at, row.last_seen_at)
        )


def _bucket(points: Sequence[datetime]) -> ColumnElement[int]:
    """The index of the first point at or after an entry's time."""
    return case(*((AuditEntry.at <= p, literal(i)) for i, p in enumerate(points)), else_=-1)


def _latest(
    session: Session, ids: object, points: Sequence[datetime], actions: Sequence[str], flag: object
) -> Iterator[tuple[str, int, object, datetime]]:
    """(credential, bucket, flag, latest time) over the audit entries of *actions*."""
    bucket = _bucket(points).label("bucket")
    label = flag.label("flag")  # type: ignore[attr-defined]
    query = (
        select(AuditEntry.credential_id, bucket, label, func.max(AuditEntry.at))
        .where(
            AuditEntry.action.in_(actions),
            AuditEntry.credential_id.in_(ids),  # type: ignore[arg-type]
            AuditEntry.at <= points[-1],
        )
        .group_by(AuditEntry.credential_id, bucket, label)
    )
    for cred, index, value, at in session.execute(query):
        yield str(cred), int(index), value, at


def _carry(values: list[object]) -> None:
    """Make each point's value the latest of its own and the earlier points'."""
    for i in range(1, len(values)):
        before, now = values[i - 1], values[i]
        if before is not None and (now is None or _when(before) > _when(now)):
            values[i] = before


def _when(value: object) -> datetime:
    return value[0] if isinstance(value, tuple) else value  # type: ignore[return-value]


def _uses(
    session: Session, facts: dict[str, Facts], ids: object, points: Sequence[datetime]
) -> None:
    for cred, index, _flag, at in _latest(session, ids, points, USE_ACTIONS, literal(1)):
        used = facts[cred].used
        if used[index] is None or at > used[index]:  # type: ignore[operator]
            used[index] = at
    for fact in facts.values():
        _carry(fact.used)  # type: ignore[arg-type]


def _syncs(
    session: Session, facts: dict[str, Facts], ids: object, points: Sequence[datetime]
) -> None:
    ok = case(
        (or_(AuditEntry.action == "rotation.promote", AuditEntry.outcome == "ok"), literal(1)),
        else_=literal(0),
    )
    for cred, index, flag, at in _latest(session, ids, points, SYNC_ACTIONS, ok):
        synced = facts[cred].synced
        seen = synced[index]
        # The later evidence wins; at the same instant, a refusal wins.
        if seen is None or at > seen[0] or (at == seen[0] and not flag):
            synced[index] = (at, bool(flag))
    for fact in facts.values():
        _carry(fact.synced)  # type: ignore[arg-type]


def _publishes(session: Session, facts: dict[str, Facts], ids: object, last: datetime) -> None:
    query = select(AuditEntry.credential_id, AuditEntry.details, AuditEntry.at).where(
        and_(
            AuditEntry.action == "rotation.publish",
            AuditEntry.credential_id.in_(ids),  # type: ignore[arg-type]
            AuditEntry.at <= last,
        )
    )
    for cred, details, at in session.execute(query):
        version = details.get("version")
        if isinstance(version, int):
            for store in details.get("stores") or ():
                facts[cred].published.append((str(store), version, at))
