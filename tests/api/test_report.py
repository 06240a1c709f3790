"""`GET /api/v1/report`: who may read it, what a tenant-scoped token sees, and that its JSON
is `build()`'s for the same moment, byte for byte (the CSV and HTML are the renderings of
that report)."""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime

import pytest

from keyturn.report import build, render
from tests.api.conftest import CRED, GLOBEX, OTHER, Api, is_envelope

pytestmark = pytest.mark.state_db

AT = "2030-06-01T00:00:00Z"
MOMENT = datetime.fromisoformat(AT)


def ids(body: dict[str, object]) -> list[str]:
    return [row["id"] for row in body["credentials"]]  # type: ignore[attr-defined, index]


def test_the_json_is_builds_for_the_same_moment(api: Api) -> None:
    response = api.call("admin", "GET", "/report", params={"at": AT})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    made = build(api.kt.app, at=MOMENT)
    # Streamed as it is encoded (Report.json_chunks): still the bytes of the whole dump.
    assert response.content == json.dumps(made.to_dict()).encode()
    assert response.json() == made.to_dict()
    assert ids(response.json()) == [OTHER, CRED, GLOBEX]


def test_filters_csv_and_html(api: Api) -> None:
    params = {"at": AT, "kind": "api-key", "weeks": "3", "unused_days": "10"}
    body = api.call("auditor", "GET", "/report", params=params).json()
    assert ids(body) == [OTHER, GLOBEX]
    assert len(body["trend"]) == 3 and body["unused_days"] == 10
    made = build(
        api.kt.app,
        at=MOMENT,
        kind="api-key",
        trend_weeks=3,
        unused_days=10,
    )
    text = api.call("auditor", "GET", "/report", params={**params, "format": "csv"})
    assert text.headers["content-type"].startswith("text/csv")
    assert text.text == render.to_csv(made)
    assert [r["id"] for r in csv.DictReader(io.StringIO(text.text))] == [OTHER, GLOBEX]
    page = api.call("operator", "GET", "/report", params={**params, "format": "html"})
    assert page.headers["content-type"].startswith("text/html")
    assert page.text == render.to_html(made)


def test_readers_only(api: Api) -> None:
    for role in ("admin", "operator", "auditor"):
        assert api.call(role, "GET", "/report").status_code == 200, role
    refused = api.call("consumer", "GET", "/report")
    assert refused.status_code == 403 and is_envelope(refused)
    assert "report.read" in refused.json()["error"]["message"]
    assert api.call(None, "GET", "/report").status_code == 401


def test_a_tenant_scoped_token_sees_its_tenant_only(api: Api) -> None:
    api.token("acme-admin", "admin", tenant="acme")
    body = api.call("acme-admin", "GET", "/report", params={"at": AT}).json()
    assert ids(body) == [OTHER, CRED]
    assert set(body["by_tenant"]) == {"acme"} and body["summary"]["credentials"] == 2
    assert body["selection"]["tenant"] == "acme"
    same = api.call("acme-admin", "GET", "/report", params={"at": AT, "tenant": "acme"})
    assert same.json() == body
    # Another tenant, existing or not: the same 404, nothing of globex in it.
    for other in ("globex", "nosuch"):
        refused = api.call("acme-admin", "GET", "/report", params={"tenant": other})
        assert refused.status_code == 404 and is_envelope(refused), other
        assert refused.json()["error"]["message"] == f"no tenant {other!r}"
    csv_text = api.call("acme-admin", "GET", "/report", params={"format": "csv"}).text
    assert GLOBEX not in csv_text
    # An unscoped admin may ask for any tenant.
    globex = api.call("admin", "GET", "/report", params={"tenant": "globex"}).json()
    assert ids(globex) == [GLOBEX]


@pytest.mark.parametrize(
    ("params", "status", "words"),
    [
        ({"format": "pdf"}, 422, "format"),
        ({"at": "yesterday"}, 422, "at"),
        ({"at": "2030-06-01T00:00:00"}, 400, "at needs a time zone"),
        ({"at": "1900-01-01T00:00:00Z"}, 400, "at is out of range"),
        ({"weeks": "0"}, 422, "weeks"),
        ({"unused_days": "x"}, 422, "unused_days"),
        ({"tenant": "Not A Tenant"}, 400, "tenant"),
        ({"kind": "../x"}, 400, "kind"),
    ],
)
def test_bad_parameters_are_one_clear_error(
    api: Api, params: dict[str, str], status: int, words: str
) -> None:
    response = api.call("admin", "GET", "/report", params=params)
    assert response.status_code == status, response.text
    assert is_envelope(response)
    message = response.json()["error"]["message"]
    assert words in message and "\n" not in message
