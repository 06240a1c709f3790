"""Request and response bodies. Requests forbid unknown fields and are validated in strict
mode (no "yes" for true, no "1" for 1); their text refuses NUL, control characters and lone
surrogates (keyturn.inventory.fields). Secrets appear only in `InitialValue` (in) and
`SecretOut` (out)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import Path
from pydantic import BaseModel, ConfigDict, Field

from keyturn.inventory.fields import Line, Para, SecretValue, Tags

Role = Literal["admin", "operator", "auditor", "consumer"]
Due = Literal["due", "notice", "ok", "no-value"]
CredentialId = Annotated[
    str,
    Path(
        description="A credential id: [a-z0-9._-] segments joined by '/'",
        examples=["acme/smtp-admin"],
    ),
]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class InitialValue(_In):
    """A first value given in the body (never on a command line)."""

    value: SecretValue = Field(min_length=1, max_length=4096)


class CredentialIn(_In):
    """The same fields as a `[[credentials]]` entry of keyturn.toml."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={
            "examples": [
                {"id": "acme/new-key", "tenant": "acme", "kind": "api-key", "owner": "ops"}
            ]
        },
    )

    id: Line | None = Field(default=None, max_length=200, description="Required on create")
    tenant: Line | None = Field(default=None, max_length=63)
    kind: Line = Field(default="generic", max_length=63)
    owner: Line = Field(default="", max_length=200)
    purpose: Para = Field(default="", max_length=2000)
    tags: Tags = Field(default_factory=dict)
    policy: Line | None = Field(default=None, max_length=63)
    target: Line | None = Field(default=None, max_length=63)
    strategy: Literal["single", "alternating", "dual"] = "single"
    username: Line | None = Field(default=None, min_length=1, max_length=200)
    usernames: list[Annotated[Line, Field(min_length=1, max_length=200)]] = Field(
        default_factory=list, max_length=2
    )
    stores: list[Annotated[Line, Field(max_length=63)]] = Field(default_factory=list, max_length=32)
    consumers: list[Annotated[Line, Field(max_length=63)]] = Field(
        default_factory=list, max_length=256
    )
    initial_secret: InitialValue | Annotated[Line, Field(max_length=1000)] | None = Field(
        default=None,
        description='{"value": ...} or a reference "keyturn:OTHER/ID"; env: and file: '
        "references resolve on the server and are accepted only by `keyturn apply`",
    )


class ChangeOut(BaseModel):
    credential: str
    changes: list[str]
    provisioned: bool
    problems: list[str]


class StoreSyncOut(BaseModel):
    store: str
    version: int | None = Field(description="The keyturn version last published there")
    status: str = Field(description="in-sync, drift, missing, unreachable or unpublished")
    detail: str | None
    checked_at: datetime | None


class CredentialOut(BaseModel):
    id: str
    tenant: str
    kind: str
    owner: str
    purpose: str
    tags: dict[str, str]
    policy: str | None
    target: str | None
    strategy: str
    stores: list[str]
    usernames: list[str]
    version: int | None
    age_days: float | None
    max_age_days: int
    due: Due
    rotation: str | None
    sync: str | None
    verified_at: datetime | None
    held_back: bool = Field(
        description="Its account belongs to another credential (found when the database was "
        "upgraded): it is not rotated and its value is not handed out until resolved"
    )
    created_at: datetime
    updated_at: datetime
    store_sync: list[StoreSyncOut] | None = Field(
        default=None,
        description="Each store: the version published and what `verify` last found there "
        "(in the one-credential view; the list shows `sync` only)",
    )


class CredentialList(BaseModel):
    credentials: list[CredentialOut]
    next_offset: int | None


class VersionOut(BaseModel):
    number: int
    state: str
    username: str | None
    fingerprint: str
    created_at: datetime
    activated_at: datetime | None
    retired_at: datetime | None


class SecretValueOut(BaseModel):
    version: int
    state: str
    username: str | None
    value: str
    on_target: bool | None = Field(
        default=None,
        description="`next` only: the rotation has put it on the target (past `set`), which "
        "may already refuse the current value: try this one first",
    )


class SecretOut(SecretValueOut):
    credential: str
    previous: SecretValueOut | None = Field(
        default=None, description="The previous value, while the target still accepts it"
    )
    next: SecretValueOut | None = Field(
        default=None,
        description="The value a rotation in progress is putting on the target: try it when "
        "the current one is refused",
    )


class ReasonIn(_In):
    reason: Line = Field(min_length=1, max_length=2000, description="Goes into the audit log")


class RotateIn(ReasonIn):
    emergency: bool = Field(
        default=False, description="Compromised: no grace period (admin tokens only)"
    )


class OutcomeOut(BaseModel):
    rotation: int
    credential: str
    status: str
    step: str
    version: int | None
    error: str | None
    next_attempt_at: datetime | None
    wait_until: datetime | None
    current_value: Literal["works", "refused", "maybe-refused", "none"] = Field(
        default="works",
        description="Whether the current value still logs in: `refused` once a `single` "
        "rotation has put the new value on the target (read `next`), `maybe-refused` where a "
        "failed `single` set may have reached it, `none` with no current value",
    )


class AbortOut(BaseModel):
    rotation: int
    credential: str
    status: Literal["aborted"]


class VerifyOut(BaseModel):
    credential: str
    status: str
    detail: str
    stores: list[StoreSyncOut] = Field(default_factory=list)


class ConsumerOut(BaseModel):
    name: str
    version: int | None
    last_seen_at: datetime | None
    host: str | None = None
    process: str | None = None
    sdk_version: str | None = None
    fallbacks: int = 0


class ConsumerIdentityIn(_In):
    host: Line | None = Field(default=None, max_length=255)
    process: Line | None = Field(default=None, max_length=255)
    sdk_version: Line | None = Field(default=None, max_length=64)


class ConsumerReportIn(ConsumerIdentityIn):
    version: int = Field(ge=1, le=2**31 - 1, description="The version this consumer now uses")
    fallbacks: int = Field(
        default=0, ge=0, le=2**31 - 1, description="Fallbacks made since the last report"
    )


class AtRiskOut(BaseModel):
    name: str
    version: int | None
    last_seen_at: datetime | None
    host: str | None
    process: str | None
    recovers: bool = Field(description="An SDK consumer: it refetches on the first failure")
    why: str


class AuditEntryOut(BaseModel):
    seq: int
    at: datetime
    actor: str
    action: str
    credential: str | None
    tenant: str | None
    fingerprint: str | None
    reason: str | None
    outcome: str
    details: dict[str, object]
    prev_hash: str
    hash: str


class AuditPage(BaseModel):
    entries: list[AuditEntryOut]
    next_after: int | None = Field(description="Pass as `after` for the next page")


class AuditVerifyOut(BaseModel):
    ok: bool
    entries: int | None
    broken_entry: int | None
    kind: str | None = Field(
        description="What was done to the log: altered, removed, relinked, inserted, appended, "
        "truncated, head-moved, head-altered, head-missing, emptied, cut, rewritten, checkpoint"
    )
    problem: str | None
    checkpoints: int = Field(description="Checkpoints the log was held against")


class CheckpointOut(BaseModel):
    """A signed checkpoint of the audit head (keyturn.audit.checkpoint)."""

    format: Literal["keyturn-audit-checkpoint/1"]
    database: str
    seq: int
    head: str
    at: str
    key: str
    signature: str


class CheckpointIn(_In):
    format: Literal["keyturn-audit-checkpoint/1"]
    database: Line = Field(max_length=64)
    seq: int = Field(ge=0, le=2**63 - 1)
    head: Line = Field(max_length=128)
    at: Line = Field(max_length=64)
    key: Line = Field(max_length=128)
    signature: Line = Field(max_length=256)


class CheckpointsIn(_In):
    checkpoints: list[CheckpointIn] = Field(min_length=1, max_length=1000)


class TokenIn(_In):
    role: Role
    scopes: list[Annotated[Line, Field(min_length=1, max_length=200)]] = Field(
        default_factory=list, max_length=64
    )
    tenant: Line | None = Field(default=None, max_length=63)
    name: Line = Field(default="", max_length=200)
    expires: Line | None = Field(default=None, max_length=32, description="Lifetime, e.g. 90d")


class TokenOut(BaseModel):
    id: str
    name: str
    role: str
    scopes: list[str]
    tenant: str | None
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None


class TokenIssued(TokenOut):
    token: str = Field(description="Shown once; keyturn stores only its hash")


class HealthOut(BaseModel):
    status: Literal["ok"]
    version: str
