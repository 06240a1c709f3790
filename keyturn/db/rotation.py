"""A rotation's audit entries on SQLAlchemy Core: one statement per transaction on PostgreSQL
(issue 23).

Every writer of the audit log serialises on its head row, which stays locked until the
writer's commit. `keyturn.db.reads.append`, the reference, locks and reads the head, inserts
the chained entries, then moves the head: three round trips with the lock held. A rotation
appends at the end of each of its transactions, so on PostgreSQL `append` first tries one
statement instead: the entries chained after the head as this process last left it, inserted
only if the head is still exactly that (a data-modifying CTE moves it, compared on seq and
hash). The head moved meanwhile (another process) is the fallback: lock and read the head,
then the same statement after the head as it really is; after such a miss the next append
goes straight to the fallback (two statements, not three, while another process keeps
appending), until it finds the head as it left it. Threads of one process take turns
(`turn`) from their append to their commit, so their guesses hold. Either way the entries
are chained to the head they follow, under the same lock, in the caller's transaction; only
the round trips differ. SQLite (one writer at a time, no round trips) takes the reference
path.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC
from weakref import WeakKeyDictionary, WeakSet

from sqlalchemy import select, text
from sqlalchemy.engine import Connection, Engine

from keyturn.crypto.keyset import KeySet
from keyturn.db import direct, reads
from keyturn.db.reads import AUDIT_ENTRIES, AUDIT_HEAD, Entry

__all__ = ["append", "turn"]

# The head (seq, hash) as this process's last append left it, per engine. A stale guess
# costs one statement that inserts nothing; it never chains an entry wrongly.
_LAST: WeakKeyDictionary[Engine, tuple[int, str]] = WeakKeyDictionary()
# Engines whose last append found the head moved by another process (WeakSet-like).
_MISSED: WeakSet[Engine] = WeakSet()
_TURNS: WeakKeyDictionary[Engine, threading.RLock] = WeakKeyDictionary()
_LOCK = threading.Lock()


def append(conn: Connection, keys: KeySet, entries: list[Entry]) -> None:
    """Chain *entries* after the head and insert them in the caller's write transaction,
    as `keyturn.db.reads.append` does (the head row locked until it commits)."""
    if not entries:
        return
    engine = conn.engine
    if engine.dialect.name == "postgresql":
        with _LOCK:
            guess, missed = _LAST.get(engine), engine in _MISSED
        if guess is not None and not missed and _append_after(conn, keys, entries, guess):
            _remember(engine, entries[-1])
            return
        head = conn.execute(
            select(AUDIT_HEAD.c.seq, AUDIT_HEAD.c.hash)
            .where(AUDIT_HEAD.c.id == 1)
            .with_for_update()
        ).one_or_none()
        # Another process appended since our last append: it likely will again (workers
        # take turns), so the next append reads the head first instead of guessing (one
        # statement a miss fewer) until the head is found as we left it again.
        with _LOCK:
            if head is None or (head.seq, head.hash) != guess:
                _MISSED.add(engine)
            else:
                _MISSED.discard(engine)
        if head is not None and _append_after(conn, keys, entries, (head.seq, head.hash)):
            _remember(engine, entries[-1])
            return
    reads.append(conn, keys, entries)  # SQLite; and no head: the reference says so
    _remember(engine, entries[-1])


@contextmanager
def turn(engine: Engine) -> Iterator[None]:
    """Around a transaction's last statements and its commit: one appender of this process
    at a time, so that threads of one worker find the head as the last one left it. (The
    head row serialises them until each commit anyway; this only keeps the guess right.)

    Every append on PostgreSQL must happen inside a turn that lasts until its commit: one
    that appended outside it and then waited for a turn would hold the head row from the
    thread whose turn it is (re-entrant, so a turn may hold a commit that takes one)."""
    if engine.dialect.name != "postgresql":
        yield
        return
    with _LOCK:
        lock = _TURNS.setdefault(engine, threading.RLock())
    with lock:
        yield


def _remember(engine: Engine, last: Entry) -> None:
    with _LOCK:
        _LAST[engine] = (last.seq, last.hash)


def _append_after(
    conn: Connection, keys: KeySet, entries: list[Entry], head: tuple[int, str]
) -> bool:
    """One statement: move the head from *head* to the last entry and insert the entries,
    or do nothing when the head is no longer *head*. True when the entries went in."""
    seq, prev = head
    rows = reads.chain(keys, entries, seq, prev)
    for row in rows:  # stored naive UTC, as the column's type does
        row["at"] = row["at"].astimezone(UTC).replace(tzinfo=None).isoformat()
    params = {
        "old_seq": seq,
        "old_hash": prev,
        "new_seq": entries[-1].seq,
        "new_hash": entries[-1].hash,
        # Characters as they are, as the columns' own binds send text (no escapes to decode).
        "rows": json.dumps(rows, ensure_ascii=False),
    }
    # RETURNING, not rowcount: the driver reports none for a statement that opens on WITH.
    # Run straight on the transaction's connection (keyturn.db.direct.execute).
    done = direct.execute(conn, _STATEMENT, params)
    return len(done.rows) == len(entries)


_NAMES = ", ".join(c.name for c in AUDIT_ENTRIES.c)
# The entries as one JSON array, whatever their number: one statement text, which the driver
# parses once and the server prepares, and one parameter to send instead of twelve an entry.
_STATEMENT = text(
    "WITH moved AS (UPDATE audit_head SET seq = :new_seq, hash = :new_hash "
    "WHERE id = 1 AND seq = :old_seq AND hash = :old_hash RETURNING id) "
    f"INSERT INTO audit_entries ({_NAMES}) SELECT {_NAMES} "
    "FROM json_populate_recordset(NULL::audit_entries, CAST(:rows AS json)) "
    "WHERE EXISTS (SELECT 1 FROM moved) RETURNING seq"
)
