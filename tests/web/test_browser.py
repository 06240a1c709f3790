"""The dashboard in a real browser: Debian's Chromium, driven by Playwright.

Each test signs in through the sign-in page and works the page as a person would: with
the keyboard and the mouse, through the confirm dialog. Every page's HTML, every response
header and every console message is collected and searched for the credentials' values.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from playwright.sync_api import (
    Browser,
    ConsoleMessage,
    Page,
    Playwright,
    Response,
    expect,
    sync_playwright,
)

from keyturn import auth
from keyturn.app import Keyturn
from keyturn.db import repo
from keyturn.demo import run as run_demo
from keyturn.engine import service
from tests.web.browser import FLAGS, chromium_path, serving
from tests.web.conftest import CRED, GLOBEX, OTHER, Api

SIZES = {"desktop": {"width": 1280, "height": 800}, "phone": {"width": 390, "height": 844}}


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    chromium = playwright.chromium.launch(executable_path=chromium_path(), args=FLAGS)
    yield chromium
    chromium.close()


@dataclass
class Seen:
    """Everything the browser received or logged, for the leak checks."""

    texts: list[str] = field(default_factory=list)
    console: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # console errors (a CSP refusal, a bug)

    def response(self, response: Response) -> None:
        self.texts.append("".join(f"{k}: {v}\n" for k, v in response.all_headers().items()))
        if "text/html" in response.headers.get("content-type", ""):
            self.texts.append(response.text())

    def message(self, message: ConsoleMessage) -> None:
        self.console.append(message.text)
        if message.type == "error":
            self.errors.append(message.text)


@dataclass
class Session:
    page: Page
    base: str
    seen: Seen
    shots: Path

    def go(self, path: str) -> None:
        self.page.goto(self.base + path)

    def shot(self, name: str, full: bool = False) -> None:
        self.page.screenshot(path=str(self.shots / f"{name}.png"), full_page=full)


@pytest.fixture
def web(api: Api, browser: Browser, tmp_path: Path) -> Iterator[Session]:
    with serving(api.kt.app) as base:
        context = browser.new_context(viewport=SIZES["desktop"])
        page = context.new_page()
        seen = Seen()
        page.on("response", seen.response)
        page.on("console", seen.message)
        page.on("pageerror", lambda exc: seen.errors.append(str(exc)))
        yield Session(page, base, seen, tmp_path)
        context.close()


def sign_in(web: Session, token: str) -> None:
    web.go("/")
    expect(web.page).to_have_url(re.compile(r"/signin\?next="))
    web.page.get_by_label("API token").fill(token)
    web.page.get_by_label("API token").press("Enter")
    expect(web.page.get_by_role("heading", name="Inventory")).to_be_visible()


def no_leaks(api: Api, web: Session) -> None:
    values = api.all_values()
    assert values
    everything = "\n".join(web.seen.texts + web.seen.console)
    assert not [v for v in values if v in everything]
    assert not [t for t in api.tokens.values() if t in everything]
    assert web.seen.errors == []


def test_sign_in_filter_open_rotate_and_see_the_new_version(api: Api, web: Session) -> None:
    api.faults(set="slow", slow_seconds=1)  # slow enough to watch the steps go by
    sign_in(web, api.tokens["admin"])
    page = web.page
    expect(page.locator("tbody tr")).to_have_count(3)
    page.get_by_label("Tenant").select_option("acme")
    page.get_by_role("button", name="Apply").click()
    expect(page.locator("tbody tr")).to_have_count(2)
    expect(page.locator(f'tr[data-id="{GLOBEX}"]')).to_have_count(0)
    page.get_by_role("link", name=CRED).click()
    expect(page.get_by_role("heading", name=CRED)).to_be_visible()

    page.get_by_role("link", name="Rotate Credentials Now").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text(
        f"Rotate credentials for {CRED}? The target changes immediately."
    )
    # No reason: the browser refuses to send the form, and nothing starts.
    dialog.get_by_role("button", name="Rotate now").click()
    expect(dialog).to_be_visible()
    assert api.call("admin", "GET", f"/credentials/{CRED}").json()["rotation"] is None

    dialog.get_by_label("Reason").fill("rotate after the contractor left")
    dialog.get_by_role("button", name="Rotate now").click()
    progress = page.locator(".progress")
    expect(progress.locator('[data-step="set"][data-state="now"]')).to_be_visible(timeout=20_000)
    expect(page.locator('.progress[data-status="done"]')).to_be_visible(timeout=60_000)
    expect(page.locator('.progress [data-state="done"]')).to_have_count(8)
    expect(page.locator('tr[data-version="2"]')).to_contain_text("current")
    trail = page.locator('tr[data-action="rotation.done"]')
    expect(trail.first).to_be_visible()
    expect(page.locator("table.audit")).to_contain_text("rotate after the contractor left")
    no_leaks(api, web)


def test_post_without_csrf_token_is_refused_in_the_browser(api: Api, web: Session) -> None:
    sign_in(web, api.tokens["admin"])
    web.go(f"/credentials/{CRED}")
    # A form without the CSRF field, posted from the page itself with the session cookie.
    status = web.page.evaluate(
        """async (url) => {
            const body = new URLSearchParams({reason: "forged"});
            const headers = {"X-Keyturn-Fragment": "1"};
            return (await fetch(url, {method: "POST", body, headers})).status;
        }""",
        f"/credentials/{CRED}/rotate",
    )
    assert status == 403
    assert api.call("admin", "GET", f"/credentials/{CRED}").json()["rotation"] is None


def test_auditor_cannot_rotate(api: Api, web: Session) -> None:
    sign_in(web, api.tokens["auditor"])
    web.go(f"/credentials/{CRED}")
    expect(web.page.get_by_role("heading", name=CRED)).to_be_visible()
    expect(web.page.get_by_text("Rotate Credentials Now")).to_have_count(0)
    expect(web.page.get_by_text("Emergency rotate")).to_have_count(0)
    csrf = web.page.locator('input[name="csrf"]').first.get_attribute("value")
    status = web.page.evaluate(
        """async ([url, csrf]) => {
            const body = new URLSearchParams({reason: "forged", csrf});
            return (await fetch(url, {method: "POST", body})).status;
        }""",
        [f"/credentials/{CRED}/rotate", csrf],
    )
    assert status == 403
    assert api.call("admin", "GET", f"/credentials/{CRED}").json()["rotation"] is None
    web.go("/audit")
    expect(web.page.get_by_role("heading", name="Audit log")).to_be_visible()


def test_tenant_scoped_admin_sees_only_its_tenant(api: Api, web: Session) -> None:
    sign_in(web, api.token("acme-admin", "admin", tenant="acme"))
    rows = web.page.locator("tbody tr")
    expect(rows).to_have_count(2)
    expect(web.page.locator("tbody")).not_to_contain_text("globex")
    web.go(f"/credentials/{GLOBEX}")
    expect(web.page.get_by_role("heading", name="Not found")).to_be_visible()
    web.go("/audit")
    expect(web.page.locator("table.audit tbody")).not_to_contain_text("globex")


def test_keyboard_only_sign_in_and_navigation(api: Api, web: Session) -> None:
    web.go("/signin")
    page = web.page
    expect(page.get_by_label("API token")).to_be_focused()  # autofocus
    page.keyboard.type(api.tokens["operator"])
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Inventory")).to_be_visible()
    page.keyboard.press("Tab")
    expect(page.get_by_role("link", name="Skip to content")).to_be_focused()
    for _ in range(40):  # Tab along until the credential's link has the focus
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.textContent") == OTHER:
            break
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name=OTHER)).to_be_visible()


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[Keyturn]:
    """`keyturn demo`'s keyturn (three tenants, one rotated, one in its notice window)."""
    instance, mail, _ = run_demo(tmp_path / "demo", lambda _text: None)
    try:
        yield instance
    finally:
        mail.stop()
        instance.close()


def test_screenshots_at_desktop_and_phone_width(
    demo: Keyturn, browser: Browser, tmp_path: Path
) -> None:
    """The README's pictures, of the demo's data; with KEYTURN_TEST_SCREENSHOTS=DIR they
    are also saved there."""
    for name, version in (("webmail", 2), ("billing", 1), ("monitoring", None)):
        service.report_consumer(demo, "acme/smtp-admin", name, version or 1)
    with demo.db.write() as session:
        token = auth.create_token(session, "admin", name="screenshots").token
    with serving(demo) as base:
        context = browser.new_context(viewport=SIZES["desktop"])
        web = Session(context.new_page(), base, Seen(), tmp_path)
        web.page.on("response", web.seen.response)
        web.page.on("console", web.seen.message)
        sign_in(web, token)
        web.shot("inventory")
        web.go("/credentials/acme/smtp-admin")
        web.shot("credential")
        web.page.get_by_role("link", name="Rotate Credentials Now").click()
        web.page.get_by_role("dialog").get_by_label("Reason").fill("quarterly rotation, CHG-1234")
        web.shot("rotate-dialog")
        web.page.keyboard.press("Escape")
        web.go("/compliance")
        expect(web.page.locator("svg.chart")).to_have_count(5)
        web.shot("compliance", full=True)
        web.page.set_viewport_size(SIZES["phone"])
        web.go("/")
        wide = web.page.evaluate("document.documentElement.scrollWidth")
        assert wide <= SIZES["phone"]["width"]  # no sideways scrolling at phone width
        web.shot("inventory-phone")
        context.close()
    names = ("inventory", "credential", "rotate-dialog", "compliance", "inventory-phone")
    for name in names:
        assert (tmp_path / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    keep = os.environ.get("KEYTURN_TEST_SCREENSHOTS")
    if keep:
        for name in names:
            shutil.copy(tmp_path / f"{name}.png", Path(keep) / f"{name}.png")
    with demo.db.read() as session:
        values = {
            demo.vault.reveal(v).reveal()
            for c in repo.list_credentials(session)
            for v in repo.versions(session, c.id)
        }
    everything = "\n".join(web.seen.texts + web.seen.console)
    assert len(values) == 4 and not [v for v in values if v in everything]
    assert web.seen.errors == []
