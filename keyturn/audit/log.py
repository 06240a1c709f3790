"""The tamper-evident audit log.

Each entry holds the SHA-256 of the entry before it, so editing, removing, reordering or
inserting an entry breaks the chain at that point. The head row (last seq and hash) is locked
while an entry is appended, which serialises appends across processes (FOR UPDATE on
PostgreSQL; SQLite write transactions are already exclusive), and lets `verify` notice a
truncated tail. Entries carry fingerprints of values, never values.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TextIO

from sqlalchemy import select
from sqlalchemy.orm import Session

from keyturn.db.models import AuditEntry, AuditHead, utcnow
from keyturn.domain.model import Secret

GENESIS = "0" * 64


def _canonical(entry: AuditEntry) -> bytes:
    fields = [
        entry.seq,
        entry.at.isoformat(timespec="microseconds"),
        entry.actor,
        entry.action,
        entry.credential_id,
        entry.tenant_id,
        entry.fingerprint,
        entry.reason,
        entry.outcome,
        entry.details,
        entry.prev_hash,
    ]
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), default=str).encode()


def entry_hash(entry: AuditEntry) -> str:
    return hashlib.sha256(_canonical(entry)).hexdigest()


def _no_secrets(details: dict[str, Any]) -> dict[str, Any]:
    for key, value in details.items():
        if isinstance(value, Secret):
            raise TypeError(f"audit detail {key!r} is a secret value; record a fingerprint")
        if isinstance(value, dict):
            _no_secrets(value)
    return details


def append(
    session: Session,
    *,
    actor: str,
    action: str,
    outcome: str = "ok",
    credential_id: str | None = None,
    tenant_id: str | None = None,
    fingerprint: str | None = None,
    reason: str | None = None,
    details: dict[str, Any] | None = None,
    at: datetime | None = None,
) -> AuditEntry:
    """Append an entry inside the caller's transaction (it commits with the change it records)."""
    head = session.execute(
        select(AuditHead).where(AuditHead.id == 1).with_for_update()
    ).scalar_one_or_none()
    if head is None:
        head = AuditHead(id=1, seq=0, hash=GENESIS)
        session.add(head)
        session.flush()
    entry = AuditEntry(
        seq=head.seq + 1,
        at=at or utcnow(),
        actor=actor,
        action=action,
        credential_id=credential_id,
        tenant_id=tenant_id,
        fingerprint=fingerprint,
        reason=reason,
        outcome=outcome,
        details=_no_secrets(dict(details or {})),
        prev_hash=head.hash,
        hash="",
    )
    entry.hash = entry_hash(entry)
    session.add(entry)
    head.seq, head.hash = entry.seq, entry.hash
    session.flush()
    return entry


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    count: int
    broken_seq: int | None = None
    problem: str | None = None

    def describe(self) -> str:
        if self.ok:
            return f"audit log intact: {self.count} entries, chain verified"
        return f"audit log broken at entry {self.broken_seq}: {self.problem}"


def verify(session: Session, batch: int = 5000) -> VerifyResult:
    """Walk the chain; name the first entry that was edited, removed, reordered or inserted."""
    expected_seq, prev, count = 1, GENESIS, 0
    for entry in iter_entries(session, batch=batch):
        if entry.seq != expected_seq:
            kind = "missing" if entry.seq > expected_seq else "duplicated"
            return VerifyResult(
                False, count, expected_seq, f"entry {expected_seq} is {kind} (found {entry.seq})"
            )
        if entry.prev_hash != prev:
            return VerifyResult(
                False,
                count,
                entry.seq,
                "its link to the previous entry does not match: an entry before it was "
                "removed, reordered or inserted",
            )
        if entry_hash(entry) != entry.hash:
            return VerifyResult(False, count, entry.seq, "its content was changed")
        prev, expected_seq, count = entry.hash, expected_seq + 1, count + 1
    head = session.get(AuditHead, 1)
    if head is not None and (head.seq, head.hash) != (count, prev):
        return VerifyResult(
            False,
            count,
            count + 1,
            f"the log ends at entry {count} but {head.seq} were written: entries were removed "
            "from its end",
        )
    return VerifyResult(True, count)


def iter_entries(
    session: Session, batch: int = 5000, credential_id: str | None = None
) -> Iterator[AuditEntry]:
    last = 0
    while True:
        query = select(AuditEntry).where(AuditEntry.seq > last)
        if credential_id is not None:
            query = query.where(AuditEntry.credential_id == credential_id)
        rows = session.execute(query.order_by(AuditEntry.seq).limit(batch)).scalars().all()
        if not rows:
            return
        yield from rows
        last = rows[-1].seq
        session.expunge_all()


def as_dict(entry: AuditEntry) -> dict[str, Any]:
    return {
        "seq": entry.seq,
        "at": entry.at.isoformat(),
        "actor": entry.actor,
        "action": entry.action,
        "credential": entry.credential_id,
        "tenant": entry.tenant_id,
        "fingerprint": entry.fingerprint,
        "reason": entry.reason,
        "outcome": entry.outcome,
        "details": entry.details,
        "prev_hash": entry.prev_hash,
        "hash": entry.hash,
    }


def export(session: Session, out: TextIO, credential_id: str | None = None) -> int:
    """Write entries as JSON lines; returns how many."""
    count = 0
    for entry in iter_entries(session, credential_id=credential_id):
        out.write(json.dumps(as_dict(entry), sort_keys=True) + "\n")
        count += 1
    return count
