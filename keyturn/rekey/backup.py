"""A copy of keyturn's database before a rekey writes anything.

SQLite: the online backup API into a file next to the database (mode 0600), consistent
even while other processes write. PostgreSQL: `pg_dump --format=custom` when it is on PATH;
the password goes through PGPASSWORD, never the command line.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
from datetime import UTC, datetime
from pathlib import Path

from keyturn.db.engine import Database
from keyturn.domain.errors import UsageError


def _stamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")


def _create_private(path: Path) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.close(fd)


def backup(db: Database, directory: Path | None = None) -> Path:
    """Write the backup and return its path; raise UsageError when it cannot be made."""
    if db.is_sqlite:
        return _sqlite(db, directory)
    return _postgres(db, directory or Path.cwd())


def _sqlite(db: Database, directory: Path | None) -> Path:
    source = db.sqlite_path
    if source is None:
        raise UsageError("an in-memory database cannot be backed up; use --no-backup")
    target = (directory or source.parent) / f"{source.name}.before-rekey-{_stamp()}.bak"
    _create_private(target)
    with sqlite3.connect(source) as src, sqlite3.connect(target) as dst:
        src.backup(dst)
    dst.close()
    src.close()
    os.chmod(target, 0o600)
    return target


def _postgres(db: Database, directory: Path) -> Path:
    pg_dump = shutil.which("pg_dump")
    url = db.url
    if pg_dump is None:
        raise UsageError(
            "pg_dump is not on PATH, so keyturn cannot back up the database before the rekey: "
            f"back up {db.describe()} yourself (pg_dump --format=custom), then run "
            "`keyturn rekey --no-backup`"
        )
    target = directory / f"keyturn-{url.database}.before-rekey-{_stamp()}.dump"
    _create_private(target)
    env = dict(os.environ)
    if url.password is not None:
        env["PGPASSWORD"] = str(url.password)
    dsn = url.set(drivername="postgresql", password=None).render_as_string(hide_password=False)
    result = subprocess.run(
        [pg_dump, "--format=custom", f"--file={target}", f"--dbname={dsn}"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        target.unlink(missing_ok=True)
        first = (result.stderr.strip().splitlines() or ["no output"])[0]
        raise UsageError(
            f"pg_dump failed ({first}); back up the database yourself, then run "
            "`keyturn rekey --no-backup`"
        )
    return target
