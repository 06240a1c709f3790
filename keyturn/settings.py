"""Settings: one table. Precedence: default < config file [settings] < environment < flags.

Secrets (master keys) come from the environment or files only, never from flags: a flag
would put them on a command line.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from keyturn.domain.errors import ConfigInvalid


@dataclass(frozen=True)
class Setting:
    name: str
    env: str
    default: Any
    help: str
    secret: bool = False
    kind: type = str


TABLE = (
    Setting("db", "KEYTURN_DB", "sqlite:///keyturn.db", "Database URL (SQLAlchemy)"),
    Setting("master_key", "KEYTURN_MASTER_KEY", None, "Master key, base64url", secret=True),
    Setting(
        "master_key_file",
        "KEYTURN_MASTER_KEY_FILE",
        None,
        "File holding the master key (default: beside the SQLite file, else ./keyturn.key)",
    ),
    Setting("old_master_key", "KEYTURN_OLD_MASTER_KEY", None, "Previous master key", secret=True),
    Setting("old_master_key_file", "KEYTURN_OLD_MASTER_KEY_FILE", None, "File of the old key"),
    Setting("worker_id", "KEYTURN_WORKER_ID", None, "Name of this worker in leases"),
    Setting("lease_seconds", "KEYTURN_LEASE_SECONDS", 60, "Rotation lease length", kind=int),
    Setting(
        "max_attempts", "KEYTURN_MAX_ATTEMPTS", 5, "Failed attempts before giving up", kind=int
    ),
    Setting("concurrency", "KEYTURN_CONCURRENCY", 4, "Rotations a worker runs at once", kind=int),
    Setting(
        "poll_seconds", "KEYTURN_POLL_SECONDS", 15, "How often a worker looks for work", kind=int
    ),
    Setting(
        "retry_base_seconds",
        "KEYTURN_RETRY_BASE_SECONDS",
        60,
        "First retry delay (doubles each attempt, with jitter)",
        kind=int,
    ),
    Setting(
        "audit_checkpoint_dir",
        "KEYTURN_AUDIT_CHECKPOINT_DIR",
        None,
        "Directory the worker writes signed audit checkpoints to (out of the database's reach)",
    ),
    Setting(
        "audit_checkpoint_to",
        "KEYTURN_AUDIT_CHECKPOINT_TO",
        None,
        "Where the worker sends signed audit checkpoints: webhook:NAME or an e-mail address",
    ),
    Setting(
        "audit_checkpoint_interval",
        "KEYTURN_AUDIT_CHECKPOINT_INTERVAL",
        3600,
        "Seconds between audit checkpoints (made only when the log grew)",
        kind=int,
    ),
)
BY_NAME = {s.name: s for s in TABLE}


@dataclass(frozen=True)
class Settings:
    db: str = "sqlite:///keyturn.db"
    master_key: str | None = field(default=None, repr=False)
    master_key_file: str | None = None
    old_master_key: str | None = field(default=None, repr=False)
    old_master_key_file: str | None = None
    worker_id: str | None = None
    lease_seconds: int = 60
    max_attempts: int = 5
    retry_base_seconds: int = 60
    concurrency: int = 4
    poll_seconds: int = 15
    audit_checkpoint_dir: str | None = None
    audit_checkpoint_to: str | None = None
    audit_checkpoint_interval: int = 3600
    config_path: str | None = None

    @classmethod
    def load(cls, flags: dict[str, Any] | None = None, config: str | None = None) -> Settings:
        values: dict[str, Any] = {s.name: s.default for s in TABLE}
        config = config or os.environ.get("KEYTURN_CONFIG")
        if config:
            values.update(_from_file(Path(config)))
        for s in TABLE:
            if os.environ.get(s.env):
                values[s.name] = os.environ[s.env]
        for name, value in (flags or {}).items():
            if value is not None:
                values[name] = value
        for s in TABLE:
            if s.kind is int and values[s.name] is not None:
                try:
                    values[s.name] = int(values[s.name])
                except ValueError as exc:
                    raise ConfigInvalid(f"{s.env} must be a whole number") from exc
        return cls(config_path=config, **values)

    def default_key_file(self) -> Path:
        """Where `init` puts a generated master key: beside the SQLite file."""
        from keyturn.db.engine import parse_url, sqlite_file

        path = sqlite_file(parse_url(self.db))
        return path.with_suffix(".key") if path is not None else Path("keyturn.key")

    def key_file(self) -> str | None:
        if self.master_key:
            return None
        if self.master_key_file:
            return self.master_key_file
        default = self.default_key_file()
        return str(default) if default.exists() else None


def _from_file(path: Path) -> dict[str, Any]:
    import tomllib  # here: most commands run without a settings file

    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ConfigInvalid(f"cannot read config file {str(path)!r}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigInvalid(f"{path}: not valid TOML: {exc}") from exc
    table = data.get("settings", {})
    if not isinstance(table, dict):
        raise ConfigInvalid(f"{path}: [settings] must be a table")
    out = {}
    for key, value in table.items():
        setting = BY_NAME.get(key)
        if setting is None:
            raise ConfigInvalid(f"{path}: unknown setting {key!r}; known: {', '.join(BY_NAME)}")
        if setting.secret:
            raise ConfigInvalid(
                f"{path}: {key} is a secret; set {setting.env} or {setting.env}_FILE instead"
            )
        out[key] = value
    return out


def setting_names() -> list[str]:
    return [f.name for f in fields(Settings)]
