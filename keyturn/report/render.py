"""The report as CSV and as one self-contained HTML file (no script, no CDN, printable).

CSV and HTML share `cells`, the text of each column of a row, so every rendering shows the
figures of the JSON form (`Report.to_dict`).
"""

from __future__ import annotations

import csv
import io
from html import escape

from keyturn import __version__
from keyturn.report import charts
from keyturn.report.model import Report, Row, Summary, iso
from keyturn.report.rules import BY_ID, RULE_IDS

COLUMNS = (
    "id",
    "tenant",
    "kind",
    "owner",
    "purpose",
    "policy",
    "max_age_days",
    "age_days",
    "last_rotation",
    "next_rotation",
    "last_result",
    "consumers",
    "last_used",
    "sync",
    "compliant",
    "findings",
)
# A spreadsheet runs a cell that starts with one of these as a formula; free text is quoted.
_FORMULA = ("=", "+", "-", "@", "\t", "\r")
_FREE_TEXT = (COLUMNS.index("owner"), COLUMNS.index("purpose"))


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:g}"


def cells(row: Row) -> list[str]:
    """The row's columns as text, in COLUMNS order."""
    return [
        row.id,
        row.tenant,
        row.kind,
        row.owner,
        row.purpose,
        row.policy or "",
        _number(row.max_age_days),
        _number(row.age_days),
        iso(row.last_rotation) or "",
        iso(row.next_rotation) or "",
        row.last_result or "",
        str(row.consumers),
        iso(row.last_used) or "",
        row.sync or "",
        "yes" if row.compliant else "no",
        " ".join(f.rule for f in row.findings),
    ]


def to_csv(report: Report) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    for row in report.rows:
        # Owner and purpose are free text: keep a spreadsheet from running them.
        writer.writerow(
            [
                f"'{c}" if i in _FREE_TEXT and c.startswith(_FORMULA) else c
                for i, c in enumerate(cells(row))
            ]
        )
    return out.getvalue()


STYLE = """
body{font-family:sans-serif;margin:2em;color:#1a202c}
table{border-collapse:collapse;margin:1em 0;font-size:13px}
th,td{border:1px solid #cbd5e0;padding:3px 6px;text-align:left;vertical-align:top}
th{background:#edf2f7}
td.fail{color:#c53030}
.charts{display:flex;flex-wrap:wrap;gap:1.5em}
.chart{max-width:100%;height:auto}
@media print{body{margin:0}.chart{break-inside:avoid}tr{break-inside:avoid}}
"""


def _table(table_id: str, head: list[str], rows: list[list[str]]) -> str:
    header = "".join(f"<th>{escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table id="{table_id}"><thead><tr>{header}</tr></thead><tbody>{body}</tbody></table>'


def _summary_rows(groups: dict[str, Summary]) -> list[list[str]]:
    return [
        [key, str(s.credentials), str(s.compliant), f"{s.percent:g}"]
        + [str(s.findings[r]) for r in RULE_IDS]
        for key, s in groups.items()
    ]


def _sections(report: Report) -> list[str]:
    head = ["", "credentials", "compliant", "compliant %", *RULE_IDS]
    rules = [[r, BY_ID[r].title, BY_ID[r].explanation, ", ".join(BY_ID[r].aws)] for r in RULE_IDS]
    trend = [
        [
            iso(p.at) or "",
            str(p.summary.credentials),
            str(p.summary.compliant),
            f"{p.summary.percent:g}",
        ]
        for p in report.trend
    ]
    details = [[row.id, f.rule, f.detail] for row in report.rows for f in row.findings]
    return [
        "<h2>Summary</h2>",
        _table("summary", head, _summary_rows({"all": report.total})),
        "<h2>Charts</h2>",
        '<div class="charts">' + "".join(draw(report) for draw in charts.CHARTS) + "</div>",
        "<h2>Rules</h2>",
        _table("rules", ["id", "rule", "explanation", "AWS Config"], rules),
        "<h2>By tenant</h2>",
        _table("by-tenant", ["tenant", *head[1:]], _summary_rows(report.by_tenant)),
        "<h2>By kind</h2>",
        _table("by-kind", ["kind", *head[1:]], _summary_rows(report.by_kind)),
        "<h2>By owner</h2>",
        _table("by-owner", ["owner", *head[1:]], _summary_rows(report.by_owner)),
        "<h2>Trend</h2>",
        _table("trend", ["at", "credentials", "compliant", "compliant %"], trend),
        "<h2>Credentials</h2>",
        _table("credentials", list(COLUMNS), [cells(r) for r in report.rows]),
        "<h2>Findings</h2>",
        _table("findings", ["credential", "rule", "detail"], details),
    ]


def to_html(report: Report) -> str:
    """One HTML file that needs nothing else: styles and charts inline."""
    selected = ", ".join(f"{k} {v}" for k, v in report.selection.items() if v) or "all"
    title = f"keyturn compliance report, {iso(report.at)}"
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(title)}</title><style>{STYLE}</style></head><body>"
        f"<h1>{escape(title)}</h1>"
        f"<p>Credentials: {escape(selected)}. Unused after {report.unused_days} days. "
        f"keyturn {escape(__version__)}.</p>" + "".join(_sections(report)) + "</body></html>\n"
    )
