"""The JSON report written piece by piece (`Report.json_chunks`, which `keyturn report
--format json` and GET /report send) is, byte for byte, `json.dumps(report.to_dict())`."""

from __future__ import annotations

import json

import pytest

from keyturn.report import build
from tests.report.crafted import Craft, day
from tests.support.keyturn import Harness

pytestmark = pytest.mark.state_db

AT = "2026-03-01T02:00:00Z"


def crafted(craft: Craft) -> None:
    """Findings and none, empty and odd text (quotes, backslash, non-ASCII), a trend."""
    craft.policy("month", max_age="30d", notice="7d", grace="2d")
    craft.credential("acme/a", policy="month", stores=("env",), owner='o"w\\n "é" ✓')
    craft.credential("acme/b", owner="", target=False, created=day(2))
    craft.credential("globex/c", tenant="globex", kind="api-key", owner="line\nbreak\tü")
    craft.consumer("acme/a", "web", created=day(3), last_seen=day(45))
    craft.verify("acme/a", day(8), ok=False)
    craft.rotate("acme/a", day(33), wait_until=day(34), revoked=day(38))
    craft.rotate("globex/c", day(20), status="failed")
    craft.publish("acme/a", day(33), 2, ["env"])


@pytest.mark.parametrize("size", [1, 2, 3, 1000])
def test_the_pieces_are_the_dump_of_to_dict(kt: Harness, craft: Craft, size: int) -> None:
    crafted(craft)
    for at in (day(1), day(36), day(400)):
        report = build(kt.app, at=at, trend_weeks=3)
        pieces = list(report.json_chunks(size))
        assert "".join(pieces) == json.dumps(report.to_dict()), (size, at)
        assert len(pieces) == 2 + -(-len(report.checked) // size)
    empty = build(kt.app, at=day(36), tenant="nobody")
    assert "".join(empty.json_chunks(size)) == json.dumps(empty.to_dict())
    assert json.loads("".join(empty.json_chunks(size)))["credentials"] == []


def test_the_command_writes_the_same_bytes(kt: Harness, craft: Craft) -> None:
    """To a pipe and to a file: the compact dump and a newline (a terminal gets it indented)."""
    crafted(craft)
    want = json.dumps(build(kt.app, at=day(59), trend_weeks=8).to_dict()) + "\n"
    result = kt.cli("report", "--at", AT, "--format", "json")
    assert result.code == 0, result.err
    assert result.out == want
    result = kt.cli("report", "--at", AT, "--format", "json", "-o", "r.json")
    assert result.code == 0, result.err
    assert (kt.home / "r.json").read_text(encoding="utf-8") == want


def test_failing_ids_are_the_failing_rows(kt: Harness, craft: Craft) -> None:
    """--fail-on asks `failing_ids`, which makes no row: the ids of `failing`, in order."""
    crafted(craft)
    report = build(kt.app, at=day(36), trend_weeks=3)
    for rules in ([], ["rotation-enabled"], ["has-owner", "in-sync"], ["unused"]):
        assert report.failing_ids(rules) == [r.id for r in report.failing(rules)], rules
    assert report.failing_ids(["has-owner", "in-sync"]) == ["acme/b", "globex/c"]
