"""Signed checkpoints of the audit head, to keep where the database's writers cannot reach.

A checkpoint says "this database's log had N entries and entry N's hash was H, at time T",
signed with the database's Ed25519 checkpoint key (sealed with the master key, like the audit
key). `keyturn audit verify --checkpoint FILE` proves against it that the log still holds
those N entries, unchanged: a writer who cut the tail and moved the head back, or deleted
everything, is caught, because the checkpoint lives elsewhere (a file on another machine, a
webhook's receiver, a mailbox).

The document is JSON; `signature` is Ed25519 over ``keyturn:audit-checkpoint:v1\\n`` and the
canonical JSON of the other fields.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from keyturn.crypto.keyset import KeySet, verify_signature
from keyturn.db.models import AuditHead, utcnow
from keyturn.domain.errors import AuditHeadMissing, UsageError

FORMAT = "keyturn-audit-checkpoint/1"
_SIGNED = b"keyturn:audit-checkpoint:v1\n"
MAX_FILE = 64 * 1024
MAX_FILES = 100_000


@dataclass(frozen=True)
class Checkpoint:
    database: str
    seq: int
    head: str
    at: datetime
    key: str  # the public half of the checkpoint key, base64
    signature: str = ""
    source: str = ""  # where it was read from, for messages; not signed

    def payload(self) -> bytes:
        fields = {
            "format": FORMAT,
            "database": self.database,
            "seq": self.seq,
            "head": self.head,
            "at": self.at.isoformat(),
            "key": self.key,
        }
        return _SIGNED + json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()

    def as_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "database": self.database,
            "seq": self.seq,
            "head": self.head,
            "at": self.at.isoformat(),
            "key": self.key,
            "signature": self.signature,
        }

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), indent=2, sort_keys=True) + "\n"

    @property
    def name(self) -> str:
        return self.source or f"the checkpoint of entry {self.seq}"

    def problem(self, keys: KeySet) -> str | None:
        """Why this checkpoint cannot vouch for this database, or None."""
        if self.database != keys.database_id:
            return (
                f"{self.name} is of database {self.database}, this is {keys.database_id}: "
                "it is another database, or this one's keys were replaced"
            )
        if self.key != keys.public_key or not verify_signature(
            self.key, self.signature, self.payload()
        ):
            return (
                f"{self.name} is not signed by this database's checkpoint key: the file was "
                "altered, or this database's keys were replaced"
            )
        return None


def make(session: Session, keys: KeySet, at: datetime | None = None) -> Checkpoint:
    """A signed checkpoint of the head as this session sees it."""
    head = session.get(AuditHead, 1)
    if head is None:
        raise AuditHeadMissing()
    unsigned = Checkpoint(
        keys.database_id, head.seq, head.hash, (at or utcnow()).astimezone(UTC), keys.public_key
    )
    signature = base64.b64encode(keys.sign(unsigned.payload())).decode()
    return replace(unsigned, signature=signature)


def _field(data: dict[str, Any], name: str, kind: type, source: str) -> Any:
    value = data.get(name)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise UsageError(f"{source} is not a keyturn checkpoint ({name} is missing or wrong)")
    return value


def from_dict(data: Any, source: str) -> Checkpoint:
    """A checkpoint document, or a notification that carries one in its `data`."""
    if isinstance(data, dict) and isinstance(data.get("data"), dict) and "format" not in data:
        data = data["data"]
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise UsageError(f"{source} is not a keyturn checkpoint (no format {FORMAT!r})")
    try:
        at = datetime.fromisoformat(_field(data, "at", str, source))
    except ValueError as exc:
        raise UsageError(f"{source} is not a keyturn checkpoint (at is not a time)") from exc
    if at.tzinfo is None:
        raise UsageError(f"{source} is not a keyturn checkpoint (at has no time zone)")
    seq = _field(data, "seq", int, source)
    if seq < 0:
        raise UsageError(f"{source} is not a keyturn checkpoint (seq is negative)")
    return Checkpoint(
        database=_field(data, "database", str, source),
        seq=seq,
        head=_field(data, "head", str, source),
        at=at,
        key=_field(data, "key", str, source),
        signature=_field(data, "signature", str, source),
        source=source,
    )


def _read(path: Path) -> Checkpoint:
    try:
        if path.stat().st_size > MAX_FILE:
            raise UsageError(f"{path} is larger than {MAX_FILE} bytes: not a checkpoint")
        data = json.loads(path.read_text())
    except OSError as exc:
        raise UsageError(f"cannot read checkpoint {path}: {exc.strerror}") from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UsageError(f"{path} is not a keyturn checkpoint (not JSON)") from exc
    return from_dict(data, str(path))


def load(path: Path) -> list[Checkpoint]:
    """The checkpoint in a file, or every `*.json` checkpoint in a directory."""
    if not path.is_dir():
        return [_read(path)]
    files = sorted(p for p in path.glob("*.json") if p.is_file())
    if not files:
        raise UsageError(f"{path} holds no checkpoint (*.json)")
    if len(files) > MAX_FILES:
        raise UsageError(f"{path} holds more than {MAX_FILES} files; pass the newest checkpoint")
    return [_read(p) for p in files]


def file_name(checkpoint: Checkpoint) -> str:
    """Names that sort by position in the log, then time."""
    return f"checkpoint-{checkpoint.seq:012d}-{checkpoint.at:%Y%m%dT%H%M%S%fZ}.json"
