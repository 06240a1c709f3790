"""The report as values: rows, summaries, trend and chart series; `to_dict` is its JSON."""

from __future__ import annotations

import contextlib
import functools
import gc
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from keyturn.report.rules import BY_ID, RULE_IDS, Finding, State, naive_utc, scheduled

# Age against max age, in these bands (upper bounds, fractions of the max age).
AGE_BANDS = ((0.25, "0-25%"), (0.5, "25-50%"), (0.75, "50-75%"), (1.0, "75-100%"))
OVERDUE, NO_VALUE = "overdue", "no value"


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """Hundreds of thousands of small objects, none in a cycle: the cyclic garbage
    collector would walk them again and again (a third of the time) to free nothing.

    On the way out, what survived moves straight to the oldest generation (freeze, then
    unfreeze: no scan), else the next young collection walks it all once more (a second
    for 100,000 credentials). Nothing is kept from the collector: a full collection still
    sees those objects."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.freeze()
            gc.unfreeze()
            gc.enable()


def iso(moment: datetime | None) -> str | None:
    """An aware time in UTC as ISO 8601 with a Z."""
    return naive_utc(moment).isoformat() + "Z" if moment else None


def days(delta: timedelta) -> float:
    return round(delta.total_seconds() / 86400, 2)


@functools.lru_cache(maxsize=64)
def max_days(delta: timedelta) -> float:
    return days(delta)


def _consumers(state: State) -> int:
    consumers = state.facts.consumers
    return len([c for c in consumers if c.created_at <= state.at]) if consumers else 0


@dataclass(slots=True)  # not frozen: a frozen __init__ costs a call per field
class Row:
    """One credential at the report's moment. Times are aware UTC; ages in days."""

    id: str
    tenant: str
    kind: str
    owner: str
    purpose: str
    policy: str | None
    max_age_days: float
    age_days: float | None
    last_rotation: datetime | None  # when the current version became current
    next_rotation: datetime | None  # when it is due
    last_result: str | None  # the status of the latest rotation, any trigger
    consumers: int
    last_used: datetime | None
    sync: str | None  # in-sync | out-of-sync | unverified | None (no target)
    findings: tuple[Finding, ...]

    @classmethod
    def of(cls, state: State, found: list[Finding]) -> Row:
        fact, current = state.facts, state.current
        rotations = state.rotations
        return cls(
            id=fact.id,
            tenant=fact.tenant,
            kind=fact.kind,
            owner=fact.owner,
            purpose=fact.purpose,
            policy=fact.policy,
            max_age_days=max_days(state.policy.max_age),
            age_days=days(state.at - current.activated_at) if current else None,
            last_rotation=current.activated_at if current else None,
            next_rotation=scheduled(state),
            last_result=rotations[-1].status if rotations else None,
            consumers=_consumers(state),
            last_used=state.last_used,
            sync=state.sync,
            findings=tuple(found),
        )

    @property
    def compliant(self) -> bool:
        return not self.findings

    def fails(self, rule: str) -> bool:
        return any(f.rule == rule for f in self.findings)

    def to_dict(self) -> dict[str, Any]:
        findings = self.findings
        return {
            "id": self.id,
            "tenant": self.tenant,
            "kind": self.kind,
            "owner": self.owner,
            "purpose": self.purpose,
            "policy": self.policy,
            "max_age_days": self.max_age_days,
            "age_days": self.age_days,
            "last_rotation": iso(self.last_rotation),
            "next_rotation": iso(self.next_rotation),
            "last_result": self.last_result,
            "consumers": self.consumers,
            "last_used": iso(self.last_used),
            "sync": self.sync,
            "compliant": not findings,
            "findings": [{"rule": rule, "detail": detail} for rule, detail in findings],
        }


def entry(state: State, found: list[Finding]) -> dict[str, Any]:
    """`Row.of(state, found).to_dict()` without the Row in between (the JSON report of
    100,000 credentials makes no Row; tests/report pins that both agree)."""
    fact, current, at = state.facts, state.current, state.at
    rotations = state.rotations
    return {
        "id": fact.id,
        "tenant": fact.tenant,
        "kind": fact.kind,
        "owner": fact.owner,
        "purpose": fact.purpose,
        "policy": fact.policy,
        "max_age_days": max_days(state.policy.max_age),
        "age_days": days(at - current.activated_at) if current else None,
        "last_rotation": iso(current.activated_at) if current else None,
        "next_rotation": iso(scheduled(state)),
        "last_result": rotations[-1].status if rotations else None,
        "consumers": _consumers(state),
        "last_used": iso(state.last_used),
        "sync": state.sync,
        "compliant": not found,
        "findings": [{"rule": rule, "detail": detail} for rule, detail in found],
    }


@dataclass
class Summary:
    """How many credentials, how many pass every rule, how many fail each rule."""

    credentials: int = 0
    compliant: int = 0
    findings: dict[str, int] = field(default_factory=lambda: dict.fromkeys(RULE_IDS, 0))

    @classmethod
    def of(cls, counts: Mapping[tuple[str, ...], int]) -> Summary:
        """From how many credentials fail each combination of rules (() for none)."""
        summary = cls()
        for rules, n in counts.items():
            summary.credentials += n
            if not rules:
                summary.compliant += n
            for rule in rules:
                summary.findings[rule] += n
        return summary

    @property
    def percent(self) -> float:
        return round(100 * self.compliant / self.credentials, 1) if self.credentials else 100.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "credentials": self.credentials,
            "compliant": self.compliant,
            "compliant_percent": self.percent,
            "findings": dict(self.findings),
        }


@dataclass(frozen=True)
class TrendPoint:
    at: datetime
    summary: Summary

    def to_dict(self) -> dict[str, Any]:
        return {"at": iso(self.at), **self.summary.to_dict()}


@dataclass(frozen=True)
class Report:
    at: datetime
    unused_days: int
    selection: dict[str, str | None]
    # Each credential as it stood at *at* and the rules it fails: `rows` and the JSON's
    # "credentials" are made from these when asked for.
    checked: list[tuple[State, list[Finding]]]
    total: Summary
    by_tenant: dict[str, Summary]
    by_kind: dict[str, Summary]
    by_owner: dict[str, Summary]
    trend: list[TrendPoint]
    # Chart series: credentials per band of age against max age; rotations due per week.
    age_bands: dict[str, int]
    due_per_week: list[tuple[datetime, int]]
    overdue: int

    @functools.cached_property
    def rows(self) -> list[Row]:
        """One row per credential, by id."""
        with collector_paused():
            return [Row.of(state, found) for state, found in self.checked]

    def failing(self, rules: list[str]) -> list[Row]:
        """Rows failing any of *rules* (all rules when empty)."""
        wanted = set(rules or RULE_IDS)
        return [r for r in self.rows if any(f.rule in wanted for f in r.findings)]

    def failing_ids(self, rules: list[str]) -> list[str]:
        """The ids of `failing(rules)`, without making the rows (the CLI's --fail-on)."""
        wanted = set(rules or RULE_IDS)
        return [
            state.facts.id for state, found in self.checked if any(f.rule in wanted for f in found)
        ]

    def to_dict(self) -> dict[str, Any]:
        """The JSON form, whole; `json_chunks` writes the same text piece by piece."""
        with collector_paused():
            return self._as_dict()

    def json_chunks(self, size: int = 1000) -> Iterator[str]:
        """`json.dumps(self.to_dict())`, byte for byte, in pieces: everything before the
        credentials, then their entries *size* at a time. At 100,000 credentials the
        whole dict tree (400,000 dicts and lists) and its one 60 MB string never exist at
        once (half a gigabyte less, and about 0.5 s of page faults and freeing)."""
        head = json.dumps(self._head())
        yield head[:-1] + ', "credentials": ['
        checked = self.checked
        for start in range(0, len(checked), size):
            # Paused per piece, not across the yields: a server streams this to a client.
            with collector_paused():
                part = json.dumps([entry(s, found) for s, found in checked[start : start + size]])
            yield part[1:-1] if start == 0 else ", " + part[1:-1]
        yield "]}"

    def _head(self) -> dict[str, Any]:
        """The JSON form without its credentials (the same keys in the same order)."""
        return {
            "at": iso(self.at),
            "unused_days": self.unused_days,
            "selection": self.selection,
            "rules": [BY_ID[rule].as_dict() for rule in RULE_IDS],
            "summary": self.total.to_dict(),
            "by_tenant": {k: v.to_dict() for k, v in self.by_tenant.items()},
            "by_kind": {k: v.to_dict() for k, v in self.by_kind.items()},
            "by_owner": {k: v.to_dict() for k, v in self.by_owner.items()},
            "trend": [p.to_dict() for p in self.trend],
            "charts": {
                "age_bands": dict(self.age_bands),
                "due_per_week": [{"week": iso(w), "due": n} for w, n in self.due_per_week],
                "overdue": self.overdue,
            },
        }

    def _as_dict(self) -> dict[str, Any]:
        credentials = [entry(state, found) for state, found in self.checked]
        return {**self._head(), "credentials": credentials}
