"""A rotation's audit entries on SQLAlchemy Core: one statement per transaction on PostgreSQL
(issue 23).

Every writer of the audit log serialises on its head row, which stays locked until the
writer's commit. `keyturn.db.reads.append`, the reference, locks and reads the head, inserts
the chained entries, then moves the head: three round trips with the lock held. A rotation
appends at the end of each of its transactions, so on PostgreSQL `append` first tries one
statement instead: the entries chained after the head as this process last left it, inserted
only if the head is still exactly that (a data-modifying CTE moves it, compared on seq and
hash). The head moved meanwhile (another process, another thread) is the fallback: the
reference's locked path, chained after the head as it really is. Either way the entries are
chained to the head they follow, under the same lock, in the caller's transaction; only the
round trips differ. SQLite (one writer at a time, no round trips) takes the reference path.
"""

from __future__ import annotations

import threading
from typing import Any
from weakref import WeakKeyDictionary

from sqlalchemy import column, exists, insert, select, update, values
from sqlalchemy.engine import Connection, Engine

from keyturn.audit.chain import keyed_hash
from keyturn.crypto.keyset import KeySet
from keyturn.db import reads
from keyturn.db.reads import AUDIT_ENTRIES, AUDIT_HEAD, Entry

__all__ = ["append"]

# The head (seq, hash) as this process's last append left it, per engine. A stale guess
# costs one statement that inserts nothing; it never chains an entry wrongly.
_LAST: WeakKeyDictionary[Engine, tuple[int, str]] = WeakKeyDictionary()
_LOCK = threading.Lock()


def append(conn: Connection, keys: KeySet, entries: list[Entry]) -> None:
    """Chain *entries* after the head and insert them in the caller's write transaction,
    as `keyturn.db.reads.append` does (the head row locked until it commits)."""
    if not entries:
        return
    engine = conn.engine
    if engine.dialect.name == "postgresql":
        with _LOCK:
            guess = _LAST.get(engine)
        if guess is not None and _append_after(conn, keys, entries, guess):
            _remember(engine, entries[-1])
            return
    reads.append(conn, keys, entries)
    _remember(engine, entries[-1])


def _remember(engine: Engine, last: Entry) -> None:
    with _LOCK:
        _LAST[engine] = (last.seq, last.hash)


def _chain(keys: KeySet, entries: list[Entry], seq: int, prev: str) -> list[dict[str, Any]]:
    rows = []
    for entry in entries:
        seq += 1
        entry.seq, entry.prev_hash = seq, prev
        entry.hash = prev = keyed_hash(keys, entry)
        rows.append({c.name: getattr(entry, c.name) for c in AUDIT_ENTRIES.c})
    return rows


def _append_after(
    conn: Connection, keys: KeySet, entries: list[Entry], head: tuple[int, str]
) -> bool:
    """One statement: move the head from *head* to the last entry and insert the entries,
    or do nothing when the head is no longer *head*. True when the entries went in."""
    seq, prev = head
    rows = _chain(keys, entries, seq, prev)
    moved = (
        update(AUDIT_HEAD)
        .where(AUDIT_HEAD.c.id == 1, AUDIT_HEAD.c.seq == seq, AUDIT_HEAD.c.hash == prev)
        .values(seq=entries[-1].seq, hash=entries[-1].hash)
        .returning(AUDIT_HEAD.c.id)
        .cte("moved")
    )
    names = [c.name for c in AUDIT_ENTRIES.c]
    given = values(*(column(c.name, c.type) for c in AUDIT_ENTRIES.c), name="given").data(
        [tuple(row[name] for name in names) for row in rows]
    )
    statement = (
        insert(AUDIT_ENTRIES)
        .from_select(names, select(given).where(exists(select(moved.c.id))))
        .add_cte(moved)
    )
    # RETURNING, not rowcount: the driver reports none for a statement that opens on WITH.
    inserted = conn.execute(statement.returning(AUDIT_ENTRIES.c.seq)).all()
    return len(inserted) == len(entries)
