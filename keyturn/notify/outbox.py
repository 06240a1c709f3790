"""The notification outbox: rows written in the same transaction as the event they tell of,
delivered later with retries (keyturn.notify.deliver).

One row per recipient (the policy's recipients, then the tenant's), so each is retried on
its own. `dedupe_key` makes each message exist once: a notice is sent once per cycle, not
every day for a week as in seed 000's sample code.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from typing import Any, cast

from sqlalchemy import Table, bindparam, select
from sqlalchemy.orm import Session

from keyturn.db import direct, repo
from keyturn.db.models import Notice, Tenant, utcnow
from keyturn.domain.model import PasswordRules

KINDS = ("notice", "rotated", "rotation-failed", "out-of-sync", "consumers-lagging")
NO_RECIPIENT = "no-recipient"


def recipients_for(session: Session, credential_id: str | None, tenant_id: str | None) -> list[str]:
    policy: list[str] = []
    if credential_id:
        cred = repo.get_credential(session, credential_id)
        policy = list(repo.policy_for(session, cred, PasswordRules()).recipients)
        tenant_id = tenant_id or cred.tenant_id
    return recipients_of(policy, session.get(Tenant, tenant_id) if tenant_id else None)


def recipients_of(policy: Iterable[str], tenant: Tenant | None) -> list[str]:
    """Who hears of a credential: its policy's recipients, then its tenant's, each once."""
    return list(dict.fromkeys([*policy, *(tenant.recipients if tenant is not None else [])]))


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
    recipients: list[str] | None = None,
) -> int:
    """Add the message for each recipient that does not have it yet; returns how many.

    *recipients*: what `recipients_for` answers, when the caller has it already (the
    rotation's promotion holds the policy and the tenant). On PostgreSQL and SQLite one
    INSERT that skips the rows whose dedupe key is there already (ON CONFLICT DO NOTHING)."""
    if kind not in KINDS:
        raise ValueError(f"unknown notice kind {kind!r}")
    if recipients is None:
        recipients = recipients_for(session, credential_id, tenant_id)
    now = utcnow()
    rows = [
        {
            "kind": kind,
            "dedupe_key": f"{dedupe_key}|{recipient}",
            "subject": subject,
            "body": body,
            "recipient": recipient,
            "credential_id": credential_id,
            "tenant_id": tenant_id,
            "data": data or {},
            "status": "pending" if recipient else NO_RECIPIENT,
            "next_attempt_at": now,
            "attempts": 0,
            "created_at": now,
        }
        for recipient in dict.fromkeys(recipients or [""])
    ]
    dialect = session.get_bind().dialect
    if dialect.name not in _UPSERTS or not dialect.insert_returning:  # or SQLite < 3.35
        return _enqueue_each(session, rows)  # one row at a time, asked first
    session.flush()  # what the session holds goes first, as the ORM's autoflush did
    statement = _statement(dialect.name, len(rows))
    values = {f"{name}_{i}": value for i, row in enumerate(rows) for name, value in row.items()}
    return len(direct.execute(session.connection(), statement, values).rows)


# The dialects whose INSERT has ON CONFLICT DO NOTHING (imported when first used: a CLI on
# SQLite does not load the PostgreSQL dialect, asyncio and all).
_UPSERTS = ("postgresql", "sqlite")
_STATEMENTS: dict[tuple[str, int], Any] = {}
_COLUMNS = (
    *("kind", "dedupe_key", "subject", "body", "recipient", "credential_id", "tenant_id"),
    *("data", "status", "next_attempt_at", "attempts", "created_at"),
)


def _statement(dialect: str, count: int) -> Any:
    """INSERT of *count* notices skipping dedupe keys already there, RETURNING their ids;
    made once per count (keyturn.db.direct.execute runs it on the session's transaction)."""
    key = (dialect, count)
    if key not in _STATEMENTS:
        notices = cast(Table, Notice.__table__)
        rows = [
            {name: bindparam(f"{name}_{i}", type_=notices.c[name].type) for name in _COLUMNS}
            for i in range(count)
        ]
        insert = importlib.import_module(f"sqlalchemy.dialects.{dialect}").insert
        statement = insert(notices).values(rows)
        statement = statement.on_conflict_do_nothing(index_elements=["dedupe_key"])
        _STATEMENTS[key] = statement.returning(notices.c.id)
    return _STATEMENTS[key]


def _enqueue_each(session: Session, rows: list[dict[str, Any]]) -> int:
    added = 0
    for row in rows:
        if session.execute(select(Notice.id).where(Notice.dedupe_key == row["dedupe_key"])).first():
            continue
        session.add(Notice(**row))
        added += 1
    session.flush()
    return added
