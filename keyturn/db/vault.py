"""Secret values in and out of the database, sealed under per-tenant data keys; the key set
(fingerprint, audit and checkpoint keys) opened, upgraded and re-sealed."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from cryptography.exceptions import InvalidTag
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from keyturn.audit import chain as audit_chain
from keyturn.audit import log as audit
from keyturn.crypto import envelope
from keyturn.crypto.keys import MasterKey
from keyturn.crypto.keyset import KeySet, open_keyset
from keyturn.crypto.secrets import fingerprint
from keyturn.db import direct, repo
from keyturn.db.engine import Database
from keyturn.db.models import (
    AuditEntry,
    AuditHead,
    Credential,
    DataKey,
    Meta,
    Tenant,
    Version,
    utcnow,
)
from keyturn.domain.errors import UsageError, WrongMasterKey
from keyturn.domain.ids import validate_name
from keyturn.domain.model import Secret, VersionState

# The key set (fingerprint, audit and checkpoint keys, sealed as one: keyturn.crypto.keyset).
KEYSET = "keyset"
# Where databases before schema 0005 kept the fingerprint key alone; replaced by the key set
# the first time keyturn opens them with the master key.
LEGACY_FINGERPRINT_KEY = "fingerprint-key"
_FP_AAD = b"keyturn:fingerprint-key"
# Present in `meta` while a `keyturn rekey` is under way (JSON: which keys, what to retire).
REKEY_STATE = "rekey"


def create_keys(session: Session, master: MasterKey) -> KeySet:
    """A new database's key set, and the empty audit chain it keys (`keyturn init`)."""
    keys = KeySet.generate()
    session.add(Meta(key=KEYSET, value=keys.seal(master), master_key_id=master.id))
    audit_chain.bind_session(session, keys)
    audit.begin(session)
    return keys


def _master_for(row: Meta, masters: dict[str, MasterKey]) -> MasterKey:
    master = masters.get(row.master_key_id or "")
    if master is None:
        raise WrongMasterKey()
    return master


def open_keys(session: Session, masters: dict[str, MasterKey]) -> KeySet | None:
    """The database's key set, or None if it has none yet (a database before 0005)."""
    row = session.get(Meta, KEYSET)
    if row is None:
        return None
    return open_keyset(_master_for(row, masters), row.value)


def _open_legacy_fingerprint(row: Meta, masters: dict[str, MasterKey]) -> bytes:
    try:
        return envelope.open_sealed(_master_for(row, masters).material, row.value, _FP_AAD)
    except InvalidTag as exc:
        raise WrongMasterKey() from exc


def upgrade_keys(session: Session, masters: dict[str, MasterKey], master: MasterKey) -> KeySet:
    """Replace a legacy fingerprint key by a key set that keeps it (fingerprints do not
    change) and keys the audit log from the next entry on; the entries written so far stay
    a legacy SHA-256 prefix, whose length the key set records. Idempotent across processes:
    the legacy row is locked, and whoever comes second finds the key set."""
    legacy = session.get(Meta, LEGACY_FINGERPRINT_KEY, with_for_update=True)
    found = open_keys(session, masters)
    if found is not None:
        return found
    if legacy is None:
        raise WrongMasterKey(
            "this database has no key set (the `keyset` row of `meta` is missing): it was not "
            "made by `keyturn init`, or the row was deleted; restore it from a backup"
        )
    head = session.get(AuditHead, 1)
    last = session.scalar(select(func.max(AuditEntry.seq))) or 0
    if head is None and last:  # pin what there is: the legacy verifier never required a head
        row = session.get(AuditEntry, last)
        assert row is not None
        head = AuditHead(id=1, seq=last, hash=row.hash)
        session.add(head)
    elif head is None:
        head = AuditHead(id=1, seq=0, hash=audit_chain.GENESIS)
        session.add(head)
    keys = KeySet.generate(_open_legacy_fingerprint(legacy, masters), max(head.seq, last))
    session.add(Meta(key=KEYSET, value=keys.seal(master), master_key_id=master.id))
    session.delete(legacy)
    session.flush()
    audit_chain.bind_session(session, keys)
    audit.append(
        session,
        actor="keyturn",
        action="audit.keyed",
        details={"legacy_entries": keys.legacy_through, "legacy_head": head.hash},
    )
    return keys


def rewrap_keys(session: Session, masters: dict[str, MasterKey], new: MasterKey) -> bool:
    """Re-seal the key set under *new* (the same keys: fingerprints, the audit chain and
    checkpoint signatures stay valid). Verified under *new* before it is stored; False if it
    already was under *new*."""
    row = session.get(Meta, KEYSET)
    if row is None or row.master_key_id == new.id:
        return False
    keys = open_keyset(_master_for(row, masters), row.value)
    row.value, row.master_key_id = keys.seal(new), new.id
    return True


def master_key_ids_in_use(session: Session) -> set[str]:
    """Ids of every master key that still wraps something (data keys, the key set)."""
    ids = set(session.execute(select(DataKey.master_key_id).distinct()).scalars())
    for name in (KEYSET, LEGACY_FINGERPRINT_KEY):
        row = session.get(Meta, name)
        if row is not None and row.master_key_id:
            ids.add(row.master_key_id)
    return ids


def check_not_stale(session: Session, masters: list[MasterKey]) -> None:
    """Refuse an old master key that wraps nothing any more (a finished rekey)."""
    if len(masters) < 2 or session.get(Meta, REKEY_STATE) is not None:
        return
    in_use = master_key_ids_in_use(session)
    if in_use and not any(m.id in in_use for m in masters[1:]):
        raise UsageError(
            "KEYTURN_OLD_MASTER_KEY is set but nothing is encrypted under it any more (the "
            "rekey is complete): remove KEYTURN_OLD_MASTER_KEY (or KEYTURN_OLD_MASTER_KEY_FILE)"
        )


class Vault:
    """Seals and opens version values; creates a tenant's data key on first use."""

    def __init__(self, db: Database, masters: list[MasterKey]) -> None:
        if not masters:
            raise WrongMasterKey(
                "no master key: set KEYTURN_MASTER_KEY or KEYTURN_MASTER_KEY_FILE "
                "(or run `keyturn init` to create one)"
            )
        self.db = db
        self.master = masters[0]
        self.keyring = envelope.Keyring(masters, self._fetch)
        with db.read() as session:
            keys = open_keys(session, self.keyring.masters)
            check_not_stale(session, masters)
        if keys is None:
            with db.write() as session:
                keys = upgrade_keys(session, self.keyring.masters, self.master)
        self.keys = keys
        audit_chain.bind(db, keys)

    def _fetch(self, key_id: str) -> envelope.WrappedKey:
        with self.db.read() as session:
            row = session.get(DataKey, key_id)
            if row is None:
                raise WrongMasterKey(f"data key {key_id} is missing from the database")
            return envelope.WrappedKey(row.id, row.master_key_id, row.wrapped)

    def fingerprint(self, value: Secret) -> str:
        return fingerprint(self.keys.fingerprint, value)

    def tenant_key(self, session: Session, tenant_id: str) -> str:
        """The id of the tenant's data key, creating the tenant and its key if needed."""
        tenant = session.get(Tenant, tenant_id)
        if tenant is not None:
            return tenant.data_key_id
        validate_name(tenant_id, "tenant")
        wrapped, material = envelope.new_data_key(self.master)
        self.keyring.remember(wrapped.id, material)
        session.add(
            DataKey(
                id=wrapped.id,
                tenant_id=tenant_id,
                master_key_id=wrapped.master_key_id,
                wrapped=wrapped.wrapped,
            )
        )
        session.add(Tenant(id=tenant_id, data_key_id=wrapped.id))
        session.flush()
        return wrapped.id

    def seal(
        self, session: Session, tenant_id: str, credential_id: str, number: int, value: Secret
    ) -> tuple[bytes, str]:
        key_id = self.tenant_key(session, tenant_id)
        return self.keyring.encrypt(key_id, credential_id, number, value), key_id

    def new_version(
        self,
        session: Session,
        cred: Credential,
        value: Secret,
        *,
        state: VersionState,
        username: str | None,
        key_id: str | None = None,
        validity: tuple[datetime, datetime] | None = None,
        last: int | None = None,
    ) -> Version:
        """The one way a version is made: numbered after the last, sealed, fingerprinted.

        *last*: the credential's last version number, when the caller read it already under
        a guard that no version was made since (a rotation's lease; the unique number is the
        database's own guard)."""
        number = (repo.last_version_number(session, cred.id) if last is None else last) + 1
        ciphertext, data_key = self.seal(session, cred.tenant_id, cred.id, number, value)
        valid_from, expires_at = validity or (None, None)
        now = utcnow()
        values: dict[str, Any] = {
            "credential_id": cred.id,
            "number": number,
            "state": state,
            "username": username,
            "key_id": key_id,
            "ciphertext": ciphertext,
            "data_key_id": data_key,
            "fingerprint": self.fingerprint(value),
            "created_at": now,
            "activated_at": now if state == VersionState.CURRENT else None,
            "retired_at": None,
            "valid_from": valid_from,
            "expires_at": expires_at,
        }
        return direct.add(session, Version, values)

    def reveal(self, version: Version) -> Secret:
        return self.keyring.decrypt(
            version.data_key_id, version.credential_id, version.number, version.ciphertext
        )

    def check(self, session: Session) -> None:
        """Fail early with WrongMasterKey if any data key was wrapped by an unknown key."""
        ids = session.execute(select(DataKey.master_key_id).distinct()).scalars().all()
        unknown = [i for i in ids if i not in self.keyring.masters]
        if unknown:
            raise WrongMasterKey()
