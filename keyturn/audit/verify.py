"""Verifying the audit log: walk the chain, check the head, hold it against checkpoints.

Each finding is named for what was done to the log (`kind`):

    removed      entries are missing from the middle (a gap in the numbering)
    relinked     an entry does not link to the one before it (entries reordered or moved)
    altered      an entry's MAC does not verify: it was edited (whether or not the chain was
                 recomputed after it: without the audit key nobody can recompute it)
    inserted     an entry that does not verify sits between two that link past it
    appended     an entry after the head that does not verify: added without keyturn
    truncated    the head records more entries than the log holds: its end was cut
    head-moved   the head points before the last valid entry: it was moved back
    head-altered the head's hash is not the hash of the entry it names
    head-missing the head row was deleted
    emptied      every entry and the head were deleted
    cut          a checkpoint covers more entries than the log holds: the end was cut and
                 the head moved back to match (only a checkpoint can show this)
    rewritten    an entry differs from what a checkpoint recorded (only someone holding the
                 master key can do this, or the keys were replaced)
    checkpoint   a checkpoint is not this database's, or not validly signed
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import InvalidRequestError
from sqlalchemy.orm import Session

from keyturn.audit.chain import GENESIS, Linked, expected_hash, keys_of
from keyturn.audit.checkpoint import Checkpoint
from keyturn.audit.query import iter_rows
from keyturn.crypto.keyset import KeySet
from keyturn.db.models import AuditHead


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    count: int
    broken_seq: int | None = None
    problem: str | None = None
    kind: str | None = None
    legacy: int = 0  # entries of the legacy (unkeyed SHA-256) prefix
    checkpoints: int = 0  # checkpoints the log was held against
    newest_checkpoint: Checkpoint | None = None

    def describe(self) -> str:
        if not self.ok:
            where = f" at entry {self.broken_seq}" if self.broken_seq is not None else ""
            return f"audit log broken{where}: {self.problem}"
        text = f"audit log intact: {self.count} entries, chain verified"
        if self.legacy:
            text += f" ({self.legacy} legacy entries from before the log was keyed)"
        if self.newest_checkpoint is not None:
            cp = self.newest_checkpoint
            text += (
                f"; {self.checkpoints} checkpoint(s) confirmed, the newest of entry {cp.seq} "
                f"at {cp.at:%Y-%m-%d %H:%M:%S}Z"
            )
        return text

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "entries": self.count,
            "broken_entry": self.broken_seq,
            "kind": self.kind,
            "problem": self.problem,
            "legacy_entries": self.legacy,
            "checkpoints": self.checkpoints,
        }


def _broken(count: int, seq: int | None, kind: str, problem: str) -> VerifyResult:
    return VerifyResult(False, count, seq, problem, kind)


def _pairs(entries: Iterator[Linked]) -> Iterator[tuple[Linked, Linked | None]]:
    """Each entry with the one after it (a one-entry look-ahead names an insertion)."""
    current = next(entries, None)
    while current is not None:
        following = next(entries, None)
        yield current, following
        current = following


class _Walk:
    def __init__(
        self, keys: KeySet, head: AuditHead | None, marks: dict[int, list[Checkpoint]]
    ) -> None:
        self.keys, self.head, self.marks = keys, head, marks
        self.expected, self.prev, self.count = 1, GENESIS, 0

    def step(self, entry: Linked, following: Linked | None) -> VerifyResult | None:
        seq, count = entry.seq, self.count
        if seq != self.expected:
            gap = f"{self.expected}" if seq == self.expected + 1 else f"{self.expected}-{seq - 1}"
            return _broken(count, self.expected, "removed", f"entries {gap} were removed")
        if entry.prev_hash != self.prev:
            return _broken(
                count,
                seq,
                "relinked",
                "it does not link to the entry before it: entries were reordered, moved or "
                "removed and renumbered",
            )
        if expected_hash(self.keys, entry) != entry.hash:
            return self._unverified(entry, following)
        mark = next((m for m in self.marks.get(seq, ()) if m.head != entry.hash), None)
        if mark is not None:
            return _broken(
                count,
                seq,
                "rewritten",
                f"it differs from {mark.name} ({mark.at:%Y-%m-%d %H:%M:%S}Z): the log was "
                "rewritten since, by someone holding the master key, or its keys were replaced",
            )
        self.prev, self.expected, self.count = entry.hash, seq + 1, count + 1
        return None

    def _unverified(self, entry: Linked, following: Linked | None) -> VerifyResult:
        seq, count = entry.seq, self.count
        if seq <= self.keys.legacy_through:
            return _broken(
                count,
                seq,
                "altered",
                "its content was changed (a legacy entry, from before the log was keyed)",
            )
        if following is not None and following.prev_hash == self.prev:
            return _broken(
                count,
                seq,
                "inserted",
                "it was inserted: it is not signed by the audit key and the entry after it "
                "links to the entry before it",
            )
        if self.head is not None and seq > self.head.seq:
            return _broken(
                count,
                seq,
                "appended",
                f"it was appended after the head (entry {self.head.seq}) without keyturn: it "
                "is not signed by the audit key",
            )
        return _broken(
            count,
            seq,
            "altered",
            "its content was changed: its MAC does not verify under the audit key (edited; "
            "recomputing the chain after it needs the master key)",
        )

    def finish(self) -> VerifyResult | None:
        head, count, last = self.head, self.count, self.prev
        if head is None and count == 0:
            return _broken(
                0,
                None,
                "emptied",
                "the log is empty and its head row is gone: every entry was deleted",
            )
        if head is None:
            return _broken(
                count,
                None,
                "head-missing",
                f"the head row is missing (deleted); the log holds {count} entries",
            )
        if head.seq > count:
            return _broken(
                count,
                count + 1,
                "truncated",
                f"the log ends at entry {count} but its head records {head.seq}: entries "
                f"{count + 1}-{head.seq} were removed from its end",
            )
        if head.seq < count:
            return _broken(
                count,
                head.seq + 1,
                "head-moved",
                f"the head records entry {head.seq} but the log goes on to {count}: the head "
                "was moved back",
            )
        if head.hash != last:
            return _broken(count, count, "head-altered", "the head's hash is not this entry's")
        return self._cut()

    def _cut(self) -> VerifyResult | None:
        count = self.count
        beyond = [cp for marks in self.marks.values() for cp in marks if cp.seq > count]
        if not beyond:
            return None
        cp = max(beyond, key=lambda c: c.seq)
        gone = f"entry {count + 1}" if cp.seq == count + 1 else f"entries {count + 1}-{cp.seq}"
        return _broken(
            count,
            count + 1,
            "cut",
            f"{cp.name} ({cp.at:%Y-%m-%d %H:%M:%S}Z) covers {cp.seq} entries but the log ends "
            f"at {count}: {gone} were removed and the head moved back to match",
        )


def _check_marks(keys: KeySet, checkpoints: Sequence[Checkpoint]) -> VerifyResult | None:
    for cp in checkpoints:
        problem = cp.problem(keys)
        if problem:
            return _broken(0, None, "checkpoint", problem)
    return None


def _snapshot(session: Session) -> None:
    """Read the head and every entry from one snapshot: under PostgreSQL's default READ
    COMMITTED, entries appended while the walk runs would look like a head moved back."""
    if session.get_bind().dialect.name != "postgresql":
        return  # SQLite: a read transaction already sees one snapshot
    # If the caller's transaction has begun already, it chose its isolation.
    with contextlib.suppress(InvalidRequestError):
        session.connection(execution_options={"isolation_level": "REPEATABLE READ"})


def verify(
    session: Session, checkpoints: Sequence[Checkpoint] = (), batch: int = 5000
) -> VerifyResult:
    """Walk the whole chain; name the first thing that was done to it (see the module doc)."""
    keys = keys_of(session)
    bad = _check_marks(keys, checkpoints)
    if bad is not None:
        return bad
    marks: dict[int, list[Checkpoint]] = {}
    for cp in checkpoints:
        marks.setdefault(cp.seq, []).append(cp)
    _snapshot(session)
    walk = _Walk(keys, session.get(AuditHead, 1), marks)
    for entry, following in _pairs(iter_rows(session, batch)):
        found = walk.step(entry, following)
        if found is not None:
            return found
    found = walk.finish()
    if found is not None:
        return found
    newest = max(checkpoints, key=lambda c: (c.seq, c.at), default=None)
    return VerifyResult(
        True,
        walk.count,
        legacy=min(keys.legacy_through, walk.count),
        checkpoints=len(checkpoints),
        newest_checkpoint=newest,
    )
