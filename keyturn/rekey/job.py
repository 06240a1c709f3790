"""The rekey batches: short transactions, each value verified under the new key first.

Phase `wrap`: every data key and the fingerprint key is re-wrapped under the new master
key (same material, so ciphertexts and fingerprints do not change). Phase `tenants` (with
`data_keys`): each tenant gets a fresh data key, wrapped under the new master key, and
becomes its active key in the same transaction. Phase `versions`: every version sealed
under a retired data key is re-sealed under its tenant's fresh key, with the same
associated data (credential id, version number).

Readers keep working throughout: the Keyring of every process holds both master keys, a
re-wrapped data key has the same material, and a version row switches ciphertext and data
key id together in one statement.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import bindparam, select, text, update

from keyturn.audit import log as audit
from keyturn.crypto import envelope
from keyturn.db.engine import Database
from keyturn.db.models import Credential, DataKey, Meta, Tenant
from keyturn.db.vault import REKEY_STATE, rewrap_fingerprint_key
from keyturn.domain.errors import CryptoError, StoreUnavailable
from keyturn.engine.faults import checkpoint
from keyturn.rekey.preflight import Plan, State, read_state

Progress = Callable[[str, int, int], None]
WAL_PAGES = 20_000
CACHE_KIB = 65_536
NONCE = envelope.NONCE_BYTES

_SELECT_VERSIONS = (
    "SELECT id, credential_id, number, ciphertext, data_key_id FROM versions "
    "WHERE id > {p} ORDER BY id LIMIT {p}"
)
_ANY_LEFT = text("SELECT 1 FROM versions WHERE data_key_id IN :ids LIMIT 1")
_UPDATE_VERSION = (
    "UPDATE versions SET ciphertext = {p}, data_key_id = {p} WHERE id = {p} AND data_key_id = {p}"
)


@contextlib.contextmanager
def _driver_errors(db: Database) -> Iterator[None]:
    """Driver exceptions of the statements run below SQLAlchemy, mapped like Database does."""
    try:
        yield
    except db.engine.dialect.loaded_dbapi.Error as exc:
        raise StoreUnavailable(
            f"keyturn's database {db.describe()} failed during the rekey "
            f"({exc.__class__.__name__}); run `keyturn rekey` again to carry on"
        ) from exc


def _driver_sql(db: Database) -> tuple[str, str]:
    """The two statements in the driver's own placeholder style (sqlite3: ?, psycopg: %s)."""
    mark = "?" if db.is_sqlite else "%s"
    return _SELECT_VERSIONS.format(p=mark), _UPDATE_VERSION.format(p=mark)


@dataclass
class Summary:
    new_master_key: str
    old_master_key: str | None
    data_keys_rewrapped: int = 0
    fingerprint_key_rewrapped: bool = False
    fresh_data_keys: int = 0
    versions_resealed: int = 0
    versions_total: int = 0
    resumed: bool = False
    backup: str | None = None
    seconds: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _quiet(phase: str, done: int, total: int) -> None:
    pass


class Rekey:
    """One run of the rekey; running it again after a crash carries on where it stopped."""

    def __init__(
        self,
        db: Database,
        plan: Plan,
        keyring: envelope.Keyring,
        *,
        batch_size: int = 500,
        progress: Progress = _quiet,
        actor: str = "cli",
    ) -> None:
        self.db = db
        self.plan = plan
        self.new = plan.new
        self.keyring = keyring
        self.batch_size = batch_size
        self.progress = progress
        self.actor = actor
        self.summary = Summary(
            plan.new.id,
            plan.old.id if plan.old else None,
            resumed=plan.resumed is not None,
            versions_total=plan.versions,
        )
        self._ciphers: dict[str, AESGCM] = {}

    def run(self) -> Summary:
        state = self._begin()
        for phase, work in (
            ("wrap", self._rewrap),
            ("tenants", lambda: self._fresh_keys(state)),
            ("versions", lambda: self._reseal(state)),
        ):
            if phase != "wrap" and not state.data_keys:
                continue
            started = time.perf_counter()
            work()
            self.summary.seconds[phase] = round(time.perf_counter() - started, 3)
        self._finish()
        return self.summary

    # -- state -----------------------------------------------------------------------------

    def _begin(self) -> State:
        with self.db.write() as session:
            state = read_state(session)
            if state is None:
                retire: list[str] = []
                if self.plan.data_keys:
                    retire = list(session.execute(select(DataKey.id)).scalars())
                state = State(
                    self.new.id,
                    self.plan.old.id if self.plan.old else None,
                    self.plan.data_keys,
                    retire,
                )
                session.add(Meta(key=REKEY_STATE, value=state.dump(), master_key_id=None))
                audit.append(
                    session,
                    actor=self.actor,
                    action="keyturn.rekey.start",
                    details={
                        "new": state.new,
                        "old": state.old,
                        "data_keys": state.data_keys,
                        "backup": self.summary.backup,
                    },
                )
            elif self.plan.data_keys and not state.data_keys:
                # Resumed with --data-keys after a plain rekey was interrupted: add the
                # re-encryption, retiring every data key that exists now.
                state.data_keys = True
                state.retire = list(session.execute(select(DataKey.id)).scalars())
                row = session.get(Meta, REKEY_STATE)
                assert row is not None
                row.value = state.dump()
        checkpoint("rekey:begun")
        return state

    def _finish(self) -> None:
        with self.db.write() as session:
            row = session.get(Meta, REKEY_STATE)
            if row is not None:
                session.delete(row)
            details = {k: v for k, v in self.summary.as_dict().items() if k != "seconds"}
            audit.append(session, actor=self.actor, action="keyturn.rekey.done", details=details)

    # -- phase 1: re-wrap ------------------------------------------------------------------

    def _rewrap(self) -> None:
        self._rewrap_fingerprint_key()
        total, done, batch_no = self.plan.to_rewrap, 0, 0
        self.progress("wrap", 0, total)
        while True:
            with self.db.read() as session:
                rows = session.execute(
                    select(DataKey.id, DataKey.master_key_id, DataKey.wrapped)
                    .where(DataKey.master_key_id != self.new.id)
                    .order_by(DataKey.id)
                    .limit(self.batch_size)
                ).all()
            if not rows:
                break
            batch_no += 1
            rewrapped = [self._rewrap_one(envelope.WrappedKey(*row)) for row in rows]
            with self.db.write() as session:
                for old, new in rewrapped:
                    session.execute(
                        update(DataKey)
                        .where(DataKey.id == old.id, DataKey.master_key_id == old.master_key_id)
                        .values(master_key_id=new.master_key_id, wrapped=new.wrapped)
                    )
                checkpoint(f"rekey:wrap:{batch_no}:commit")
            checkpoint(f"rekey:wrap:{batch_no}:after")
            done += len(rows)
            self.summary.data_keys_rewrapped += len(rows)
            self.progress("wrap", done, max(total, done))

    def _rewrap_one(
        self, old: envelope.WrappedKey
    ) -> tuple[envelope.WrappedKey, envelope.WrappedKey]:
        material = envelope.unwrap(self.keyring.masters, old)
        new = envelope.wrap(self.new, old.id, material)
        if envelope.unwrap({self.new.id: self.new}, new) != material:
            raise CryptoError(f"data key {old.id} did not verify under the new master key")
        return old, new

    def _rewrap_fingerprint_key(self) -> None:
        with self.db.write() as session:
            done = rewrap_fingerprint_key(session, self.keyring.masters, self.new)
            checkpoint("rekey:fingerprint:commit")
        self.summary.fingerprint_key_rewrapped = done

    # -- phase 2: fresh data keys ----------------------------------------------------------

    def _fresh_keys(self, state: State) -> None:
        retire = set(state.retire)
        with self.db.read() as session:
            stale = [
                (t.id, t.data_key_id)
                for t in session.execute(select(Tenant)).scalars()
                if t.data_key_id in retire
            ]
        self.progress("tenants", 0, len(stale))
        for done, (tenant_id, old_key) in enumerate(stale, 1):
            wrapped, material = envelope.new_data_key(self.new)
            if envelope.unwrap({self.new.id: self.new}, wrapped) != material:
                raise CryptoError("a fresh data key did not verify under the new master key")
            with self.db.write() as session:
                switched = session.execute(
                    update(Tenant)
                    .where(Tenant.id == tenant_id, Tenant.data_key_id == old_key)
                    .values(data_key_id=wrapped.id)
                ).rowcount  # type: ignore[attr-defined]
                if switched:
                    session.add(
                        DataKey(
                            id=wrapped.id,
                            tenant_id=tenant_id,
                            master_key_id=self.new.id,
                            wrapped=wrapped.wrapped,
                        )
                    )
                    self.keyring.remember(wrapped.id, material)
                    self.summary.fresh_data_keys += 1
                checkpoint(f"rekey:tenants:{done}:commit")
            self.progress("tenants", done, len(stale))

    # -- phase 3: re-seal versions ---------------------------------------------------------

    def _cipher(self, key_id: str) -> AESGCM:
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            cipher = self._ciphers[key_id] = AESGCM(self.keyring.data_key(key_id))
        return cipher

    def _tenant_keys(self) -> dict[str, str]:
        """Credential id -> its tenant's active data key (saves a join per version)."""
        with self.db.read() as session:
            keys = {t.id: t.data_key_id for t in session.execute(select(Tenant)).scalars()}
            owners = session.execute(select(Credential.id, Credential.tenant_id)).all()
        return {cred_id: keys[tenant] for cred_id, tenant in owners}

    def _reseal(self, state: State) -> None:
        retire = set(state.retire)
        tenant_keys = self._tenant_keys()
        total, done, after, batch_no = self.plan.versions, 0, 0, 0
        select_sql, update_sql = _driver_sql(self.db)
        self.progress("versions", 0, total)
        # Batch n is written by a second thread while batch n+1 is decrypted here: the
        # database driver releases the GIL while it works.
        writer = _Writer(self.db, update_sql)
        try:
            while True:
                rows = self._read(select_sql, after)
                if not rows:
                    writer.drain()
                    if after and self._left(retire):
                        after = 0  # a version sealed under a retired key meanwhile: sweep again
                        tenant_keys = self._tenant_keys()
                        continue
                    break
                after = rows[-1][0]
                batch_no += 1
                params = self._reseal_batch(rows, retire, tenant_keys)
                if params:
                    writer.put(batch_no, params)
                self.summary.versions_resealed += len(params)
                done += len(rows)
                self.progress("versions", done, max(total, done))
        finally:
            writer.close()

    def _read(self, select_sql: str, after: int) -> list[Any]:
        # Driver-level statements: at a million rows SQLAlchemy's per-row handling of
        # parameters and results would cost more than the cryptography.
        with self.db.read() as session, _driver_errors(self.db):
            cursor = session.connection().connection.dbapi_connection.cursor()  # type: ignore[union-attr]
            try:
                cursor.execute(select_sql, (after, self.batch_size))
                return list(cursor.fetchall())
            finally:
                cursor.close()

    def _reseal_batch(
        self, rows: Any, retire: set[str], tenant_keys: dict[str, str]
    ) -> list[tuple[bytes, str, int, str]]:
        """Decrypt, re-encrypt under the tenant's fresh key, verify; the UPDATE parameters."""
        params = []
        nonces = os.urandom(NONCE * len(rows))
        ciphers = self._ciphers
        aad_of = envelope.value_aad
        for i, (vid, cred_id, number, sealed, key_id) in enumerate(rows):
            if key_id not in retire:
                continue
            fresh = tenant_keys.get(cred_id)
            if fresh is None or fresh in retire:
                fresh = self._refresh(tenant_keys, cred_id, retire)
            aad = aad_of(cred_id, number)
            try:
                old = ciphers.get(key_id) or self._cipher(key_id)
                plain = old.decrypt(sealed[:NONCE], sealed[NONCE:], aad)
            except InvalidTag as exc:
                raise CryptoError(
                    f"version {number} of {cred_id} does not decrypt: the stored row was "
                    "altered or moved; restore it from the backup"
                ) from exc
            nonce = nonces[i * NONCE : (i + 1) * NONCE]
            new = ciphers.get(fresh) or self._cipher(fresh)
            body = new.encrypt(nonce, plain, aad)
            if new.decrypt(nonce, body, aad) != plain:
                raise CryptoError(f"version {number} of {cred_id} did not verify; nothing kept")
            params.append((nonce + body, fresh, vid, key_id))
        return params

    def _refresh(self, tenant_keys: dict[str, str], cred_id: str, retire: set[str]) -> str:
        """A credential created since the map was read, or a tenant switched since."""
        tenant_keys.update(self._tenant_keys())
        fresh = tenant_keys.get(cred_id)
        if fresh is None or fresh in retire:
            raise CryptoError(
                f"the tenant of {cred_id} has no fresh data key; run `keyturn rekey` again"
            )
        return fresh

    def _left(self, retire: set[str]) -> bool:
        if not retire:
            return False
        with self.db.read() as session:
            query = _ANY_LEFT.bindparams(bindparam("ids", expanding=True))
            return session.execute(query, {"ids": sorted(retire)}).first() is not None


class _Writer:
    """Applies batches of version updates in a thread, one short transaction each."""

    def __init__(self, db: Database, update_sql: str) -> None:
        self.db, self.sql = db, update_sql
        self.queue: queue.Queue[tuple[int, list[Any]] | None] = queue.Queue(maxsize=2)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="rekey-writer", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            item = self.queue.get()
            try:
                if item is None:
                    return
                if self.error is None:
                    self._write(*item)
            except BaseException as exc:  # handed to the main thread
                self.error = exc
            finally:
                self.queue.task_done()

    def _write(self, batch_no: int, params: list[Any]) -> None:
        with self.db.write() as session, _driver_errors(self.db):
            cursor = session.connection().connection.dbapi_connection.cursor()  # type: ignore[union-attr]
            try:
                if self.db.is_sqlite:
                    # Fold the WAL back less often (a third faster at a million rows) and keep
                    # more index pages in memory; this connection only.
                    cursor.execute(f"PRAGMA wal_autocheckpoint={WAL_PAGES}")
                    cursor.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
                cursor.executemany(self.sql, params)
            finally:
                cursor.close()
            checkpoint(f"rekey:versions:{batch_no}:commit")
        checkpoint(f"rekey:versions:{batch_no}:after")

    def _raise(self) -> None:
        if self.error is not None:
            raise self.error

    def put(self, batch_no: int, params: list[Any]) -> None:
        self._raise()
        self.queue.put((batch_no, params))

    def drain(self) -> None:
        self.queue.join()
        self._raise()

    def close(self) -> None:
        self.queue.put(None)
        self.thread.join()
        self._raise()
