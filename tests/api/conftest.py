"""An API over a keyturn with three credentials in two tenants and a token per role.

acme/smtp-admin   tenant acme, on a (fault-injectable) passwd-file target
acme/other        tenant acme, no target
globex/db         tenant globex, no target
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from fastapi.testclient import TestClient
from httpx import Response

from keyturn import auth, plugins
from keyturn.api import create_app
from keyturn.api.ratelimit import FailureLimiter
from keyturn.db import repo
from keyturn.db.models import Credential
from tests.engine.conftest import INITIAL, inventory
from tests.support.flaky import FlakyTarget
from tests.support.keyturn import Harness

CRED = "acme/smtp-admin"
OTHER = "acme/other"
GLOBEX = "globex/db"
USER = "admin@acme.example"
OTHER_PW = "other-Initial-value-42"
GLOBEX_PW = "globex-Initial-value-77"
ROLES = ("admin", "operator", "auditor", "consumer")

EXTRA = f"""
[[credentials]]
id = "{OTHER}"
kind = "api-key"
initial_secret = "env:OTHER_PW"

[[credentials]]
id = "{GLOBEX}"
tenant = "globex"
kind = "api-key"
initial_secret = "env:GLOBEX_PW"
"""


@pytest.fixture(autouse=True)
def _flaky_plugin() -> Iterator[None]:
    plugins.register("target", FlakyTarget)
    yield
    plugins.unregister("target", "test-flaky")


@dataclass
class Api:
    """A TestClient plus one token per role (and tenant-scoped ones on demand)."""

    kt: Harness
    client: TestClient
    tokens: dict[str, str] = field(default_factory=dict)
    token_ids: dict[str, str] = field(default_factory=dict)
    responses: list[Response] = field(default_factory=list)

    def token(
        self, key: str, role: str, scopes: list[str] | None = None, tenant: str | None = None
    ) -> str:
        with self.kt.app.db.write() as session:
            issued = auth.create_token(session, role, scopes, tenant, name=key)
        self.tokens[key], self.token_ids[key] = issued.token, issued.id
        return issued.token

    def call(self, who: str | None, method: str, path: str, **kwargs: Any) -> Response:
        headers = dict(kwargs.pop("headers", {}))
        if who is not None:
            headers["Authorization"] = f"Bearer {self.tokens.get(who, who)}"
        url = path if path.startswith(("/api/", "/metrics")) else f"/api/v1{path}"
        response = self.client.request(method, url, headers=headers, **kwargs)
        self.responses.append(response)
        return response

    def faults(self, **modes: Any) -> None:
        (self.kt.home / "control.json").write_text(json.dumps(modes))

    def all_values(self) -> set[str]:
        """Every value any version of any credential ever had."""
        app = self.kt.app
        with app.db.read() as session:
            ids = [c.id for c in session.query(Credential).all()]
            return {
                app.vault.reveal(v).reveal() for cid in ids for v in repo.versions(session, cid)
            }


@pytest.fixture
def api(kt: Harness) -> Iterator[Api]:
    kt.write("keyturn.toml", inventory("dual") + EXTRA)
    env = {"INITIAL_PW": INITIAL, "OTHER_PW": OTHER_PW, "GLOBEX_PW": GLOBEX_PW}
    result = kt.cli("apply", "keyturn.toml", env=env)
    assert result.code == 0, result.err
    app = create_app(kt.app, limiter=FailureLimiter(limit=10, window=60))
    with TestClient(app, raise_server_exceptions=False) as client:
        api = Api(kt, client)
        api.token("admin", "admin")
        api.token("operator", "operator")
        api.token("auditor", "auditor")
        api.token("consumer", "consumer", ["acme/smtp-*"])
        yield api


def is_envelope(response: Response) -> bool:
    body = response.json()
    return (
        response.headers["content-type"].startswith("application/json")
        and set(body) == {"error"}
        and set(body["error"]) == {"code", "message"}
        and all(isinstance(v, str) and v for v in body["error"].values())
    )
