"""Compliance: which credentials break which rule, now, at any moment, and over time.

`build(app, at=..., tenant=..., kind=..., owner=...)` returns a `Report` (rows with their
findings, summaries by tenant, kind and owner, a weekly trend, chart series); `to_dict()` is
its JSON form, which the CSV and HTML renderings and `/metrics` agree with.
`keyturn.report.charts` draws its charts as inline SVG for the HTML report and the
dashboard.
"""

from __future__ import annotations

from keyturn.report.build import build
from keyturn.report.model import Report, Row, Summary, TrendPoint
from keyturn.report.rules import BY_ID, RULE_IDS, RULES, Finding, Rule

__all__ = [
    "BY_ID",
    "RULES",
    "RULE_IDS",
    "Finding",
    "Report",
    "Row",
    "Rule",
    "Summary",
    "TrendPoint",
    "build",
]
