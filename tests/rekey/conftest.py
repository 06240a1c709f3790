"""A keyturn holding many versions across tenants, and helpers to look at it after a rekey."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

import pytest
from sqlalchemy import select, text

from keyturn.app import Keyturn
from keyturn.crypto.keys import encode_key, generate_key
from keyturn.db.models import Credential, DataKey, Tenant, Version
from keyturn.domain.model import Secret
from keyturn.settings import Settings
from tests.support.keyturn import Harness


@dataclass
class Stored:
    """What was put in: (credential id, number) -> value, and the data keys used then."""

    kt: Harness
    values: dict[tuple[str, int], str] = field(default_factory=dict)
    data_keys: set[str] = field(default_factory=set)
    new_key: str = field(default_factory=lambda: encode_key(generate_key().material))

    @property
    def rekey_env(self) -> dict[str, str]:
        return {"KEYTURN_MASTER_KEY": self.new_key, "KEYTURN_OLD_MASTER_KEY": self.kt.master_key}

    def open(self, key: str, old: str | None = None) -> Keyturn:
        return Keyturn.open(Settings(db=self.kt.db_url, master_key=key, old_master_key=old))

    def check_all_under_new_key(self, fresh_data_keys: bool) -> None:
        """Every value decrypts with the new key alone; none lost, none changed."""
        app = self.open(self.new_key)
        try:
            with app.db.read() as session:
                versions = session.execute(select(Version)).scalars().all()
                got = {(v.credential_id, v.number): app.vault.reveal(v).reveal() for v in versions}
                masters = set(session.execute(select(DataKey.master_key_id)).scalars())
                used = {v.data_key_id for v in versions}
                active = set(session.execute(select(Tenant.data_key_id)).scalars())
        finally:
            app.close()
        assert got == self.values
        assert masters == {app.vault.master.id}
        if fresh_data_keys:
            assert not used & self.data_keys
            assert used <= active
        else:
            assert used <= self.data_keys


def populate(kt: Harness, count: int, tenants: int = 3) -> Stored:
    """*count* versions spread over *tenants* tenants, sealed the normal way."""
    stored = Stored(kt)
    app = kt.app
    per_credential = 4
    with app.db.write() as session:
        for i in range(count):
            tenant = f"t{i // per_credential % tenants}"
            cred_id = f"{tenant}/cred-{i // per_credential}"
            number = i % per_credential + 1
            if number == 1:
                app.vault.tenant_key(session, tenant)
                session.add(Credential(id=cred_id, tenant_id=tenant, kind="api-key"))
            value = f"value-{i}-{secrets.token_hex(8)}"
            ciphertext, key_id = app.vault.seal(session, tenant, cred_id, number, Secret(value))
            session.add(
                Version(
                    credential_id=cred_id,
                    number=number,
                    state="current" if number == per_credential else "retired",
                    ciphertext=ciphertext,
                    data_key_id=key_id,
                    fingerprint=app.vault.fingerprint(Secret(value)),
                )
            )
            stored.values[(cred_id, number)] = value
            stored.data_keys.add(key_id)
    return stored


def dump(kt: Harness) -> list[tuple[object, ...]]:
    """Every row of every keyturn table, for before/after comparisons."""
    app = kt.app
    rows: list[tuple[object, ...]] = []
    with app.db.read() as session:
        tables = ["meta", "tenants", "data_keys", "credentials", "versions", "audit_entries"]
        for table in tables:
            for row in session.execute(text(f"SELECT * FROM {table} ORDER BY 1")):
                rows.append((table, *row))
    return rows


@pytest.fixture
def stored(kt: Harness) -> Stored:
    return populate(kt, 60)
