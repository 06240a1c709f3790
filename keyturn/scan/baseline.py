"""Baselines: findings someone accepted, so that only new ones fail a scan.

A baseline is a JSON file of keyed fingerprints (``ks1:...``), each with where it was seen
and what it is (path, line, rule, credential id and version) for the reviewer: never a value
nor a part of one. Matching is by fingerprint alone, so moving a finding within its file keeps
it accepted; a copy in another file is a new finding.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from keyturn.domain.errors import UsageError
from keyturn.scan.keys import FINGERPRINT_PREFIX, ScanKeys
from keyturn.scan.model import Finding

FORMAT = 1


@dataclass(frozen=True)
class Baseline:
    fingerprints: frozenset[str]
    key_id: str | None

    def accepts(self, finding: Finding) -> bool:
        return finding.fingerprint in self.fingerprints


def _entry(finding: Finding) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "fingerprint": finding.fingerprint,
        "kind": finding.kind,
        "rule": finding.rule,
        "path": finding.where.path,
        "line": finding.where.line,
    }
    if finding.credential is not None:
        entry["credential"] = finding.credential.credential_id
        entry["version"] = finding.credential.version
    return entry


def load(path: Path, keys: ScanKeys) -> Baseline:
    """Read a baseline; an error line if it is not one, or was made under another key."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return Baseline(frozenset(), keys.key_id)
    except (OSError, ValueError) as exc:
        raise UsageError(f"{path}: not a keyturn scan baseline ({exc.__class__.__name__})") from exc
    if not isinstance(data, dict) or data.get("keyturn_scan_baseline") != FORMAT:
        raise UsageError(f"{path}: not a keyturn scan baseline (format {FORMAT} expected)")
    if data.get("key_id") != keys.key_id:
        raise UsageError(
            f"{path} was made with another scan key (another keyturn database, or none): "
            "its fingerprints cannot match; run the scan where the baseline was made, or "
            "write a new one with --update-baseline"
        )
    entries = data.get("findings")
    if not isinstance(entries, list):
        raise UsageError(f"{path}: 'findings' must be a list")
    fingerprints = {e.get("fingerprint") for e in entries if isinstance(e, dict)}
    if not all(isinstance(f, str) and f.startswith(FINGERPRINT_PREFIX) for f in fingerprints):
        raise UsageError(f"{path}: every finding needs a fingerprint starting {FINGERPRINT_PREFIX}")
    return Baseline(frozenset(f for f in fingerprints if isinstance(f, str)), keys.key_id)


def write(path: Path, findings: Iterable[Finding], keys: ScanKeys) -> int:
    """Write every finding's fingerprint (atomically); returns how many."""
    entries = {f.fingerprint: _entry(f) for f in findings}
    data = {
        "keyturn_scan_baseline": FORMAT,
        "keyed": keys.keyed,
        "key_id": keys.key_id,
        "findings": sorted(entries.values(), key=lambda e: (e["path"], e["line"], e["rule"])),
    }
    folder = path.parent if str(path.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(data, handle, indent=2)
            handle.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return len(entries)
