"""The trend's fast path (keyturn.report.trend: masks over the points) against rebuilding
the report at each point (`build(at=point)`, whose rows come from the rules' own checks),
for the trend's counts and for the rows of a report with a trend (checked where the masks
say a rule fails)."""

from __future__ import annotations

import pytest

from keyturn.report import build
from tests.report.crafted import Craft, day
from tests.support.keyturn import Harness

pytestmark = pytest.mark.state_db


def crafted(craft: Craft) -> None:
    """Events on the points themselves (days 0, 7, 14, ...) and between them, so that
    every boundary of every rule falls on a point somewhere."""
    craft.policy("four-weeks", max_age="28d", notice="7d", grace="7d")
    craft.credential("acme/due", policy="four-weeks")  # due exactly at day 28, a point
    craft.credential("acme/rotated", policy="four-weeks", stores=("env", "env2"))
    craft.rotate("acme/rotated", day(35), revoked=None)  # previous past grace after day 42
    craft.publish("acme/rotated", day(35), 2, ["env"])
    craft.repair("acme/rotated", day(49), 2, "env2")  # both stores hold v2 from day 49
    craft.rotate("acme/rotated", day(70), wait_until=day(72), revoked=day(84))
    craft.credential("acme/read", created=day(3))
    craft.read("acme/read", day(14))  # unused (21 days) exactly at day 35
    craft.read("acme/read", day(50))
    craft.consumer("acme/read", "web", created=day(21), last_seen=day(63))
    craft.consumer("acme/read", "late", created=day(200), last_seen=day(201))
    craft.credential("acme/sched", owner="")
    craft.rotate("acme/sched", day(14), status="failed")
    craft.rotate("acme/sched", day(28), trigger="manual", revoked=day(28))
    craft.rotate("acme/sched", day(40), status="retrying")
    craft.rotate("acme/sched", day(56), revoked=day(57))
    craft.rotate("acme/sched", day(77), status="aborted")
    craft.credential("acme/verified", stores=("env",))
    craft.publish("acme/verified", day(0), 1, ["env"])
    craft.verify("acme/verified", day(7))
    craft.verify("acme/verified", day(20), status="store-drift")
    craft.verify("acme/verified", day(42), ok=False)
    craft.verify("acme/verified", day(42), status="unreachable")
    craft.verify("acme/verified", day(63))
    craft.credential("globex/bare", tenant="globex", owner="", target=False, created=day(30))


@pytest.mark.parametrize("unused_days", [21, 90, 0])
def test_every_trend_point_is_what_a_report_at_that_point_finds(
    kt: Harness, craft: Craft, unused_days: int
) -> None:
    crafted(craft)
    report = build(kt.app, at=day(105), trend_weeks=16, unused_days=unused_days)
    assert [p.at for p in report.trend] == [day(7 * k) for k in range(16)]
    for point in report.trend:
        alone = build(kt.app, at=point.at, trend_weeks=1, unused_days=unused_days)
        assert point.summary.to_dict() == alone.total.to_dict(), point.at
        # With a trend, the rows' checks ask only the rules the masks find failing at the
        # report's moment: the same rows and words as the rules' checks of every rule.
        trended = build(kt.app, at=point.at, trend_weeks=4, unused_days=unused_days)
        assert trended.to_dict()["credentials"] == alone.to_dict()["credentials"], point.at
    # And off the points: a moment between them, its own trend ending there.
    between = build(kt.app, at=day(45), trend_weeks=7, unused_days=unused_days)
    for point in between.trend:
        alone = build(kt.app, at=point.at, trend_weeks=1, unused_days=unused_days)
        assert point.summary.to_dict() == alone.total.to_dict(), point.at


def test_the_crafted_history_exercises_every_rule(kt: Harness, craft: Craft) -> None:
    """A guard on the test above: each rule fails somewhere, and its count changes over the
    trend (the fast path's intervals are walked, not only its constants)."""
    crafted(craft)
    report = build(kt.app, at=day(105), trend_weeks=16, unused_days=21)
    for rule in report.total.findings:
        counts = [p.summary.findings[rule] for p in report.trend]
        assert max(counts) > 0 and len(set(counts)) > 1, (rule, counts)
