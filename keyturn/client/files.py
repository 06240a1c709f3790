"""The `file` store as the SDK's source: one file per credential, for applications that never
talk to keyturn.

Layout (what the `file` store writes): `<directory>/<tenant>/<name>` holds the current value,
where the id `acme/smtp-admin` has tenant `acme` and name `smtp-admin`; `<file>.previous` and
`<file>.next`, when present, hold the previous and next values, and `<file>.version` the
current value's version number. A file consumer cannot report back to keyturn; a change is
seen by the files' size and times.
"""

from __future__ import annotations

import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from keyturn.client.values import Bundle, ClientError, Refused, Value

# How often a waiting reader looks at the files again (a local stat, not a request).
POLL_SECONDS = 0.25


class FileSource:
    """Reads credential files from *directory* (`path` may rename them: `{tenant}/{name}`)."""

    reports = False

    def __init__(self, directory: str | os.PathLike[str], path: str = "{tenant}/{name}") -> None:
        self.directory = Path(directory)
        self.template = path

    def _file(self, credential_id: str) -> Path:
        tenant, _, name = credential_id.partition("/")
        relative = self.template.format(id=credential_id, tenant=tenant, name=name or tenant)
        found = (self.directory / relative).resolve()
        if self.directory.resolve() not in found.parents:
            raise ClientError(f"{credential_id}: not a credential id")
        return found

    def _tag(self, main: Path) -> str | None:
        parts = []
        for path in (
            main,
            main.with_name(main.name + ".previous"),
            main.with_name(main.name + ".next"),
            main.with_name(main.name + ".version"),
        ):
            try:
                st = path.stat()
            except FileNotFoundError:
                parts.append("-")
                continue
            parts.append(f"{st.st_ino}:{st.st_size}:{st.st_mtime_ns}")
        return None if parts[0] == "-" else "|".join(parts)

    def _read(self, path: Path, state: str) -> Value | None:
        try:
            text = path.read_text()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise Refused(f"cannot read {path}: {exc.strerror}") from None
        return Value(value=text.rstrip("\n"), version=None, state=state)

    def fetch(self, credential_id: str, tag: str | None = None, wait: float = 0) -> Bundle | None:
        main = self._file(credential_id)
        deadline = time.monotonic() + wait
        now = self._tag(main)
        while tag is not None and now == tag and time.monotonic() < deadline:
            time.sleep(POLL_SECONDS)
            now = self._tag(main)
        if tag is not None and now == tag:
            return None
        current = self._read(main, "current")
        if current is None:
            raise Refused(f"{credential_id}: no file {main}")
        current = replace(current, version=_version(main.with_name(main.name + ".version")))
        return Bundle(
            credential=credential_id,
            current=current,
            previous=self._read(main.with_name(main.name + ".previous"), "previous"),
            next=self._read(main.with_name(main.name + ".next"), "pending"),
            tag=now,
        )

    def report(self, credential_id: str, consumer: str, body: dict[str, Any]) -> None:
        """Files cannot carry a report back to keyturn."""

    def close(self) -> None:
        pass


def _version(path: Path) -> int | None:
    """The number the `file` store writes beside the value, if it is there and whole."""
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


__all__ = ["FileSource"]
