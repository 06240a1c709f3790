"""The notification outbox: rows written in the same transaction as the event they tell of,
delivered later with retries (keyturn.notify.deliver).

One row per recipient (the policy's recipients, then the tenant's), so each is retried on
its own. `dedupe_key` makes each message exist once: a notice is sent once per cycle, not
every day for a week as in seed 000's sample code.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from keyturn.db import repo
from keyturn.db.models import Notice, Tenant, utcnow
from keyturn.domain.model import PasswordRules

KINDS = ("notice", "rotated", "rotation-failed", "out-of-sync", "consumers-lagging")
NO_RECIPIENT = "no-recipient"


def recipients_for(session: Session, credential_id: str | None, tenant_id: str | None) -> list[str]:
    found: list[str] = []
    if credential_id:
        cred = repo.get_credential(session, credential_id)
        found += repo.policy_for(session, cred, PasswordRules()).recipients
        tenant_id = tenant_id or cred.tenant_id
    tenant = session.get(Tenant, tenant_id) if tenant_id else None
    if tenant is not None:
        found += tenant.recipients
    return list(dict.fromkeys(found))


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
) -> int:
    """Add the message for each recipient that does not have it yet; returns how many."""
    if kind not in KINDS:
        raise ValueError(f"unknown notice kind {kind!r}")
    added = 0
    for recipient in recipients_for(session, credential_id, tenant_id) or [""]:
        key = f"{dedupe_key}|{recipient}"
        if session.execute(select(Notice.id).where(Notice.dedupe_key == key)).first():
            continue
        session.add(
            Notice(
                kind=kind,
                dedupe_key=key,
                subject=subject,
                body=body,
                recipient=recipient,
                credential_id=credential_id,
                tenant_id=tenant_id,
                data=data or {},
                status="pending" if recipient else NO_RECIPIENT,
                next_attempt_at=utcnow(),
            )
        )
        added += 1
    session.flush()
    return added
