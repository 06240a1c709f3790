"""The dashboard over the API tests' keyturn (tests/api/conftest.py): three credentials in
two tenants on a fault-injectable passwd-file target, and a token per role."""

from __future__ import annotations

import re
import time
from collections.abc import Callable

from fastapi.testclient import TestClient

from tests.api.conftest import CRED, GLOBEX, OTHER, Api, _flaky_plugin, api  # noqa: F401

__all__ = ["CRED", "GLOBEX", "OTHER", "Api", "csrf_of", "sign_in", "wait_for"]

CSRF = re.compile(r'name="csrf" value="([0-9a-f]{64})"')


def csrf_of(html: str) -> str:
    found = CSRF.search(html)
    assert found, "no CSRF token in the page"
    return found.group(1)


def sign_in(client: TestClient, token: str) -> str:
    """Sign *client* in with *token*; the CSRF token of its session."""
    form = client.get("/signin")
    assert form.status_code == 200
    answer = client.post(
        "/signin", data={"token": token, "csrf": csrf_of(form.text)}, follow_redirects=False
    )
    assert answer.status_code == 303, answer.text
    return csrf_of(client.get("/").text)


def wait_for(check: Callable[[], bool], what: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)
