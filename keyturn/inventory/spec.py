"""The inventory file (keyturn.toml): policies, targets, stores and credentials.

Parsing is strict: unknown keys are errors, types are not coerced (`length = "32"` is an
error, not 32), ids are validated, secrets must be references, and no string anywhere holds
NUL, control characters or lone surrogates (keyturn.domain.inputs).
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from keyturn.domain.durations import parse_duration
from keyturn.domain.errors import ConfigInvalid, LiteralSecret, PolicyInvalid
from keyturn.domain.ids import validate_id, validate_name
from keyturn.domain.inputs import first_error
from keyturn.domain.policy import check_blackout, check_recipient, check_renew_at, parse_window
from keyturn.inventory.fields import Line, Para, Tags, first_problem
from keyturn.inventory.grants import Grant, check_grant
from keyturn.refs import (
    SECRET_KEY,
    how_to_reference,
    is_reference,
    looks_like_secret,
    require_reference,
)

MAX_FILE_BYTES = 16 * 1024 * 1024


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class PasswordSpec(_Strict):
    length: int = 32
    alphabet: str = "urlsafe"
    forbid: str = ""


class PolicySpec(_Strict):
    max_age: str | None = None
    notice: str | None = None
    schedule: str | None = None
    grace: str | None = None
    jitter: str | None = None
    recipients: list[str] = Field(default_factory=list)
    password: PasswordSpec | None = None
    window: str | None = None
    blackout: list[str] = Field(default_factory=list)
    renew_at: float | None = None

    @field_validator("renew_at")
    @classmethod
    def _renew_at(cls, value: float | None) -> float | None:
        return None if value is None else check_renew_at(value)

    @field_validator("window")
    @classmethod
    def _window(cls, value: str | None) -> str | None:
        if value is not None:
            parse_window(value)
        return value

    @field_validator("blackout")
    @classmethod
    def _blackout(cls, value: list[str]) -> list[str]:
        return [check_blackout(rule) for rule in value]

    @field_validator("recipients")
    @classmethod
    def _recipients(cls, value: list[str]) -> list[str]:
        return [check_recipient(r) for r in value]

    @field_validator("max_age", "notice", "grace", "jitter")
    @classmethod
    def _duration(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None:
            try:
                parse_duration(value, str(info.field_name))
            except PolicyInvalid as exc:  # as a ValueError: reported with its file and key
                raise ValueError(exc.message) from None
        return value

    @field_validator("schedule")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        if value is not None:
            from croniter import croniter

            if not croniter.is_valid(value):
                raise ValueError(f'invalid cron expression {value!r}; e.g. "0 2 * * *"')
        return value


Login = Annotated[Line, Field(min_length=1, max_length=200)]
Name = Annotated[Line, Field(max_length=63)]


class CredentialSpec(_Strict):
    id: str
    tenant: Name | None = None
    kind: Name = "generic"
    owner: Annotated[Line, Field(max_length=200)] = ""
    purpose: Annotated[Para, Field(max_length=2000)] = ""
    tags: Tags = Field(default_factory=dict)
    policy: Name | None = None
    target: Name | None = None
    strategy: Literal["single", "alternating", "dual"] = "single"
    username: Login | None = None
    usernames: Annotated[list[Login], Field(max_length=2)] = Field(default_factory=list)
    stores: Annotated[list[Name], Field(max_length=32)] = Field(default_factory=list)
    consumers: Annotated[list[Login], Field(max_length=256)] = Field(default_factory=list)
    initial_secret: Annotated[Line, Field(max_length=1000)] | None = None

    @field_validator("username", "usernames")
    @classmethod
    def _trimmed(cls, value: str | list[str] | None) -> str | list[str] | None:
        for name in [value] if isinstance(value, str) else value or []:
            if name != name.strip():
                raise ValueError("a username has no leading or trailing spaces")
        return value

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        return validate_id(value)

    @property
    def tenant_id(self) -> str:
        if self.tenant:
            return self.tenant
        return self.id.split("/")[0] if "/" in self.id else "default"

    def tag_dict(self) -> dict[str, str]:
        if isinstance(self.tags, list):
            return {tag: "" for tag in self.tags}
        return dict(self.tags)

    def logins(self) -> list[str]:
        names = list(self.usernames) or ([self.username] if self.username else [])
        return names


class PluginSpec(BaseModel):
    """A target, store or channel: its type plus settings the plugin validates."""

    model_config = ConfigDict(extra="allow", frozen=True, strict=True)
    type: Name

    def settings(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class TargetSpec(PluginSpec):
    """A target: its type, the tenants that may use it (keyturn.inventory.grants), and the
    settings its plugin validates."""

    tenants: list[str] | dict[str, list[str]] | None = None

    @field_validator("tenants")
    @classmethod
    def _grant(cls, value: Grant) -> Grant:
        return check_grant(value, "tenants")


class StoreSpec(PluginSpec):
    """A store: its type, the tenants whose credentials it may hold (a list of names; none
    declared: unscoped admins only, as for a target), and the settings its plugin validates."""

    tenants: list[str] | None = None

    @field_validator("tenants")
    @classmethod
    def _grant(cls, value: list[str] | None) -> list[str] | None:
        return [validate_name(str(t), "tenant") for t in value] if value is not None else None


class TenantSpec(_Strict):
    recipients: list[str] = Field(default_factory=list)

    @field_validator("recipients")
    @classmethod
    def _recipients(cls, value: list[str]) -> list[str]:
        return [check_recipient(r) for r in value]


class Inventory(_Strict):
    settings: dict[str, Any] = Field(default_factory=dict)
    tenants: dict[str, TenantSpec] = Field(default_factory=dict)
    channels: dict[str, PluginSpec] = Field(default_factory=dict)
    policies: dict[str, PolicySpec] = Field(default_factory=dict)
    targets: dict[str, TargetSpec] = Field(default_factory=dict)
    stores: dict[str, StoreSpec] = Field(default_factory=dict)
    credentials: list[CredentialSpec] = Field(default_factory=list)


def check_literals(data: Any, path: str) -> None:
    """Refuse literal secrets anywhere: under secret-named keys, and high-entropy strings."""
    if isinstance(data, dict):
        for key, value in data.items():
            where = f"{path}.{key}" if path else str(key)
            if isinstance(value, str) and SECRET_KEY.search(str(key)):
                require_reference(value, path or "file", str(key))
            check_literals(value, where)
    elif isinstance(data, list):
        for index, value in enumerate(data):
            check_literals(value, f"{path}[{index}]")
    elif isinstance(data, str) and looks_like_secret(data):
        head, _, key = path.rpartition(".")
        raise LiteralSecret(how_to_reference(head or "file", key or path))


def parse(text: str, source: str = "inventory") -> Inventory:
    if len(text.encode()) > MAX_FILE_BYTES:
        raise ConfigInvalid(f"{source}: larger than {MAX_FILE_BYTES // 1024 // 1024} MiB")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigInvalid(f"{source}: not valid TOML: {exc}") from exc
    problem = first_problem(data)
    if problem:
        raise ConfigInvalid(f"{source}: {problem}")
    check_literals(data, "")
    for index, cred in enumerate(data.get("credentials", []) or []):
        if isinstance(cred, dict) and "initial_secret" in cred:
            ident = cred.get("id", f"credentials[{index}]")
            require_reference(cred["initial_secret"], str(ident), "initial_secret")
    try:
        inventory = Inventory.model_validate(data)
    except ValidationError as exc:
        raise ConfigInvalid(f"{source}: {first_error(exc)}") from exc
    check_names(inventory, source)
    return inventory


def check_names(inv: Inventory, source: str) -> None:
    for kind, names in (
        ("policy", inv.policies),
        ("target", inv.targets),
        ("store", inv.stores),
        ("tenant", inv.tenants),
        ("channel", inv.channels),
    ):
        for name in names:
            validate_name(name, kind)
    seen: set[str] = set()
    for cred in inv.credentials:
        if cred.id in seen:
            raise ConfigInvalid(f"{source}: credential {cred.id!r} is declared twice")
        seen.add(cred.id)
        validate_name(cred.tenant_id, "tenant")
        validate_name(cred.kind, "kind")
        for consumer in cred.consumers:
            validate_name(consumer, "consumer name")
        if cred.strategy == "alternating" and len(set(cred.logins())) != 2:
            raise ConfigInvalid(
                f'{source}: {cred.id}: strategy alternating needs usernames = ["app", '
                '"app_clone"] (two different logins)'
            )
        if cred.strategy != "alternating" and len(cred.logins()) > 1:
            raise ConfigInvalid(
                f"{source}: {cred.id}: usernames lists two logins; "
                "only the alternating strategy uses two"
            )


def load(path: Path) -> Inventory:
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise ConfigInvalid(f"{path}: larger than {MAX_FILE_BYTES // 1024 // 1024} MiB")
        text = path.read_text()
    except OSError as exc:
        raise ConfigInvalid(f"cannot read {path}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigInvalid(f"{path}: not UTF-8 text") from exc
    return parse(text, str(path))


__all__ = [
    "CredentialSpec",
    "Inventory",
    "PluginSpec",
    "PolicySpec",
    "TargetSpec",
    "is_reference",
    "load",
    "parse",
]
