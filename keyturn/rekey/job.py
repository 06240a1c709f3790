"""The rekey batches: short transactions, each value verified under the new key first.

Phase `wrap`: every data key and the key set (fingerprint, audit and checkpoint keys) is
re-wrapped under the new master key (same material, so ciphertexts, fingerprints, the audit
chain and checkpoint signatures do not change). Phase `tenants` (with
`data_keys`): each tenant gets a fresh data key, wrapped under the new master key, and
becomes its active key in the same transaction. Phase `versions`: every version sealed
under a retired data key is re-sealed under its tenant's fresh key, with the same
associated data (credential id, version number).

Readers keep working throughout: the Keyring of every process holds both master keys, a
re-wrapped data key has the same material, and a version row switches ciphertext and data
key id together in one statement.
"""

from __future__ import annotations

import collections
import contextlib
import gc
import multiprocessing
import os
import sys
import time
import types
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

from sqlalchemy import Table, select, update
from sqlalchemy.exc import DBAPIError

from keyturn.audit import log as audit
from keyturn.crypto import envelope
from keyturn.db.engine import Database
from keyturn.db.models import DataKey, Meta, Tenant
from keyturn.db.vault import REKEY_STATE, rewrap_keys
from keyturn.domain.errors import CryptoError, StoreUnavailable, WrongMasterKey
from keyturn.engine.faults import checkpoint
from keyturn.rekey import reseal
from keyturn.rekey.preflight import Plan, State, read_state

Progress = Callable[[str, int, int], None]
Batches = Callable[[], Iterator[reseal.Batch]]
KeysUsed = Callable[[], set[str]]
T = TypeVar("T")
WAL_PAGES = 20_000
CACHE_KIB = 65_536
POOL_FROM = 20_000  # versions; below this, worker processes cost more than they save
MAX_WORKERS = 8
SWEEPS = 5
# Core tables for the per-key UPDATEs: the ORM's bulk-update path costs a millisecond each.
_DATA_KEYS = cast(Table, DataKey.__table__)
_TENANTS = cast(Table, Tenant.__table__)
AHEAD = 16  # batches in flight per worker: the writer pausing (a WAL checkpoint) stalls no one


@contextlib.contextmanager
def _driver_errors(db: Database) -> Iterator[None]:
    """Driver exceptions of the statements run below SQLAlchemy (and SQLAlchemy's wrapping of
    them around its own BEGIN and COMMIT), mapped like Database does."""
    try:
        yield
    except (db.engine.dialect.loaded_dbapi.Error, DBAPIError) as exc:
        cause = exc.orig if isinstance(exc, DBAPIError) else exc
        raise StoreUnavailable(
            f"keyturn's database {db.describe()} failed during the rekey "
            f"({cause.__class__.__name__}); run `keyturn rekey` again to carry on"
        ) from exc


@dataclass
class Summary:
    new_master_key: str
    old_master_key: str | None
    data_keys_rewrapped: int = 0
    keys_rewrapped: bool = False
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
        workers: int | None = None,
        progress: Progress = _quiet,
        actor: str = "cli",
    ) -> None:
        self.db = db
        self.plan = plan
        self.new = plan.new
        self.keyring = keyring
        self.batch_size = batch_size
        self.workers = workers
        self.progress = progress
        self.actor = actor
        self.summary = Summary(
            plan.new.id,
            plan.old.id if plan.old else None,
            resumed=plan.resumed is not None,
            versions_total=plan.versions,
        )

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
        self._rewrap_keys()
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
                        update(_DATA_KEYS)
                        .where(_DATA_KEYS.c.id == old.id)
                        .where(_DATA_KEYS.c.master_key_id == old.master_key_id)
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

    def _rewrap_keys(self) -> None:
        with self.db.write() as session:
            done = rewrap_keys(session, self.keyring.masters, self.new)
            checkpoint("rekey:keys:commit")
        self.summary.keys_rewrapped = done

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
        for batch_no, start in enumerate(range(0, len(stale), self.batch_size), 1):
            batch = stale[start : start + self.batch_size]
            fresh = [
                (tenant, old_key, *envelope.new_data_key(self.new)) for tenant, old_key in batch
            ]
            for *_, wrapped, material in fresh:
                if envelope.unwrap({self.new.id: self.new}, wrapped) != material:
                    raise CryptoError("a fresh data key did not verify under the new master key")
            with self.db.write() as session:
                for tenant_id, old_key, wrapped, material in fresh:
                    switched = session.execute(
                        update(_TENANTS)
                        .where(_TENANTS.c.id == tenant_id, _TENANTS.c.data_key_id == old_key)
                        .values(data_key_id=wrapped.id)
                    ).rowcount  # type: ignore[attr-defined]
                    if not switched:
                        continue  # another process switched it (a rekey run twice at once)
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
                checkpoint(f"rekey:tenants:{batch_no}:commit")
            self.progress("tenants", start + len(batch), len(stale))

    # -- phase 3: re-seal versions ---------------------------------------------------------

    def _keys(self, retire: list[str]) -> reseal.Keys:
        """Each retired data key with its material, and its tenant's fresh key. A fresh key
        must open, as stored, under the new master key alone to the material the values are
        sealed with: the values are verified under it before they are written."""
        with self.db.read() as session:
            active = dict(session.execute(select(Tenant.id, Tenant.data_key_id)).all())
            stored = {
                row.id: (row.tenant_id, envelope.WrappedKey(row.id, row.master_key_id, row.wrapped))
                for row in session.execute(
                    select(DataKey.id, DataKey.tenant_id, DataKey.master_key_id, DataKey.wrapped)
                )
            }
        retired = set(retire)
        keys: dict[str, tuple[bytes, str, bytes]] = {}
        checked: dict[str, bytes] = {}
        # A retired key the job cannot re-seal from (its row or its tenant gone) leaves any
        # version under it to the closing sweep, which then never passes: say so, loudly.
        complete = retired <= stored.keys()
        for key_id in retired & stored.keys():
            tenant_id = stored[key_id][0]
            fresh = active.get(tenant_id)
            if fresh is None:
                complete = False
                continue
            if fresh in retired:
                raise CryptoError(
                    f"tenant {tenant_id} has no fresh data key yet; run `keyturn rekey` again"
                )
            if fresh not in stored:
                raise CryptoError(
                    f"tenant {tenant_id}'s data key {fresh} is missing from the database; "
                    "restore the backup"
                )
            if fresh not in checked:
                checked[fresh] = self._fresh_as_stored(fresh, stored[fresh][1])
            keys[key_id] = (self.keyring.data_key(key_id), fresh, checked[fresh])
        return reseal.Keys(keys, complete)

    def _fresh_as_stored(self, key_id: str, wrapped: envelope.WrappedKey) -> bytes:
        material = self.keyring.data_key(key_id)
        try:
            ok = envelope.unwrap({self.new.id: self.new}, wrapped) == material
        except (WrongMasterKey, ValueError):  # ValueError: too short to hold a nonce
            ok = False
        if not ok:
            raise CryptoError(
                f"data key {key_id} as stored does not open under the new master key to the "
                "key in use; nothing was re-encrypted: restore the backup"
            )
        return material

    def _workers(self) -> int:
        if self.workers is not None:
            return self.workers
        if self.plan.versions < POOL_FROM:
            return 0
        return max(2, min(os.cpu_count() or 1, MAX_WORKERS))

    def _reseal(self, state: State) -> None:
        retire = sorted(state.retire)
        keys = self._keys(retire)
        sql = reseal.statements(self.db.is_sqlite, keys.padded)
        total, done, batch_no = self.plan.versions, 0, 0
        self.progress("versions", 0, total)
        with _driver_errors(self.db), Writer(self.db, sql, keys.key_width) as writer:
            for _sweep in range(SWEEPS):
                writer.watch()
                clean = True
                with _no_gc(), self._producer(keys, sql) as (batches, keys_used):
                    for batch in batches():
                        batch_no += 1
                        changed = writer.write(batch, batch_no)
                        clean &= changed == batch.count
                        self.summary.versions_resealed += changed
                        done += batch.count
                        self.progress("versions", done, max(total, done))
                    if clean and keys.complete and not writer.others_wrote():
                        # Every row under a retired key was read and re-sealed, and nothing
                        # else changed the database meanwhile: no sweep needed.
                        return
                    if keys_used().isdisjoint(retire):
                        return
                # Versions sealed under a retired key meanwhile (a rotation that began before
                # its tenant switched keys), or rows that changed under a batch: sweep again.
        raise StoreUnavailable(
            "versions under retired data keys kept appearing during the rekey; run "
            "`keyturn rekey` again when rotations are quieter"
        )

    @contextlib.contextmanager
    def _producer(
        self, keys: reseal.Keys, sql: reseal.Statements
    ) -> Iterator[tuple[Batches, KeysUsed]]:
        """(the batches of every id range, the data key ids in use now), made here or by a
        pool of worker processes."""
        workers = self._workers()
        where = reseal.source(self.db)
        resealer = reseal.Resealer(keys)
        with _driver_errors(self.db):
            connection = reseal.connect(where)
        pool = None if workers == 0 else _start_pool(workers, where, keys)

        def ranges() -> Iterator[tuple[int, int]]:
            with _driver_errors(self.db):
                yield from reseal.ranges(connection, sql, self.batch_size)

        def here(lo: int, hi: int) -> reseal.Batch:
            with _driver_errors(self.db):
                narrow, wide = reseal.read(connection, sql, lo, hi)
            return resealer.batch(lo, hi, narrow, wide)

        def batches() -> Iterator[reseal.Batch]:
            if pool is None:
                return (here(lo, hi) for lo, hi in ranges())
            return _in_order(pool, AHEAD * workers, ranges(), here)

        def keys_used() -> set[str]:
            """The sweep's scan, split among the workers if there are any."""
            with _driver_errors(self.db):
                bounds = reseal.id_bounds(connection, sql)
                if bounds is None:
                    return set()
                if pool is None:
                    return reseal.keys_used(connection, sql, *bounds)
            lo, hi = bounds
            step = (hi - lo) // workers + 1
            parts = [
                pool.submit(reseal.keys_in, a, min(a + step - 1, hi))
                for a in range(lo, hi + 1, step)
            ]
            return set().union(*map(_result, parts))

        try:
            yield batches, keys_used
        finally:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
            connection.close()


class Writer:
    """The versions phase's one write connection: each batch in a short transaction of its
    own, and whether any other connection changed the database since `watch()` (SQLite's
    data_version; on PostgreSQL there is no such counter, so the answer is always yes)."""

    def __init__(self, db: Database, sql: reseal.Statements, key_width: int) -> None:
        self.db, self.sql, self.key_width = db, sql, key_width
        self.connection = db.engine.connect()
        self.dbapi = self.connection.connection.dbapi_connection
        self.version: Any = None
        if db.is_sqlite:
            assert self.dbapi is not None
            try:
                # Fold the WAL back less often and keep more pages in memory; this
                # connection only.
                self.dbapi.execute(f"PRAGMA wal_autocheckpoint={WAL_PAGES}")
                self.dbapi.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
            except BaseException:
                self.connection.close()
                raise

    def __enter__(self) -> Writer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.connection.close()

    def watch(self) -> None:
        self.version = self._data_version()

    def others_wrote(self) -> bool:
        return self.version is None or self._data_version() != self.version

    def _data_version(self) -> Any:
        if not self.db.is_sqlite:
            return None
        return reseal.query(self.dbapi, "PRAGMA data_version")[0][0]

    def write(self, batch: reseal.Batch, batch_no: int) -> int:
        """Apply one batch in one short transaction; the number of rows changed."""
        if batch.empty:
            return 0
        changed = 0
        with self.connection.begin():
            cursor = self.dbapi.cursor()  # type: ignore[union-attr]
            try:
                if batch.slots:
                    params = {
                        "lo": batch.lo,
                        "hi": batch.hi,
                        "slots": batch.slots,
                        "stride": batch.stride,
                        "kw": self.key_width,
                    }
                    cursor.execute(self.sql.write, params)
                    changed += max(cursor.rowcount, 0)
                for wide in batch.wide:
                    cursor.execute(self.sql.write_one, wide)
                    changed += max(cursor.rowcount, 0)
            finally:
                cursor.close()
            checkpoint(f"rekey:versions:{batch_no}:commit")
        checkpoint(f"rekey:versions:{batch_no}:after")
        return changed


def _start_pool(workers: int, where: tuple[str, str], keys: reseal.Keys) -> ProcessPoolExecutor:
    pool = ProcessPoolExecutor(
        max_workers=workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=reseal.init_worker,
        initargs=(where, keys),
    )
    with _without_main():
        for _ in range(workers):  # every worker starts now, while __main__ is hidden
            pool.submit(int)
    return pool


@contextlib.contextmanager
def _no_gc() -> Iterator[None]:
    """The batches allocate millions of short-lived tuples and no reference cycles: the
    cycle collector would only walk them over and over (a quarter of this process's time)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


@contextlib.contextmanager
def _without_main() -> Iterator[None]:
    """Hide the program's main module from the worker processes being started.

    A spawned process first re-runs the main module of its parent (here the whole CLI, or a
    caller's script) and that costs each worker more than half a second of CPU; the workers
    need none of it, only `keyturn.rekey.reseal`, which they import by name. Workers are
    spawned (not forked) because a forked child must not inherit open SQLite connections.
    """
    main = sys.modules["__main__"]
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        sys.modules["__main__"] = main


def _result(future: Future[T]) -> T:
    try:
        return future.result()
    except BrokenProcessPool as exc:
        raise StoreUnavailable(
            "a rekey worker process stopped; run `keyturn rekey` again to carry on"
        ) from exc


def _in_order(
    pool: ProcessPoolExecutor,
    ahead_max: int,
    pending: Iterator[tuple[int, int]],
    here: Callable[[int, int], reseal.Batch],
) -> Iterator[reseal.Batch]:
    """The batches of *pending* ranges in id order, made by *pool* up to *ahead_max* ahead;
    when the oldest is not ready yet, this process makes the next one itself (*here*)
    instead of waiting."""
    ahead: collections.deque[Future[reseal.Batch]] = collections.deque()
    for lo, hi in pending:
        ahead.append(pool.submit(reseal.produce, lo, hi))
        if len(ahead) >= ahead_max:
            break
    while ahead:
        if ahead[0].done():
            yield _result(ahead.popleft())
            if (more := next(pending, None)) is not None:
                ahead.append(pool.submit(reseal.produce, *more))
        elif (more := next(pending, None)) is not None:
            yield here(*more)
        else:
            yield _result(ahead.popleft())
