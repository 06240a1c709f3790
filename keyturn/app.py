"""The composition root: settings, database, keys. Interfaces (CLI, API) start here."""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from keyturn.crypto.keys import MasterKey, generate_key, load_key, write_key_file
from keyturn.db import migrate
from keyturn.db.engine import Database
from keyturn.domain.errors import KeyturnError, UsageError, WrongMasterKey
from keyturn.settings import Settings

if TYPE_CHECKING:
    # The vault (and with it the ORM models) loads when keyturn opens: `keyturn get` reads
    # the master keys from here without either (keyturn.cli.secret).
    from keyturn.audit.group import GroupWriter
    from keyturn.db.vault import Vault


def master_keys(settings: Settings) -> list[MasterKey]:
    """Current key first, then the old one (during a rekey)."""
    keys = []
    default = not settings.master_key_file
    current = load_key(
        settings.master_key, settings.key_file(), "KEYTURN_MASTER_KEY", default=default
    )
    if current is not None:
        keys.append(current)
    old = load_key(settings.old_master_key, settings.old_master_key_file, "KEYTURN_OLD_MASTER_KEY")
    if old is not None and old.id not in {k.id for k in keys}:
        keys.append(old)
    return keys


def _not_initialised(db: Database) -> str:
    if db.sqlite_path is not None:
        return (
            f"no keyturn database at {db.sqlite_path} ({db.describe()}): run `keyturn init` "
            "to create one, or point KEYTURN_DB (or db in the config file) at yours"
        )
    return f"no keyturn database at {db.describe()}: run `keyturn init` first"


def _no_master_key(settings: Settings, db: Database) -> str:
    where = settings.default_key_file()
    if db.sqlite_path is not None:
        made, missing = "beside the SQLite file", f"{where} does not exist"
    else:
        made, missing = "in the folder it ran in", f"there is no {where.name} in this folder"
    return (
        f"no master key for the database at {db.describe()}: set KEYTURN_MASTER_KEY_FILE to "
        f"the key file `keyturn init` wrote for it ({where.name}, {made}), or KEYTURN_MASTER_KEY "
        f"to the key; neither is set and {missing}"
    )


@dataclass
class Keyturn:
    settings: Settings
    db: Database
    vault: Vault

    @classmethod
    def open(cls, settings: Settings) -> Keyturn:
        from keyturn.db.vault import Vault

        db = Database(settings.db)
        if not db.is_initialised():
            db.dispose()
            raise UsageError(_not_initialised(db))
        if not migrate.is_current(db):
            with db.guard():
                migrate.upgrade(db)
        try:
            keys = master_keys(settings)
            if not keys:
                raise WrongMasterKey(_no_master_key(settings, db))
            return cls(settings, db, Vault(db, keys))
        except KeyturnError:
            db.dispose()
            raise

    @property
    def worker_id(self) -> str:
        return self.settings.worker_id or f"{os.uname().nodename}:{os.getpid()}"

    @cached_property
    def audit_writer(self) -> GroupWriter:
        """This process's group-committing audit writer (keyturn.audit.group), for reads."""
        from keyturn.audit.group import GroupWriter

        return GroupWriter(self.db)

    def close(self) -> None:
        if "audit_writer" in self.__dict__:
            self.audit_writer.close()
        self.db.dispose()


@dataclass(frozen=True)
class InitResult:
    created: bool
    key_file: Path | None


def initialise(settings: Settings) -> InitResult:
    """Create the schema and, when no master key is configured, a key file (mode 0600)."""
    from keyturn.db.vault import create_keys

    db = Database(settings.db)
    try:
        if db.is_initialised():
            with db.guard():
                migrate.upgrade(db)
            return InitResult(False, None)
        db.check_creatable()
        if db.sqlite_path is not None and not db.sqlite_path.exists():
            # Owner-only, whatever the umask: the inventory and the audit log are in it, and
            # SQLite gives its -wal and -shm files the database file's mode.
            os.close(os.open(db.sqlite_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        keys = master_keys(settings)
        key_file = None
        if not keys:
            key_file = settings.default_key_file().absolute()
            if key_file.exists():
                raise UsageError(
                    f"{key_file} exists but is not configured; "
                    f"set KEYTURN_MASTER_KEY_FILE={key_file}"
                )
            keys = [generate_key()]
            write_key_file(key_file, keys[0])
        with db.guard():
            migrate.upgrade(db)
        with db.write() as session:
            create_keys(session, keys[0])
        return InitResult(True, key_file)
    finally:
        db.dispose()
