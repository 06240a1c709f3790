"""Secret values in and out of the database, sealed under per-tenant data keys."""

from __future__ import annotations

import secrets

from cryptography.exceptions import InvalidTag
from sqlalchemy import select
from sqlalchemy.orm import Session

from keyturn.crypto import envelope
from keyturn.crypto.keys import MasterKey
from keyturn.crypto.secrets import fingerprint
from keyturn.db.engine import Database
from keyturn.db.models import DataKey, Meta, Tenant, Version
from keyturn.domain.errors import UsageError, WrongMasterKey
from keyturn.domain.ids import validate_name
from keyturn.domain.model import Secret

FINGERPRINT_KEY = "fingerprint-key"
_FP_AAD = b"keyturn:fingerprint-key"
# Present in `meta` while a `keyturn rekey` is under way (JSON: which keys, what to retire).
REKEY_STATE = "rekey"


def create_fingerprint_key(session: Session, master: MasterKey) -> None:
    sealed = envelope.seal(master.material, secrets.token_bytes(32), _FP_AAD)
    session.add(Meta(key=FINGERPRINT_KEY, value=sealed, master_key_id=master.id))


def open_fingerprint_key(session: Session, masters: dict[str, MasterKey]) -> bytes:
    row = session.get(Meta, FINGERPRINT_KEY)
    if row is None:
        raise WrongMasterKey("this database has no fingerprint key; run `keyturn init`")
    master = masters.get(row.master_key_id or "")
    if master is None:
        raise WrongMasterKey()
    try:
        return envelope.open_sealed(master.material, row.value, _FP_AAD)
    except InvalidTag as exc:
        raise WrongMasterKey() from exc


def rewrap_fingerprint_key(session: Session, masters: dict[str, MasterKey], new: MasterKey) -> bool:
    """Re-seal the fingerprint key under *new* (same material: fingerprints stay stable).

    Verified under *new* before it is stored; False if it already was under *new*.
    """
    row = session.get(Meta, FINGERPRINT_KEY)
    if row is None or row.master_key_id == new.id:
        return False
    material = open_fingerprint_key(session, masters)
    sealed = envelope.seal(new.material, material, _FP_AAD)
    if envelope.open_sealed(new.material, sealed, _FP_AAD) != material:
        raise WrongMasterKey("the fingerprint key did not verify under the new master key")
    row.value, row.master_key_id = sealed, new.id
    return True


def master_key_ids_in_use(session: Session) -> set[str]:
    """Ids of every master key that still wraps something (data keys, fingerprint key)."""
    ids = set(session.execute(select(DataKey.master_key_id).distinct()).scalars())
    row = session.get(Meta, FINGERPRINT_KEY)
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
            self._fp_key = open_fingerprint_key(session, self.keyring.masters)
            check_not_stale(session, masters)

    def _fetch(self, key_id: str) -> envelope.WrappedKey:
        with self.db.read() as session:
            row = session.get(DataKey, key_id)
            if row is None:
                raise WrongMasterKey(f"data key {key_id} is missing from the database")
            return envelope.WrappedKey(row.id, row.master_key_id, row.wrapped)

    def fingerprint(self, value: Secret) -> str:
        return fingerprint(self._fp_key, value)

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
