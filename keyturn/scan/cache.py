"""``--cache FILE``: what the detectors spotted, by document content, so that a file that has
not changed since the last scan skips them (CredSweeper reads ~0.2 MB/s; CI scans the same
tree again and again).

The cache is a SQLite file (mode 0600) of ``Spotted`` records: rule, place, variable name,
and two keyed MACs standing for the value; never the value. A document is known by an HMAC
(under the scan's finding key) of the detectors' names and versions, its file name (rules
depend on it) and its bytes. Managed matching is not cached: it is cheap, and the inventory
changes between scans. A cache made under another key, or by other detector versions, is
emptied rather than trusted.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import asdict
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path, PurePosixPath

from keyturn.domain.errors import UsageError
from keyturn.scan.detect import Spotted
from keyturn.scan.keys import ScanKeys
from keyturn.scan.model import Document

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS spotted (
    document TEXT PRIMARY KEY, records TEXT NOT NULL, used_at REAL NOT NULL
);
"""


def _package_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "-"


def signature(detectors: Sequence[str]) -> str:
    """Which detectors, in which versions: a change of either empties the cache."""
    packages = {"keyturn": "keyturn", "credsweeper": "credsweeper"}
    return ",".join(f"{d}={_package_version(packages.get(d, d))}" for d in detectors)


class DetectionCache:
    """Spotted records by document, in a SQLite file."""

    def __init__(self, path: Path, keys: ScanKeys, detectors: Sequence[str]) -> None:
        self.keys = keys
        self.signature = signature(detectors)
        try:
            if not path.exists():
                path.touch(mode=0o600)
            self.db = sqlite3.connect(path)
            self.db.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise UsageError(f"cannot use {path} as a scan cache: {exc}") from exc
        self._check()

    def _check(self) -> None:
        wanted = {"key_id": self.keys.key_id, "detectors": self.signature}
        stored = dict(self.db.execute("SELECT name, value FROM meta").fetchall())
        if stored != wanted:
            with self.db:
                self.db.execute("DELETE FROM spotted")
                self.db.execute("DELETE FROM meta")
                self.db.executemany("INSERT INTO meta VALUES (?, ?)", wanted.items())

    def _key(self, document: Document) -> str:
        name = PurePosixPath(document.path).name.encode()
        head = self.signature.encode() + b"\0" + name + b"\0"
        return hmac.new(self.keys.finding, head + document.data, hashlib.sha256).hexdigest()

    def lookup(self, documents: Sequence[Document]) -> dict[int, list[Spotted]]:
        """The records of the documents the cache knows, by their number in *documents*."""
        keys = [self._key(d) for d in documents]
        found: dict[str, str] = {}
        for start in range(0, len(keys), 500):  # SQLite caps bound parameters
            chunk = keys[start : start + 500]
            marks = ",".join("?" * len(chunk))
            query = f"SELECT document, records FROM spotted WHERE document IN ({marks})"
            found.update(self.db.execute(query, chunk).fetchall())
        out = {}
        for number, key in enumerate(keys):
            if key in found:
                out[number] = [Spotted(**record) for record in json.loads(found[key])]
        return out

    def store(self, documents: Sequence[Document], fresh: dict[int, list[Spotted]]) -> None:
        now = time.time()
        rows = [
            (self._key(documents[n]), json.dumps([asdict(s) for s in spotted]), now)
            for n, spotted in fresh.items()
        ]
        with self.db:
            self.db.executemany("INSERT OR REPLACE INTO spotted VALUES (?, ?, ?)", rows)

    def close(self) -> None:
        self.db.close()
