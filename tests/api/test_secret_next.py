"""The secret endpoint during a `single` rotation: `next` readable from create to promotion,
audited; ETag, If-None-Match and the long poll; consumer identities and the at-risk preview."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient

from keyturn.api import create_app
from keyturn.api.ratelimit import FailureLimiter
from keyturn.domain.model import Trigger
from keyturn.engine import consumers, lease, protocol, service
from keyturn.engine.protocol import Runner
from tests.api.conftest import CRED, EXTRA, GLOBEX_PW, OTHER_PW, Api
from tests.engine.conftest import INITIAL, inventory
from tests.support.keyturn import Harness


@pytest.fixture
def single(kt: Harness) -> Iterator[Api]:
    kt.write("keyturn.toml", inventory("single") + EXTRA)
    env = {"INITIAL_PW": INITIAL, "OTHER_PW": OTHER_PW, "GLOBEX_PW": GLOBEX_PW}
    assert kt.cli("apply", "keyturn.toml", env=env).code == 0
    with TestClient(create_app(kt.app, limiter=FailureLimiter(limit=10, window=60))) as client:
        api = Api(kt, client)
        api.token("admin", "admin")
        api.token("consumer", "consumer", ["acme/smtp-*"])
        api.token("elsewhere", "consumer", ["acme/other"])
        yield api


def _runner(api: Api) -> Runner:
    """A rotation driven step by step, as a worker would between its commits."""
    app = api.kt.app
    rid = service.start(app, CRED, trigger=Trigger.MANUAL, actor="test", reason="drill")
    runner = Runner(app, rid)
    runner.credential_id = CRED
    assert lease.claim(app.db, rid, runner.owner, timedelta(minutes=5))
    return runner


def _secret(api: Api, who: str = "consumer", **params: str) -> dict[str, object]:
    response = api.call(who, "GET", f"/credentials/{CRED}/secret", params=params)
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_next_is_readable_from_create_until_promotion(single: Api) -> None:
    assert _secret(single)["next"] is None
    runner = _runner(single)
    runner._create()
    before_set = _secret(single)
    assert (before_set["version"], before_set["value"]) == (1, INITIAL)
    nxt = before_set["next"]
    assert isinstance(nxt, dict) and nxt["version"] == 2 and nxt["state"] == "pending"
    assert nxt["on_target"] is False
    runner._set()  # the target now takes only the new value; keyturn still calls it `next`
    live = _secret(single, version="next")
    assert (live["value"], live["on_target"]) == (nxt["value"], True)
    for step in (runner._test, runner._publish, runner._finish):
        step()
    after = _secret(single)
    assert (after["version"], after["value"], after["next"]) == (2, nxt["value"], None)
    missing = single.call("consumer", "GET", f"/credentials/{CRED}/secret?version=next")
    assert missing.status_code == 404
    trail = single.call("admin", "GET", "/audit", params={"action": "secret.read"}).json()
    states = [e["details"]["state"] for e in trail["entries"]]
    assert states.count("pending") == 2  # every read of `next` is an audit entry
    assert all(nxt["value"] not in str(e) for e in trail["entries"])


def test_next_is_on_target_from_set_in_a_real_run(
    single: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In a whole run (worker, `keyturn rotate`), where local steps share commits: once `set`
    has put the value on the target, readers see `next.on_target` and the ETag's `+` at
    every later step, before promotion (a single rotation's consumers switch on it)."""
    seen: dict[str, tuple[object, str]] = {}
    real = protocol.checkpoint

    def probe(point: str) -> None:
        if point in ("set:before", "test:before", "publish:before", "finish:before"):
            response = single.call("consumer", "GET", f"/credentials/{CRED}/secret")
            nxt = response.json()["next"]
            seen[point] = (nxt and nxt["on_target"], response.headers["etag"])
        real(point)

    monkeypatch.setattr(protocol, "checkpoint", probe)
    outcome = service.rotate(single.kt.app, CRED, trigger=Trigger.MANUAL, actor="t", reason="r")
    assert outcome.status == "done"
    assert seen["set:before"][0] is False and not seen["set:before"][1].endswith('+"')
    for point in ("test:before", "publish:before", "finish:before"):
        assert seen[point][0] is True and seen[point][1].endswith('+"'), (point, seen)


def test_next_needs_the_scope_of_the_credential(single: Api) -> None:
    _runner(single)._create()
    denied = single.call("elsewhere", "GET", f"/credentials/{CRED}/secret?version=next")
    assert denied.status_code == 404


def test_conditional_request_and_long_poll(single: Api) -> None:
    first = single.call("consumer", "GET", f"/credentials/{CRED}/secret")
    tag = first.headers["etag"]
    same = single.call(
        "consumer", "GET", f"/credentials/{CRED}/secret", headers={"If-None-Match": tag}
    )
    assert (same.status_code, same.content) == (304, b"")
    assert same.headers["etag"] == tag
    held: list[dict[str, object]] = []

    def poll() -> None:
        response = single.call(
            "consumer",
            "GET",
            f"/credentials/{CRED}/secret",
            params={"wait": "30"},
            headers={"If-None-Match": tag},
        )
        held.append({"status": response.status_code, **response.json()})

    waiter = threading.Thread(target=poll)
    waiter.start()
    _runner(single)._create()
    waiter.join(timeout=60)
    assert held and held[0]["status"] == 200
    assert isinstance(held[0]["next"], dict) and held[0]["next"]["version"] == 2
    reads = single.call("admin", "GET", "/audit", params={"action": "secret.read"}).json()
    # One read for the first GET, two for the long poll (current + next); none for the 304.
    assert len(reads["entries"]) == 3


def test_consumer_identity_and_at_risk(single: Api) -> None:
    body = {"version": 1, "host": "web-1", "process": "gunicorn[42]", "sdk_version": "0.1"}
    report = single.call("consumer", "POST", f"/credentials/{CRED}/consumers/web", json=body)
    assert report.status_code == 200 and report.json()["host"] == "web-1"
    plain = {"version": 1, "fallbacks": 2}
    single.call("consumer", "POST", f"/credentials/{CRED}/consumers/cron", json=plain)
    runner = _runner(single)
    for step in (runner._create, runner._set, runner._test, runner._publish, runner._finish):
        step()
    single.call("consumer", "POST", f"/credentials/{CRED}/consumers/web", json={"version": 2})
    risky = single.call("admin", "GET", f"/credentials/{CRED}/consumers?at_risk=revoke").json()
    assert [(r["name"], r["version"], r["recovers"]) for r in risky] == [("cron", 1, False)]
    listed = single.call("admin", "GET", f"/credentials/{CRED}/consumers").json()
    assert {c["name"]: c["fallbacks"] for c in listed} == {"cron": 2, "web": 0}
    emergency = consumers.at_risk(single.kt.app, CRED, "emergency")
    assert {(r.name, r.recovers) for r in emergency} == {("cron", False), ("web", True)}
    bad = {"version": 2, "host": "x\ny"}
    refused = single.call("consumer", "POST", f"/credentials/{CRED}/consumers/web", json=bad)
    assert refused.status_code in (400, 422)
