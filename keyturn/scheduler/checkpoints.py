"""Exporting signed audit checkpoints on the worker's schedule.

Each worker tick (and each `keyturn run-due`) makes a checkpoint of the audit head when the
log grew since the last one, at most once per KEYTURN_AUDIT_CHECKPOINT_INTERVAL, and puts it
where the settings say: a file in KEYTURN_AUDIT_CHECKPOINT_DIR and/or a notification to
KEYTURN_AUDIT_CHECKPOINT_TO (`webhook:NAME` or an e-mail address, through the channels of
the inventory). Both should be out of reach of whoever can write keyturn's database: a
directory on another machine or an append-only mount, a receiver that keeps what it gets.
The notification is sent at once, not through the outbox, which lives in the database.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import select

from keyturn.app import Keyturn
from keyturn.audit import checkpoint
from keyturn.audit.checkpoint import Checkpoint
from keyturn.db.models import Channel, Notice, utcnow
from keyturn.domain.errors import ConfigInvalid, KeyturnError
from keyturn.notify.channels import send
from keyturn.runtime import resolver

log = logging.getLogger("keyturn.audit")
_NAME = re.compile(r"checkpoint-(\d{12})-.*\.json")


def write(directory: Path, cp: Checkpoint) -> Path:
    """Write *cp* into *directory* (made if needed) under its sortable name, atomically."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".checkpoint-", suffix=".tmp")
        with os.fdopen(fd, "w") as handle:
            handle.write(cp.to_json())
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        path = directory / checkpoint.file_name(cp)
        os.replace(tmp, path)
    except OSError as exc:
        raise KeyturnError(
            f"cannot write an audit checkpoint to {directory}: {exc.strerror}"
        ) from exc
    return path


def newest_seq(directory: Path) -> int | None:
    """The entry the newest checkpoint in *directory* names, by file name."""
    if not directory.is_dir():
        return None
    found = [int(m.group(1)) for p in directory.iterdir() if (m := _NAME.fullmatch(p.name))]
    return max(found, default=None)


class Exporter:
    """One process's scheduled exports; it remembers what it last exported."""

    def __init__(self, app: Keyturn) -> None:
        settings = app.settings
        self.app = app
        self.directory = (
            Path(settings.audit_checkpoint_dir) if settings.audit_checkpoint_dir else None
        )
        self.recipient = settings.audit_checkpoint_to or None
        self.interval = timedelta(seconds=max(0, settings.audit_checkpoint_interval))
        # Per destination: the entry last exported there (so a failed send is retried without
        # writing the file again), and when this process last exported anything.
        self.written: int | None = None
        self.sent: int | None = None
        self.last_at: datetime | None = None

    @property
    def enabled(self) -> bool:
        return self.directory is not None or self.recipient is not None

    def run(self) -> Checkpoint | None:
        """Export a checkpoint if one is due; None if none was."""
        if not self.enabled:
            return None
        now = utcnow()
        if self.last_at is not None and now - self.last_at < self.interval:
            return None
        with self.app.db.read() as session:
            cp = checkpoint.make(session, self.app.vault.keys, now)
        if self.written is None and self.directory is not None:
            self.written = newest_seq(self.directory)
        exported = False
        if self.directory is not None and cp.seq != self.written:
            path = write(self.directory, cp)
            log.info("audit checkpoint of entry %d written to %s", cp.seq, path)
            self.written, exported = cp.seq, True
        if self.recipient is not None and cp.seq != self.sent:
            self._send(cp, self.recipient)
            self.sent, exported = cp.seq, True
        if not exported:
            return None
        self.last_at = now
        return cp

    def _send(self, cp: Checkpoint, recipient: str) -> None:
        with self.app.db.read() as session:
            channels = list(session.execute(select(Channel)).scalars())
        if recipient.startswith("webhook:"):
            name = recipient.removeprefix("webhook:")
            channel = next((c for c in channels if c.name == name), None)
        else:
            channel = next((c for c in channels if c.type == "email"), None)
        if channel is None:
            raise ConfigInvalid(
                f"KEYTURN_AUDIT_CHECKPOINT_TO={recipient}: no channel delivers there; declare "
                "one under [channels] in the inventory"
            )
        notice = Notice(
            kind="audit-checkpoint",
            recipient=recipient,
            subject=f"[keyturn] audit checkpoint: entry {cp.seq} of {cp.database}",
            body="Keep this checkpoint; `keyturn audit verify --checkpoint FILE` checks the "
            "audit log against it.\n\n" + cp.to_json(),
            data=cp.as_dict(),
        )
        send(channel, notice, resolver(self.app, channel.base_dir))
