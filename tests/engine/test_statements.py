"""What one rotation costs keyturn's database, in statements and commits (issue 23), and the
audit chain staying whole when rotations append behind other writers.

Counts, not timings: a rotation that starts issuing more statements (an ORM reload, a
transaction of its own for a step) fails here, on any machine.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import event, select

from keyturn.audit import log as audit
from keyturn.db import rotation
from keyturn.db.models import AuditEntry, AuditHead, utcnow
from keyturn.domain.model import Trigger
from keyturn.engine import service
from keyturn.engine.record import _append
from tests.support.keyturn import Harness

CRED = "acme/smtp-admin"


@contextmanager
def counted(kt: Harness) -> Iterator[dict[str, int]]:
    counts = {"statements": 0, "commits": 0}

    def statement(*_: Any) -> None:
        counts["statements"] += 1

    def commit(*_: Any) -> None:
        counts["commits"] += 1

    engine = kt.app.db.engine
    event.listen(engine, "before_cursor_execute", statement)
    event.listen(engine, "commit", commit)
    try:
        yield counts
    finally:
        event.remove(engine, "before_cursor_execute", statement)
        event.remove(engine, "commit", commit)


def rotate(kt: Harness) -> str:
    outcome = service.rotate(kt.app, CRED, trigger=Trigger.MANUAL, actor="test", reason="count")
    return outcome.status


def test_a_rotation_is_four_commits_and_few_statements(kt: Harness, setup) -> None:  # type: ignore[no-untyped-def]
    setup("single")
    assert rotate(kt) == "done"  # the first one opens connections and reads keys
    with counted(kt) as counts:
        assert rotate(kt) == "done"
    # Recorded; the pending value stored before the target hears of it; `set` done (readers
    # learn that `next` is on the target: test_secret_next); everything after the
    # verification in one transaction. SQLite appends audit entries in three statements
    # per transaction where PostgreSQL takes one (keyturn.db.rotation), and begins each one
    # with a statement of its own. The credential comes with its policy, tenant and target
    # rows and whether a rotation is active (one statement, not five), the last version
    # number with the versions in play (not a query of its own at create), and the
    # promotion's notice is one INSERT that skips a dedupe key already there (not a SELECT
    # first). Statements run straight on the driver (keyturn.db.direct.execute) count too.
    assert counts["commits"] == 4
    bound = 18 if kt.app.db.engine.dialect.name == "postgresql" else 30  # + BEGIN IMMEDIATE
    assert counts["statements"] <= bound, counts


def test_rotations_chain_after_other_writers(kt: Harness, setup) -> None:  # type: ignore[no-untyped-def]
    """A rotation whose guess of the audit head is stale (another writer appended since)
    chains after the real head: the log verifies, numbered without gaps."""
    setup("single")
    for i in range(3):
        assert rotate(kt) == "done"
        with kt.app.db.write() as session:  # another writer moves the head in between
            audit.append(session, actor="other", action="test.between", details={"i": i})
    assert rotate(kt) == "done"
    with kt.app.db.read() as session:
        seqs = session.execute(select(AuditEntry.seq).order_by(AuditEntry.seq)).scalars().all()
        head = session.execute(select(AuditHead)).scalar_one()
    assert list(seqs) == list(range(seqs[0], seqs[0] + len(seqs)))
    assert head.seq == seqs[-1]
    assert kt.cli("audit", "verify").code == 0


def test_after_another_writer_the_next_append_reads_the_head_first(kt: Harness) -> None:
    """PostgreSQL: an append that found the head moved (another process wrote) makes the
    next one read the head instead of guessing, until it finds the head as it left it."""
    if kt.app.db.engine.dialect.name != "postgresql":
        pytest.skip("SQLite appends the reference way (no guess)")
    statements: list[str] = []

    def statement(_conn: Any, _cursor: Any, sql: str, *_: Any) -> None:
        if "audit_head" in sql:
            statements.append(sql)

    def other() -> None:  # the reference appender: this process's guess goes stale
        with kt.app.db.write() as session:
            audit.append(session, actor="other", action="test.between")

    def ours() -> int:
        statements.clear()
        with rotation.turn(kt.app.db.engine), kt.app.db.write() as session:
            _append(session, [{"actor": "test", "action": "test.ours", "at": utcnow()}])
        return len(statements)

    event.listen(kt.app.db.engine, "before_cursor_execute", statement)
    try:
        ours(), ours()  # whatever this process knew before, then the head as it left it
        assert ours() == 1  # the guess holds
        other()
        assert ours() == 3  # the guess misses; the head read; the append
        other()
        assert ours() == 2  # no guess: the head read first
        assert ours() == 2  # the head as we left it: guessing again from the next one
        assert ours() == 1
    finally:
        event.remove(kt.app.db.engine, "before_cursor_execute", statement)
    assert kt.cli("audit", "verify").code == 0
