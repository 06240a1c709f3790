"""Reading, declaring and rotating credentials over the API, as a client sees it."""

from __future__ import annotations

from tests.api.conftest import CRED, GLOBEX, OTHER, OTHER_PW, USER, Api
from tests.engine.conftest import INITIAL


def test_health_needs_no_token_and_shows_nothing_secret(api: Api) -> None:
    response = api.call(None, "GET", "/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "version": response.json()["version"]}


def test_openapi_document_lists_every_route(api: Api) -> None:
    doc = api.call(None, "GET", "/openapi.json").json()
    assert "/api/v1/credentials/{credential_id}/secret" in doc["paths"]
    assert doc["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"


def test_list_filters_and_metadata(api: Api) -> None:
    listed = api.call("admin", "GET", "/credentials").json()
    assert [c["id"] for c in listed["credentials"]] == [OTHER, CRED, GLOBEX]
    assert {c["due"] for c in listed["credentials"]} == {"ok"}
    by_tenant = api.call("operator", "GET", "/credentials", params={"tenant": "globex"}).json()
    assert [c["id"] for c in by_tenant["credentials"]] == [GLOBEX]
    by_kind = api.call("auditor", "GET", "/credentials", params={"kind": "smtp"}).json()
    assert [c["id"] for c in by_kind["credentials"]] == [CRED]
    assert api.call("admin", "GET", "/credentials", params={"status": "due"}).json() == {
        "credentials": [],
        "next_offset": None,
    }
    page = api.call("admin", "GET", "/credentials", params={"limit": 2}).json()
    assert len(page["credentials"]) == 2 and page["next_offset"] == 2
    one = api.call("auditor", "GET", f"/credentials/{CRED}").json()
    assert (one["tenant"], one["strategy"], one["usernames"], one["version"]) == (
        "acme",
        "dual",
        [USER],
        1,
    )


def test_secret_versions_and_rotation_round_trip(api: Api) -> None:
    secret = api.call("consumer", "GET", f"/credentials/{CRED}/secret")
    assert secret.status_code == 200 and secret.json()["value"] == INITIAL
    assert secret.headers["cache-control"] == "no-store"
    rotated = api.call("operator", "POST", f"/credentials/{CRED}/rotate", json={"reason": "drill"})
    assert rotated.status_code == 200
    assert (rotated.json()["status"], rotated.json()["version"]) == ("done", 2)
    new = api.call("admin", "GET", f"/credentials/{CRED}/secret").json()
    assert new["version"] == 2 and new["value"] not in (INITIAL, "")
    versions = api.call("auditor", "GET", f"/credentials/{CRED}/versions").json()
    assert [(v["number"], v["state"]) for v in versions] == [(2, "current"), (1, "retired")]
    assert all("value" not in v for v in versions)
    trail = api.call("auditor", "GET", "/audit", params={"credential": CRED}).json()["entries"]
    start = next(e for e in trail if e["action"] == "rotation.start")
    assert start["actor"] == f"token:{api.token_ids['operator']}" and start["reason"] == "drill"
    reads = [e for e in trail if e["action"] == "secret.read"]
    assert [e["actor"] for e in reads] == [
        f"token:{api.token_ids['consumer']}",
        f"token:{api.token_ids['admin']}",
    ]


def test_previous_version_during_grace_and_consumer_report(api: Api) -> None:
    api.kt.write("keyturn.toml", (api.kt.home / "keyturn.toml").read_text().replace('"0s"', '"1d"'))
    assert api.kt.cli("apply", "keyturn.toml").code == 0
    assert api.call("admin", "PUT", f"/credentials/{CRED}/consumers/web").status_code == 200
    out = api.call("admin", "POST", f"/credentials/{CRED}/rotate", json={"reason": "r"}).json()
    assert out["status"] == "waiting" and out["step"] == "wait"
    previous = api.call("consumer", "GET", f"/credentials/{CRED}/secret?version=previous")
    assert previous.json()["value"] == INITIAL
    conflict = api.call("operator", "POST", f"/credentials/{CRED}/rotate", json={"reason": "r"})
    assert conflict.status_code == 409
    assert conflict.json()["error"]["code"] == "rotation_in_progress"
    report = api.call("consumer", "POST", f"/credentials/{CRED}/consumers/web", json={"version": 2})
    assert report.json() == {
        "name": "web",
        "version": 2,
        "last_seen_at": report.json()["last_seen_at"],
        "host": None,
        "process": None,
        "sdk_version": None,
        "fallbacks": 0,
    }
    resumed = api.call("operator", "POST", f"/credentials/{CRED}/resume").json()
    assert [r["status"] for r in resumed] == ["done"]
    assert api.call("auditor", "GET", f"/credentials/{CRED}/consumers").json()[0]["version"] == 2


def test_emergency_is_admin_only(api: Api) -> None:
    body = {"reason": "leaked in a log", "emergency": True}
    denied = api.call("operator", "POST", f"/credentials/{CRED}/rotate", json=body)
    assert denied.status_code == 403
    done = api.call("admin", "POST", f"/credentials/{CRED}/rotate", json=body)
    assert done.status_code == 200 and done.json()["status"] == "done"
    trail = api.call("admin", "GET", "/audit", params={"action": "rotation.start"}).json()
    assert trail["entries"][-1]["details"]["trigger"] == "emergency"


def test_failed_rotation_reports_its_outcome_and_abort(api: Api) -> None:
    api.faults(set="down")
    out = api.call("admin", "POST", f"/credentials/{CRED}/rotate", json={"reason": "try"})
    assert out.status_code == 200
    assert out.json()["status"] == "retrying" and "down" in out.json()["error"]
    assert api.call("operator", "POST", f"/credentials/{CRED}/verify").json()["status"] == (
        "in-sync"
    )
    aborted = api.call("operator", "POST", f"/credentials/{CRED}/abort", json={"reason": "no"})
    assert aborted.json()["status"] == "aborted"
    nothing = api.call("operator", "POST", f"/credentials/{CRED}/abort", json={"reason": "no"})
    assert nothing.status_code == 404


def test_create_update_delete_like_apply(api: Api) -> None:
    body = {
        "id": "acme/new-key",
        "kind": "api-key",
        "owner": "team-a",
        "initial_secret": {"value": "first-Value-123456"},
    }
    created = api.call("admin", "POST", "/credentials", json=body)
    assert created.status_code == 201, created.text
    assert "create credential acme/new-key" in created.json()["changes"]
    assert api.call("admin", "POST", "/credentials", json=body).status_code == 409
    got = api.call("admin", "GET", "/credentials/acme/new-key/secret").json()
    assert got["value"] == "first-Value-123456"
    updated = api.call(
        "admin", "PUT", "/credentials/acme/new-key", json={"kind": "api-key", "owner": "team-b"}
    )
    assert updated.json()["changes"] == ["update credential acme/new-key (owner)"]
    copy = {"id": "acme/copy", "initial_secret": f"keyturn:{OTHER}"}
    assert api.call("admin", "POST", "/credentials", json=copy).status_code == 201
    assert api.call("admin", "GET", "/credentials/acme/copy/secret").json()["value"] == OTHER_PW
    gone = api.call("admin", "DELETE", "/credentials/acme/new-key", params={"reason": "unused"})
    assert gone.status_code == 204
    assert api.call("admin", "GET", "/credentials/acme/new-key").status_code == 404
    entry = api.call("admin", "GET", "/audit", params={"action": "credential.delete"}).json()
    assert entry["entries"][0]["reason"] == "unused"


def test_declarations_follow_apply_rules(api: Api) -> None:
    cases = [
        ({"id": "acme/x", "tags": {"api_key": "plain"}}, "literal_secret"),
        ({"id": "acme/x", "owner": "AKIAIOSFODNN7EXAMPLEKEY1"}, "literal_secret"),
        ({"id": "acme/x", "initial_secret": "hunter2-Hunter2-hunter2"}, "literal_secret"),
        ({"id": "acme/x", "initial_secret": "env:KEYTURN_MASTER_KEY"}, "invalid"),
        ({"id": "acme/x", "initial_secret": "file:/etc/shadow"}, "invalid"),
        ({"id": "Acme/X"}, "invalid_id"),
        ({"id": "acme/secret"}, "invalid"),
        ({"id": "acme/x", "target": "nowhere"}, "target_not_found"),
        ({"id": "acme/x", "strategy": "alternating", "username": "a"}, "config_invalid"),
        ({"id": "acme/x", "strategy": "alternating", "usernames": ["a", "a"]}, "config_invalid"),
    ]
    for body, code in cases:
        response = api.call("admin", "POST", "/credentials", json=body)
        assert response.json().get("error", {}).get("code") == code, (body, response.text)
    assert api.call("admin", "GET", "/credentials/acme/x").status_code == 404


def test_tokens_create_list_revoke(api: Api) -> None:
    made = api.call("admin", "POST", "/tokens", json={"role": "auditor", "expires": "1d"})
    assert made.status_code == 201
    token, token_id = made.json()["token"], made.json()["id"]
    assert api.call(token, "GET", "/audit/verify").json()["ok"] is True
    listed = api.call("admin", "GET", "/tokens").json()
    assert token_id in {t["id"] for t in listed} and all("token" not in t for t in listed)
    assert api.call("admin", "DELETE", f"/tokens/{token_id}").status_code == 204
    revoked = api.call(token, "GET", "/audit/verify")
    assert revoked.status_code == 401 and "revoked" in revoked.json()["error"]["message"]
    bad = api.call("admin", "POST", "/tokens", json={"role": "consumer"})
    assert bad.status_code == 400
    assert api.call("admin", "POST", "/tokens", json={"role": "x"}).status_code == 422
    assert (
        api.call(
            "admin", "POST", "/tokens", json={"role": "admin", "expires": "99999w"}
        ).status_code
        == 400
    )


def test_a_token_name_that_looks_like_a_secret_is_refused(api: Api) -> None:
    """Token names are stored and listed in clear: a live token (or any high-entropy value)
    pasted as one is refused without being repeated; an ordinary name is taken."""
    live = api.tokens["admin"]
    for name in (live, "Zk8qP2vR9xT4mW7nB3cL6yH1"):
        refused = api.call("admin", "POST", "/tokens", json={"role": "auditor", "name": name})
        assert refused.status_code == 400 and name not in refused.text
        assert "looks like a secret" in refused.json()["error"]["message"]
    named = api.call("admin", "POST", "/tokens", json={"role": "auditor", "name": "ci deploy"})
    assert named.status_code == 201
    assert all(live not in str(t) for t in api.call("admin", "GET", "/tokens").json())
