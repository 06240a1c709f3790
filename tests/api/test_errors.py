"""One error envelope, the right statuses, and nothing echoed back (datasette's
test_error_shape, for keyturn)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from keyturn import auth
from keyturn.api import create_app
from keyturn.api.errors import ErrorEnvelope
from keyturn.api.ratelimit import FailureLimiter
from keyturn.db.models import ApiToken, utcnow
from tests.api.conftest import CRED, Api, is_envelope

CASES: list[tuple[str, int, str, Callable[[Api], Any]]] = [
    ("bad id", 400, "invalid_id", lambda a: a.call("admin", "GET", "/credentials/Acme/X")),
    ("no token", 401, "unauthorized", lambda a: a.call(None, "GET", "/credentials")),
    ("bad token", 401, "unauthorized", lambda a: a.call("kt_nope", "GET", "/credentials")),
    ("not kt_", 401, "unauthorized", lambda a: a.call("Basic x", "GET", "/credentials")),
    ("role", 403, "forbidden", lambda a: a.call("consumer", "GET", "/credentials")),
    ("unknown", 404, "credential_not_found", lambda a: a.call("admin", "GET", "/credentials/a/b")),
    ("no route", 404, "not_found", lambda a: a.call("admin", "GET", "/nowhere")),
    ("method", 405, "method_not_allowed", lambda a: a.call("admin", "PATCH", "/tokens")),
    (
        "exists",
        409,
        "conflict",
        lambda a: a.call("admin", "POST", "/credentials", json={"id": CRED}),
    ),
    (
        "huge",
        413,
        "too_large",
        lambda a: a.call("admin", "POST", "/tokens", content=b"x" * 70_000),
    ),
    (
        "invalid body",
        422,
        "validation_failed",
        lambda a: a.call("admin", "POST", f"/credentials/{CRED}/rotate", json={}),
    ),
    (
        "not json",
        422,
        "validation_failed",
        lambda a: a.call(
            "admin", "POST", "/tokens", content=b"{", headers={"content-type": "application/json"}
        ),
    ),
]


@pytest.mark.parametrize(("name", "status", "code", "request_"), CASES, ids=[c[0] for c in CASES])
def test_error_shape(api: Api, name: str, status: int, code: str, request_: Any) -> None:
    response = request_(api)
    assert response.status_code == status, response.text
    assert is_envelope(response), response.text
    assert response.json()["error"]["code"] == code
    ErrorEnvelope.model_validate(response.json())
    assert "Traceback" not in response.text


def test_validation_errors_do_not_echo_input(api: Api) -> None:
    secret = "S3cret-Value-Never-Echo-9f8e7d"
    bodies: list[Any] = [
        {"id": "acme/x", "initial_secret": {"value": secret, "extra": secret}},
        {"id": "acme/x", "initial_secret": {"value": [secret]}},
        {"id": "acme/x", "owner": {"k": secret}},
        {"id": "acme/x", secret: 1},
        {"id": "acme/x", "strategy": secret},
        [secret],
    ]
    for body in bodies:
        response = api.call("admin", "POST", "/credentials", json=body)
        assert response.status_code == 422 and is_envelope(response)
        assert secret not in response.text
    assert api.call("admin", "GET", "/audit", params={"limit": 1000}).text.count(secret) == 0


def test_streamed_body_over_the_limit_is_refused(api: Api) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(20):
            yield b"x" * 8192

    response = api.call("admin", "POST", "/tokens", content=chunks())
    assert response.status_code == 413 and is_envelope(response)
    bogus = api.call("admin", "POST", "/tokens", content=b"{}", headers={"content-length": "-1"})
    assert bogus.status_code in (400, 413)


def test_a_path_with_a_control_character_is_not_found(api: Api) -> None:
    """Route patterns end in `$`, which matches before a final newline: `.../secret%0A`
    was served as the read of the credential (and logged as another path)."""
    assert api.call("admin", "GET", f"/credentials/{CRED}/secret").status_code == 200
    for tail in ("/secret%0A", "%0A", "/versions%0A", "/secret%00", "%0D%0A", "/secret%7F"):
        response = api.call("admin", "GET", f"/credentials/{CRED}{tail}")
        assert response.status_code == 404 and is_envelope(response), tail
        assert "value" not in response.json()
    assert api.call(None, "GET", "/%0A").status_code == 404


def test_repeated_bad_tokens_are_rate_limited(api: Api) -> None:
    for _ in range(10):
        assert api.call("kt_guess", "GET", "/credentials").status_code == 401
    limited = api.call("kt_guess", "GET", "/credentials")
    assert limited.status_code == 429 and is_envelope(limited)
    assert 1 <= int(limited.headers["retry-after"]) <= 60
    # Blocked addresses are blocked even with a good token until the window passes.
    assert api.call("admin", "GET", "/credentials").status_code == 429
    assert api.call(None, "GET", "/health").status_code == 200


def test_limiter_forgets_after_its_window_and_stays_bounded() -> None:
    now = [0.0]
    limiter = FailureLimiter(limit=3, window=60, max_clients=100, clock=lambda: now[0])
    for _ in range(3):
        limiter.failed("a")
    assert limiter.retry_after("a") == 60
    now[0] = 61
    assert limiter.retry_after("a") is None
    for n in range(1000):
        limiter.failed(f"10.0.{n // 250}.{n % 250}")
    assert len(limiter) == 100


def test_expired_and_revoked_tokens_are_refused(api: Api) -> None:
    with api.kt.app.db.write() as session:
        issued = auth.create_token(session, "admin", ttl=timedelta(seconds=60))
        session.get(ApiToken, issued.id).expires_at = utcnow() - timedelta(seconds=1)  # type: ignore[union-attr]
    response = api.call(issued.token, "GET", "/credentials")
    assert response.status_code == 401 and "expired" in response.json()["error"]["message"]
    assert response.headers["www-authenticate"] == "Bearer"


def test_concurrent_rotation_is_a_conflict(api: Api) -> None:
    api.faults(set="slow", slow_seconds=2)
    first: dict[str, Any] = {}

    def rotate() -> None:
        first["response"] = api.call(
            "admin", "POST", f"/credentials/{CRED}/rotate", json={"reason": "a"}
        )

    thread = threading.Thread(target=rotate)
    thread.start()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if api.call("admin", "GET", f"/credentials/{CRED}").json()["rotation"]:
            break
        time.sleep(0.05)
    second = api.call("operator", "POST", f"/credentials/{CRED}/rotate", json={"reason": "b"})
    thread.join(30)
    assert second.status_code == 409 and is_envelope(second), second.text
    assert second.json()["error"]["code"] == "rotation_in_progress"
    assert first["response"].json()["status"] == "done"


def test_unexpected_errors_are_a_generic_500(kt: Any, caplog: pytest.LogCaptureFixture) -> None:
    app = create_app(kt.app)
    secret = "Leaky-Exception-Message-1234"

    @app.get("/api/v1/boom")
    def boom() -> None:
        raise RuntimeError(secret)

    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/api/v1/boom")
    assert response.status_code == 500 and is_envelope(response)
    assert response.json()["error"]["code"] == "internal"
    assert secret not in response.text and secret not in caplog.text
    assert "RuntimeError" in caplog.text


def test_database_down_is_503(kt: Any) -> None:
    app = create_app(kt.app)
    with TestClient(app, raise_server_exceptions=False) as client:
        kt.app.db.engine.dispose()
        db_file = kt.home / "keyturn.db"
        if not db_file.exists():
            pytest.skip("not SQLite")
        db_file.rename(kt.home / "moved")
        (kt.home / "keyturn.db").mkdir()
        response = client.get("/api/v1/health")
    assert response.status_code == 503 and is_envelope(response)
    assert response.json()["error"]["code"] == "database_unavailable"
