"""Group commit of audit entries: many concurrent readers, one writer, one transaction a batch.

Every secret read is an audit entry, and every entry locks the chain's head (a write
transaction: SQLite's one write lock, PostgreSQL's row lock). Appending in each reader's own
transaction makes concurrent reads queue on that lock one by one. Here each process has one
writer thread: a reader hands its entry over and waits; the writer takes every entry waiting,
chains them in the order they came under one head lock, inserts them in one statement and
commits, then releases their readers. A reader returns the value only after its entry is
committed, and if the commit fails every reader of the batch gets the error instead of the
value (fail closed, as Vault's audit devices are).

A reader on an event loop (the API's secret read) awaits `append_all_async` instead of
blocking a thread: the writer settles a batch's futures with one wake-up of each loop, so a
read costs no thread of the pool while its entry waits for the commit.

`log.append` stays the reference: the same fields, cleaned the same way, chained the same
way (tests/core/test_audit_group.py checks that `audit verify` accepts what both write).
Entries that record a change (a rotation step, an apply) still go through `log.append`,
inside the transaction of the change; both paths lock the same head, so the chain stays one
sequence across threads and processes.
"""

from __future__ import annotations

import asyncio
import threading
from collections import defaultdict
from contextlib import suppress
from dataclasses import dataclass
from dataclasses import fields as columns_of
from queue import Empty, SimpleQueue
from typing import Any

from keyturn.audit.chain import bound_keys
from keyturn.audit.log import fields
from keyturn.db import reads
from keyturn.db.engine import Database
from keyturn.db.models import utcnow
from keyturn.db.reads import Entry
from keyturn.domain.errors import KeyturnError, StoreUnavailable

__all__ = ["GroupWriter", "Record"]

# Entries a transaction takes at most: a bound on how long one commit holds the head.
MAX_BATCH = 500
PATIENCE_MARGIN = 5.0  # seconds beyond the database's busy timeout (GroupWriter._patience)


@dataclass(frozen=True)
class Record:
    """What one entry records (as `log.append`'s keyword arguments)."""

    actor: str
    action: str
    outcome: str = "ok"
    credential_id: str | None = None
    tenant_id: str | None = None
    fingerprint: str | None = None
    reason: str | None = None
    details: dict[str, Any] | None = None


class _Request:
    """The entries of one caller, chained one after the other, and its wake-up: an Event
    for a thread, a future for a coroutine."""

    def __init__(self, entries: list[Entry], future: asyncio.Future[None] | None = None) -> None:
        self.entries = entries
        self.done = threading.Event()
        self.future = future
        self.error: BaseException | None = None


_STOP = object()


class GroupWriter:
    """The audit writer of one process over *db* (whose key set the Vault bound)."""

    def __init__(self, db: Database, max_batch: int = MAX_BATCH) -> None:
        self._db = db
        self._max_batch = max_batch
        # How long a reader waits for its entry's commit before failing closed: a writer
        # stuck behind a lock that is never released (a stopped process holding SQLite's
        # writers' lock) must not hang every read. A SQLite writer's own wait, plus a margin.
        self._patience = db.busy_seconds + PATIENCE_MARGIN
        self._queue: SimpleQueue[Any] = SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False
        self.batches = 0  # transactions committed (for tests and the bench)

    def append(self, record: Record) -> int:
        """Record one entry and return its seq once it is committed (see `append_all`)."""
        return self.append_all([record])[0]

    def append_all(self, records: list[Record]) -> list[int]:
        """Record *records*, consecutive in the chain, and return their seqs once they are
        committed; raise if they were not (nothing they stand for may then be handed out).
        Checks and cleans the fields as `log.append` does: a Secret in `details` raises
        TypeError here, in the caller, before anything is queued."""
        if not records:
            return []
        request = _Request(_entries(records))
        self._put(request)
        if not request.done.wait(self._patience):
            raise _late()
        if request.error is not None:
            raise _failure(request.error) from request.error
        return [entry.seq for entry in request.entries]

    async def append_all_async(self, records: list[Record]) -> list[int]:
        """`append_all` for a coroutine: it awaits the commit instead of blocking a thread.
        A cancelled caller's entries are still committed (they record what was asked)."""
        if not records:
            return []
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        request = _Request(_entries(records), future)
        self._put(request)
        # One timer on the future itself, not wait_for(shield(...)): two futures, a task's
        # worth of callbacks less a read. A cancelled caller cancels only its own wake-up
        # (the writer settles futures not done yet); its entries stay queued.
        timer = loop.call_later(self._patience, _expire, future)
        try:
            await future
        finally:
            timer.cancel()
            if future.done() and not future.cancelled():
                # Cancelled in the turn the timer fired: the expiry is read here, so asyncio
                # does not log it as never retrieved.
                future.exception()
        if request.error is not None:
            raise _failure(request.error) from request.error
        return [entry.seq for entry in request.entries]

    def close(self) -> None:
        """Stop the writer after the entries already handed over; later appends raise."""
        with self._lock:
            self._closed = True
            thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(_STOP)
            thread.join(self._patience)  # a writer stuck behind a lock is a daemon thread

    def _put(self, request: _Request) -> None:
        with self._lock:
            if self._closed:
                raise StoreUnavailable("keyturn is shutting down: the audit log is closed")
            if self._thread is None:  # started on first use: after a fork, in the child
                self._thread = threading.Thread(
                    target=self._run, name="keyturn-audit-writer", daemon=True
                )
                self._thread.start()
            self._queue.put(request)

    def _run(self) -> None:
        stop = False
        while not stop:
            batch: list[_Request] = []
            item = self._queue.get()
            while item is not _STOP:
                batch.append(item)
                if len(batch) >= self._max_batch:
                    break
                try:
                    item = self._queue.get_nowait()
                except Empty:
                    break
            stop = item is _STOP
            if batch:
                self._commit(batch)

    def _commit(self, batch: list[_Request]) -> None:
        try:
            # Straight on the writer's own connection (keyturn.db.direct): this runs once a
            # batch, under load often.
            with self._db.queued(), self._db.guard():
                entries = [e for request in batch for e in request.entries]
                now = utcnow()  # the time they are chained at, in seq order
                for entry in entries:
                    entry.at = now
                reads.append_direct(self._db, bound_keys(self._db), entries)
        except BaseException as exc:  # every reader of the batch learns it: fail closed
            for request in batch:
                request.error = exc
            _release(batch)
            return
        self.batches += 1
        _release(batch)


def _release(batch: list[_Request]) -> None:
    """Wake the batch's readers: threads one by one, each event loop once for all its own."""
    waiting: defaultdict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = defaultdict(list)
    for request in batch:
        if request.future is None:
            request.done.set()
        else:
            waiting[request.future.get_loop()].append(request.future)
    for loop, futures in waiting.items():
        with suppress(RuntimeError):  # a closed loop: nobody waits on those futures any more
            loop.call_soon_threadsafe(_settle, futures)


def _settle(futures: list[asyncio.Future[None]]) -> None:
    for future in futures:
        if not future.done():
            future.set_result(None)


def _expire(future: asyncio.Future[None]) -> None:
    """The reader waited its patience out: it fails closed (see `_late`)."""
    if not future.done():
        future.set_exception(_late())


def _entries(records: list[Record]) -> list[Entry]:
    return [Entry(**fields(**_shallow(record))) for record in records]


def _shallow(value: Record) -> dict[str, Any]:
    """A dataclass's fields as a dict, values not copied (`asdict` would deep-copy them)."""
    return {f.name: getattr(value, f.name) for f in columns_of(value)}


def _late() -> StoreUnavailable:
    """What a reader raises when its entry was not committed in time: nothing is handed out
    (the entry may still be committed later, recording a read that returned no value)."""
    return StoreUnavailable(
        "the audit entry could not be committed in time (keyturn's database is locked), so "
        "the value is not handed out; check for a stopped or hung keyturn process and retry"
    )


def _failure(exc: BaseException) -> KeyturnError:
    """What a reader raises when its batch did not commit (one exception object each)."""
    if isinstance(exc, KeyturnError):
        try:
            return type(exc)(str(exc))
        except TypeError:  # a class whose constructor takes more than the message
            pass
    return StoreUnavailable(
        f"the audit entry could not be recorded ({exc.__class__.__name__}), so the value "
        "is not handed out; check keyturn's database and retry"
    )
