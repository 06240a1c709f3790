"""`keyturn rekey` as one call: keys, preflight, backup, the job."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from keyturn.crypto.keys import MasterKey, load_key
from keyturn.db.engine import Database
from keyturn.db.vault import Vault
from keyturn.domain.errors import UsageError
from keyturn.rekey import backup as backups
from keyturn.rekey import preflight
from keyturn.rekey.job import Progress, Rekey, Summary, _quiet
from keyturn.settings import Settings


@dataclass(frozen=True)
class Options:
    data_keys: bool = False
    backup: bool = True
    backup_dir: Path | None = None
    batch_size: int = 5000
    workers: int | None = None  # None: chosen by the job's size


def keys(settings: Settings) -> tuple[MasterKey, MasterKey | None]:
    new = load_key(settings.master_key, settings.key_file(), "KEYTURN_MASTER_KEY")
    if new is None:
        raise UsageError(
            "set KEYTURN_MASTER_KEY (or KEYTURN_MASTER_KEY_FILE) to the new master key and "
            "KEYTURN_OLD_MASTER_KEY to the previous one"
        )
    old = load_key(settings.old_master_key, settings.old_master_key_file, "KEYTURN_OLD_MASTER_KEY")
    return new, (None if old is not None and old.id == new.id else old)


def rekey(settings: Settings, options: Options, progress: Progress = _quiet) -> Summary:
    """Check, back up, then re-wrap (and with `data_keys`, re-seal) under the new key."""
    if options.batch_size < 1:
        raise UsageError("--batch-size must be at least 1")
    if options.workers is not None and not 0 <= options.workers <= 64:
        raise UsageError("--workers must be between 0 and 64")
    new, old = keys(settings)
    db = Database(settings.db)
    try:
        if not db.is_initialised():
            raise UsageError(f"no keyturn database at {db.describe()}; run `keyturn init` first")
        with db.read() as session:
            plan = preflight.plan(session, new, old, options.data_keys)
        if plan.nothing_to_do:
            return Summary(new.id, old.id if old else None, versions_total=plan.versions)
        copy = None
        if options.backup and plan.resumed is None:
            copy = backups.backup(db, options.backup_dir)
        vault = Vault(db, [k for k in (new, old) if k is not None])
        job = Rekey(
            db,
            plan,
            vault.keyring,
            batch_size=options.batch_size,
            workers=options.workers,
            progress=progress,
        )
        job.summary.backup = str(copy) if copy else None
        return job.run()
    finally:
        db.dispose()
