"""The report's charts as inline SVG: no script, no CDN, readable printed.

Each `svg_*` function takes a `Report` and returns one `<svg>` element as text, escaped, so
the HTML report and the dashboard embed the same drawing. Labels and values come from the
report's own series, so a chart shows the figures the JSON holds.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from keyturn.report.model import Report, Summary

WIDTH, BAR, GAP, LABEL = 640, 18, 6, 150
PALETTE = ("#2b6cb0", "#c05621", "#2f855a", "#b7791f", "#6b46c1", "#c53030")


def _text(x: float, y: float, text: str, anchor: str = "start", size: int = 12) -> str:
    return (
        f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}">'
        f"{escape(text)}</text>"
    )


def _frame(title: str, height: int, body: list[str], name: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" data-chart="{name}" '
        f'role="img" aria-label="{escape(title)}" viewBox="0 0 {WIDTH} {height}" '
        f'width="{WIDTH}" height="{height}" font-family="sans-serif">'
        f"<title>{escape(title)}</title>{_text(0, 16, title, size=14)}{''.join(body)}</svg>"
    )


def bars(title: str, series: Sequence[tuple[str, int]], name: str, colour: str = PALETTE[0]) -> str:
    """Horizontal bars, one per (label, value), the value written at the end of each."""
    top = 28
    peak = max((v for _, v in series), default=0) or 1
    span = WIDTH - LABEL - 60
    body = []
    for i, (label, value) in enumerate(series):
        y = top + i * (BAR + GAP)
        length = span * value / peak
        body.append(_text(LABEL - 6, y + BAR - 5, label, "end"))
        body.append(
            f'<rect x="{LABEL}" y="{y}" width="{length:.1f}" height="{BAR}" fill="{colour}">'
            f"<title>{escape(label)}: {value}</title></rect>"
        )
        body.append(_text(LABEL + length + 4, y + BAR - 5, str(value)))
    if not series:
        body.append(_text(LABEL, top + BAR, "nothing to show"))
    height = top + max(len(series), 1) * (BAR + GAP) + 8
    return _frame(title, height, body, name)


def svg_age_vs_max_age(report: Report) -> str:
    """Credentials by age as a share of their max age (overdue: past their due time)."""
    return bars(
        "Age against max age (credentials)", list(report.age_bands.items()), "age", PALETTE[0]
    )


def svg_due_per_week(report: Report) -> str:
    """Rotations due in each of the coming weeks, overdue first."""
    series = [("overdue", report.overdue)]
    series += [(f"week of {week:%Y-%m-%d}", n) for week, n in report.due_per_week]
    return bars("Rotations due per week", series, "due", PALETTE[1])


def _findings(groups: dict[str, Summary]) -> list[tuple[str, int]]:
    return [(key, sum(s.findings.values())) for key, s in groups.items()]


def svg_findings_by_tenant(report: Report) -> str:
    return bars("Findings by tenant", _findings(report.by_tenant), "tenant", PALETTE[2])


def svg_findings_by_kind(report: Report) -> str:
    return bars("Findings by kind", _findings(report.by_kind), "kind", PALETTE[3])


def svg_trend(report: Report) -> str:
    """Share of compliant credentials at each weekly point, as a line with its values."""
    height, top, left, bottom = 220, 30, 40, 40
    points = report.trend
    plot_w, plot_h = WIDTH - left - 20, height - top - bottom
    step = plot_w / max(len(points) - 1, 1)
    body = [
        f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" '
        'stroke="#888"/>',
        _text(left - 4, top + 4, "100%", "end", 10),
        _text(left - 4, top + plot_h, "0%", "end", 10),
    ]
    coords = []
    for i, point in enumerate(points):
        x = left + i * step
        y = top + plot_h * (1 - point.summary.percent / 100)
        coords.append(f"{x:.1f},{y:.1f}")
        body.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{PALETTE[4]}"/>')
        body.append(_text(x, y - 6, f"{point.summary.percent:g}%", "middle", 10))
        body.append(_text(x, top + plot_h + 16, f"{point.at:%m-%d}", "middle", 10))
    body.insert(
        0,
        f'<polyline fill="none" stroke="{PALETTE[4]}" stroke-width="2" '
        f'points="{" ".join(coords)}"/>',
    )
    return _frame("Compliant credentials over time", height, body, "trend")


CHARTS = (
    svg_age_vs_max_age,
    svg_due_per_week,
    svg_findings_by_tenant,
    svg_findings_by_kind,
    svg_trend,
)

__all__ = [
    "CHARTS",
    "bars",
    "svg_age_vs_max_age",
    "svg_due_per_week",
    "svg_findings_by_kind",
    "svg_findings_by_tenant",
    "svg_trend",
]
