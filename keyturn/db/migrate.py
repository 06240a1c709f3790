"""Schema migrations (Alembic), run programmatically by `keyturn init` and at start.

Alembic is imported only when a migration runs: every CLI call checks the schema version,
and that is one query against the `alembic_version` table.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from keyturn.db.engine import Database
from keyturn.domain.errors import UsageError

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).parent / "migrations"
# The newest revision; tests check it is Alembic's head.
HEAD = "0009"


def alembic_config(db: Database) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["engine"] = db.engine
    return config


def head() -> str:
    from alembic.script import ScriptDirectory

    return str(ScriptDirectory(str(MIGRATIONS)).get_current_head())


def upgrade(db: Database, revision: str = "head") -> None:
    from alembic import command
    from alembic.script import ScriptDirectory

    found = current_revision(db)
    if found is not None and found not in {
        script.revision for script in ScriptDirectory(str(MIGRATIONS)).walk_revisions()
    }:
        raise UsageError(
            f"the database is at schema {found}, newer than this keyturn knows (schema "
            f"{HEAD}): a newer keyturn upgraded it; run that version or a later one here too"
        )
    command.upgrade(alembic_config(db), revision)


def current_revision(db: Database) -> str | None:
    try:
        with db.engine.connect() as conn:
            return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    except SQLAlchemyError:
        return None


def is_current(db: Database) -> bool:
    return current_revision(db) == HEAD
