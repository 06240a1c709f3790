"""/api/v1/docs and /api/v1/redoc work on a host with no way out: every script, style and
icon they load is served by keyturn itself (issue 13: Swagger UI came from a CDN)."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from keyturn.api import create_app
from tests.support.keyturn import Harness


@pytest.mark.parametrize("page", ["/api/v1/docs", "/api/v1/redoc"])
def test_docs_load_only_local_assets(kt: Harness, page: str) -> None:
    client = TestClient(create_app(kt.app))
    html = client.get(page)
    assert html.status_code == 200 and "keyturn API" in html.text
    assert not re.search(r"https?://", html.text), "a page must not reach outside"
    assets = re.findall(r'(?:src|href)="([^"]+)"', html.text)
    assert assets and all(a.startswith("/api/v1/docs/assets/") for a in assets)
    for asset in assets:
        loaded = client.get(asset)
        assert loaded.status_code == 200 and len(loaded.content) > 1000, asset
    assert "/api/v1/openapi.json" in html.text
    assert client.get("/api/v1/openapi.json").json()["info"]["title"] == "keyturn"


def test_swagger_ui_asks_no_remote_validator(kt: Harness) -> None:
    html = TestClient(create_app(kt.app)).get("/api/v1/docs").text
    assert '"validatorUrl": null' in html
