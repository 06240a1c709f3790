"""`keyturn report` end to end: JSON, CSV and HTML show the same figures; --fail-on gates;
--at travels in time; bad input is one `error:` line; no secret in any format."""

from __future__ import annotations

import csv
import io
import json
import re
from html.parser import HTMLParser
from typing import Any

import pytest

from tests.report.crafted import SECRET, Craft, day
from tests.support.keyturn import Harness

AT = "2026-07-01T02:00:00Z"


class Tables(HTMLParser):
    """The text of every table cell, by table id; the <title>s of each chart, by name."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.titles: dict[str, list[str]] = {}
        self._chart = ""
        self._table: str | None = None
        self._cell: list[str] | None = None
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table":
            self._table = dict(attrs)["id"]
            self.tables[self._table or ""] = []
        elif tag == "tr" and self._table:
            self.tables[self._table].append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "svg":
            self._chart = dict(attrs)["data-chart"] or ""
        elif tag == "title":
            self._in_title = True
            self.titles.setdefault(self._chart, []).append("")

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self._table = None
        elif tag in ("td", "th") and self._cell is not None and self._table:
            self.tables[self._table][-1].append("".join(self._cell))
            self._cell = None
        elif tag == "title":
            self._in_title = False

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)
        if self._in_title:
            self.titles[self._chart][-1] += data


def text(value: Any) -> str:
    """A JSON value as the CSV and HTML renderings write it."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def expected(row: dict[str, Any], columns: list[str]) -> list[str]:
    out = []
    for column in columns:
        if column == "findings":
            out.append(" ".join(f["rule"] for f in row["findings"]))
        else:
            out.append(text(row[column]))
    return out


@pytest.fixture
def crafted(kt: Harness, craft: Craft) -> Harness:
    craft.policy("month", max_age="30d", notice="7d")
    craft.credential("acme/smtp", owner="=HYPERLINK(1)")
    craft.credential("acme/db", kind="postgres", policy="month", stores=("env",))
    craft.credential("globex/api", tenant="globex", kind="api-key", owner="", target=False)
    craft.consumer("acme/smtp", "web", created=day(1), last_seen=day(170))
    craft.read("globex/api", day(20))
    craft.verify("acme/smtp", day(2))
    craft.rotate("acme/db", day(100), revoked=day(101))
    craft.publish("acme/db", day(100), 2, ["env"])
    craft.rotate("acme/smtp", day(150), status="failed")
    return kt


def report(kt: Harness, *args: str) -> str:
    result = kt.cli("report", "--at", AT, *args)
    assert result.code == 0, result.err
    assert SECRET not in result.out + result.err
    return result.out


def test_json_csv_and_html_give_the_same_figures(crafted: Harness) -> None:
    data = json.loads(report(crafted, "--format", "json"))
    rows = {r["id"]: r for r in data["credentials"]}
    assert set(rows) == {"acme/smtp", "acme/db", "globex/api"}
    sheet = list(csv.reader(io.StringIO(report(crafted, "--format", "csv"))))
    columns = sheet[0]
    for line in sheet[1:]:
        want = expected(rows[line[0]], columns)
        # A spreadsheet formula in free text is neutralised with a leading quote.
        assert [c.removeprefix("'") for c in line] == want
    assert "'=HYPERLINK(1)" in [line[columns.index("owner")] for line in sheet[1:]]

    page = Tables()
    page.feed(report(crafted, "--format", "html"))
    html_rows = page.tables["credentials"]
    assert html_rows[0] == columns
    assert sorted(html_rows[1:]) == sorted(expected(rows[r[0]], columns) for r in html_rows[1:])
    assert len(html_rows) == len(rows) + 1
    for group, table in (("by_tenant", "by-tenant"), ("by_kind", "by-kind")):
        for line in page.tables[table][1:]:
            summary = data[group][line[0]]
            assert line[1:4] == [
                str(summary["credentials"]),
                str(summary["compliant"]),
                text(float(summary["compliant_percent"])),
            ]
            assert line[4:] == [str(n) for n in summary["findings"].values()]
    # Chart bars say "label: value"; the first title is the chart's own.
    bars = {
        name: dict(t.rsplit(": ", 1) for t in titles[1:]) for name, titles in page.titles.items()
    }
    assert bars["age"] == {k: str(v) for k, v in data["charts"]["age_bands"].items()}
    due = data["charts"]["due_per_week"]
    assert bars["due"]["overdue"] == str(data["charts"]["overdue"])
    assert [bars["due"][f"week of {w['week'][:10]}"] for w in due] == [str(w["due"]) for w in due]
    for name, group in (("tenant", "by_tenant"), ("kind", "by_kind")):
        totals = {k: str(sum(v["findings"].values())) for k, v in data[group].items()}
        assert bars[name] == totals


def test_the_html_is_one_file_with_its_charts(crafted: Harness) -> None:
    page = report(crafted, "--format", "html")
    assert page.count("<svg") == 5
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)
    assert "<script" not in page and "@media print" in page


def test_fail_on_is_a_compliance_gate(crafted: Harness) -> None:
    ok = crafted.cli("report", "--at", AT, "--format", "json", "--fail-on", "previous-past-grace")
    assert ok.code == 0, ok.err
    gate = crafted.cli("report", "--at", AT, "--fail-on", "has-owner", "--fail-on", "unused")
    assert gate.code == 1
    assert gate.err.startswith("error: ") and "globex/api" in gate.err
    assert "compliance at 2026-07-01" in gate.out  # the report is printed before the verdict
    assert crafted.cli("report", "--at", AT, "--fail-on", "all").code == 1
    # Before acme/db's 30 days ran out it was within its max age; on day 30 it is due.
    early = crafted.cli(
        "report", "--at", day(30).isoformat(), "--fail-on", "rotated-within-max-age"
    )
    assert early.code == 1 and "acme/db" in early.err
    before = crafted.cli(
        "report",
        "--at",
        "2026-01-30T01:59:59Z",
        "--kind",
        "postgres",
        "--fail-on",
        "rotated-within-max-age",
    )
    assert before.code == 0, before.err


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--fail-on", "no-such-rule"], "unknown rule 'no-such-rule'"),
        (["--at", "yesterday"], "--at is not an ISO time"),
        (["--format", "pdf"], "pdf"),
    ],
)
def test_bad_input_is_one_error_line(crafted: Harness, args: list[str], words: str) -> None:
    result = crafted.cli("report", *args)
    assert result.code != 0
    assert words in result.err
    assert result.out == ""


def test_output_file_and_selection(crafted: Harness) -> None:
    result = crafted.cli("report", "--at", AT, "-f", "json", "--tenant", "globex", "-o", "r.json")
    assert result.code == 0, result.err
    data = json.loads((crafted.home / "r.json").read_text())
    assert [r["id"] for r in data["credentials"]] == ["globex/api"]
    assert data["selection"]["tenant"] == "globex"
