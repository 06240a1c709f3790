"""The secret read's fast path (keyturn.api.routes.secret.FastRead) answers as the route does.

Every request below goes once to an app with the fast path and once to one without it (the
route alone, `create_app(..., fast_reads=False)`): same status, same body, same headers but
the date, and the same audit entries. A probe counts which requests the fast path took, so
that a pattern that stopped matching (everything falling through to the route) fails too.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from keyturn.api import create_app, reading
from keyturn.api.ratelimit import FailureLimiter
from keyturn.api.routes import secret
from keyturn.db.models import AuditEntry
from tests.api.conftest import CRED, GLOBEX, Api

# (path, query, headers, taken by the fast path)
CASES: list[tuple[str, str, dict[str, str], bool]] = [
    (f"/api/v1/credentials/{CRED}/secret", "", {}, True),
    (f"/api/v1/credentials/{CRED}/secret", "version=current", {}, True),
    (f"/api/v1/credentials/{CRED}/secret", "version=previous", {}, True),  # 404: none yet
    (f"/api/v1/credentials/{CRED}/secret", "version=next", {}, True),
    (f"/api/v1/credentials/{CRED}/secret", "version=nope", {}, False),  # 422 from the route
    (f"/api/v1/credentials/{CRED}/secret", "wait=0.1", {}, False),
    (f"/api/v1/credentials/{CRED}/secret", "version=current&x=1", {}, False),
    (f"/api/v1/credentials/{GLOBEX}/secret", "", {}, True),  # out of scope: 404
    ("/api/v1/credentials/no/such/secret", "", {}, True),
    ("/api/v1/credentials/UPPER/secret", "", {}, True),  # invalid id
    ("/api/v1/credentials/a/../b/secret", "", {}, True),
    (f"/api/v1/credentials/{CRED}/secret/secret", "", {}, True),
    (f"/api/v1/credentials/{CRED}/versions", "", {}, False),
    ("/api/v1/credentials//secret", "", {}, False),  # nothing between: the route's 404
]


@pytest.fixture
def twin(api: Api) -> Iterator[TestClient]:
    plain = create_app(api.kt.app, limiter=FailureLimiter(limit=10, window=60), fast_reads=False)
    with TestClient(plain, raise_server_exceptions=False) as client:
        yield client


@pytest.fixture
def taken(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    seen: list[str] = []
    real = secret._fast

    async def probe(scope: Any, *args: Any) -> None:
        seen.append(scope["path"])
        await real(scope, *args)

    monkeypatch.setattr(secret, "_fast", probe)
    return seen


def _audit_count(api: Api) -> int:
    with api.kt.app.db.read() as session:
        return int(session.execute(select(func.count()).select_from(AuditEntry)).scalar_one())


def _same(
    api: Api, twin: TestClient, who: str | None, path: str, query: str, headers: dict[str, str]
) -> Any:
    sent = dict(headers)
    if who is not None:
        sent["Authorization"] = f"Bearer {api.tokens.get(who, who)}"
    url = f"{path}?{query}" if query else path
    before = _audit_count(api)
    fast = api.client.get(url, headers=sent)
    fast_entries = _audit_count(api) - before
    plain = twin.get(url, headers=sent)
    assert _audit_count(api) - before == 2 * fast_entries  # the same entries, once each
    assert (fast.status_code, fast.content) == (plain.status_code, plain.content), url
    drop = {"date"}
    assert {k: v for k, v in fast.headers.items() if k not in drop} == {
        k: v for k, v in plain.headers.items() if k not in drop
    }, url
    return fast


def test_fast_and_routed_reads_answer_alike(api: Api, twin: TestClient, taken: list[str]) -> None:
    for path, query, headers, fast in CASES:
        count = len(taken)
        _same(api, twin, "consumer", path, query, headers)
        assert len(taken) == count + (1 if fast else 0), (path, query)
    first = _same(api, twin, "consumer", f"/api/v1/credentials/{CRED}/secret", "", {})
    assert first.status_code == 200 and first.json()["credential"] == CRED
    tag = first.headers["etag"]
    assert (
        _same(
            api, twin, "consumer", f"/api/v1/credentials/{CRED}/secret", "", {"If-None-Match": tag}
        ).status_code
        == 304
    )


def test_fast_path_refusals_are_the_routes(api: Api, twin: TestClient, taken: list[str]) -> None:
    path = f"/api/v1/credentials/{CRED}/secret"
    for who in (None, "kt_not-a-token", "nothing-like-a-token", "admin", "auditor"):
        _same(api, twin, who, path, "", {})
    _same(api, twin, None, path, "", {"Authorization": "Basic dXNlcjpwYXNz"})
    assert len(taken) == 6  # all of them by the fast path
    # A body sends a GET to the route (which the body limit guards).
    response = api.client.request(
        "GET",
        path,
        content=b"x" * 10,
        headers={"Authorization": f"Bearer {api.tokens['consumer']}"},
    )
    assert response.status_code == 200 and len(taken) == 6


def test_under_a_root_path_the_route_answers(api: Api) -> None:
    """Mounted under a prefix (ASGI root_path), paths are the router's to strip: the fast
    path stands aside, and both apps answer alike."""
    headers = {"Authorization": f"Bearer {api.tokens['consumer']}"}
    answers = []
    for fast in (True, False):
        app = create_app(api.kt.app, limiter=FailureLimiter(limit=10, window=60), fast_reads=fast)
        with TestClient(app, root_path="/api", raise_server_exceptions=False) as client:
            for url in (f"/api/v1/credentials/{CRED}/secret", f"/v1/credentials/{CRED}/secret"):
                response = client.get(url, headers=headers)
                answers.append((fast, url, response.status_code, response.content))
    assert [a[2:] for a in answers[:2]] == [a[2:] for a in answers[2:]]


def test_an_unexpected_failure_is_the_routes_500(
    api: Api,
    twin: TestClient,
    taken: list[str],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A bug under the fast path (which runs ahead of errors.CatchAll) is the same generic
    500 as under the route, logged with its class and never its message."""

    def broken(*_args: Any) -> None:
        raise RuntimeError("-".join(("message", "that", "could", "hold", "a", "value")))

    monkeypatch.setattr(reading, "fetch", broken)
    response = _same(api, twin, "consumer", f"/api/v1/credentials/{CRED}/secret", "", {})
    assert response.status_code == 500 and response.json()["error"]["code"] == "internal"
    assert len(taken) == 1
    assert "RuntimeError" in caplog.text and "message-that" not in caplog.text
