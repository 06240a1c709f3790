"""What a scan reads and what it reports. No value ever travels in these types: a finding
names where a secret is and which credential it is, with a keyed fingerprint, never the value.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any


class Origin(StrEnum):
    FILE = "file"  # a file in a folder being scanned
    STAGED = "staged"  # the version of a file in git's index (`--staged`)
    HISTORY = "history"  # a blob of a commit (`--git`)


@dataclass(frozen=True)
class Document:
    """One text to scan: a file, a staged file or a blob of a commit."""

    path: str  # as shown: relative to the folder scanned, or to the repository
    data: bytes
    origin: Origin = Origin.FILE
    commit: str | None = None  # --git: the commit that brought this blob in


@dataclass(frozen=True)
class ManagedEntry:
    """A version of a credential keyturn holds, as the index knows it (no value)."""

    credential_id: str
    tenant: str
    kind: str
    version: int
    state: str
    owner: str
    consumers: tuple[str, ...] = ()

    @property
    def live(self) -> bool:
        """Accepted by the target now (or about to be): a copy found is a leak."""
        return self.state in ("pending", "current", "previous")


@dataclass(frozen=True)
class Where:
    path: str
    line: int  # 1-based
    column: int  # 1-based, in characters
    end_column: int  # exclusive
    origin: Origin = Origin.FILE
    commit: str | None = None

    def __str__(self) -> str:
        at = f"{self.path}:{self.line}:{self.column}"
        return f"{self.commit[:12]}:{at}" if self.commit else at


@dataclass(frozen=True)
class Finding:
    """A credential found in a text.

    ``managed``: a copy of a value keyturn holds (``credential`` says which version);
    ``unmanaged``: a credential keyturn does not know, reported by a detector (``rule``).
    ``fingerprint`` is keyed and identifies the finding in baselines: the credential version
    (or the unmanaged value) and the path, not the line, so edits around it keep it stable.
    """

    kind: str  # managed | unmanaged
    rule: str
    where: Where
    fingerprint: str
    credential: ManagedEntry | None = None
    encoding: str | None = None  # managed: raw, url-encoded, base64, hex, url-userinfo, ...
    variable: str | None = None  # unmanaged: the name the value is assigned to, if any
    detector: str | None = None
    suggestion: str | None = None  # the command to run about it
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def level(self) -> str:
        """SARIF level: a live managed value is an error, a retired one a note."""
        if self.credential is not None:
            return "error" if self.credential.live else "note"
        return "warning"

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["where"] = {**data["where"], "origin": str(self.where.origin)}
        if self.credential is not None:
            data["credential"]["consumers"] = list(self.credential.consumers)
        data["level"] = self.level
        return data
