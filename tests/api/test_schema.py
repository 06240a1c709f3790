"""Property-based: schemathesis drives every operation of the OpenAPI document in process
(ASGI) with an admin token; no 5xx, and every response matches the document."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import checks

from keyturn import auth
from keyturn.api import create_app
from keyturn.api.ratelimit import FailureLimiter
from tests.api.conftest import EXTRA
from tests.engine.conftest import INITIAL, inventory
from tests.support.keyturn import Harness

CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
]


@pytest.fixture
def admin_token(kt: Harness) -> str:
    with kt.app.db.write() as session:
        return auth.create_token(session, "admin").token


@pytest.fixture
def api_schema(kt: Harness) -> Iterator[Any]:
    kt.write("keyturn.toml", inventory("dual") + EXTRA)
    env = {"INITIAL_PW": INITIAL, "OTHER_PW": "other-x-1", "GLOBEX_PW": "globex-x-1"}
    assert kt.cli("apply", "keyturn.toml", env=env).code == 0
    # The failed-login limiter as it runs in production (10 failures a minute per address).
    app = create_app(kt.app, limiter=FailureLimiter())
    yield schemathesis.openapi.from_asgi("/api/v1/openapi.json", app)


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_api_conforms_to_its_schema(case: Any, admin_token: str) -> None:
    case.call_and_validate(headers={"Authorization": f"Bearer {admin_token}"}, checks=CHECKS)
