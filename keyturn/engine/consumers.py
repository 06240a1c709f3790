"""Consumers: who uses a credential, which version they report, and who would break.

The SDK (`keyturn.client`) and `keyturn run` report the version they use with where they run
(host, process, SDK version) and how many fallbacks they made; the rotation's wait step
revokes the previous version once every consumer reports the new one. `at_risk` answers the
question an operator asks before a revoke or an emergency rotation: which consumers would stop
working?
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from sqlalchemy import update
from sqlalchemy.orm import Session

from keyturn.app import Keyturn
from keyturn.audit import log as audit
from keyturn.db import repo
from keyturn.db.models import Consumer, Rotation, utcnow
from keyturn.domain.errors import NotFound, UsageError
from keyturn.domain.ids import validate_name
from keyturn.domain.model import RotationStatus, VersionState

Action = Literal["revoke", "emergency"]


@dataclass(frozen=True)
class Identity:
    """Where a consumer runs, as it says itself (free text, bounded, never a secret)."""

    host: str | None = None
    process: str | None = None
    sdk_version: str | None = None

    def __post_init__(self) -> None:
        for field, limit in (("host", 255), ("process", 255), ("sdk_version", 64)):
            value = getattr(self, field)
            if value is not None and (len(value) > limit or not value.isprintable()):
                raise UsageError(f"consumer {field}: at most {limit} printable characters")


@dataclass(frozen=True)
class AtRisk:
    """A consumer that an action would break, and why."""

    name: str
    version: int | None
    last_seen_at: datetime | None
    host: str | None
    process: str | None
    # An SDK consumer refetches on an authentication failure: it recovers by itself.
    recovers: bool
    why: str


def _find(session: Session, credential_id: str, name: str) -> Consumer | None:
    return next((c for c in repo.consumers(session, credential_id) if c.name == name), None)


def _identify(consumer: Consumer, who: Identity | None) -> None:
    if who is None:
        return
    for field in ("host", "process", "sdk_version"):
        value = getattr(who, field)
        if value is not None:
            setattr(consumer, field, value)


def register(
    app: Keyturn, credential_id: str, name: str, who: Identity | None = None, *, actor: str
) -> None:
    """Idempotent: a known consumer only has its identity updated."""
    validate_name(name, "consumer name")
    with app.db.write() as session:
        cred = repo.get_credential(session, credential_id)
        consumer = _find(session, credential_id, name)
        if consumer is None:
            consumer = Consumer(credential_id=credential_id, name=name, fallbacks=0)
            session.add(consumer)
            audit.append(
                session,
                actor=actor,
                action="consumer.register",
                credential_id=credential_id,
                tenant_id=cred.tenant_id,
                details={"consumer": name},
            )
        _identify(consumer, who)


def report(
    app: Keyturn,
    credential_id: str,
    name: str,
    version: int,
    who: Identity | None = None,
    *,
    fallbacks: int = 0,
    actor: str | None = None,
) -> None:
    """A consumer says which version it uses (registering it if needed); a change of
    version is an audit entry, a repeated report only refreshes when it was last seen.
    *fallbacks* is how many it made since its last report (added up)."""
    validate_name(name, "consumer name")
    if fallbacks < 0:
        raise UsageError("fallbacks cannot be negative")
    now = utcnow()
    with app.db.write() as session:
        cred = repo.get_credential(session, credential_id)
        if repo.version_number(session, credential_id, version) is None:
            raise NotFound(f"{credential_id} has no version {version}")
        consumer = _find(session, credential_id, name)
        if consumer is None:
            consumer = Consumer(credential_id=credential_id, name=name, fallbacks=0)
            session.add(consumer)
        _identify(consumer, who)
        consumer.fallbacks = (consumer.fallbacks or 0) + fallbacks
        consumer.last_seen_at = now
        if consumer.version != version:
            consumer.version = version
            _nudge(session, credential_id, version)
            audit.append(
                session,
                actor=actor or f"consumer:{name}",
                action="consumer.report",
                credential_id=credential_id,
                tenant_id=cred.tenant_id,
                details={"consumer": name, "version": version, "fallbacks": fallbacks},
            )


def _nudge(session: Session, credential_id: str, version: int) -> None:
    """A rotation waiting for this version looks again at its next worker poll, not a minute
    later: the revoke follows the last consumer's report within seconds."""
    session.execute(
        update(Rotation)
        .where(
            Rotation.credential_id == credential_id,
            Rotation.status == RotationStatus.WAITING,
            Rotation.new_version <= version,
        )
        .values(next_attempt_at=utcnow())
        .execution_options(synchronize_session=False)
    )


def at_risk(app: Keyturn, credential_id: str, action: Action = "revoke") -> list[AtRisk]:
    """The consumers that *action* would break.

    `revoke` retires the previous version: every consumer that has not reported the current
    one (it reports an older version, or none at all) would lose its value. `emergency`
    revokes the current value at once, without a grace period: every consumer holds a value
    that stops working; those with the SDK refetch on the first failure (`recovers`)."""
    with app.db.read() as session:
        repo.get_credential(session, credential_id)
        current = repo.version_in_state(session, credential_id, VersionState.CURRENT)
        number = current.number if current else None
        found: list[AtRisk] = []
        for c in repo.consumers(session, credential_id):
            if action == "revoke":
                if c.version is not None and number is not None and c.version >= number:
                    continue
                why = (
                    "never reported a version"
                    if c.version is None
                    else f"uses version {c.version}, not the current {number}"
                )
            elif c.version is None:
                why = "never reported a version; it holds a value revoked at once"
            elif number is not None and c.version < number:
                why = f"uses version {c.version}, older than the current {number}"
            else:
                why = f"uses version {c.version}, which an emergency rotation revokes at once"
            found.append(
                AtRisk(
                    c.name,
                    c.version,
                    c.last_seen_at,
                    c.host,
                    c.process,
                    c.sdk_version is not None,
                    why,
                )
            )
        return found


__all__ = ["AtRisk", "Identity", "at_risk", "register", "report"]
