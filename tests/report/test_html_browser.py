"""The HTML report in headless Chromium (Debian's package, driven by Playwright; installed by
scripts/services.d/chromium.sh): it opens without console errors or requests to anywhere,
and shows its five charts, on screen and in print."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.report.crafted import Craft, day
from tests.support.keyturn import Harness

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium() -> str:
    path = os.environ.get("KEYTURN_TEST_CHROMIUM")
    if not path:
        pytest.fail("KEYTURN_TEST_CHROMIUM is not set: run scripts/services, then source .test-env")
    return path


def test_the_html_report_opens_in_chromium_and_shows_its_charts(kt: Harness, craft: Craft) -> None:
    from playwright.sync_api import sync_playwright

    craft.credential("acme/smtp")
    craft.credential("acme/db", kind="postgres", stores=("env",))
    craft.credential("globex/api", tenant="globex", kind="api-key", owner="")
    craft.rotate("acme/db", day(50), revoked=day(51))
    craft.read("acme/smtp", day(60))
    result = kt.cli("report", "--at", day(200).isoformat(), "-f", "html", "-o", "report.html")
    assert result.code == 0, result.err
    page_file = Path(kt.home / "report.html")
    problems: list[str] = []
    requests: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium(), args=FLAGS)
        try:
            page = browser.new_page()
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.on("request", lambda r: requests.append(r.url))
            page.goto(page_file.as_uri())
            for media in ("screen", "print"):
                page.emulate_media(media=media)
                charts = page.locator("svg.chart")
                assert charts.count() == 5
                for i in range(5):
                    box = charts.nth(i).bounding_box()
                    assert box is not None and box["width"] > 100 and box["height"] > 40
                assert page.locator("svg.chart rect").count() > 0
            assert page.locator("#credentials tbody tr").count() == 3
            assert page.title().startswith("keyturn compliance report")
            pdf = page.pdf()  # printing works and yields a document
            assert pdf.startswith(b"%PDF")
        finally:
            browser.close()
    assert problems == []
    assert requests == [page_file.as_uri()]
