"""keyturn.db.direct.execute: Core statements of a rotation's chain run straight on the
driver inside a session's transaction (issue 23), with SQLAlchemy's conversions and errors."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, bindparam, event, insert, select
from sqlalchemy.exc import IntegrityError

from keyturn.audit.verify import verify
from keyturn.db import direct, rotation
from keyturn.db.models import AuditEntry, Notice, utcnow
from keyturn.db.reads import AUDIT_ENTRIES
from keyturn.domain.errors import StoreUnavailable
from keyturn.engine.record import _append
from keyturn.notify import outbox
from tests.support.keyturn import Harness


def test_a_statement_runs_in_the_sessions_transaction(kt: Harness) -> None:
    """What execute writes commits or rolls back with the session, and SQLAlchemy's bind
    conversions (JSON, datetimes) apply as they would through the session."""
    notices = Notice.__table__
    statement = select(notices.c.id).where(notices.c.dedupe_key == bindparam("key", String()))
    with pytest.raises(RuntimeError), kt.app.db.write() as session:
        outbox.enqueue(session, kind="notice", dedupe_key="k1", subject="s", body="b")
        assert direct.execute(session.connection(), statement, {"key": "k1|"}).rows
        raise RuntimeError("rolled back")
    with kt.app.db.write() as session:
        assert not direct.execute(session.connection(), statement, {"key": "k1|"}).rows
        data = {"naïve": "ü", "n": [1, 2]}
        kwargs: dict[str, Any] = {"subject": "s", "body": "b", "data": data}
        assert outbox.enqueue(session, kind="notice", dedupe_key="k2", **kwargs) == 1
        assert outbox.enqueue(session, kind="notice", dedupe_key="k2", **kwargs) == 0
    with kt.app.db.read() as session:
        row = session.execute(select(Notice).where(Notice.dedupe_key == "k2|")).scalar_one()
        assert row.data == data and row.attempts == 0 and row.created_at is not None


def test_driver_errors_are_sqlalchemys_and_counted(kt: Harness) -> None:
    """A constraint breaks as SQLAlchemy's IntegrityError (what callers catch); the engine's
    statement listeners hear of each statement; parameters stay out of the message."""
    seen: list[str] = []
    event.listen(kt.app.db.engine, "before_cursor_execute", lambda *a: seen.append(a[2]))
    notices = Notice.__table__
    statement = insert(notices).values(
        {name: bindparam(name, type_=notices.c[name].type) for name in outbox._COLUMNS}
    )
    row = {
        "kind": "notice",
        "dedupe_key": "dup",
        "subject": "secret-subject-value",
        "body": "b",
        "recipient": "",
        "credential_id": None,
        "tenant_id": None,
        "data": {},
        "status": "pending",
        "next_attempt_at": utcnow(),
        "attempts": 0,
        "created_at": utcnow(),
    }
    with pytest.raises(IntegrityError) as caught, kt.app.db.write() as session:
        direct.execute(session.connection(), statement, row)
        direct.execute(session.connection(), statement, row)
    assert "secret-subject-value" not in str(caught.value)
    assert len([sql for sql in seen if "INSERT INTO notices" in sql]) == 2


def test_a_statement_with_python_defaults_is_refused_at_once(kt: Harness) -> None:
    """Defaults SQLAlchemy computes at execution (created_at = now) are not computed here:
    such a statement is refused when prepared, never run with the column left empty."""
    table = Table(
        "t", MetaData(), Column("id", Integer, primary_key=True), Column("at", String, default=str)
    )
    with pytest.raises(ValueError, match="at"):
        direct.prepared(insert(table).values(id=bindparam("id")), kt.app.db.engine.dialect)


def test_a_lost_database_is_one_line(kt: Harness) -> None:
    """A statement on a connection the database no longer has: the guard's one line."""
    if kt.app.db.engine.dialect.name != "postgresql":
        pytest.skip("ends a PostgreSQL backend")
    with pytest.raises(StoreUnavailable), kt.app.db.write() as session:
        conn = session.connection()
        conn.exec_driver_sql("SELECT pg_terminate_backend(pg_backend_pid())")
        direct.execute(conn, select(AUDIT_ENTRIES.c.seq).limit(1), {})
    with kt.app.db.read() as session:  # the pool gave that connection up
        assert session.execute(select(AuditEntry.seq).limit(1)).all() is not None


def test_a_chains_entries_keep_their_fields_exactly(kt: Harness) -> None:
    """The rotation's append (one JSON array on PostgreSQL) stores each field as given:
    text that needs quoting, no reason, nested details, a microsecond timestamp."""
    at = utcnow().replace(microsecond=123456)
    details = {"quote": 'a "b" \\ c', "nested": {"list": [1, None, True]}, "ü": "ß"}
    given = [
        {"actor": "t", "action": "test.one", "at": at, "details": details, "reason": "r\nx"},
        {"actor": "t", "action": "test.two", "at": at, "outcome": "warning"},
    ]
    for _ in range(3):  # a fresh guess, then the head as this process left it
        with rotation.turn(kt.app.db.engine), kt.app.db.write() as session:
            _append(session, [dict(entry) for entry in given])
    with kt.app.db.read() as session:
        rows = session.execute(select(AuditEntry).order_by(AuditEntry.seq.desc()).limit(2)).all()
    two, one = rows[0][0], rows[1][0]
    assert (one.action, one.details, one.reason, one.at) == ("test.one", details, "r\nx", at)
    assert (two.action, two.outcome, two.reason, two.details) == ("test.two", "warning", None, {})
    with kt.app.db.read() as session:
        assert verify(session).ok
