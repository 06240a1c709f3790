"""Strict input at every boundary: one case per field class, through the API (4xx with the
envelope, nothing written, nothing broken for the next caller), the inventory file and the
CLI. The first cases are the ones issue 14 found."""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import func, select

from keyturn.db.models import AuditEntry, Credential, Rotation
from keyturn.domain.errors import UsageError
from keyturn.inventory import spec
from tests.api.conftest import CRED, Api, is_envelope

NEW = {"id": "acme/new", "kind": "api-key"}
ROTATE = f"/credentials/{CRED}/rotate"
REPORT = f"/credentials/{CRED}/consumers/web"

# (field class, method, path, json body, query parameters, status)
CASES: list[tuple[str, str, str, Any, Any, int]] = [
    ("text: lone surrogate", "POST", "/credentials", {**NEW, "tags": {"k": "\ud800"}}, None, 422),
    ("text: NUL", "POST", "/credentials", {**NEW, "username": "ad\x00min"}, None, 422),
    ("text: control", "POST", "/credentials", {**NEW, "owner": "ops\x1b[2J"}, None, 422),
    ("text: bidi", "POST", "/credentials", {**NEW, "owner": "ops\u202egnp.exe"}, None, 422),
    ("text: separator", "POST", ROTATE, {"reason": "one\u2028two"}, None, 422),
    ("text: newline in a line", "POST", ROTATE, {"reason": "one\ntwo"}, None, 422),
    ("multi-line text", "POST", "/credentials", {**NEW, "purpose": "a\x00"}, None, 422),
    ("tag name", "POST", "/credentials", {**NEW, "tags": ["x" * 64]}, None, 422),
    ("list item", "POST", "/credentials", {**NEW, "usernames": ["a", "b\x07"]}, None, 422),
    (
        "secret value",
        "POST",
        "/credentials",
        {**NEW, "initial_secret": {"value": "a\x00b"}},
        None,
        422,
    ),
    ("bool", "POST", ROTATE, {"reason": "x", "emergency": "yes"}, None, 422),
    ("bool as number", "POST", ROTATE, {"reason": "x", "emergency": 1}, None, 422),
    ("int as string", "POST", REPORT, {"version": "1"}, None, 422),
    ("int as bool", "POST", REPORT, {"version": True}, None, 422),
    ("int as float", "POST", REPORT, {"version": 1.0}, None, 422),
    ("token scope", "POST", "/tokens", {"role": "consumer", "scopes": ["acme/*\x00"]}, None, 422),
    ("time: year 1 east", "GET", "/audit", None, {"until": "0001-01-01T00:00:00+14:00"}, 400),
    (
        "time: year 1 export",
        "GET",
        "/audit/export",
        None,
        {"since": "0001-01-01T00:00:00+01:00"},
        400,
    ),
    ("time: far future", "GET", "/audit", None, {"since": "9999-12-31T23:59:59-14:00"}, 400),
    ("time: no zone", "GET", "/audit", None, {"since": "2026-01-01T00:00:00"}, 400),
    ("query text", "GET", "/audit", None, {"actor": "a\x1bb"}, 400),
]


def _written(api: Api) -> tuple[int, int, int]:
    with api.kt.app.db.read() as session:
        return (
            session.scalar(select(func.count()).select_from(AuditEntry)) or 0,
            session.scalar(select(func.count()).select_from(Credential)) or 0,
            session.scalar(select(func.count()).select_from(Rotation)) or 0,
        )


def test_refused_and_nothing_written(api: Api, subtests: pytest.Subtests) -> None:
    for name, method, path, body, params, status in CASES:
        with subtests.test(name):
            before = _written(api)
            # As JSON text with \\u escapes: how a client sends a lone surrogate.
            content = json.dumps(body) if body is not None else None
            headers = {"content-type": "application/json"}
            response = api.call(
                "admin", method, path, content=content, params=params, headers=headers
            )
            assert response.status_code == status, response.text
            assert is_envelope(response)
            assert _written(api) == before
            assert api.call("admin", "GET", "/credentials").status_code == 200


def test_the_same_requests_in_range_work(api: Api) -> None:
    assert (
        api.call(
            "admin", "GET", "/audit", params={"until": "2200-01-01T00:00:00+14:00"}
        ).status_code
        == 200
    )
    export = api.call("admin", "GET", "/audit/export", params={"since": "1970-01-01T00:00:00Z"})
    assert export.status_code == 200 and export.text.count("\n") == _written(api)[0]
    ok = api.call(
        "admin", "POST", "/credentials", json={**NEW, "purpose": "line one\nline two\ttab"}
    )
    assert ok.status_code == 201, ok.text
    reported = api.call("admin", "POST", REPORT, json={"version": 1})
    assert reported.status_code == 200, reported.text


def test_rows_stored_before_these_rules_do_not_break_listings(api: Api) -> None:
    """A lone surrogate already in the database (issue 14: one tag made every listing fail
    until an admin deleted the credential) is shown escaped."""
    with api.kt.app.db.write() as session:
        row = session.get(Credential, CRED)
        assert row is not None
        row.tags = {"k": "\ud800"}
        row.owner = "ops\x1b"
    for path in ("/credentials", f"/credentials/{CRED}"):
        response = api.call("admin", "GET", path)
        assert response.status_code == 200, response.text
    assert api.call("admin", "GET", f"/credentials/{CRED}").json()["tags"] == {"k": "\\ud800"}
    with api.kt.app.db.write() as session:
        entry = session.get(AuditEntry, 2)
        assert entry is not None
        entry.details = {"k": "\ud800"}
    assert api.call("admin", "GET", "/audit").status_code == 200
    assert api.call("admin", "GET", "/audit/export").status_code == 200


@pytest.mark.parametrize(
    ("toml", "words"),
    [
        ('[[credentials]]\nid = "a/b"\nowner = "x\\u0000y"\n', "NUL"),
        ('[[credentials]]\nid = "a/b"\nusername = "x\\u001by"\n', "control character"),
        ('[[credentials]]\nid = "a/b"\ntags = {k = "\\u202e"}\n', "bidirectional"),
        ('[targets.t]\ntype = "passwd-file"\npath = "a\\u0000b"\n', "NUL"),
        ('[policies.p.password]\nlength = "32"\n', "valid integer"),
        ('[[credentials]]\nid = "a/b"\nusername = " admin"\n', "leading or trailing"),
        ('[[credentials]]\nid = "a/b"\nconsumers = ["Web App"]\n', "consumer name"),
        ('[targets.t]\ntype = "passwd-file"\npath = "p"\ntenants = {acme = []}\n', "1-64 globs"),
    ],
)
def test_the_inventory_file_follows_the_same_rules(toml: str, words: str) -> None:
    with pytest.raises(UsageError, match=words):
        spec.parse(toml)


def test_the_cli_follows_the_same_rules(api: Api) -> None:
    kt = api.kt
    before = _written(api)
    for args, words in [
        (["rotate", CRED, "--reason", "a\x1b[2Jb"], "control character"),
        (["rotate", CRED, "--reason", "bad \udcff utf-8"], "lone surrogate"),
        (["run-due", "--at", "0001-01-01T00:00:00+14:00"], "out of range"),
        (["audit", "list", "--since", "0001-01-01T00:00:00+01:00"], "out of range"),
        (["token", "create", "--role", "auditor", "--name", "a\x07"], "control character"),
    ]:
        result = kt.cli(*args)
        assert result.code != 0 and words in result.err, (args, result.err)
        assert len(result.err.strip().splitlines()) == 1
    assert _written(api) == before
