"""The SDK's source for `keyturn run` without KEYTURN_URL: keyturn's own database.

Values are read (and audited) as the API hands them out; a waiting watcher compares version
numbers only (no value, no audit entry) until they change; reports go straight to the
consumers table.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from keyturn import runtime
from keyturn.app import Keyturn
from keyturn.client.values import Bundle, Value
from keyturn.db import reads, repo
from keyturn.domain.errors import NotFound
from keyturn.domain.model import VersionState
from keyturn.engine import consumers

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

POLL_SECONDS = 0.5
_STATES = (VersionState.CURRENT, VersionState.PREVIOUS, VersionState.PENDING)


class LocalSource:
    reports = True

    def __init__(self, app: Keyturn, actor: str = "cli:run") -> None:
        self.app, self.actor = app, actor

    def _tag(self, credential_id: str) -> str:
        """The versions' numbers, and whether `next` is on the target yet (as the API's ETag)."""
        with self.app.db.read() as session:
            numbers = [repo.version_in_state(session, credential_id, s) for s in _STATES]
            pending = numbers[-1]
            live = pending is not None and _on_target(session, credential_id, pending.number)
        return ".".join(str(v.number) if v else "-" for v in numbers) + ("+" if live else "")

    def fetch(self, credential_id: str, tag: str | None = None, wait: float = 0) -> Bundle | None:
        deadline = time.monotonic() + wait
        now = self._tag(credential_id)
        while tag is not None and now == tag and time.monotonic() < deadline:
            time.sleep(POLL_SECONDS)
            now = self._tag(credential_id)
        if tag is not None and now == tag:
            return None
        found: dict[VersionState, Value] = {}
        with self.app.db.write() as session:
            repo.get_credential(session, credential_id)  # `no credential ...`, as elsewhere
            for state in _STATES:
                row = repo.version_in_state(session, credential_id, state)
                if row is None:
                    continue
                row, value = runtime.read_secret(
                    self.app, session, credential_id, actor=self.actor, number=row.number
                )
                pending = state == VersionState.PENDING
                live = pending and _on_target(session, credential_id, row.number)
                found[state] = Value(
                    value.reveal(), row.number, row.state, row.username, on_target=live or None
                )
        if VersionState.CURRENT not in found:
            raise NotFound(f"{credential_id} has no current version")
        return Bundle(
            credential=credential_id,
            current=found[VersionState.CURRENT],
            previous=found.get(VersionState.PREVIOUS),
            next=found.get(VersionState.PENDING),
            tag=now,
        )

    def report(self, credential_id: str, consumer: str, body: dict[str, Any]) -> None:
        who = consumers.Identity(body.get("host"), body.get("process"), body.get("sdk_version"))
        consumers.report(
            self.app,
            credential_id,
            consumer,
            int(body["version"]),
            who,
            fallbacks=int(body.get("fallbacks", 0)),
            actor=f"consumer:{consumer}",
        )

    def close(self) -> None:
        """The application is closed by the command that opened it."""


def _on_target(session: Session, credential_id: str, pending: int) -> bool:
    return reads.on_target(session.connection(), credential_id, pending)
