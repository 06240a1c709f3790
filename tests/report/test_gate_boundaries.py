"""Every rule through the command line: `keyturn report --at T --fail-on RULE` passes just
before the rule's boundary and fails at it (or just after it, for "past its grace")."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

import pytest

from tests.report.crafted import Craft, day
from tests.support.keyturn import Harness

SECOND = timedelta(seconds=1)


def _max_age(c: Craft) -> tuple[datetime, datetime]:
    c.credential("acme/x")  # smtp: 180 days
    return day(180) - SECOND, day(180)


def _failed(c: Craft) -> tuple[datetime, datetime]:
    c.credential("acme/x")
    c.rotate("acme/x", day(30), status="failed")
    return day(30) - SECOND, day(30)


def _unused(c: Craft) -> tuple[datetime, datetime]:
    c.credential("acme/x")
    c.read("acme/x", day(7))
    return day(97) - SECOND, day(97)


def _owner(c: Craft) -> tuple[datetime, datetime]:
    c.credential("acme/x", owner="", created=day(2))
    c.credential("acme/y")  # owned, there from the start
    return day(2) - SECOND, day(2)


def _consumer(c: Craft) -> tuple[datetime, datetime]:
    c.credential("acme/x")
    c.consumer("acme/x", "web", created=day(0))
    c.credential("acme/y", created=day(4))
    return day(4) - SECOND, day(4)


def _sync(c: Craft) -> tuple[datetime, datetime]:
    c.credential("acme/x")
    c.verify("acme/x", day(0))
    c.verify("acme/x", day(9), ok=False)
    return day(9) - SECOND, day(9)


def _store(c: Craft) -> tuple[datetime, datetime]:
    c.credential("acme/x", stores=("env",))
    c.publish("acme/x", day(0), 1, ["env"])
    c.rotate("acme/x", day(20), revoked=day(20))
    return day(20) - SECOND, day(20)


def _grace(c: Craft) -> tuple[datetime, datetime]:
    c.credential("acme/x")
    c.rotate("acme/x", day(40), trigger="manual", wait_until=day(41))
    return day(41), day(41) + SECOND


def _enabled(c: Craft) -> tuple[datetime, datetime]:
    c.credential("acme/x")
    c.credential("acme/y", target=False, created=day(3))
    return day(3) - SECOND, day(3)


CASES: dict[str, Callable[[Craft], tuple[datetime, datetime]]] = {
    "rotation-enabled": _enabled,
    "rotated-within-max-age": _max_age,
    "last-rotation-succeeded": _failed,
    "unused": _unused,
    "has-owner": _owner,
    "has-consumer": _consumer,
    "in-sync": _sync,
    "store-in-sync": _store,
    "previous-past-grace": _grace,
}


@pytest.mark.parametrize("rule", list(CASES))
def test_each_rule_gates_at_its_boundary(kt: Harness, craft: Craft, rule: str) -> None:
    before, at = CASES[rule](craft)
    args = ["report", "--format", "json", "--fail-on", rule, "-o", "r.json"]
    passing = kt.cli(*args[:-2], "--at", before.isoformat(), *args[-2:])
    assert passing.code == 0, passing.err
    failing = kt.cli(*args, "--at", at.isoformat())
    assert failing.code == 1
    assert f"error: 1 credential(s) fail {rule}:" in failing.err.splitlines()[-1]
