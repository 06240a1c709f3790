"""Named queries, one place per table group."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import String, bindparam, func, select
from sqlalchemy.orm import Session, aliased

from keyturn.db import direct
from keyturn.db.models import Consumer, Credential, Rotation, TargetRow, Tenant, Version
from keyturn.db.models import Policy as PolicyRow
from keyturn.domain.errors import CredentialNotFound
from keyturn.domain.ids import validate_id
from keyturn.domain.model import ACTIVE_STATUSES, PasswordRules, VersionState
from keyturn.domain.policy import Policy, effective


def get_credential(session: Session, credential_id: str, *, lock: bool = False) -> Credential:
    validate_id(credential_id)
    if lock:
        query = select(Credential).where(Credential.id == credential_id).with_for_update()
        found = session.execute(query).scalar_one_or_none()
    else:  # from the session's identity map when this transaction already loaded it
        found = session.get(Credential, credential_id)
    if found is None:
        raise CredentialNotFound(f"no credential {credential_id!r}")
    return found


def locked_credential_with(
    session: Session, credential_id: str
) -> tuple[Credential, tuple[PolicyRow | None, Tenant | None, TargetRow | None], Rotation | None]:
    """`get_credential(lock=True)` with the rows a rotation reads next (its policy, tenant
    and target), loaded by the same statement: in the session's identity map, `session.get`
    finds them without a query for as long as the caller holds them (the map holds rows
    weakly). The lock is on the credential's row only. Last, its active rotation, if any
    (the same statement says whether there is one)."""
    validate_id(credential_id)
    found = session.execute(_CREDENTIAL_WITH, {"cid": credential_id}).one_or_none()
    if found is None:
        raise CredentialNotFound(f"no credential {credential_id!r}")
    active = session.get(Rotation, found[4]) if found[4] is not None else None
    return found[0], (found[1], found[2], found[3]), active


def list_credentials(
    session: Session, tenant: str | None = None, kind: str | None = None
) -> Sequence[Credential]:
    query = select(Credential).order_by(Credential.id)
    if tenant:
        query = query.where(Credential.tenant_id == tenant)
    if kind:
        query = query.where(Credential.kind == kind)
    return session.execute(query).scalars().all()


def policy_for(session: Session, cred: Credential, rules: PasswordRules) -> Policy:
    """The credential's effective policy: its kind's defaults, overridden by its named policy."""
    row = session.get(PolicyRow, cred.policy) if cred.policy else None
    return effective(cred.kind, row.settings if row else None, rules)


@dataclass(frozen=True)
class DueState:
    status: str  # no-value | due | notice | ok
    age: timedelta | None
    max_age: timedelta


def due_state(session: Session, cred: Credential, now: datetime) -> DueState:
    """How the scheduler sees the credential at *now* (its stored due and notice times)."""
    policy = policy_for(session, cred, PasswordRules())
    current = version_in_state(session, cred.id, VersionState.CURRENT)
    return due_state_of(cred, current, policy, now)


def due_state_of(
    cred: Credential, current: Version | None, policy: Policy, now: datetime
) -> DueState:
    """due_state from rows already loaded (the dashboard loads a page of them at once)."""
    if current is None or current.activated_at is None:
        return DueState("no-value", None, policy.max_age)
    due_at, notice_at = cred.due_at, cred.notice_at
    if due_at is None or notice_at is None:  # no target: nothing rotates it, but it ages
        due_at, notice_at = policy.due_times(current.activated_at, cred.id, validity(current))
    status = "due" if now >= due_at else "notice" if now >= notice_at else "ok"
    return DueState(status, now - current.activated_at, policy.max_age)


def refresh_due(session: Session, cred: Credential) -> None:
    """Recompute when the credential is due (and noticed) from its current version and policy."""
    policy = policy_for(session, cred, PasswordRules())
    current = version_in_state(session, cred.id, VersionState.CURRENT)
    cred.schedule = policy.schedule
    if current is None or current.activated_at is None or not cred.target:
        cred.due_at = cred.notice_at = None
        return
    cred.due_at, cred.notice_at = policy.due_times(current.activated_at, cred.id, validity(current))


def validity(version: Version) -> tuple[datetime | None, datetime | None]:
    return version.valid_from, version.expires_at


def versions(session: Session, credential_id: str) -> Sequence[Version]:
    return (
        session.execute(
            select(Version)
            .where(Version.credential_id == credential_id)
            .order_by(Version.number.desc())
        )
        .scalars()
        .all()
    )


def version_in_state(session: Session, credential_id: str, state: VersionState) -> Version | None:
    return session.execute(
        select(Version).where(Version.credential_id == credential_id, Version.state == state)
    ).scalar_one_or_none()


def versions_in_states(
    session: Session, credential_id: str, states: Collection[VersionState]
) -> dict[VersionState, Version]:
    """A credential's versions in *states* (at most one per state), by state."""
    rows = session.execute(
        select(Version.state, Version).where(
            Version.credential_id == credential_id, Version.state.in_(states)
        )
    )
    # Keyed by the state as read now (an object already in the session keeps its attributes).
    return {VersionState(state): version for state, version in rows}


def versions_and_last(
    session: Session, credential_id: str, states: Collection[VersionState]
) -> tuple[dict[VersionState, Version], int | None]:
    """`versions_in_states`, and the credential's last version number (`last_version_number`)
    read by the same statement: None when no version is in *states* (then nothing says)."""
    asked = list(states)
    if not 1 <= len(asked) <= 3:
        raise ValueError("versions_and_last takes one to three states")
    given = {"cid": credential_id, "state_a": asked[0], "state_b": asked[-1]}
    given["state_c"] = asked[1] if len(asked) > 1 else asked[0]
    rows = session.execute(_VERSIONS_AND_LAST, given).all()
    found = {VersionState(state): version for state, version, _ in rows}
    return found, (rows[0][2] if rows else None)


def version_number(session: Session, credential_id: str, number: int) -> Version | None:
    return session.execute(
        select(Version).where(Version.credential_id == credential_id, Version.number == number)
    ).scalar_one_or_none()


def last_version_number(session: Session, credential_id: str) -> int:
    latest = session.execute(
        select(Version.number)
        .where(Version.credential_id == credential_id)
        .order_by(Version.number.desc())
        .limit(1)
    ).scalar_one_or_none()
    return latest or 0


def active_rotation(session: Session, credential_id: str) -> Rotation | None:
    return session.execute(_ACTIVE_ROTATION, {"cid": credential_id}).scalar_one_or_none()


def rotations(session: Session, credential_id: str, limit: int = 20) -> Sequence[Rotation]:
    return (
        session.execute(
            select(Rotation)
            .where(Rotation.credential_id == credential_id)
            .order_by(Rotation.id.desc())
            .limit(limit)
        )
        .scalars()
        .all()
    )


def consumers(session: Session, credential_id: str) -> Sequence[Consumer]:
    return session.execute(_CONSUMERS, {"cid": credential_id}).scalars().all()


def consumer_versions(session: Session, credential_id: str) -> list[tuple[str, int | None]]:
    """Each consumer's (name, version it reported), by name: what the wait step weighs, a
    Core statement straight on the driver in the session's transaction (no ORM rows)."""
    rows = direct.execute(session.connection(), _CONSUMER_VERSIONS, {"cid": credential_id}).rows
    return [(row.name, row.version) for row in rows]


# Statements a rotation runs, built once (their construction and cache key cost more CPU
# than their round trip on a quiet server); the values are bound at execution.
_CID = bindparam("cid", type_=String())
_ACTIVE_ID = (
    select(Rotation.id)
    .where(Rotation.credential_id == Credential.id, Rotation.status.in_(ACTIVE_STATUSES))
    .limit(1)
    .scalar_subquery()
)
_CREDENTIAL_WITH = (
    select(Credential, PolicyRow, Tenant, TargetRow, _ACTIVE_ID)
    .outerjoin(PolicyRow, PolicyRow.name == Credential.policy)
    .outerjoin(Tenant, Tenant.id == Credential.tenant_id)
    .outerjoin(TargetRow, TargetRow.name == Credential.target)
    .where(Credential.id == _CID)
    .with_for_update(of=Credential)
)
_OTHER = aliased(Version)
_VERSIONS_AND_LAST = select(
    Version.state,
    Version,
    select(func.max(_OTHER.number)).where(_OTHER.credential_id == _CID).scalar_subquery(),
).where(  # three plain parameters: an expanding IN is rewritten at every execution
    Version.credential_id == _CID,
    Version.state.in_([bindparam(f"state_{n}", type_=String()) for n in "abc"]),
)
_ACTIVE_ROTATION = select(Rotation).where(
    Rotation.credential_id == _CID, Rotation.status.in_(ACTIVE_STATUSES)
)
_CONSUMERS = select(Consumer).where(Consumer.credential_id == _CID).order_by(Consumer.name)
_CONSUMER_TABLE = Consumer.__table__.c
_CONSUMER_VERSIONS = (
    select(_CONSUMER_TABLE.name, _CONSUMER_TABLE.version)
    .where(_CONSUMER_TABLE.credential_id == _CID)
    .order_by(_CONSUMER_TABLE.name)
)
