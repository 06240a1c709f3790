"""Building the report: load history once; the rules' checks at the report's moment (the
rows and their findings), bit masks over the trend's points (keyturn.report.trend)."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta

from sqlalchemy import select

from keyturn.app import Keyturn
from keyturn.db.models import Policy as PolicyRow
from keyturn.db.models import utcnow
from keyturn.domain.inputs import check_moment
from keyturn.domain.model import PasswordRules
from keyturn.domain.policy import Policy, effective
from keyturn.report import facts as loader
from keyturn.report.facts import Facts, Selection
from keyturn.report.model import (
    AGE_BANDS,
    NO_VALUE,
    OVERDUE,
    Report,
    Summary,
    TrendPoint,
    collector_paused,
    days,
    max_days,
)
from keyturn.report.rules import DEFAULT_UNUSED_DAYS, Finding, State, check, state_at
from keyturn.report.trend import Grid, masks, summaries

WEEK = timedelta(days=7)
TREND_WEEKS = 8
DUE_WEEKS = 12


def build(
    app: Keyturn,
    *,
    at: datetime | None = None,
    tenant: str | None = None,
    kind: str | None = None,
    owner: str | None = None,
    unused_days: int = DEFAULT_UNUSED_DAYS,
    trend_weeks: int = TREND_WEEKS,
) -> Report:
    """The compliance report of the selected credentials at *at* (default now, aware UTC),
    with a trend of *trend_weeks* weekly points ending at *at*."""
    moment = check_moment(at, "at") if at else utcnow()
    points = [moment - WEEK * k for k in range(max(trend_weeks, 1) - 1, -1, -1)]
    selection = Selection(tenant, kind, owner)
    with collector_paused():
        with app.db.read() as session:
            history = loader.load(session, points, selection)
            rows = session.execute(select(PolicyRow)).scalars()
            policies = _Policies({row.name: row.settings for row in rows})
        last, grid, quiet = len(points) - 1, Grid(points), timedelta(days=unused_days)
        bit = 1 << last
        states, found = [], []
        for fact in history:
            policy = policies.of(fact)
            # The report's own moment: the rules' checks, with the words of each finding.
            state = state_at(fact, policy, moment, last, unused_days)
            if not last:
                states.append((state, check(state)))
                continue
            # Every point of the trend: keyturn.report.trend's masks, whose last point is
            # the report's moment: only the rules they find failing there are checked.
            marks = masks(fact, policy, grid, quiet)
            found.append(marks)
            states.append((state, check(state, marks[2:], bit) if marks[1] & bit else []))
        # A trend of one point is the report's own summary.
        trend = [TrendPoint(p, s) for p, s in zip(points, summaries(points, found), strict=True)]
        return _report(moment, unused_days, selection, states, trend if last else None)


class _Policies:
    """Effective policies, computed once per (kind, policy name)."""

    def __init__(self, settings: dict[str, dict[str, object]]) -> None:
        self.settings = settings
        self.cache: dict[tuple[str, str | None], Policy] = {}

    def of(self, fact: Facts) -> Policy:
        key = (fact.kind, fact.policy)
        if key not in self.cache:
            row = self.settings.get(fact.policy) if fact.policy else None
            self.cache[key] = effective(fact.kind, row, PasswordRules())
        return self.cache[key]


def _band(age: float | None, max_age: float, rules: tuple[str, ...]) -> str:
    if age is None:
        return NO_VALUE
    if "rotated-within-max-age" in rules:
        return OVERDUE
    ratio = age / max_age if max_age else 1.0
    return next((label for bound, label in AGE_BANDS if ratio < bound), AGE_BANDS[-1][1])


def _report(
    moment: datetime,
    unused_days: int,
    selection: Selection,
    states: list[tuple[State, list[Finding]]],
    trend: list[TrendPoint] | None,
) -> Report:
    failed = [tuple([f.rule for f in found]) for _, found in states]
    total: Counter[tuple[str, ...]] = Counter()
    groups: dict[str, dict[str, Counter[tuple[str, ...]]]] = {"tenant": {}, "kind": {}, "owner": {}}
    # Counted once per distinct (tenant, kind, owner, rules), not once per row and group.
    facts = [state.facts for state, _ in states]
    keys = [(f.tenant, f.kind, f.owner, rules) for f, rules in zip(facts, failed, strict=True)]
    combos = Counter(keys)
    for (tenant, kind, owner, rules), n in combos.items():
        total[rules] += n
        for name, key in (("tenant", tenant), ("kind", kind), ("owner", owner)):
            _count(groups[name], key or "(none)", rules, n)
    bands = dict.fromkeys([label for _, label in AGE_BANDS] + [OVERDUE, NO_VALUE], 0)
    weeks = [0] * DUE_WEEKS
    overdue = 0
    for (state, _), rules in zip(states, failed, strict=True):
        current, due = state.current, state.due_at
        age = days(moment - current.activated_at) if current else None
        bands[_band(age, max_days(state.policy.max_age), rules)] += 1
        if due is None or "rotation-enabled" in rules:
            continue
        if due <= moment:
            overdue += 1
        elif (week := int((due - moment) / WEEK)) < DUE_WEEKS:
            weeks[week] += 1
    summary = Summary.of(total)
    return Report(
        at=moment,
        unused_days=unused_days,
        selection={"tenant": selection.tenant, "kind": selection.kind, "owner": selection.owner},
        checked=states,
        total=summary,
        by_tenant=_sorted(groups["tenant"]),
        by_kind=_sorted(groups["kind"]),
        by_owner=_sorted(groups["owner"]),
        trend=[TrendPoint(moment, Summary.of(total))] if trend is None else trend,
        age_bands=bands,
        due_per_week=[(moment + WEEK * k, n) for k, n in enumerate(weeks)],
        overdue=overdue,
    )


def _count(
    groups: dict[str, Counter[tuple[str, ...]]], key: str, rules: tuple[str, ...], n: int
) -> None:
    counts = groups.get(key)
    if counts is None:
        counts = groups[key] = Counter()
    counts[rules] += n


def _sorted(groups: dict[str, Counter[tuple[str, ...]]]) -> dict[str, Summary]:
    return {key: Summary.of(groups[key]) for key in sorted(groups)}


__all__ = ["build"]
