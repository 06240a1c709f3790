"""Request and response bodies. Requests forbid unknown fields; secrets appear only in
`InitialValue` (in) and `SecretOut` (out)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import Path
from pydantic import BaseModel, ConfigDict, Field

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
    model_config = ConfigDict(extra="forbid")


class InitialValue(_In):
    """A first value given in the body (never on a command line)."""

    value: str = Field(min_length=1, max_length=4096)


class CredentialIn(_In):
    """The same fields as a `[[credentials]]` entry of keyturn.toml."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"id": "acme/new-key", "tenant": "acme", "kind": "api-key", "owner": "ops"}
            ]
        },
    )

    id: str | None = Field(default=None, max_length=200, description="Required on create")
    tenant: str | None = Field(default=None, max_length=63)
    kind: str = Field(default="generic", max_length=63)
    owner: str = Field(default="", max_length=200)
    purpose: str = Field(default="", max_length=2000)
    tags: dict[str, str] | list[str] = Field(default_factory=dict)
    policy: str | None = Field(default=None, max_length=63)
    target: str | None = Field(default=None, max_length=63)
    strategy: Literal["single", "alternating", "dual"] = "single"
    username: str | None = Field(default=None, max_length=200)
    usernames: list[str] = Field(default_factory=list, max_length=2)
    stores: list[str] = Field(default_factory=list, max_length=32)
    consumers: list[str] = Field(default_factory=list, max_length=256)
    initial_secret: InitialValue | str | None = Field(
        default=None,
        description='{"value": ...} or a reference "keyturn:OTHER/ID"; env: and file: '
        "references resolve on the server and are accepted only by `keyturn apply`",
    )


class ChangeOut(BaseModel):
    credential: str
    changes: list[str]
    provisioned: bool
    problems: list[str]


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
    created_at: datetime
    updated_at: datetime


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


class SecretOut(BaseModel):
    credential: str
    version: int
    state: str
    username: str | None
    value: str


class ReasonIn(_In):
    reason: str = Field(min_length=1, max_length=2000, description="Goes into the audit log")


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


class AbortOut(BaseModel):
    rotation: int
    credential: str
    status: Literal["aborted"]


class VerifyOut(BaseModel):
    credential: str
    status: str
    detail: str


class ConsumerOut(BaseModel):
    name: str
    version: int | None
    last_seen_at: datetime | None


class ConsumerReportIn(_In):
    version: int = Field(ge=1, le=2**31 - 1, description="The version this consumer now uses")


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
    problem: str | None


class TokenIn(_In):
    role: Role
    scopes: list[str] = Field(default_factory=list, max_length=64)
    tenant: str | None = Field(default=None, max_length=63)
    name: str = Field(default="", max_length=200)
    expires: str | None = Field(default=None, max_length=32, description="Lifetime, e.g. 90d")


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
