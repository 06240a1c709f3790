"""keyturn's PostgreSQL pool without pre-ping (issue 23): no `SELECT 1` before every
transaction, and a connection the server dropped costs at most one failed transaction."""

from __future__ import annotations

import os

import psycopg
import pytest
from sqlalchemy import event, select, text
from sqlalchemy.engine import make_url

from keyturn.db.engine import Database
from keyturn.db.models import Credential
from keyturn.domain.errors import StoreUnavailable
from tests.support.keyturn import Harness

postgres_only = pytest.mark.skipif(
    os.environ.get("KEYTURN_TEST_DB") != "postgres", reason="the PostgreSQL pool"
)


@postgres_only
def test_a_transaction_sends_only_its_own_statements(
    kt: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = Database(kt.db_url)
    pings: list[object] = []
    ping = db.engine.dialect.do_ping
    monkeypatch.setattr(db.engine.dialect, "do_ping", lambda conn: pings.append(conn) or ping(conn))
    seen: list[str] = []
    event.listen(db.engine, "before_cursor_execute", lambda *a: seen.append(a[2]))
    try:
        with db.read() as session:
            session.execute(select(Credential.id)).all()  # connect, warm the pool
        seen.clear()
        for _ in range(3):
            with db.read() as session:
                session.execute(select(Credential.id)).all()
        assert len(seen) == 3 and pings == []
    finally:
        db.dispose()


@postgres_only
def test_a_dropped_connection_is_replaced(kt: Harness) -> None:
    db = Database(kt.db_url)
    try:
        with db.read() as session:
            pid = session.execute(text("SELECT pg_backend_pid()")).scalar_one()
        admin = make_url(kt.db_url).set(drivername="postgresql")
        with psycopg.connect(admin.render_as_string(hide_password=False), autocommit=True) as c:
            c.execute("SELECT pg_terminate_backend(%s)", (pid,))
        failures = 0
        for _ in range(2):
            try:
                with db.read() as session:
                    fresh = session.execute(text("SELECT pg_backend_pid()")).scalar_one()
                break
            except StoreUnavailable:
                failures += 1
        assert failures <= 1 and fresh != pid
    finally:
        db.dispose()
