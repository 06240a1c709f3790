"""Each database failure is its own line that says what to do (issues 13 and 14): they all
used to read "check KEYTURN_DB and that the server is running"."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import event, text

from keyturn.db.engine import Database
from keyturn.domain.errors import StoreUnavailable
from tests.servers import PgServer, unused_port
from tests.support.keyturn import ROOT, Harness


def one_line(kt: Harness, *args: str, db: str) -> str:
    result = kt.cli(*args, env={"KEYTURN_DB": db})
    assert result.code == 1, result.out
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.err, result.err
    return lines[0]


def test_missing_folder(tmp_path: Path) -> None:
    kt = Harness(tmp_path, f"sqlite:///{tmp_path / 'nope' / 'k.db'}")
    line = one_line(kt, "init", db=kt.db_url)
    assert "the folder" in line and "does not exist" in line
    assert not (tmp_path / "nope").exists()


def test_read_only_database(kt: Harness) -> None:
    if kt.db_url.startswith("postgresql"):
        pytest.skip("a SQLite file")
    path = kt.db_url.removeprefix("sqlite:///")
    line = one_line(
        kt, "token", "create", "--role", "admin", db=f"sqlite:///file:{path}?mode=ro&uri=true"
    )
    assert "is read-only" in line and "permissions" in line


def _db_with(path: Path, pragma: str, busy: float = 30.0) -> Database:
    db = Database(f"sqlite:///{path}", busy_seconds=busy)

    @event.listens_for(db.engine, "connect")
    def _limit(dbapi_conn: object, _record: object) -> None:
        dbapi_conn.execute(pragma)  # type: ignore[attr-defined]

    return db


def test_disk_full(tmp_path: Path) -> None:
    db = _db_with(tmp_path / "k.db", "PRAGMA max_page_count = 8")
    with db.write() as session:
        session.execute(text("CREATE TABLE t (v BLOB)"))
    with pytest.raises(StoreUnavailable) as caught, db.write() as session:
        session.execute(text("INSERT INTO t VALUES (randomblob(100000))"))
    assert "is full" in caught.value.message and "rolled back" in caught.value.message
    db.dispose()


def test_locked_database(tmp_path: Path) -> None:
    path = tmp_path / "k.db"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("PRAGMA journal_mode=WAL")
    holder.execute("CREATE TABLE t (v)")
    holder.execute("BEGIN IMMEDIATE")
    db = Database(f"sqlite:///{path}", busy_seconds=0.2)
    try:
        with pytest.raises(StoreUnavailable) as caught, db.write() as session:
            session.execute(text("INSERT INTO t VALUES (1)"))
        assert "is locked" in caught.value.message and "0.2 s" in caught.value.message
    finally:
        holder.rollback()
        holder.close()
        db.dispose()


def test_missing_postgres_database(kt: Harness) -> None:
    line = one_line(kt, "list", db="postgresql://postgres@127.0.0.1:5432/kt_no_such_db")
    assert "database 'kt_no_such_db' does not exist" in line and "createdb" in line


def test_password_failure_is_not_cannot_reach(kt: Harness) -> None:
    pg = PgServer.from_env()
    refused = one_line(
        kt, "list", db=f"postgresql://{pg.user}:wrong-pw@{pg.host}:{pg.port}/postgres"
    )
    assert "refused the login" in refused and "password" in refused
    assert "wrong-pw" not in refused and "cannot reach" not in refused
    down = one_line(kt, "list", db=f"postgresql://{pg.user}:x@127.0.0.1:{unused_port()}/postgres")
    assert "cannot reach PostgreSQL" in down and "refused" not in down


def test_postgres_url_without_psycopg_names_the_extra(tmp_path: Path) -> None:
    """Was "internal error (ModuleNotFoundError)". psycopg is hidden from a child process."""
    code = (
        "import sys; sys.modules['psycopg'] = None; "
        "from keyturn.cli.main import main; sys.argv = ['keyturn', 'list']; main()"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYTURN_")}
    env.update(KEYTURN_DB="postgresql://postgres@127.0.0.1:5432/x", PYTHONPATH=str(ROOT))
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True
    )
    assert result.returncode == 1
    assert "pip install 'keyturn[postgres]'" in result.stderr and "internal" not in result.stderr
