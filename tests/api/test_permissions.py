"""Every route x every role, from one table written here (not read from the code), and
tenant and path scopes: outside them a token gets 404, never 403, and filtered lists."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.routing import APIRoute, iter_route_contexts

from keyturn.api import create_app
from tests.api.conftest import CRED, GLOBEX, GLOBEX_PW, OTHER, ROLES, Api, is_envelope

READ = {"admin", "operator", "auditor"}
ADMIN = {"admin"}
OPS = {"admin", "operator"}
ID = "/api/v1/credentials/{credential_id:path}"

# (method, route path) -> roles allowed; None: no token needed.
EXPECTED: dict[tuple[str, str], set[str] | None] = {
    ("GET", "/api/v1/health"): None,
    ("GET", "/api/v1/credentials"): READ,
    ("POST", "/api/v1/credentials"): ADMIN,
    ("GET", ID): READ,
    ("PUT", ID): ADMIN,
    ("DELETE", ID): ADMIN,
    ("GET", f"{ID}/versions"): READ,
    ("GET", f"{ID}/secret"): {"admin", "consumer"},
    ("GET", f"{ID}/consumers"): READ,
    ("PUT", f"{ID}/consumers/{{name}}"): ADMIN,
    ("POST", f"{ID}/consumers/{{name}}"): {"admin", "consumer"},
    ("POST", f"{ID}/rotate"): OPS,
    ("POST", f"{ID}/resume"): OPS,
    ("POST", f"{ID}/abort"): OPS,
    ("POST", f"{ID}/verify"): OPS,
    ("GET", "/api/v1/audit"): {"admin", "auditor"},
    ("GET", "/api/v1/audit/export"): {"admin", "auditor"},
    ("GET", "/api/v1/audit/verify"): {"admin", "auditor"},
    ("POST", "/api/v1/audit/verify"): {"admin", "auditor"},
    ("GET", "/api/v1/audit/checkpoint"): {"admin", "auditor"},
    ("GET", "/metrics"): READ,
    ("GET", "/api/v1/report"): READ,
    ("POST", "/api/v1/tokens"): ADMIN,
    ("GET", "/api/v1/tokens"): ADMIN,
    ("DELETE", "/api/v1/tokens/{token_id}"): ADMIN,
}

BODIES: dict[tuple[str, str], Any] = {
    ("POST", "/api/v1/credentials"): {"id": "acme/made-here", "kind": "api-key"},
    ("PUT", ID): {"tenant": "acme", "kind": "smtp", "owner": "ops"},
    ("POST", f"{ID}/consumers/{{name}}"): {"version": 1},
    ("POST", f"{ID}/rotate"): {"reason": "route table"},
    ("POST", f"{ID}/abort"): {"reason": "route table"},
    ("POST", "/api/v1/tokens"): {"role": "auditor"},
    ("POST", "/api/v1/audit/verify"): {
        "checkpoints": [
            {
                "format": "keyturn-audit-checkpoint/1",
                "database": "db-0",
                "seq": 1,
                "head": "0" * 64,
                "at": "2026-01-01T00:00:00+00:00",
                "key": "AAAA",
                "signature": "AAAA",
            }
        ]
    },
}
PARAMS = {("DELETE", ID): {"reason": "route table"}}


def test_the_table_covers_every_route(kt: Any) -> None:
    app = create_app(kt.app)
    routes = {
        (method, ctx.path)
        for ctx in iter_route_contexts(app.routes)
        if isinstance(ctx.route, APIRoute)
        for method in ctx.methods
    }
    assert routes == set(EXPECTED)


def _url(api: Api, path: str) -> str:
    throwaway = api.token("throwaway", "auditor")
    assert throwaway
    return (
        path.replace("{credential_id:path}", CRED)
        .replace("{name}", "web")
        .replace("{token_id}", api.token_ids["throwaway"])
    )


@pytest.mark.parametrize("route", sorted(EXPECTED), ids=lambda r: f"{r[0]} {r[1]}")
def test_route_by_role(api: Api, route: tuple[str, str]) -> None:
    method, path = route
    allowed = EXPECTED[route]
    url = _url(api, path)
    kwargs = {"json": BODIES.get(route), "params": PARAMS.get(route)}
    if allowed is None:
        assert api.call(None, method, url).status_code == 200
        return
    assert api.call(None, method, url, **kwargs).status_code == 401
    # Denied roles first: the allowed calls may change things (DELETE removes CRED).
    for role in sorted(ROLES, key=lambda r: r in allowed):
        response = api.call(role, method, url, **kwargs)
        if role in allowed:
            assert response.status_code not in (401, 403), (role, response.text)
            assert response.status_code < 500, (role, response.text)
        else:
            assert response.status_code == 403, (role, response.text)
            assert is_envelope(response) and response.json()["error"]["code"] == "forbidden"


def _tenant_tokens(api: Api) -> None:
    for role in ROLES:
        scopes = ["*"] if role == "consumer" else None
        api.token(f"acme-{role}", role, scopes, tenant="acme")


@pytest.mark.parametrize(
    ("role", "method", "suffix", "body"),
    [
        ("admin", "GET", "", None),
        ("admin", "GET", "/secret", None),
        ("admin", "PUT", "", {"tenant": "globex", "kind": "api-key"}),
        ("admin", "DELETE", "?reason=x", None),
        ("admin", "PUT", "/consumers/web", None),
        ("operator", "POST", "/rotate", {"reason": "x"}),
        ("operator", "POST", "/verify", None),
        ("operator", "POST", "/abort", {"reason": "x"}),
        ("auditor", "GET", "/versions", None),
        ("auditor", "GET", "/consumers", None),
        ("consumer", "GET", "/secret", None),
        ("consumer", "POST", "/consumers/web", {"version": 1}),
    ],
)
def test_other_tenants_ids_are_not_found(
    api: Api, role: str, method: str, suffix: str, body: Any
) -> None:
    _tenant_tokens(api)
    theirs = api.call(f"acme-{role}", method, f"/credentials/{GLOBEX}{suffix}", json=body)
    unknown = api.call(f"acme-{role}", method, f"/credentials/acme/nothing{suffix}", json=body)
    assert theirs.status_code == unknown.status_code == 404
    assert theirs.json()["error"]["code"] == unknown.json()["error"]["code"]
    assert GLOBEX_PW not in theirs.text
    assert api.call("admin", "GET", f"/credentials/{GLOBEX}").json()["owner"] == ""


def test_tenant_lists_audit_and_tokens_are_filtered(api: Api) -> None:
    _tenant_tokens(api)
    api.call("admin", "GET", f"/credentials/{GLOBEX}/secret")
    listed = api.call("acme-operator", "GET", "/credentials").json()["credentials"]
    assert {c["id"] for c in listed} == {CRED, OTHER}
    asked = api.call("acme-auditor", "GET", "/credentials", params={"tenant": "globex"}).json()
    assert asked["credentials"] == []
    entries = api.call("acme-auditor", "GET", "/audit", params={"limit": 1000}).json()["entries"]
    assert entries and {e["tenant"] for e in entries} == {"acme"}
    export = api.call("acme-auditor", "GET", "/audit/export").text
    assert GLOBEX not in export and CRED in export
    assert api.call("acme-auditor", "GET", "/audit/verify").json()["entries"] is None
    tokens = api.call("acme-admin", "GET", "/tokens").json()
    assert {t["tenant"] for t in tokens} == {"acme"}
    global_admin = api.token_ids["admin"]
    assert api.call("acme-admin", "DELETE", f"/tokens/{global_admin}").status_code == 404
    made = api.call("acme-admin", "POST", "/tokens", json={"role": "auditor"}).json()
    assert made["tenant"] == "acme"
    other = api.call("acme-admin", "POST", "/tokens", json={"role": "admin", "tenant": "globex"})
    assert other.status_code == 403
    create = {"id": "globex/new", "tenant": "globex"}
    assert api.call("acme-admin", "POST", "/credentials", json=create).status_code == 404
    elsewhere = {"id": "acme/new", "tenant": "globex"}
    assert api.call("acme-admin", "POST", "/credentials", json=elsewhere).status_code == 403
    # Another tenant's existing id answers as one that does not exist (it was 409 "exists").
    theirs = api.call("acme-admin", "POST", "/credentials", json={"id": GLOBEX, "tenant": "acme"})
    nothing = {"id": "globex/nothing", "tenant": "acme"}
    unknown = api.call("acme-admin", "POST", "/credentials", json=nothing)
    assert theirs.status_code == unknown.status_code == 404
    assert theirs.json()["error"]["message"].replace(GLOBEX, "X") == unknown.json()["error"][
        "message"
    ].replace("globex/nothing", "X")
    steal = {"id": "acme/stolen", "initial_secret": f"keyturn:{GLOBEX}"}
    assert api.call("acme-admin", "POST", "/credentials", json=steal).status_code == 404


def test_consumer_sees_only_its_path_globs(api: Api) -> None:
    assert api.call("consumer", "GET", f"/credentials/{CRED}/secret").status_code == 200
    for cred in (OTHER, GLOBEX):
        response = api.call("consumer", "GET", f"/credentials/{cred}/secret")
        assert response.status_code == 404 and response.json()["error"]["code"] == (
            "credential_not_found"
        )
        report = api.call(
            "consumer", "POST", f"/credentials/{cred}/consumers/web", json={"version": 1}
        )
        assert report.status_code == 404
