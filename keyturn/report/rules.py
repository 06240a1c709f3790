"""The compliance rules: each a stable id, a one-line explanation, the AWS Config rules it
matches, and a check of one credential at one moment.

A check sees only `Facts` (history) and the moment, never "now", so the same code answers
`--at` a past or future moment and every point of the trend. Boundaries: a credential is due
at exactly its max age, and unused at exactly N days without use.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

from keyturn.domain.durations import format_duration
from keyturn.domain.policy import Policy
from keyturn.report.facts import Facts, RotationFact, VersionFact

DEFAULT_UNUSED_DAYS = 90
FAILED_ROTATION = ("failed", "aborted")


@dataclass(frozen=True)
class Rule:
    id: str
    title: str
    explanation: str
    aws: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, object]:
        return {
            "id": self.id,
            "title": self.title,
            "explanation": self.explanation,
            "aws": list(self.aws),
        }


class Finding(NamedTuple):  # a tuple: a frozen dataclass's __init__ costs a call per field
    """A rule the credential fails, and why (never a secret: times, names, numbers)."""

    rule: str
    detail: str


@dataclass(slots=True)  # not frozen: a frozen __init__ costs a call per field
class State:
    """One credential as it stood at *at*: what the checks and the report's row show."""

    facts: Facts
    policy: Policy
    at: datetime
    index: int  # which point of the trend *at* is
    unused_days: int
    current: VersionFact | None
    previous: VersionFact | None
    due_at: datetime | None  # when the current version is due
    last_used: datetime | None  # the latest read or consumer heartbeat
    # in-sync | out-of-sync | unreachable | store-drift | unverified (None: no target or value)
    sync: str | None
    rotations: list[RotationFact]  # started by *at*, oldest first


def due(facts: Facts, policy: Policy, version: VersionFact) -> datetime:
    known = version.due
    if known is not None and known[0] is policy:
        return known[1]
    validity = (version.valid_from, version.expires_at)
    when = policy.due_times(version.activated_at, facts.id, validity)[0]
    version.due = (policy, when)
    return when


def _last_used(facts: Facts, at: datetime, index: int) -> datetime | None:
    used = facts.used[index]
    for consumer in facts.consumers:
        seen = consumer.last_seen_at
        if seen is not None and seen <= at and (used is None or seen > used):
            used = seen
    return used


def _sync(facts: Facts, current: VersionFact | None, index: int) -> str | None:
    if current is None or not facts.target:
        return None
    seen = facts.synced[index]
    return "unverified" if seen is None else seen[1]


def state_at(facts: Facts, policy: Policy, at: datetime, index: int, unused_days: int) -> State:
    live = [v for v in facts.versions if v.activated_at <= at]
    current = live[-1] if live else None
    previous = live[-2] if len(live) > 1 else None
    if previous is not None and previous.retired_at is not None and previous.retired_at <= at:
        previous = None
    return State(
        facts,
        policy,
        at,
        index,
        unused_days,
        current,
        previous,
        due(facts, policy, current) if current else None,
        _last_used(facts, at, index),
        _sync(facts, current, index),
        [r for r in facts.rotations if r.started_at <= at] if facts.rotations else [],
    )


_EPOCH, _NAIVE_EPOCH = datetime(1970, 1, 1, tzinfo=UTC), datetime(1970, 1, 1)


def naive_utc(moment: datetime) -> datetime:
    """An aware time as the naive UTC one, whose isoformat() costs half of an aware one's
    (no offset to format) and which a subtraction and an addition make faster than
    replace() or astimezone(); the report writes hundreds of thousands of times."""
    return _NAIVE_EPOCH + (moment - _EPOCH)


def _day(moment: datetime) -> str:
    """'%Y-%m-%d %H:%MZ', cut from the ISO form (a third of strftime's cost, and the
    report writes one for most findings)."""
    text = naive_utc(moment).isoformat()
    return f"{text[:10]} {text[11:16]}Z"


@functools.lru_cache(maxsize=64)
def _max_age(delta: timedelta) -> str:
    return format_duration(delta)


def _age(delta: timedelta) -> str:
    """Whole days past a day (what a report reader needs), finer below."""
    if delta.days >= 1:
        return f"{delta.days}d"
    return format_duration(timedelta(seconds=max(int(delta.total_seconds()), 0)))


# -- checks -----------------------------------------------------------------------------------
# Each returns None when the rule passes (or does not apply), else a function that says why:
# only the report's own moment needs the words; the trend's other points only count.

Why = Callable[[], str]


def rotation_enabled(s: State) -> Why | None:
    if s.facts.dispute:
        return lambda: "held back: its account belongs to another credential (`keyturn accounts`)"
    if not s.facts.target:
        return lambda: "no target: nothing rotates it; give it a target in the inventory"
    return None


def scheduled(s: State) -> datetime | None:
    """When the schedule rotates it; None when nothing does (no target, held back), as the
    dashboard's `unscheduled`. Its max age still applies (`rotated-within-max-age`)."""
    return s.due_at if rotation_enabled(s) is None else None


def rotated_within_max_age(s: State) -> Why | None:
    when, current = s.due_at, s.current
    if current is None or when is None or s.at < when:
        return None
    return lambda: (
        f"version {current.number} is {_age(s.at - current.activated_at)} old; max age "
        f"{_max_age(s.policy.max_age)}, due since {_day(when)}"
    )


def last_rotation_succeeded(s: State) -> Why | None:
    scheduled = [r for r in s.rotations if r.trigger == "schedule"]
    if not scheduled:
        return None
    last = scheduled[-1]
    if last.finished_at is not None and last.finished_at <= s.at:
        if last.status in FAILED_ROTATION:
            return lambda: f"the scheduled rotation of {_day(last.started_at)} {last.status}"
        return None
    if last.status == "retrying" and last.updated_at <= s.at:
        return lambda: f"the scheduled rotation of {_day(last.started_at)} failed and is retrying"
    return None


def unused(s: State) -> Why | None:
    used = s.last_used
    since = used or s.facts.created_at
    if s.at - since < timedelta(days=s.unused_days):
        return None
    if used is None:
        return lambda: f"never read and no consumer heartbeat since it was added {_day(since)}"
    return lambda: (
        f"no read and no consumer heartbeat for {_age(s.at - since)} (last {_day(since)})"
    )


def has_owner(s: State) -> Why | None:
    return None if s.facts.owner.strip() else lambda: "no owner: set `owner` in the inventory"


def has_consumer(s: State) -> Why | None:
    if any(c.created_at <= s.at for c in s.facts.consumers):
        return None
    return lambda: "no consumer registered: nobody knows which services would break"


def in_sync(s: State) -> Why | None:
    sync = s.sync
    if sync in (None, "in-sync", "store-drift"):  # store drift: the target itself accepts
        return None
    if sync == "unverified":
        return lambda: "never verified: run `keyturn verify ID`"
    seen = s.facts.synced[s.index]
    assert seen is not None
    if sync == "out-of-sync":
        return lambda: f"the target refused the current value at {_day(seen[0])}"
    return lambda: f"the last verify ({_day(seen[0])}) found it {sync}"


def store_in_sync(s: State) -> Why | None:
    if s.current is None or not s.facts.stores:
        return None
    number = s.current.number
    held = {
        store for store, version, when in s.facts.published if version == number and when <= s.at
    }
    missing = [store for store in s.facts.stores if store not in held]
    if missing:
        return lambda: f"store(s) {', '.join(missing)} do not hold version {number}"
    if s.sync == "store-drift":
        seen = s.facts.synced[s.index]
        assert seen is not None
        return lambda: f"the last verify ({_day(seen[0])}) found a store out of sync"
    return None


def grace_end(s: State) -> datetime | None:
    if s.current is None:
        return None
    for rotation in reversed(s.rotations):
        if rotation.new_version == s.current.number and rotation.wait_until is not None:
            return rotation.wait_until
    return s.current.activated_at + s.policy.grace


def previous_past_grace(s: State) -> Why | None:
    end, previous = grace_end(s), s.previous
    if previous is None or end is None or s.at <= end:
        return None
    return lambda: (
        f"version {previous.number} is still accepted {_age(s.at - end)} after its grace "
        f"period ended ({_day(end)})"
    )


Check = Callable[[State], Why | None]

RULES: tuple[tuple[Rule, Check], ...] = (
    (
        Rule(
            "rotation-enabled",
            "Rotation enabled",
            "A policy with a max age applies and a target lets keyturn rotate the credential.",
            ("secretsmanager-rotation-enabled-check",),
        ),
        rotation_enabled,
    ),
    (
        Rule(
            "rotated-within-max-age",
            "Rotated within max age",
            "The current version is younger than the policy's max age (certificates: renewed "
            "at renew_at of their lifetime).",
            ("access-keys-rotated", "secretsmanager-secret-periodic-rotation"),
        ),
        rotated_within_max_age,
    ),
    (
        Rule(
            "last-rotation-succeeded",
            "Last scheduled rotation succeeded",
            "The latest rotation the schedule started did not fail, abort or keep retrying.",
            ("secretsmanager-scheduled-rotation-success-check",),
        ),
        last_rotation_succeeded,
    ),
    (
        Rule(
            "unused",
            "Used in the last N days",
            "Its value was read (API, CLI, a keyturn: reference) or a consumer reported within "
            "the last N days (default 90).",
            ("secretsmanager-secret-unused", "iam-user-unused-credentials-check"),
        ),
        unused,
    ),
    (
        Rule("has-owner", "Has an owner", "Someone is named to answer for the credential."),
        has_owner,
    ),
    (
        Rule(
            "has-consumer",
            "Has a consumer",
            "At least one consuming service is registered, so a rotation knows whom to move.",
        ),
        has_consumer,
    ),
    (
        Rule(
            "in-sync",
            "Target in sync",
            "The last check of the target (a verify, or a rotation's promotion) accepted the "
            "current value.",
        ),
        in_sync,
    ),
    (
        Rule(
            "store-in-sync",
            "Stores in sync",
            "Every store the credential is published to received its current version.",
        ),
        store_in_sync,
    ),
    (
        Rule(
            "previous-past-grace",
            "Previous version revoked after grace",
            "No previous version is still accepted after its grace period ended.",
        ),
        previous_past_grace,
    ),
)
RULE_IDS = tuple(rule.id for rule, _ in RULES)
BY_ID = {rule.id: rule for rule, _ in RULES}


def check(state: State, marks: Sequence[int] | None = None, bit: int = 0) -> list[Finding]:
    """Every rule *state* fails, in the order of RULES, and why. *marks*, when given, are a
    mask per rule (keyturn.report.trend's) that has *bit* set if the rule fails at *state*'s
    moment: only those rules are asked (the rest pass; tests/report compares both ways)."""
    found = []
    for k, (rule, test) in enumerate(_TESTS):
        if marks is not None and not marks[k] & bit:
            continue
        why = test(state)
        if why is not None:
            found.append(Finding(rule, why()))
    return found


_TESTS = tuple((rule.id, test) for rule, test in RULES)


def failing(state: State) -> tuple[str, ...]:
    """The ids of the rules *state* fails (what the trend counts)."""
    return tuple([rule for rule, test in _TESTS if test(state) is not None])
