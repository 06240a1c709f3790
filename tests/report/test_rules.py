"""Each rule on crafted history, evaluated `at` chosen moments, boundaries included."""

from __future__ import annotations

from datetime import timedelta

import pytest

from keyturn.report import Report, build
from tests.report.crafted import Craft, day
from tests.support.keyturn import Harness

SECOND = timedelta(seconds=1)

# On the PostgreSQL pass too: the report's queries (buckets, JSON, raw times) differ by backend.
pytestmark = pytest.mark.state_db


def fails(kt: Harness, cid: str, rule: str, at: object, **kwargs: object) -> bool:
    report: Report = build(kt.app, at=at, trend_weeks=1, **kwargs)  # type: ignore[arg-type]
    row = next(r for r in report.rows if r.id == cid)
    return row.fails(rule)


def test_rotated_within_max_age_is_due_at_exactly_max_age(kt: Harness, craft: Craft) -> None:
    craft.credential("acme/smtp", kind="smtp")  # 180 days by default for smtp
    assert not fails(kt, "acme/smtp", "rotated-within-max-age", day(180) - SECOND)
    assert fails(kt, "acme/smtp", "rotated-within-max-age", day(180))
    report = build(kt.app, at=day(181), trend_weeks=1)
    (finding,) = [f for f in report.rows[0].findings if f.rule == "rotated-within-max-age"]
    assert "181d old" in finding.detail and "max age 180d" in finding.detail


def test_a_named_policy_sets_the_max_age_and_a_rotation_resets_the_age(
    kt: Harness, craft: Craft
) -> None:
    craft.policy("short", max_age="30d", notice="7d")
    craft.credential("acme/db", kind="postgres", policy="short")
    assert fails(kt, "acme/db", "rotated-within-max-age", day(30))
    craft.rotate("acme/db", day(35), revoked=day(35))
    assert not fails(kt, "acme/db", "rotated-within-max-age", day(65) - SECOND)
    assert fails(kt, "acme/db", "rotated-within-max-age", day(65))
    # Time travel to before the rotation still sees version 1, past its max age.
    assert fails(kt, "acme/db", "rotated-within-max-age", day(35) - SECOND)


def test_rotation_enabled_needs_a_target(kt: Harness, craft: Craft) -> None:
    craft.credential("acme/with-target")
    craft.credential("acme/no-target", target=False)
    report = build(kt.app, at=day(1), trend_weeks=1)
    by_id = {r.id: r for r in report.rows}
    assert not by_id["acme/with-target"].fails("rotation-enabled")
    assert by_id["acme/no-target"].fails("rotation-enabled")
    # Nothing rotates it: no next rotation (the dashboard's `unscheduled`), though its max
    # age still applies.
    assert by_id["acme/with-target"].next_rotation is not None
    assert by_id["acme/no-target"].next_rotation is None
    assert fails(kt, "acme/no-target", "rotated-within-max-age", day(200))


def test_last_scheduled_rotation_succeeded(kt: Harness, craft: Craft) -> None:
    craft.credential("acme/a")
    craft.rotate("acme/a", day(10), status="failed")
    assert not fails(kt, "acme/a", "last-rotation-succeeded", day(10) - SECOND)
    assert fails(kt, "acme/a", "last-rotation-succeeded", day(10))
    # A manual rotation does not hide the failed scheduled one; a later scheduled success does.
    craft.rotate("acme/a", day(11), trigger="manual", revoked=day(11))
    assert fails(kt, "acme/a", "last-rotation-succeeded", day(12))
    craft.rotate("acme/a", day(20), revoked=day(20))
    assert not fails(kt, "acme/a", "last-rotation-succeeded", day(20))
    craft.credential("acme/b")
    craft.rotate("acme/b", day(5), status="retrying")
    assert fails(kt, "acme/b", "last-rotation-succeeded", day(6))


def test_unused_at_exactly_n_days(kt: Harness, craft: Craft) -> None:
    craft.credential("acme/read")
    craft.read("acme/read", day(10))
    assert not fails(kt, "acme/read", "unused", day(100) - SECOND)
    assert fails(kt, "acme/read", "unused", day(100))
    # A custom N, and a read after the moment asked about does not count.
    assert fails(kt, "acme/read", "unused", day(40), unused_days=30)
    craft.read("acme/read", day(95))
    assert not fails(kt, "acme/read", "unused", day(100))
    assert not fails(kt, "acme/read", "unused", day(185) - SECOND)
    assert fails(kt, "acme/read", "unused", day(185))


def test_a_consumer_heartbeat_counts_as_use_and_never_used_counts_from_creation(
    kt: Harness, craft: Craft
) -> None:
    craft.credential("acme/hb", created=day(0))
    assert fails(kt, "acme/hb", "unused", day(90))
    assert not fails(kt, "acme/hb", "unused", day(90) - SECOND)
    craft.consumer("acme/hb", "web", created=day(1), last_seen=day(80))
    assert not fails(kt, "acme/hb", "unused", day(170) - SECOND)
    assert fails(kt, "acme/hb", "unused", day(170))
    # Before the heartbeat happened, it was not there yet.
    assert fails(kt, "acme/hb", "unused", day(79), unused_days=30)


def test_no_owner_and_no_consumer(kt: Harness, craft: Craft) -> None:
    craft.credential("acme/orphan", owner="  ")
    craft.credential("acme/owned")
    craft.consumer("acme/owned", "api", created=day(5))
    assert fails(kt, "acme/orphan", "has-owner", day(1))
    assert not fails(kt, "acme/owned", "has-owner", day(1))
    assert fails(kt, "acme/owned", "has-consumer", day(5) - SECOND)
    assert not fails(kt, "acme/owned", "has-consumer", day(5))
    assert fails(kt, "acme/orphan", "has-consumer", day(5))


def test_in_sync_follows_the_last_verify(kt: Harness, craft: Craft) -> None:
    craft.credential("acme/v")
    assert fails(kt, "acme/v", "in-sync", day(1))  # never verified
    craft.verify("acme/v", day(2))
    craft.verify("acme/v", day(4), ok=False)
    assert not fails(kt, "acme/v", "in-sync", day(2))
    assert not fails(kt, "acme/v", "in-sync", day(4) - SECOND)
    assert fails(kt, "acme/v", "in-sync", day(4))
    craft.rotate("acme/v", day(6), revoked=day(6))  # a promotion proves the new value works
    assert not fails(kt, "acme/v", "in-sync", day(6))
    craft.credential("acme/no-target", target=False)
    assert not fails(kt, "acme/no-target", "in-sync", day(6))


def test_store_in_sync_needs_the_current_version_in_every_store(kt: Harness, craft: Craft) -> None:
    craft.credential("acme/s", stores=("env", "env2"))
    assert fails(kt, "acme/s", "store-in-sync", day(1))
    craft.rotate("acme/s", day(3), revoked=day(3))
    craft.publish("acme/s", day(3), 2, ["env"])
    assert fails(kt, "acme/s", "store-in-sync", day(3))
    craft.publish("acme/s", day(4), 2, ["env2"])
    assert fails(kt, "acme/s", "store-in-sync", day(4) - SECOND)
    assert not fails(kt, "acme/s", "store-in-sync", day(4))
    craft.credential("acme/none")
    assert not fails(kt, "acme/none", "store-in-sync", day(4))


def test_previous_version_past_its_grace_period(kt: Harness, craft: Craft) -> None:
    craft.credential("acme/g")
    craft.rotate("acme/g", day(10), trigger="manual", wait_until=day(11), revoked=None)
    assert not fails(kt, "acme/g", "previous-past-grace", day(11))  # at the end: not past
    assert fails(kt, "acme/g", "previous-past-grace", day(11) + SECOND)
    craft.credential("acme/revoked")
    craft.rotate("acme/revoked", day(10), wait_until=day(11), revoked=day(11))
    assert not fails(kt, "acme/revoked", "previous-past-grace", day(12))
    # Without a recorded wait, the policy's grace (24h by default) counts from promotion.
    craft.credential("acme/policy-grace")
    craft.rotate("acme/policy-grace", day(10))
    assert not fails(kt, "acme/policy-grace", "previous-past-grace", day(11))
    assert fails(kt, "acme/policy-grace", "previous-past-grace", day(11) + SECOND)


def test_selection_and_summaries(kt: Harness, craft: Craft) -> None:
    craft.credential("acme/a", kind="smtp", owner="ann")
    craft.credential("acme/b", kind="postgres", owner="")
    craft.credential("globex/c", tenant="globex", kind="smtp", owner="ann")
    report = build(kt.app, at=day(1), trend_weeks=1)
    assert report.total.credentials == 3
    assert report.by_tenant["acme"].credentials == 2
    assert report.by_kind["smtp"].credentials == 2
    assert report.by_owner["(none)"].findings["has-owner"] == 1
    assert [r.id for r in build(kt.app, at=day(1), tenant="globex").rows] == ["globex/c"]
    assert [r.id for r in build(kt.app, at=day(1), kind="postgres").rows] == ["acme/b"]
    assert [r.id for r in build(kt.app, at=day(1), owner="ann").rows] == ["acme/a", "globex/c"]
    # A credential added after the moment asked about is not in the report.
    craft.credential("acme/later", created=day(5))
    assert "acme/later" not in [r.id for r in build(kt.app, at=day(4)).rows]


def test_trend_comes_from_history(kt: Harness, craft: Craft) -> None:
    craft.policy("month", max_age="30d", notice="7d")
    craft.credential("acme/t", policy="month")
    craft.verify("acme/t", day(0))
    craft.consumer("acme/t", "web", created=day(0), last_seen=day(60))
    craft.rotate("acme/t", day(40), revoked=day(40))
    report = build(kt.app, at=day(63), trend_weeks=10)
    points = {p.at: p.summary for p in report.trend}
    assert len(points) == 10
    overdue = [at for at, s in points.items() if s.findings["rotated-within-max-age"]]
    # Overdue from day 30 until the rotation on day 40 (the points are days 0, 7, ..., 63).
    assert overdue == [day(35)]
    assert points[day(63)].compliant == 1 == report.total.compliant


def test_the_trend_shortcut_gives_what_checking_every_point_gives(
    kt: Harness, craft: Craft
) -> None:
    """The reference: evaluate every rule at every point, no reuse between points."""
    from keyturn.report.build import _Policies
    from keyturn.report.facts import Selection, load
    from keyturn.report.rules import failing, state_at

    craft.policy("month", max_age="30d", notice="7d", grace="2d")
    craft.credential("acme/a", policy="month")
    craft.credential("acme/b", stores=("env",), created=day(12))
    craft.credential("acme/c", owner="", target=False)
    craft.consumer("acme/a", "web", created=day(3), last_seen=day(45))
    craft.read("acme/b", day(20))
    craft.verify("acme/a", day(8), ok=False)
    craft.verify("acme/a", day(22))
    craft.rotate("acme/a", day(33), wait_until=day(34), revoked=day(38))
    craft.rotate("acme/b", day(40), status="retrying")
    craft.publish("acme/a", day(33), 2, ["env"])
    for weeks, unused_days in ((26, 90), (26, 10), (9, 3)):
        report = build(kt.app, at=day(120), trend_weeks=weeks, unused_days=unused_days)
        points = [p.at for p in report.trend]
        with kt.app.db.read() as session:
            history = load(session, points, Selection())
        policies = _Policies({"month": {"max_age": "30d", "notice": "7d", "grace": "2d"}})
        for index, (point, got) in enumerate(zip(points, report.trend, strict=True)):
            want = {rule: 0 for rule in got.summary.findings}
            present = [f for f in history if f.created_at <= point]
            for fact in present:
                for rule in failing(state_at(fact, policies.of(fact), point, index, unused_days)):
                    want[rule] += 1
            assert got.summary.findings == want, point
            assert got.summary.credentials == len(present)


def test_store_drift_found_by_verify_and_a_repair(kt: Harness, craft: Craft) -> None:
    craft.credential("acme/d", stores=("env",))
    craft.publish("acme/d", day(0), 1, ["env"])
    craft.verify("acme/d", day(5), status="store-drift")  # the target accepts; the store not
    assert not fails(kt, "acme/d", "store-in-sync", day(5) - SECOND)
    assert fails(kt, "acme/d", "store-in-sync", day(5))
    assert not fails(kt, "acme/d", "in-sync", day(5))
    craft.verify("acme/d", day(7), status="unreachable")
    assert fails(kt, "acme/d", "in-sync", day(7))
    report = build(kt.app, at=day(7), trend_weeks=1)
    assert report.rows[0].sync == "unreachable"
    assert "found it unreachable" in next(
        f.detail for f in report.rows[0].findings if f.rule == "in-sync"
    )
    craft.credential("acme/r", stores=("env",))  # imported, never published
    assert fails(kt, "acme/r", "store-in-sync", day(1))
    craft.repair("acme/r", day(2), 1, "env")
    assert not fails(kt, "acme/r", "store-in-sync", day(2))


def test_the_json_rows_are_the_rows(kt: Harness, craft: Craft) -> None:
    """`to_dict` writes each credential straight from its state (keyturn.report.model.entry);
    the rows that CSV, HTML and /metrics use must say the same, in the same order."""
    craft.policy("month", max_age="30d", notice="7d", grace="2d")
    craft.credential("acme/a", policy="month", stores=("env",))
    craft.credential("acme/b", owner="", target=False, created=day(2))
    craft.consumer("acme/a", "web", created=day(3), last_seen=day(45))
    craft.consumer("acme/a", "api", created=day(1), last_seen=day(20))
    craft.verify("acme/a", day(8), ok=False)
    craft.rotate("acme/a", day(33), wait_until=day(34), revoked=day(38))
    craft.rotate("acme/a", day(50), revoked=None)
    craft.publish("acme/a", day(33), 2, ["env"])
    for at in (day(1), day(36), day(60), day(400)):
        report = build(kt.app, at=at, trend_weeks=3)
        rows = [row.to_dict() for row in report.rows]
        assert report.to_dict()["credentials"] == rows
        assert [r["id"] for r in rows] == sorted(r["id"] for r in rows)
    versions = next(r for r in rows if r["id"] == "acme/a")
    assert versions["last_rotation"] == "2026-02-20T02:00:00Z"  # version 3, of day 50
    assert versions["consumers"] == 2
