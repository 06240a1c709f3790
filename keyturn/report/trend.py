"""The trend: at which points of it each credential fails each rule, as bit masks.

A credential's history is a few sorted lists (versions by activation, rotations by start,
uses, verifies, publishes), so each rule fails on a few intervals of time between its events
and the thresholds they start (due, unused, grace). Bit i of a mask is point i of the trend:
an interval becomes a mask with two bisections over the points, and a credential costs a
few masks, not a state per point. Counting the masks of every credential gives each point's
summary.

The reference is `rules.state_at` and `rules.failing` at every point, one state at a time;
tests/report compares both on crafted history (and `build(at=point)` for single points).
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta

from keyturn.domain.policy import Policy
from keyturn.report.facts import Facts, VersionFact
from keyturn.report.model import Summary
from keyturn.report.rules import FAILED_ROTATION, RULE_IDS, due

# One mask per rule, in the order of RULE_IDS, after two: the points the credential exists
# at, and the points at which it fails any rule.
Masks = tuple[int, ...]


class Grid:
    """The trend's points (sorted) and, by index, the masks of the points at or after it
    (`high`) and before it (`low`): the points in [a, b) are
    `high[bisect_left(points, a)] & low[bisect_left(points, b)]`."""

    __slots__ = ("full", "high", "low", "points")

    def __init__(self, points: Sequence[datetime]) -> None:
        n = len(points)
        self.points = list(points)
        self.full = (1 << n) - 1
        self.high = tuple(self.full ^ ((1 << i) - 1) for i in range(n + 1))
        self.low = tuple((1 << i) - 1 for i in range(n + 1))

    def span(self, start: datetime | None, end: datetime | None) -> int:
        """The mask of the points p with start <= p < end (None: unbounded)."""
        high = self.full if start is None else self.high[bisect_left(self.points, start)]
        return high if end is None else high & self.low[bisect_left(self.points, end)]


def _sooner(a: datetime | None, b: datetime | None) -> datetime | None:
    """The earlier of two ends, None being never."""
    if a is None:
        return b
    return a if b is None or a < b else b


def masks(fact: Facts, policy: Policy, grid: Grid, quiet: timedelta) -> Masks:
    """Which rules *fact* fails at each point of *grid*, *quiet* the unused period."""
    points, high = grid.points, grid.high
    exists = high[bisect_left(points, fact.created_at)]
    versions, target = fact.versions, fact.target
    live = high[bisect_left(points, versions[0].activated_at)] if versions else 0
    overdue, missing, past_grace = _version_masks(fact, policy, grid) if versions else (0, 0, 0)
    bad, drift = _sync_masks(fact, grid) if target and live else (0, 0)
    consumers = fact.consumers
    found = (
        exists if fact.dispute or not target else 0,
        overdue & exists,
        _rotation_mask(fact, grid) & exists if fact.rotations else 0,
        _unused_mask(fact, grid, quiet) & exists,
        0 if fact.owner.strip() else exists,
        grid.low[bisect_left(points, min([c.created_at for c in consumers]))] & exists
        if consumers
        else exists,
        live & bad & exists,
        (missing | (live & drift)) & exists if fact.stores else 0,
        past_grace & exists,
    )
    a, b, c, d, e, f, g, h, i = found
    return (exists, a | b | c | d | e | f | g | h | i, *found)


def _version_masks(fact: Facts, policy: Policy, grid: Grid) -> tuple[int, int, int]:
    """Overdue, missing from a store, previous past grace: each version while current."""
    points, high, low = grid.points, grid.high, grid.low
    overdue = missing = past_grace = 0
    versions = fact.versions
    held = _held(fact) if fact.stores else None
    last = len(versions) - 1
    for k, version in enumerate(versions):
        start = bisect_left(points, version.activated_at)
        window = high[start]
        if k < last:
            window &= low[bisect_left(points, versions[k + 1].activated_at)]
        if not window:
            continue  # never current at a point
        overdue |= window & high[bisect_left(points, due(fact, policy, version))]
        if held is not None:
            # Every store holds it once the last of them received it.
            times = [held.get((store, version.number)) for store in fact.stores]
            if None in times:
                missing |= window
            else:
                missing |= window & low[bisect_left(points, max(times))]  # type: ignore[type-var]
        if k:
            retired = versions[k - 1].retired_at
            if retired is not None:
                window &= low[bisect_left(points, retired)]
            if window:
                past_grace |= window & _past_grace(fact, policy, grid, version)
    return overdue, missing, past_grace


def _held(fact: Facts) -> dict[tuple[str, int], datetime]:
    """When each store first received each version."""
    held: dict[tuple[str, int], datetime] = {}
    for store, number, when in fact.published:
        seen = held.get((store, number))
        if seen is None or when < seen:
            held[(store, number)] = when
    return held


def _past_grace(fact: Facts, policy: Policy, grid: Grid, version: VersionFact) -> int:
    """The points after the grace end that the latest rotation so far recorded for
    *version* (its wait), else after the policy's grace from its promotion."""
    points = grid.points
    number = version.number
    ends: list[tuple[datetime, datetime]] = [
        (r.started_at, r.wait_until)
        for r in fact.rotations
        if r.new_version == number and r.wait_until is not None
    ]
    found = grid.high[bisect_right(points, version.activated_at + policy.grace)]
    if ends:
        found &= grid.low[bisect_left(points, ends[0][0])]
    for j, (since, end) in enumerate(ends):
        after = ends[j + 1][0] if j + 1 < len(ends) else None
        found |= grid.span(since, after) & grid.high[bisect_right(points, end)]
    return found


def _rotation_mask(fact: Facts, grid: Grid) -> int:
    """While each scheduled rotation is the latest: failed once it finished so, or retrying
    once it recorded so (until it finished)."""
    scheduled = [r for r in fact.rotations if r.trigger == "schedule"]
    found = 0
    for j, r in enumerate(scheduled):
        after = scheduled[j + 1].started_at if j + 1 < len(scheduled) else None
        if r.status in FAILED_ROTATION and r.finished_at is not None:
            found |= grid.span(max(r.started_at, r.finished_at), after)
        elif r.status == "retrying":
            found |= grid.span(max(r.started_at, r.updated_at), _sooner(r.finished_at, after))
    return found


def _distinct(values: Iterable[object]) -> list[object]:
    """The values of a carried per-point list, once each, in order (None left out)."""
    found: list[object] = []
    last = None
    for value in values:
        if value is not None and value is not last and value != last:
            found.append(value)
            last = value
    return found


def _unused_mask(fact: Facts, grid: Grid, quiet: timedelta) -> int:
    """Quiet for *quiet* since the latest use (or since creation before any)."""
    points, high, low = grid.points, grid.high, grid.low
    times: list[datetime] = _distinct(fact.used)  # type: ignore[assignment]
    if fact.consumers:
        seen = [c.last_seen_at for c in fact.consumers if c.last_seen_at is not None]
        if seen:
            times = sorted(set(times + seen))
    found = high[bisect_left(points, fact.created_at + quiet)]
    if not times:
        return found
    found &= low[bisect_left(points, times[0])]
    for k in range(len(times) - 1):
        quiet_from = high[bisect_left(points, times[k] + quiet)]
        found |= quiet_from & low[bisect_left(points, times[k + 1])]
    return found | high[bisect_left(points, times[-1] + quiet)]


def _sync_masks(fact: Facts, grid: Grid) -> tuple[int, int]:
    """Where the latest sync evidence is a problem (or none: unverified), and where it is a
    store drift."""
    points, high, low = grid.points, grid.high, grid.low
    seen: list[tuple[datetime, str]] = _distinct(fact.synced)  # type: ignore[assignment]
    if not seen:
        return grid.full, 0
    bad = low[bisect_left(points, seen[0][0])]
    drift = 0
    last = len(seen) - 1
    for k, (when, status) in enumerate(seen):
        if status == "in-sync":
            continue
        mask = high[bisect_left(points, when)]
        if k < last:
            mask &= low[bisect_left(points, seen[k + 1][0])]
        if status == "store-drift":
            drift |= mask
        else:
            bad |= mask
    return bad, drift


def summaries(points: Sequence[datetime], all_masks: Iterable[Masks]) -> list[Summary]:
    """Each point's summary from every credential's masks."""
    columns = [Counter(column) for column in zip(*all_masks, strict=True)]
    if not columns:
        return [Summary() for _ in points]
    exists, failing, rules = columns[0], columns[1], columns[2:]
    found = []
    for i in range(len(points)):
        bit = 1 << i
        present = sum(n for m, n in exists.items() if m & bit)
        summary = Summary(present, present - sum(n for m, n in failing.items() if m & bit))
        for rule, counts in zip(RULE_IDS, rules, strict=True):
            summary.findings[rule] = sum(n for m, n in counts.items() if m & bit)
        found.append(summary)
    return found


__all__ = ["Grid", "masks", "summaries"]
