"""Policies: how old a credential may get, when to warn, when to check, how long to wait.

Defaults per kind follow AWS Well-Architected SEC02-BP05 (seed 003) and seed 000 for SMTP.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field, replace
from datetime import date, datetime, time, timedelta
from typing import Any

from keyturn.domain.durations import format_duration, parse_duration
from keyturn.domain.errors import PolicyInvalid
from keyturn.domain.model import PasswordRules

DEFAULT_SCHEDULE = "0 2 * * *"
KIND_MAX_AGE = {
    "aws-access-key": "90d",
    "aws-iam-key": "90d",
    "aws-ses-smtp": "90d",
    "cloud-access-key": "90d",
    "postgres": "60d",
    "mysql": "60d",
    "redis": "60d",
    "database": "60d",
    "api-key": "180d",
    "http-api-key": "180d",
    "tls-certificate": "365d",
    "service-account": "90d",
    "smtp": "180d",
    "smtp-mailu": "180d",
    "encryption-key": "365d",
}
FALLBACK_MAX_AGE = "90d"
# Kinds whose values expire by themselves: due at this fraction of their lifetime (seed 003:
# "TLS certificates: 1 year or before expiration").
KIND_RENEW_AT = {"tls-certificate": 2 / 3}


@dataclass(frozen=True)
class Policy:
    max_age: timedelta
    notice: timedelta = timedelta(days=7)
    schedule: str = DEFAULT_SCHEDULE
    grace: timedelta = timedelta(hours=24)
    jitter: timedelta = timedelta(0)
    recipients: tuple[str, ...] = ()
    password: PasswordRules = field(default_factory=PasswordRules)
    # Scheduled rotations start only inside the window (UTC) and never during a blackout.
    window: tuple[time, time] | None = None
    blackout: tuple[str, ...] = ()
    # For values with a validity (certificates): due at this fraction of their lifetime too.
    renew_at: float | None = None

    def due_times(
        self,
        activated_at: datetime,
        credential_id: str,
        validity: tuple[datetime | None, datetime | None] = (None, None),
    ) -> tuple[datetime, datetime]:
        """When this version is due, and when its notice goes out.

        Jitter spreads credentials of one policy over time: each gets a fixed offset derived
        from its id, so the same credential is always due at the same moment. A value with a
        *validity* (notBefore, notAfter) is due at `renew_at` of its lifetime if that comes
        before `max_age`.
        """
        offset = timedelta(0)
        if self.jitter:
            digest = int.from_bytes(hashlib.sha256(credential_id.encode()).digest()[:8], "big")
            offset = timedelta(seconds=digest % max(int(self.jitter.total_seconds()), 1))
        due = activated_at + self.max_age + offset
        start, end = validity
        if self.renew_at is not None and start is not None and end is not None:
            due = min(due, start + (end - start) * self.renew_at)
        return due, due - self.notice

    def allows(self, moment: datetime) -> bool:
        """May a scheduled rotation start at *moment* (UTC)?"""
        if self.window is not None:
            start, end = self.window
            now = moment.time()
            inside = start <= now < end if start <= end else (now >= start or now < end)
            if not inside:
                return False
        return not any(_in_blackout(rule, moment) for rule in self.blackout)

    def describe(self) -> dict[str, Any]:
        return {
            "max_age": format_duration(self.max_age),
            "notice": format_duration(self.notice),
            "schedule": self.schedule,
            "grace": format_duration(self.grace),
            **({"renew_at": round(self.renew_at, 4)} if self.renew_at is not None else {}),
        }


_WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_WINDOW = re.compile(r"([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-4]):([0-5]\d)")


def parse_window(text: str) -> tuple[time, time]:
    """ "01:00-05:00" (UTC; may wrap midnight, e.g. "22:00-04:00")."""
    match = _WINDOW.fullmatch(str(text).strip())
    if not match:
        raise PolicyInvalid(
            f'invalid window {text!r}: write "HH:MM-HH:MM" in UTC, e.g. "01:00-05:00"'
        )
    h1, m1, h2, m2 = (int(g) for g in match.groups())
    end = time(23, 59, 59, 999999) if (h2, m2) == (24, 0) else time(h2, m2)
    if (h1, m1) == (h2, m2):
        raise PolicyInvalid(f"invalid window {text!r}: start and end are the same")
    return time(h1, m1), end


def check_blackout(rule: str) -> str:
    """ "sat", "sun" (weekdays) or "2026-12-20/2027-01-05" (dates, inclusive, UTC)."""
    text = str(rule).strip().lower()
    if text in _WEEKDAYS:
        return text
    first, sep, last = text.partition("/")
    try:
        start = date.fromisoformat(first)
        end = date.fromisoformat(last) if sep else start
    except ValueError as exc:
        raise PolicyInvalid(
            f'invalid blackout {rule!r}: use a weekday ("sat") or dates ("2026-12-20/2027-01-05")'
        ) from exc
    if end < start:
        raise PolicyInvalid(f"invalid blackout {rule!r}: it ends before it starts")
    return text


def check_renew_at(value: Any) -> float:
    """A fraction of a value's lifetime, strictly between 0 and 1 (e.g. 0.6667)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1:
        raise PolicyInvalid(
            f"invalid renew_at {value!r}: a fraction of the lifetime between 0 and 1, e.g. 0.67"
        )
    return float(value)


_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")


def check_recipient(text: str) -> str:
    """An e-mail address, or "webhook:NAME" naming a declared channel."""
    value = str(text).strip()
    if value.startswith("webhook:") and len(value) > 8:
        return value
    if _EMAIL.fullmatch(value) and len(value) <= 320:
        return value
    raise PolicyInvalid(f'invalid recipient {text!r}: use an e-mail address or "webhook:NAME"')


def _in_blackout(rule: str, moment: datetime) -> bool:
    if rule in _WEEKDAYS:
        return _WEEKDAYS[moment.weekday()] == rule
    first, _, last = rule.partition("/")
    return date.fromisoformat(first) <= moment.date() <= date.fromisoformat(last or first)


def default_for(kind: str) -> Policy:
    return Policy(
        max_age=parse_duration(KIND_MAX_AGE.get(kind, FALLBACK_MAX_AGE)),
        renew_at=KIND_RENEW_AT.get(kind),
    )


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
    if settings and settings.get("window"):
        policy = replace(policy, window=parse_window(settings["window"]))
    if settings and settings.get("blackout"):
        policy = replace(policy, blackout=tuple(check_blackout(b) for b in settings["blackout"]))
    if settings and settings.get("renew_at") is not None:
        policy = replace(policy, renew_at=check_renew_at(settings["renew_at"]))
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
