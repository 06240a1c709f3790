"""The tamper-evident audit log: appending, reading, exporting.

Each entry is chained to the one before it by an HMAC under the audit key (keyturn.audit.chain),
a key the database holds only sealed by the master key. The head row (last seq and hash) is
locked while an entry is appended, which serialises appends across processes (FOR UPDATE on
PostgreSQL; SQLite write transactions are already exclusive) and lets `verify` notice a cut
tail; signed checkpoints of the head (keyturn.audit.checkpoint), kept outside the database,
catch a tail cut together with its head. Entries carry fingerprints of values, never values.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, TextIO

from sqlalchemy import select
from sqlalchemy.orm import Session

from keyturn.audit.chain import GENESIS, keyed_hash, keys_of
from keyturn.audit.query import Filters, iter_entries, select_entries
from keyturn.audit.verify import VerifyResult, verify
from keyturn.db.models import AuditEntry, AuditHead, utcnow
from keyturn.domain.errors import AuditHeadMissing
from keyturn.domain.inputs import clean
from keyturn.domain.model import Secret

__all__ = [
    "Filters",
    "VerifyResult",
    "append",
    "as_dict",
    "begin",
    "export",
    "fields",
    "forget_head",
    "iter_entries",
    "select_entries",
    "shown",
    "verify",
]


def begin(session: Session) -> None:
    """Start an empty chain: its head row, at entry 0 (`keyturn init`)."""
    session.add(AuditHead(id=1, seq=0, hash=GENESIS))
    session.flush()


def _checked(details: dict[str, Any]) -> dict[str, Any]:
    """A copy fit to record: no secret values (refused), text cleaned of what a text field
    refuses (a server's error message may hold control characters)."""
    out: dict[str, Any] = {}
    for key, value in details.items():
        if isinstance(value, Secret):
            raise TypeError(f"audit detail {key!r} is a secret value; record a fingerprint")
        out[clean(str(key))] = _value(value)
    return out


def _value(value: Any) -> Any:
    if isinstance(value, Secret):
        raise TypeError("an audit detail is a secret value; record a fingerprint")
    if isinstance(value, dict):
        return _checked(value)
    if isinstance(value, list | tuple):
        return [_value(v) for v in value]
    if isinstance(value, str):
        return clean(value)
    return value


def _text(value: str | None) -> str | None:
    return None if value is None else clean(value)


def fields(
    *,
    actor: str,
    action: str,
    outcome: str,
    credential_id: str | None,
    tenant_id: str | None,
    fingerprint: str | None,
    reason: str | None,
    details: dict[str, Any] | None,
) -> dict[str, Any]:
    """An entry's recorded columns, checked and cleaned (shared with keyturn.audit.group)."""
    return {
        "actor": clean(actor),
        "action": clean(action),
        "credential_id": _text(credential_id),
        "tenant_id": _text(tenant_id),
        "fingerprint": fingerprint,
        "reason": _text(reason),
        "outcome": clean(outcome),
        "details": _checked(dict(details or {})),
    }


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
    """Append one entry inside the caller's transaction; it commits with the change it records.

    The contract every audit write relies on (a group-committing appender must keep it):

    - *session* is a write session of a Database whose key set is open (the Vault binds it);
      without it this raises CryptoError and writes nothing;
    - the head row is locked for the rest of the transaction: entries are numbered 1, 2, ...
      without gaps, each chained to the one before; a missing head raises AuditHeadMissing;
    - nothing is written outside the caller's transaction, so the entry exists if and only
      if the change it records does;
    - a Secret anywhere in *details* raises TypeError; text is stored cleaned of control
      characters and lone surrogates, so every entry can be exported and shown.
    """
    keys = keys_of(session)
    head = _locked_head(session)
    entry = AuditEntry(
        seq=head.seq + 1,
        at=at or utcnow(),
        prev_hash=head.hash,
        hash="",
        **fields(
            actor=actor,
            action=action,
            outcome=outcome,
            credential_id=credential_id,
            tenant_id=tenant_id,
            fingerprint=fingerprint,
            reason=reason,
            details=details,
        ),
    )
    entry.hash = keyed_hash(keys, entry)
    session.add(entry)
    head.seq, head.hash = entry.seq, entry.hash
    return entry  # written with the transaction's next flush: entries of one go in one batch


_HEAD = "keyturn.audit.head"


def _locked_head(session: Session) -> AuditHead:
    """The head row, locked for the rest of the transaction; a transaction that appends
    several entries locks (and reads) it once."""
    transaction = session.get_transaction()
    held = session.info.get(_HEAD)
    if held is not None and held[0] is transaction and held[1] in session:
        return held[1]  # type: ignore[no-any-return]
    head = session.execute(
        select(AuditHead).where(AuditHead.id == 1).with_for_update()
    ).scalar_one_or_none()
    if head is None:
        raise AuditHeadMissing()
    session.info[_HEAD] = (transaction, head)
    return head


def forget_head(session: Session) -> None:
    """Before entries are appended on Core in this transaction (keyturn.db.rotation): the
    head this session may hold goes stale, so a later `append` locks and reads it again."""
    held = session.info.pop(_HEAD, None)
    if held is not None and held[1] in session:
        session.expire(held[1])


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


def shown(entry: AuditEntry) -> dict[str, Any]:
    """as_dict with text cleaned for display (an entry written before text was checked may
    hold a lone surrogate, which no JSON response can carry)."""
    shown_entry: dict[str, Any] = _value(as_dict(entry))
    return shown_entry


def export(
    session: Session,
    out: TextIO,
    credential_id: str | None = None,
    filters: Filters | None = None,
) -> int:
    """Write entries as JSON lines; returns how many."""
    count = 0
    for entry in iter_entries(session, credential_id=credential_id, filters=filters):
        out.write(json.dumps(as_dict(entry), sort_keys=True) + "\n")
        count += 1
    return count
