"""Policies: how old a credential may get, when to warn, when to check, how long to wait.

Defaults per kind follow AWS Well-Architected SEC02-BP05 (seed 003) and seed 000 for SMTP.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any

from keyturn.domain.durations import format_duration, parse_duration
from keyturn.domain.errors import PolicyInvalid
from keyturn.domain.model import PasswordRules

DEFAULT_SCHEDULE = "0 2 * * *"
KIND_MAX_AGE = {
    "aws-access-key": "90d",
    "cloud-access-key": "90d",
    "postgres": "60d",
    "mysql": "60d",
    "redis": "60d",
    "database": "60d",
    "api-key": "180d",
    "tls-certificate": "365d",
    "service-account": "90d",
    "smtp": "180d",
    "smtp-mailu": "180d",
    "encryption-key": "365d",
}
FALLBACK_MAX_AGE = "90d"


@dataclass(frozen=True)
class Policy:
    max_age: timedelta
    notice: timedelta = timedelta(days=7)
    schedule: str = DEFAULT_SCHEDULE
    grace: timedelta = timedelta(hours=24)
    jitter: timedelta = timedelta(0)
    recipients: tuple[str, ...] = ()
    password: PasswordRules = field(default_factory=PasswordRules)

    def describe(self) -> dict[str, Any]:
        return {
            "max_age": format_duration(self.max_age),
            "notice": format_duration(self.notice),
            "schedule": self.schedule,
            "grace": format_duration(self.grace),
        }


def default_for(kind: str) -> Policy:
    return Policy(max_age=parse_duration(KIND_MAX_AGE.get(kind, FALLBACK_MAX_AGE)))


def effective(kind: str, settings: dict[str, Any] | None, target_rules: PasswordRules) -> Policy:
    """The kind's defaults, overridden by a named policy's settings."""
    policy = replace(default_for(kind), password=target_rules)
    durations: dict[str, Any] = {
        key: parse_duration(settings[key], key)
        for key in ("max_age", "notice", "grace", "jitter")
        if settings and settings.get(key) is not None
    }
    policy = replace(policy, **durations)
    if settings and settings.get("schedule"):
        policy = replace(policy, schedule=settings["schedule"])
    if settings and settings.get("recipients"):
        policy = replace(policy, recipients=tuple(settings["recipients"]))
    if settings and settings.get("password"):
        policy = replace(policy, password=replace(target_rules, **settings["password"]))
    if policy.notice >= policy.max_age:
        raise PolicyInvalid(
            f"notice {format_duration(policy.notice)} must be shorter than max_age "
            f"{format_duration(policy.max_age)}"
        )
    return policy
