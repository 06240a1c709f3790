"""The index of managed values, built from keyturn's database once per scan.

Each version is decrypted here, once, its forms fingerprinted, and its value dropped; the
files are then matched against the index alone (``index.ManagedIndex``), in this process or
in worker processes that never see a value.
"""

from __future__ import annotations

from collections import defaultdict

from sqlalchemy import select

from keyturn.app import Keyturn
from keyturn.db.models import Consumer, Credential, Version
from keyturn.scan.index import ManagedIndex
from keyturn.scan.keys import ScanKeys
from keyturn.scan.model import ManagedEntry


def scan_keys(app: Keyturn) -> ScanKeys:
    return ScanKeys.from_fingerprint_key(app.vault.keys.fingerprint)


def build_index(app: Keyturn, keys: ScanKeys | None = None) -> ManagedIndex:
    """Every version of every credential (pending, current, previous, retired, failed)."""
    index = ManagedIndex(keys or scan_keys(app))
    with app.db.read() as session:
        credentials = {c.id: c for c in session.execute(select(Credential)).scalars()}
        consumers: dict[str, list[str]] = defaultdict(list)
        for credential_id, name in session.execute(
            select(Consumer.credential_id, Consumer.name).order_by(Consumer.name)
        ):
            consumers[credential_id].append(name)
        rows = session.execute(
            select(Version).order_by(Version.credential_id, Version.number)
        ).scalars()
        for version in rows:
            cred = credentials[version.credential_id]
            entry = ManagedEntry(
                credential_id=cred.id,
                tenant=cred.tenant_id,
                kind=cred.kind,
                version=version.number,
                state=version.state,
                owner=cred.owner,
                consumers=tuple(consumers[cred.id]),
            )
            index.add(entry, app.vault.reveal(version).reveal())
    return index.seal()
