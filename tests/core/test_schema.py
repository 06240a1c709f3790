"""The schema built from the migrations is the schema the models describe (both databases)."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from keyturn.db import migrate
from keyturn.db.engine import Database
from keyturn.db.models import Base


def test_migrations_match_models(db_url: str) -> None:
    db = Database(db_url)
    try:
        migrate.upgrade(db)
        with db.engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        assert diff == []
        assert migrate.is_current(db)
        assert migrate.head() == migrate.HEAD
    finally:
        db.dispose()


def test_sqlite_runs_in_wal_mode_and_syncs_every_commit(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """WAL, and synchronous=FULL (2): a committed pending value survives a power cut, not
    only a crash of keyturn (store-before-change, DESIGN.md invariant 1)."""
    db = Database(f"sqlite:///{tmp_path / 'k.db'}")
    try:
        with db.read() as session:
            conn = session.connection()
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2
    finally:
        db.dispose()


def test_a_database_from_a_newer_keyturn_is_one_clear_line(kt) -> None:  # type: ignore[no-untyped-def]
    """A worker left on an older keyturn after another upgraded the database (a rolling
    upgrade) says so, instead of `internal error (CommandError)` from Alembic."""
    with kt.app.db.write() as session:
        session.connection().exec_driver_sql("UPDATE alembic_version SET version_num = '9999'")
    result = kt.cli("list")
    assert result.code == 1, result
    assert result.err.strip() == (
        f"error: the database is at schema 9999, newer than this keyturn knows (schema "
        f"{migrate.HEAD}): a newer keyturn upgraded it; run that version or a later one here too"
    )
