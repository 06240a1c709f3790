"""The notification outbox: rows written in the same transaction as the event they tell of,
delivered later with retries. `dedupe_key` makes each message exist once (a notice is sent
once per cycle, not every day for a week as in seed 000's sample)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from keyturn.db.models import Notice, utcnow

KINDS = ("notice", "rotated", "rotation-failed", "out-of-sync", "consumers-lagging")


def enqueue(
    session: Session,
    *,
    kind: str,
    dedupe_key: str,
    subject: str,
    body: str,
    credential_id: str | None = None,
    tenant_id: str | None = None,
    data: dict[str, Any] | None = None,
) -> bool:
    """Add a message unless one with the same key exists; True if added."""
    if kind not in KINDS:
        raise ValueError(f"unknown notice kind {kind!r}")
    exists = session.execute(
        select(Notice.id).where(Notice.dedupe_key == dedupe_key)
    ).scalar_one_or_none()
    if exists is not None:
        return False
    session.add(
        Notice(
            kind=kind,
            dedupe_key=dedupe_key,
            subject=subject,
            body=body,
            credential_id=credential_id,
            tenant_id=tenant_id,
            data=data or {},
            next_attempt_at=utcnow(),
        )
    )
    session.flush()
    return True
