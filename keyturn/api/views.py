"""Rows to response bodies; the due status the list filters on."""

from __future__ import annotations

from datetime import datetime
from typing import cast

from sqlalchemy.orm import Session

from keyturn.api import schemas as s
from keyturn.db import repo
from keyturn.db.models import ApiToken, Consumer, Credential, Version
from keyturn.domain.inputs import clean
from keyturn.domain.model import VersionState
from keyturn.engine import publish
from keyturn.engine.protocol import Outcome


def credential(
    session: Session, cred: Credential, now: datetime, detail: bool = False
) -> s.CredentialOut:
    current = repo.version_in_state(session, cred.id, VersionState.CURRENT)
    policy = repo.due_state(session, cred, now)
    age, due = policy.age, cast(s.Due, policy.status)
    active = repo.active_rotation(session, cred.id)
    tags = cred.tags if isinstance(cred.tags, dict) else {}
    # Stored text goes through clean(): a row written before input was checked (a lone
    # surrogate in a tag) must not make the listing fail for everyone.
    return s.CredentialOut(
        id=cred.id,
        tenant=cred.tenant_id,
        kind=cred.kind,
        owner=clean(cred.owner),
        purpose=clean(cred.purpose),
        tags={clean(str(k)): clean(str(v)) for k, v in tags.items()},
        policy=cred.policy,
        target=cred.target,
        strategy=cred.strategy,
        stores=[clean(str(x)) for x in cred.stores or []],
        usernames=[clean(str(x)) for x in cred.usernames or []],
        version=current.number if current else None,
        age_days=round(age.total_seconds() / 86400, 1) if age is not None else None,
        max_age_days=policy.max_age.days,
        due=due,
        rotation=f"{active.step}/{active.status}" if active else None,
        sync=cred.sync_status,
        verified_at=cred.verified_at,
        held_back=cred.dispute is not None,
        created_at=cred.created_at,
        updated_at=cred.updated_at,
        store_sync=[s.StoreSyncOut(**m) for m in publish.marks(session, cred.id)]
        if detail
        else None,
    )


def version(v: Version) -> s.VersionOut:
    return s.VersionOut(
        number=v.number,
        state=v.state,
        username=clean(v.username) if v.username is not None else None,
        fingerprint=v.fingerprint,
        created_at=v.created_at,
        activated_at=v.activated_at,
        retired_at=v.retired_at,
    )


def consumer(c: Consumer) -> s.ConsumerOut:
    return s.ConsumerOut(
        name=c.name,
        version=c.version,
        last_seen_at=c.last_seen_at,
        host=c.host,
        process=c.process,
        sdk_version=c.sdk_version,
        fallbacks=c.fallbacks or 0,
    )


def outcome(o: Outcome) -> s.OutcomeOut:
    return s.OutcomeOut(
        rotation=o.rotation_id,
        credential=o.credential_id,
        status=o.status,
        step=o.step,
        version=o.new_version,
        error=o.error,
        next_attempt_at=o.next_attempt_at,
        wait_until=o.wait_until,
        current_value=o.current_value,
    )


def token(row: ApiToken) -> s.TokenOut:
    return s.TokenOut(
        id=row.id,
        name=row.name,
        role=row.role,
        scopes=[str(x) for x in row.scopes or []],
        tenant=row.tenant_id,
        created_at=row.created_at,
        expires_at=row.expires_at,
        revoked_at=row.revoked_at,
    )
