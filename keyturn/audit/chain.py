"""How audit entries are linked: what each entry's `hash` covers, and under which key.

Entry n's hash is HMAC-SHA256, under the audit key, of a canonical encoding of its fields and
of the hash of entry n-1 (`prev_hash`; entry 1 links to GENESIS). The audit key is sealed with
the master key (keyturn.crypto.keyset), so whoever can write the database but lacks the master
key cannot compute the hash of an entry they edit, insert or append, nor recompute the chain
after it.

Entries written before the log was keyed (keyturn up to schema 0003) carry plain SHA-256 of
the same fields. They stay as they are, a legacy prefix: the key set records how many there
were (sealed, so that number cannot be moved), and the first keyed entry links to the last of
them, which pins the whole prefix from the upgrade on.

The key set reaches `append` through the session: `bind` puts it in the `info` of every
session the Database makes (the Vault does it when it opens the keys).
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from keyturn.crypto.keyset import KeySet
from keyturn.domain.errors import CryptoError

if TYPE_CHECKING:  # for annotations only: `keyturn get` chains its entry on Core alone
    from sqlalchemy.orm import Session

    from keyturn.db.engine import Database

GENESIS = "0" * 64
SESSION_KEY = "keyturn.keyset"
_KEYED = b"keyturn:audit:v2\n"


class Linked(Protocol):
    """What an entry's hash covers: an AuditEntry, or a row of its table (verify reads rows,
    three times faster than ORM objects)."""

    seq: int
    at: datetime
    actor: str
    action: str
    credential_id: str | None
    tenant_id: str | None
    fingerprint: str | None
    reason: str | None
    outcome: str
    details: dict[str, Any]
    prev_hash: str
    hash: str


def canonical(entry: Linked) -> bytes:
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


def legacy_hash(entry: Linked) -> str:
    """The hash of an entry of the legacy (unkeyed) prefix."""
    return hashlib.sha256(canonical(entry)).hexdigest()


def keyed_hash(keys: KeySet, entry: Linked) -> str:
    return keys.audit_mac(_KEYED + canonical(entry))


def expected_hash(keys: KeySet, entry: Linked) -> str:
    """What the entry's hash must be: legacy SHA-256 inside the prefix, the MAC after it."""
    if entry.seq <= keys.legacy_through:
        return legacy_hash(entry)
    return keyed_hash(keys, entry)


def bind(db: Database, keys: KeySet) -> None:
    """Make *keys* the audit keys of every session *db* makes from now on."""
    db.session_info[SESSION_KEY] = keys


def bind_session(session: Session, keys: KeySet) -> None:
    """Make *keys* the audit keys of this one session (the key set was made in it)."""
    session.info[SESSION_KEY] = keys


def keys_of(session: Session) -> KeySet:
    return _keys(session.info)


def bound_keys(db: Database) -> KeySet:
    """The audit keys `bind` gave *db*'s sessions, for a Core transaction on its engine."""
    return _keys(db.session_info)


def _keys(info: dict[str, Any]) -> KeySet:
    keys = info.get(SESSION_KEY)
    if not isinstance(keys, KeySet):
        raise CryptoError(
            "the audit key is not open in this session: open keyturn with its master key "
            "(Keyturn.open, or a Vault on this database)"
        )
    return keys
