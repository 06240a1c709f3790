"""The words of the notices the engine sends, in one place (values are never part of them).

Each function returns a `Message`; `outbox.enqueue(session, **message.fields())` queues it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class Message:
    kind: str
    dedupe_key: str
    subject: str
    body: str
    credential_id: str | None = None
    tenant_id: str | None = None
    data: dict[str, Any] = field(default_factory=dict)

    def fields(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "dedupe_key": self.dedupe_key,
            "subject": self.subject,
            "body": self.body,
            "credential_id": self.credential_id,
            "tenant_id": self.tenant_id,
            "data": self.data or None,
        }


def rotated(
    credential_id: str, tenant_id: str, number: int, trigger: str, actor: str, fingerprint: str
) -> Message:
    return Message(
        "rotated",
        f"rotated:{credential_id}:{number}",
        f"[keyturn] {credential_id} rotated",
        f"{credential_id} (tenant {tenant_id}) was rotated to version {number} ({trigger}, "
        f"by {actor}). Fingerprint {fingerprint}.",
        credential_id,
        tenant_id,
        {"version": number, "trigger": trigger},
    )


def consumers_lagging(
    credential_id: str, tenant_id: str, number: int | None, lagging: list[str]
) -> Message:
    return Message(
        "consumers-lagging",
        f"lagging:{credential_id}:{number}",
        f"[keyturn] {credential_id}: consumers did not move before revoke",
        f"The grace period of {credential_id} ended; these consumers had not reported "
        f"version {number}: {', '.join(lagging)}.",
        credential_id,
        tenant_id,
        {"lagging": lagging},
    )


def rotation_failed(
    credential_id: str,
    tenant_id: str,
    rotation_id: int,
    step: str,
    error: str,
    attempts: int,
    next_attempt_at: datetime | None,
) -> Message:
    """*next_attempt_at* None: keyturn gave up."""
    if next_attempt_at is None:
        then = (
            "keyturn gave up; the current value still works where the target was reachable. "
            "Run `keyturn rotate` again once fixed."
        )
    else:
        then = f"Next attempt at {next_attempt_at:%Y-%m-%d %H:%M UTC}."
    return Message(
        "rotation-failed",
        f"failed:{rotation_id}:{attempts}",
        f"[keyturn] rotation of {credential_id} failed ({attempts} attempts)",
        f"Rotation {rotation_id} of {credential_id} failed at step {step}: {error}. {then}",
        credential_id,
        tenant_id,
        {"rotation": rotation_id, "attempts": attempts, "step": step},
    )


def out_of_sync(credential_id: str, tenant_id: str, number: int, day: datetime) -> Message:
    return Message(
        "out-of-sync",
        f"out-of-sync:{credential_id}:{number}:{day:%Y-%m-%d}",
        f"[keyturn] {credential_id} is out of sync",
        f"The target of {credential_id} refused the current value (version {number}). "
        "Someone may have changed it outside keyturn; rotate it to bring it back under control.",
        credential_id,
        tenant_id,
    )


def store_drift(
    credential_id: str, tenant_id: str, number: int, detail: str, day: datetime
) -> Message:
    return Message(
        "out-of-sync",
        f"out-of-sync:{credential_id}:{number}:{day:%Y-%m-%d}",
        f"[keyturn] {credential_id} is out of sync",
        f"A store of {credential_id} does not hold the current value (version {number}): "
        f"{detail}. Run `keyturn verify --repair {credential_id}` once you know who changed it.",
        credential_id,
        tenant_id,
    )
